# shellcheck shell=sh
# After `wg syncconf`: a route via the interface for every AllowedIPs it runs (one `ip -batch`:
# wg-quick would spawn `ip` once per prefix), and no route via the interface that no peer owns
# any more. Derived on the host from the running interface, so the script does not grow with
# the mesh. The same batch runs as PostUp (remote/hooks.py, route_sync_command). `-force`: a
# route that fails (an IPv6 route where IPv6 is off) does not stop the ones after it; the
# failures are reported, and the previous config goes back so the next push tries again.
# Set by the compiler: IFACE, WGM_EXIT_ROUTES_FAILED. Needs apply.sh (wgm_fail).

wgm_sync_routes() {
    if ! failed=$(wg show "$IFACE" allowed-ips | tr '[:blank:]' '\n' |
        sed -n -E "s|^([0-9a-f.:]+/[0-9]+)\$|route replace \\1 dev $IFACE|p" |
        ip -force -batch - 2>&1); then
        printf '%s\n' "$failed" >&2
        wgm_fail "$WGM_EXIT_ROUTES_FAILED"
    fi
    want=" $(wg show "$IFACE" allowed-ips | tr '[:blank:]' '\n' | sed -n -E 's|^([0-9a-f.:]+/[0-9]+)$|\1|p' |
        sed 's|/32$||; s|/128$||' | tr '\n' ' ') "
    for version in 4 6; do
        ip -o "-$version" route show dev "$IFACE" | while read -r dst rest; do
            case "$rest" in *"proto kernel"*) continue ;; esac
            case "$want" in
                *" $dst "*) ;;
                *) ip "-$version" route del "$dst" dev "$IFACE" || true ;;
            esac
        done
    done
}
