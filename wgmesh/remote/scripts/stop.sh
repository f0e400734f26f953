# shellcheck shell=sh
# Stop and disable the interface; keep nothing of the mesh running. Idempotent; fails if the
# interface is still there afterwards.
# Set by the compiler: IFACE, CONF, PREV.

wgm_stop_all() {
    sd=0
    if wgm_has_systemd; then sd=1; fi
    wgm_agent_remove "$sd"
    if wgm_has_systemd; then
        systemctl disable --now "wg-quick@$IFACE" >/dev/null 2>&1
    fi
    if wg show "$IFACE" >/dev/null 2>&1; then
        wg-quick down "$IFACE" >/dev/null 2>&1 || ip link del "$IFACE"
    fi
    if wg show "$IFACE" >/dev/null 2>&1; then
        echo "$IFACE is still up" >&2
        exit 1
    fi
    rm -f "$CONF" "$PREV"
    exit 0
}
