# shellcheck shell=sh
# Applying a config on a host: the steps the plan chose, in its order (wgmesh/remote/plan.py).
# The config arrives on standard input, never in argv; it is written to a temporary file in
# /etc/wireguard (0700) with mode 0600 and renamed into place. When a start or restart fails,
# the host gets its previous state back: the previous file (or none, if there was none: a
# failed first start leaves no config and no enabled unit), and the interface up again with
# it if it was up before.
# Set by the compiler: IFACE, WGDIR (/etc/wireguard), CONF, PREV, LOG, WGM_EXIT_*.

wgm_prepare() {
    umask 077
    mkdir -p "$WGDIR"
    chmod 700 "$WGDIR"
    rm -f "$PREV"
    HAD=1
    # Whatever ends the script, no copy of the key stays behind; stopped by a signal (the
    # remote time limit), the previous config goes back first.
    trap 'rm -f ${TMP:+"$TMP"} "$PREV"' EXIT
    trap 'wgm_fail "$WGM_EXIT_KILLED"' TERM INT HUP
}

# The new config from standard input into a temporary file, checked against its sha256 (a
# transfer cut between two [Peer] sections would still be a valid config); the current one
# kept as $PREV. $1: the sha256 the controller sent.
wgm_stage() {
    TMP=$(mktemp "$WGDIR/.$IFACE.conf.XXXXXX") || exit 1
    cat >"$TMP" || exit 1
    got=$(sha256sum <"$TMP" | cut -d' ' -f1)
    if [ "$got" != "$1" ]; then
        echo "the config arrived incomplete ($(wc -c <"$TMP") bytes, sha256 $got): nothing was changed" >&2
        exit "$WGM_EXIT_TRUNCATED"
    fi
    chmod 600 "$TMP"
    chown 0:0 "$TMP" 2>/dev/null || true
    if [ -f "$CONF" ]; then
        cp -p "$CONF" "$PREV" || exit 1
    else
        HAD=0
    fi
}

# Take the interface down whatever brought it up (a unit, wg-quick by hand, a leftover).
# $1: 1 where systemd runs.
wgm_down() {
    if [ "$1" = 1 ]; then
        systemctl stop "wg-quick@$IFACE" >/dev/null 2>&1
    fi
    if wg show "$IFACE" >/dev/null 2>&1; then
        wg-quick down "$IFACE" >/dev/null 2>&1 || ip link del "$IFACE" >/dev/null 2>&1
    fi
}

wgm_install() {
    mv -f "$TMP" "$CONF" || exit 1
}

# $1: 1 where systemd runs. The host's lock (fd 9) is closed for it: wireguard-go, started by
# wg-quick, would otherwise hold it for as long as it runs.
wgm_up() {
    if [ "$1" = 1 ]; then
        # restart, not `enable --now`: a oneshot unit can be "active" while the interface is gone
        systemctl enable "wg-quick@$IFACE" 9>&- && systemctl restart "wg-quick@$IFACE" 9>&-
    else
        wg-quick up "$IFACE" 9>&-
    fi
}

# Start the interface with the installed config; on failure put the previous state back.
# $1: 1 where systemd runs; $2: 1 when the interface was up before (a restart).
# The unit's own output since $1 (epoch seconds): what wg-quick said, not "see journalctl".
# journald may take a moment to store the last lines of a process that just ended.
wgm_journal() {
    i=0
    while [ "$i" -lt 10 ]; do
        lines=$(journalctl "_SYSTEMD_UNIT=wg-quick@$IFACE.service" --since "@$1" -o cat --no-pager 2>/dev/null |
            tail -n 20)
        if [ -n "$lines" ]; then
            printf '%s\n' "$lines" >&2
            return 0
        fi
        sleep 0.2
        i=$((i + 1))
    done
}

wgm_start() {
    t0=$(date +%s)
    if ! wgm_up "$1" >"$LOG" 2>&1; then
        cat "$LOG" >&2
        rm -f "$LOG"
        if [ "$1" = 1 ]; then
            wgm_journal "$t0"
        fi
        wgm_down "$1"
        if [ -f "$PREV" ]; then
            mv -f "$PREV" "$CONF"
            if [ "$2" = 1 ]; then
                wgm_up "$1" >/dev/null 2>&1
            fi
        elif [ "$HAD" = 0 ]; then
            rm -f "$CONF"
            if [ "$1" = 1 ]; then
                systemctl disable "wg-quick@$IFACE" >/dev/null 2>&1
            fi
        fi
        exit "$WGM_EXIT_START_FAILED"
    fi
    rm -f "$LOG" "$PREV"
}

# A step after the install failed: the previous file goes back (or none, if there was none), so
# the next probe sees that the host does not run the desired config and the push is retried.
# $1: the exit status.
wgm_fail() {
    if [ -f "$PREV" ]; then
        mv -f "$PREV" "$CONF"
    elif [ "${HAD:-1}" = 0 ]; then
        rm -f "$CONF"
    fi
    exit "$1"
}

# Only peers (or the private key, or the port) changed: no tunnel drops.
wgm_syncconf() {
    # No pipefail in sh: a failed strip must not feed an empty config to syncconf.
    st=$(wg-quick strip "$IFACE") || wgm_fail "$WGM_EXIT_SYNCCONF_FAILED"
    printf '%s\n' "$st" | wg syncconf "$IFACE" /dev/stdin || wgm_fail "$WGM_EXIT_SYNCCONF_FAILED"
}

# The firewall chains and their jumps again, from the installed config's PostUp lines (the
# same lines wg-quick runs; each is idempotent). Fails if a chain is still not as expected.
wgm_restore_rules() {
    sed -n 's/^PostUp = //p' "$CONF" | while IFS= read -r line; do
        bash -c "$line" || exit 1
    done || exit "$WGM_EXIT_RULES_FAILED"
}

# The unit starts the interface at boot.
wgm_enable_unit() {
    systemctl enable "wg-quick@$IFACE" >/dev/null 2>&1 || exit "$WGM_EXIT_UNIT_FAILED"
}

wgm_finish() {
    rm -f "$PREV"
    exit 0
}
