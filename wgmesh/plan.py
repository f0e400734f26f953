"""Desired config + what a host reports → what to do on that host. Pure.

Also builds the shell scripts the SSH adapter runs (from validated values only) and
parses what the probe prints. Configs always travel on standard input, never in argv.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from wgmesh.model import HostState
from wgmesh.render import fingerprints, route_sync_command

# Actions, mildest first.
UNCHANGED = "unchanged"
SYNCCONF = "syncconf"  # only peers (or the private key / port) changed: hitless
RESTART = "restart"  # [Interface] changed
START = "start"  # interface down: first start (or start after a stop)
STOP = "stop"

# Keep in step with render.interface_fingerprint_lines.
REMOTE_IFACE_FILTER = (
    r"awk '/^\[Peer\]/{exit} /^[ \t]*(#|$)/{next} "
    r"/^[ \t]*(PrivateKey|ListenPort|FwMark)[ \t]*=/{next} {print}'"
)


@dataclass(frozen=True)
class Plan:
    action: str
    write: bool  # the config file must be (re)written
    reason: str


def decide(desired_text: str, desired_peers: frozenset[str], state: HostState) -> Plan:
    file_sha, iface_sha = fingerprints(desired_text)
    same_file = state.file_sha == file_sha
    if not state.interface_up:
        return Plan(START, not same_file, "interface is down" if same_file else "interface is down; new config")
    if state.iface_sha != iface_sha:
        return Plan(RESTART, not same_file, "[Interface] changed")
    if not same_file:
        return Plan(SYNCCONF, True, "peers changed")
    if state.running_peers != desired_peers:
        return Plan(SYNCCONF, False, "running peers differ from the config file")
    return Plan(UNCHANGED, False, "up to date")


# ---------------------------------------------------------------- remote scripts


def conf_path(iface: str) -> str:
    return f"/etc/wireguard/{iface}.conf"


def probe_script(iface: str, wait_boot: int = 0) -> str:
    """Prints: 'file SHA|-', 'iface SHA|-', 'up'|'down', 'peer PUBKEY'..., 'systemd'?, 'wg missing'?

    With wait_boot, first wait (that long at most) for cloud-init to finish: a new cloud host
    may still be running the user data that installs wireguard-tools.
    """
    c = conf_path(iface)
    wait = (
        [f"if command -v cloud-init >/dev/null 2>&1; then timeout {int(wait_boot)} cloud-init status --wait >/dev/null 2>&1; fi"]
        if wait_boot > 0 else []
    )
    return "\n".join(
        wait + [
            "command -v wg >/dev/null 2>&1 && command -v wg-quick >/dev/null 2>&1 || echo 'wg missing'",
            f"if [ -r {c} ]; then",
            f"  echo \"file $(sha256sum < {c} | cut -d' ' -f1)\"",
            f"  echo \"iface $({REMOTE_IFACE_FILTER} {c} | sha256sum | cut -d' ' -f1)\"",
            "else echo 'file -'; echo 'iface -'; fi",
            f"if p=$(wg show {iface} peers 2>/dev/null); then echo up; "
            "printf '%s\\n' \"$p\" | sed -n 's/^\\(..*\\)$/peer \\1/p'; else echo down; fi",
            "[ -d /run/systemd/system ] && echo systemd",
            "echo end",
        ]
    )


def parse_probe(text: str) -> HostState:
    file_sha = iface_sha = None
    up = systemd = False
    peers = set()
    ended = False
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "file" and rest != "-":
            file_sha = rest
        elif word == "iface" and rest != "-":
            iface_sha = rest
        elif word == "up":
            up = True
        elif word == "peer" and rest:
            peers.add(rest)
        elif word == "systemd":
            systemd = True
        elif word == "wg" and rest == "missing":
            raise ValueError("wireguard-tools (wg, wg-quick) is not installed on the host")
        elif word == "end":
            ended = True
    if not ended:
        raise ValueError("the host's probe output was cut short")
    return HostState(
        reachable=True,
        interface_up=up,
        file_sha=file_sha,
        iface_sha=iface_sha,
        systemd=systemd,
        running_peers=frozenset(peers),
    )


def _route_sync(iface: str) -> list[str]:
    """After `wg syncconf`: a route for every AllowedIPs the interface now runs (one `ip -batch`),
    and no route via the interface that no peer owns any more. Derived on the host from the
    running interface, so the script does not grow with the mesh."""
    want = (
        f"want=\" $(wg show {iface} allowed-ips | tr ' \\t' '\\n\\n' | sed -n -E 's|^([0-9a-f.:]+/[0-9]+)$|\\1|p' "
        "| sed 's|/32$||; s|/128$||' | tr '\\n' ' ') \""
    )
    lines = [f"{{ {route_sync_command(iface)}; }} || exit 44", want]
    for version in (4, 6):
        lines.append(
            f"ip -o -{version} route show dev {iface} | while read -r dst rest; do "
            'case "$rest" in *"proto kernel"*) continue ;; esac; '
            f'case "$want" in *" $dst "*) ;; *) ip -{version} route del "$dst" dev {iface} || true ;; esac; done'
        )
    return lines


def _down(iface: str, systemd: bool) -> str:
    """Take the interface down whatever brought it up (a unit, wg-quick by hand, a leftover)."""
    stop_unit = f"systemctl stop wg-quick@{iface} >/dev/null 2>&1; " if systemd else ""
    return (
        f"{stop_unit}if wg show {iface} >/dev/null 2>&1; then "
        f"wg-quick down {iface} >/dev/null 2>&1 || ip link del {iface} >/dev/null 2>&1; fi"
    )


def apply_script(plan: Plan, iface: str, systemd: bool) -> str:
    """The script run on the host (config on stdin when plan.write). Exit 0 on success.

    When a start or restart fails, the host gets its previous state back: the previous file
    (or none, if there was none: a failed first start leaves no config and no enabled unit),
    and the interface up again with it if it was up before.
    """
    c = conf_path(iface)
    prev = f"/etc/wireguard/.{iface}.conf.prev"
    log = f"/etc/wireguard/.{iface}.up.log"  # in the 0700 directory, not a guessable /tmp name
    unit = f"wg-quick@{iface}"
    # `restart` (not `enable --now`): a oneshot unit can be "active" while the interface is gone.
    up_cmd = f"systemctl enable {unit} && systemctl restart {unit}" if systemd else f"wg-quick up {iface}"
    s = ["set -u", "umask 077", "mkdir -p /etc/wireguard", "chmod 700 /etc/wireguard", f"rm -f {prev}", "had=1"]
    if plan.write:
        s += [
            f't=$(mktemp /etc/wireguard/.{iface}.conf.XXXXXX) || exit 1',
            'trap \'rm -f "$t"\' EXIT',
            'cat > "$t" || exit 1',
            'chmod 600 "$t"; chown 0:0 "$t" 2>/dev/null || true',
            f"if [ -f {c} ]; then cp -p {c} {prev} || exit 1; else had=0; fi",
        ]
    if plan.action in (START, RESTART):
        s.append(_down(iface, systemd))  # with the old file, before it is replaced
    if plan.write:
        s.append(f'mv -f "$t" {c} || exit 1')
    if plan.action in (START, RESTART):
        was_up = "1" if plan.action == RESTART else "0"
        disable = f" systemctl disable {unit} >/dev/null 2>&1;" if systemd else ""
        s += [
            f"if ! {{ {up_cmd}; }} >{log} 2>&1; then",
            f"  cat {log} >&2; rm -f {log}",
            f"  {_down(iface, systemd)}",
            f"  if [ -f {prev} ]; then mv -f {prev} {c}; if [ {was_up} = 1 ]; then {{ {up_cmd}; }} >/dev/null 2>&1; fi",
            f"  elif [ $had = 0 ]; then rm -f {c};{disable} fi",
            "  exit 42",
            "fi",
            f"rm -f {log} {prev}",
        ]
    elif plan.action == SYNCCONF:
        s += [
            # No pipefail in sh: a failed strip must not feed an empty config to syncconf.
            f"st=$(wg-quick strip {iface}) || exit 43",
            f"printf '%s\\n' \"$st\" | wg syncconf {iface} /dev/stdin || exit 43",
        ]
        s += _route_sync(iface)
        s.append(f"rm -f {prev}")
    s.append("exit 0")
    return "\n".join(s)


def stop_script(iface: str) -> str:
    """Stop and disable the interface; keep nothing of the mesh running. Idempotent; fails if
    the interface is still there afterwards."""
    unit = f"wg-quick@{iface}"
    return "\n".join(
        [
            f"if [ -d /run/systemd/system ]; then systemctl disable --now {unit} >/dev/null 2>&1; fi",
            f"if wg show {iface} >/dev/null 2>&1; then wg-quick down {iface} >/dev/null 2>&1 || ip link del {iface}; fi",
            f"if wg show {iface} >/dev/null 2>&1; then echo '{iface} is still up' >&2; exit 1; fi",
            f"rm -f {conf_path(iface)} /etc/wireguard/.{iface}.conf.prev",
            "exit 0",
        ]
    )


def wrap(script: str, user: str) -> str:
    """The remote command line: a fixed shell running a generated script (no secrets in it)."""
    cmd = "sh -c " + shlex.quote(script)
    return cmd if user == "root" else "sudo -n " + cmd
