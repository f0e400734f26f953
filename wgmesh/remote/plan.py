"""Desired config + what a host reports → the steps for that host. Pure.

The probe (scripts/probe.sh) reports the file's and the [Interface]'s sha256, whether the
interface runs and with which peers, and whether systemd runs; `decide` picks the mildest
action that makes the host run the desired config, and `apply_program` spells it as steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from wgmesh.model import Action, HostState
from wgmesh.remote.steps import Op, Program, step
from wgmesh.render import fingerprints


@dataclass(frozen=True)
class Plan:
    action: Action  # UNCHANGED, SYNCCONF, RESTART or START
    write: bool  # the config file must be (re)written
    reason: str


def decide(desired_text: str, desired_peers: frozenset[str], state: HostState) -> Plan:
    file_sha, iface_sha = fingerprints(desired_text)
    same_file = state.file_sha == file_sha
    if not state.interface_up:
        return Plan(Action.START, not same_file, "interface is down" if same_file else "interface is down; new config")
    if state.iface_sha != iface_sha:
        return Plan(Action.RESTART, not same_file, "[Interface] changed")
    if not same_file:
        return Plan(Action.SYNCCONF, True, "peers changed")
    if state.running_peers != desired_peers:
        return Plan(Action.SYNCCONF, False, "running peers differ from the config file")
    return Plan(Action.UNCHANGED, False, "up to date")


# ---------------------------------------------------------------- programs


def probe_program(iface: str, wait_boot: int = 0) -> Program:
    """With wait_boot, first wait (that long at most) for cloud-init to finish."""
    steps = [step(Op.WAIT_CLOUD_INIT, int(wait_boot))] if wait_boot > 0 else []
    return Program("probe", iface, (*steps, step(Op.PROBE)))


def apply_program(plan: Plan, iface: str, systemd: bool) -> Program:
    """The steps that carry out `plan` (the config on standard input when plan.write)."""
    steps = [step(Op.PREPARE)]
    if plan.write:
        steps.append(step(Op.STAGE))
    restarting = plan.action in (Action.START, Action.RESTART)
    if restarting:
        steps.append(step(Op.DOWN, systemd))  # with the old file, before it is replaced
    if plan.write:
        steps.append(step(Op.INSTALL))
    if restarting:
        steps.append(step(Op.START, systemd, plan.action == Action.RESTART))
    elif plan.action == Action.SYNCCONF:
        steps += [step(Op.SYNCCONF), step(Op.SYNC_ROUTES)]
    steps.append(step(Op.FINISH))
    return Program("apply", iface, tuple(steps), stdin=plan.write)


def stop_program(iface: str) -> Program:
    return Program("stop", iface, (step(Op.STOP_ALL),))


def dump_program(iface: str) -> Program:
    return Program("wg show", iface, (step(Op.DUMP),))


def ping_program(targets: list[str], iface: str, attempts: int = 3, wait: int = 2) -> Program:
    """Targets are ipaddress strings made by wgmesh, never user text (and quoted all the same)."""
    return Program("probe", iface, (step(Op.PING, attempts, wait, *targets),))


# ---------------------------------------------------------------- the probe's report


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
