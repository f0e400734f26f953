# shellcheck shell=sh
# What a host runs, for the plan (wgmesh/remote/plan.py parses it). Prints one item a line:
#   file SHA|-    sha256 of the config file
#   iface SHA|-   sha256 of its [Interface] lines that need a restart
#   up|down       whether the interface runs; when up, 'peer PUBKEY' for each running peer
#   systemd       when systemd is PID 1
#   wg missing    when wireguard-tools is not installed
#   end           the probe ran to its end
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
    if p=$(wg show "$IFACE" peers 2>/dev/null); then
        echo up
        printf '%s\n' "$p" | sed -n 's/^\(..*\)$/peer \1/p'
    else
        echo down
    fi
    if [ -d /run/systemd/system ]; then
        echo systemd
    fi
    echo end
}
