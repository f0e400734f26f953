# shellcheck shell=sh
# What a host runs, for the plan (wgmesh/remote/plan.py parses it). Prints one item a line:
#   file SHA|-         sha256 of the config file
#   iface SHA|-        sha256 of its [Interface] lines that need a restart
#   up|down            whether the interface runs; when up:
#   port N             its listen port
#   peer KEY ALLOWED ENDPOINT KEEPALIVE   each running peer (ALLOWED comma-separated or (none))
#   route PREFIX       each route via the interface (kernel routes left out)
#   rules FAMILY fwd|mss|nat COUNT JUMP   rules in the wgmesh chain (-1: no chain), jump present 1/0
#   noegress FAMILY    the host has no default route of that family (nothing to masquerade out of)
#   systemd            when systemd runs the host; then 'unit STATE' (systemctl is-enabled)
#   wg missing         when wireguard-tools is not installed
#   agent SHA / agent_running / agent_state NOW JSON   the failover agent (scripts/agent.sh)
#   end                the probe ran to its end
# Nothing secret is printed: the dump's private key and preshared-key columns stay on the host.
# Set by the compiler: IFACE, CONF.

# The [Interface] lines whose change needs a restart (comments, blanks and the lines
# `wg syncconf` applies by itself left out). Keep in step with render.interface_fingerprint_lines.
wgm_iface_lines() {
    awk '/^\[Peer\]/{exit} /^[ \t]*(#|$)/{next} /^[ \t]*(PrivateKey|ListenPort|FwMark)[ \t]*=/{next} {print}' "$1"
}

# A new cloud host may still be running the user data that installs wireguard-tools.
wgm_wait_cloud_init() {
    if command -v cloud-init >/dev/null 2>&1; then
        timeout "$1" cloud-init status --wait >/dev/null 2>&1 || true
    fi
}

# rules FAMILY fwd|mss|nat COUNT JUMP for both families, from one iptables-save each (a
# process per table and chain costs ~10 ms each, times every host of a push).
wgm_rules() {
    for version in 4 6; do
        save=iptables-save
        if [ "$version" = 6 ]; then save=ip6tables-save; fi
        command -v "$save" >/dev/null 2>&1 || continue
        "$save" 2>/dev/null | awk -v v="$version" -v i="$IFACE" '
            BEGIN {
                name["fwd"] = "WGM-" i "-FWD"; tab["fwd"] = "filter"; hook["fwd"] = "FORWARD"
                name["mss"] = "WGM-" i "-MSS"; tab["mss"] = "mangle"; hook["mss"] = "FORWARD"
                name["nat"] = "WGM-" i "-NAT"; tab["nat"] = "nat"; hook["nat"] = "POSTROUTING"
                for (k in name) { n[k] = -1; j[k] = 0 }
            }
            /^\*/ { t = substr($0, 2); next }
            {
                for (k in name) {
                    if (t != tab[k]) continue
                    if ($1 == ":" name[k]) n[k] = 0
                    else if ($1 == "-A" && $2 == name[k]) n[k]++
                    else if ($0 == "-A " hook[k] " -j " name[k]) j[k] = 1
                }
            }
            END { print "rules", v, "fwd", n["fwd"], j["fwd"]; print "rules", v, "mss", n["mss"], j["mss"]
                  print "rules", v, "nat", n["nat"], j["nat"] }'
    done
}

wgm_probe() {
    if ! command -v wg >/dev/null 2>&1 || ! command -v wg-quick >/dev/null 2>&1; then
        echo 'wg missing'
    fi
    if [ -r "$CONF" ]; then
        echo "file $(sha256sum <"$CONF" | cut -d' ' -f1)"
        echo "iface $(wgm_iface_lines "$CONF" | sha256sum | cut -d' ' -f1)"
    else
        echo 'file -'
        echo 'iface -'
    fi
    if dump=$(wg show "$IFACE" dump 2>/dev/null); then
        echo up
        printf '%s\n' "$dump" | awk -F '\t' 'NR==1 {print "port", $3; next} {print "peer", $1, $4, $3, $8}'
        for version in 4 6; do
            ip -o "-$version" route show dev "$IFACE" 2>/dev/null | while read -r dst rest; do
                case "$rest" in *"proto kernel"*) continue ;; esac
                echo "route $dst"
            done
        done
        wgm_rules
        for version in 4 6; do
            [ -n "$(ip -o "-$version" route show default 2>/dev/null)" ] || echo "noegress $version"
        done
    else
        echo down
    fi
    if wgm_has_systemd; then
        echo systemd
        echo "unit $(systemctl is-enabled "wg-quick@$IFACE" 2>/dev/null || true)"
    fi
    wgm_agent_state
    echo end
}
