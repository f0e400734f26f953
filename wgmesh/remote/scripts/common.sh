# shellcheck shell=sh
# Included in every program. Set by the compiler: IFACE, WGDIR, WGM_EXIT_*.

# systemd runs this host: PID 1 is systemd AND we are in its mount namespace. A lab host (a
# namespace on a machine that itself runs systemd) sees the machine's /run/systemd: its
# wg-quick must never be driven through the machine's PID 1.
wgm_has_systemd() {
    [ -d /run/systemd/system ] || return 1
    [ "$(readlink /proc/1/ns/mnt 2>/dev/null)" = "$(readlink /proc/self/ns/mnt 2>/dev/null)" ]
}

# One change at a time on a host: wait (with a bound) for any other wgmesh run on it.
wgm_lock() {
    mkdir -p "$WGDIR" && chmod 700 "$WGDIR" || exit 1
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>"$WGDIR/.wgmesh.lock"
    if ! flock -w "$1" 9; then
        echo "another wgmesh run has held $WGDIR/.wgmesh.lock for $1 s" >&2
        exit "$WGM_EXIT_LOCKED"
    fi
}
