# shellcheck shell=sh
# What the interface runs, for `status` and `verify` (wgmesh/status.py parses it).
# Set by the compiler: IFACE.

# `wg show dump` with its two secret columns blanked before anything leaves the host.
wgm_dump() {
    wg show "$IFACE" dump | awk 'BEGIN{FS=OFS="\t"} NR==1{$1="(hidden)"} NR>1{$2="(hidden)"} {print}'
}

# Probe every target at once; print 'ok ADDR RTT_MS' or 'fail ADDR' per target.
# With fping on the host: one process for all targets. Without it: one ping per target, in
# parallel. $1: attempts, $2: seconds to wait for each reply, $3: bytes of ICMP data with the
# don't-fragment bit set (0: the default size, fragmentable), then the targets.
wgm_ping() {
    attempts=$1
    wait_s=$2
    size=$3
    shift 3
    if command -v fping >/dev/null 2>&1; then
        if [ "$size" -gt 0 ]; then
            fping -e -i 1 -r $((attempts - 1)) -t $((wait_s * 1000)) -b "$size" -M "$@" 2>/dev/null
        else
            fping -e -i 1 -r $((attempts - 1)) -t $((wait_s * 1000)) "$@" 2>/dev/null
        fi | awk '/ is alive/ {gsub(/[()]/, "", $4); print "ok", $1, $4; next} / is unreachable/ {print "fail", $1}'
    else
        for t in "$@"; do
            (
                i=0
                while [ "$i" -lt "$attempts" ]; do
                    if [ "$size" -gt 0 ]; then
                        o=$(ping -n -c 1 -W "$wait_s" -s "$size" -M "do" "$t" 2>/dev/null)
                        rc=$?
                    else
                        o=$(ping -n -c 1 -W "$wait_s" "$t" 2>/dev/null)
                        rc=$?
                    fi
                    if [ "$rc" = 0 ]; then
                        r=$(printf '%s\n' "$o" | sed -n 's/.*time=\([0-9.]*\).*/\1/p')
                        echo "ok $t $r"
                        exit 0
                    fi
                    i=$((i + 1))
                done
                echo "fail $t"
            ) &
        done
        wait
    fi
}
