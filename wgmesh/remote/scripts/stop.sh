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
    # wireguard-go leaves a moment after its link is gone (longer on a busy host): wait for it
    i=0
    while wg show "$IFACE" >/dev/null 2>&1; do
        if [ "$i" -ge 50 ]; then
            echo "$IFACE is still up" >&2
            exit 1
        fi
        sleep 0.1
        i=$((i + 1))
    done
    rm -f "$CONF" "$PREV"
    exit 0
}
