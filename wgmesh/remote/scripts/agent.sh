# shellcheck shell=sh
# The failover agent of meshes with HA sites (wgmesh/agent/agent.py): installed from a bundle
# (a tar: agent.py, rule.py, hostops.py, ec2.py, agent.json, wgmesh-agent.service) into /etc/wgmesh, run as the
# systemd unit wgmesh-agent where systemd runs, else under its own supervisor (agent.py start).
# Its state: /run/wgmesh/state.json (no secrets in it: roles, epochs, public names).
# Set by the compiler: WGM_EXIT_*.

AGDIR=/etc/wgmesh
AGRUN=/run/wgmesh
AGUNIT=/etc/systemd/system/wgmesh-agent.service

# The bundle from standard input, checked against $1 (its sha256), unpacked next to the old
# files and renamed over them one by one.
wgm_agent_install() {
    umask 077
    mkdir -p "$AGDIR" && chmod 700 "$AGDIR" || exit "$WGM_EXIT_AGENT_FAILED"
    tmp=$(mktemp -d "$AGDIR/.new.XXXXXX") || exit "$WGM_EXIT_AGENT_FAILED"
    trap 'rm -rf "$tmp"' EXIT
    cat >"$tmp/bundle.tar" || exit "$WGM_EXIT_AGENT_FAILED"
    got=$(sha256sum <"$tmp/bundle.tar" | cut -d' ' -f1)
    if [ "$got" != "$1" ]; then
        echo "the agent's files arrived incomplete (sha256 $got): nothing was changed" >&2
        exit "$WGM_EXIT_TRUNCATED"
    fi
    tar -xf "$tmp/bundle.tar" -C "$tmp" --no-same-owner --no-same-permissions || exit "$WGM_EXIT_AGENT_FAILED"
    for f in agent.py rule.py hostops.py ec2.py agent.json wgmesh-agent.service; do
        mv -f "$tmp/$f" "$AGDIR/$f" || exit "$WGM_EXIT_AGENT_FAILED"
    done
    echo "$1" >"$AGDIR/.bundle.sha256"
    rm -rf "$tmp"
    trap - EXIT
}

# The pid of the running agent (its pid file names a live agent.py), or nothing.
wgm_agent_pid() {
    pid=$(cat "$AGRUN/agent.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'agent.py run' && echo "$pid"
}

# $1: 1 where systemd runs. Start it, or make the running one reload (it re-executes itself with
# the new files and keeps its role: the site's traffic does not move). Waits until it runs.
wgm_agent_start() {
    if ! command -v python3 >/dev/null 2>&1; then
        echo "python3 is not installed: the failover agent needs it (e.g. apt-get install python3)" >&2
        exit "$WGM_EXIT_AGENT_FAILED"
    fi
    before=$(wgm_agent_pid || true)
    if [ "$1" = 1 ]; then
        if ! cmp -s "$AGDIR/wgmesh-agent.service" "$AGUNIT"; then
            cp "$AGDIR/wgmesh-agent.service" "$AGUNIT" && systemctl daemon-reload || exit "$WGM_EXIT_AGENT_FAILED"
        fi
        systemctl enable wgmesh-agent >/dev/null 2>&1 || exit "$WGM_EXIT_AGENT_FAILED"
        if systemctl is-active --quiet wgmesh-agent; then
            systemctl reload wgmesh-agent || exit "$WGM_EXIT_AGENT_FAILED"
        else
            systemctl start wgmesh-agent || exit "$WGM_EXIT_AGENT_FAILED"
        fi
    else
        python3 "$AGDIR/agent.py" start 9>&- || exit "$WGM_EXIT_AGENT_FAILED"
    fi
    i=0
    while [ "$i" -lt 50 ]; do
        now=$(wgm_agent_pid || true)
        if [ -n "$now" ] && { [ -z "$before" ] || [ "$now" = "$before" ]; }; then
            # a reload keeps the pid: the new program has written its state once it runs
            if [ -s "$AGRUN/state.json" ]; then return 0; fi
        fi
        sleep 0.1
        i=$((i + 1))
    done
    echo "the failover agent does not run:" >&2
    tail -n 5 "$AGRUN/agent.log" >&2 2>/dev/null ||
        journalctl -u wgmesh-agent -n 5 -o cat --no-pager >&2 2>/dev/null
    exit "$WGM_EXIT_AGENT_FAILED"
}

# $1: 1 where systemd runs. Stop it for good, give up the route table (the site's router
# address), remove its files. Idempotent.
wgm_agent_remove() {
    if [ "$1" = 1 ] && [ -f "$AGUNIT" ]; then
        systemctl disable --now wgmesh-agent >/dev/null 2>&1
        rm -f "$AGUNIT"
        systemctl daemon-reload >/dev/null 2>&1
    fi
    if [ -f "$AGDIR/agent.py" ] && command -v python3 >/dev/null 2>&1; then
        python3 "$AGDIR/agent.py" release || true
    fi
    rm -f "$AGDIR/agent.py" "$AGDIR/rule.py" "$AGDIR/hostops.py" "$AGDIR/ec2.py" "$AGDIR/agent.json" "$AGDIR/wgmesh-agent.service" \
        "$AGDIR/.bundle.sha256" "$AGRUN/state.json"
}

wgm_agent_takeover() {
    [ -n "$(wgm_agent_pid || true)" ] || {
        echo "the failover agent does not run on this host" >&2
        exit "$WGM_EXIT_AGENT_FAILED"
    }
    python3 "$AGDIR/agent.py" takeover || exit "$WGM_EXIT_AGENT_FAILED"
}

# For the probe (plan.parse_probe): the installed bundle, whether it runs, its state with the
# host's clock (one line of JSON).
wgm_agent_state() {
    if [ -r "$AGDIR/.bundle.sha256" ]; then echo "agent $(cat "$AGDIR/.bundle.sha256")"; fi
    if [ -n "$(wgm_agent_pid || true)" ]; then echo "agent_running"; fi
    if [ -r "$AGRUN/state.json" ]; then echo "agent_state $(date +%s) $(tr -d '\n' <"$AGRUN/state.json")"; fi
}
