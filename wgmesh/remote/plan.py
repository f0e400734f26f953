"""Desired config + what a host reports → the steps for that host. Pure.

The probe (scripts/probe.sh) reports the file's and the [Interface]'s sha256, whether the
interface runs and with which peers, and whether systemd runs; `decide` picks the mildest
action that makes the host run the desired config, and `apply_program` spells it as steps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from wgmesh import ha
from wgmesh.model import Action, AgentState, HostState, Inventory, IPNetwork, Peer, RunningPeer
from wgmesh.peers import endpoint_name
from wgmesh.remote.hooks import chain_names, expected_rules, mss_chain
from wgmesh.remote.steps import Op, Program, step
from wgmesh.render import fingerprints, sha256


@dataclass(frozen=True)
class Desired:
    """What a host should run: its config text, and what that config makes the host run."""

    text: str
    peers: Mapping[str, RunningPeer]  # public key → expected
    listen_port: int
    routes: frozenset[str]  # as `ip route` shows them (a /32 or /128 without its length)
    rules: Mapping[tuple[int, str], int]  # (family, "fwd"/"mss"/"nat") → rules in that chain
    agent: bytes | None = None  # the failover agent's bundle (ha.bundle), where the mesh has HA sites


def _route(net: IPNetwork) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def desired_state(
    inv: Inventory, peer: Peer, public_keys: Mapping[str, str], text: str, active: ha.Active | None = None,
    agent: bytes | None = None,
) -> Desired:
    """`active`: the HA sites' active gateways the text was rendered with; `agent`: the failover
    agent's bundle for this host (meshes with HA sites)."""
    peers = {}
    routes: set[str] = set()
    for o in inv.peers:
        if o.name == peer.name or o.name not in public_keys:
            continue
        # A DNS endpoint runs as the address it resolved to: only IP endpoints are compared.
        endpoint = o.endpoint if endpoint_name(o) is None else None
        allowed = ha.allowed_ips(inv, o, peer.name, active)
        peers[public_keys[o.name]] = RunningPeer(frozenset(str(n) for n in allowed), endpoint, peer.keepalive)
        routes.update(_route(n) for n in allowed)
    for site in ha.sites(inv).values():  # the other gateway holds them when the active one does not
        if peer.name not in site.names():
            routes.update(_route(n) for n in site.subnets)
    return Desired(text, peers, peer.listen_port, frozenset(routes), expected_rules(inv, peer), agent)


# Drift kinds, each repaired by its own step (see decide).
PEERS, ROUTES, FIREWALL, UNIT = "peers", "routes", "firewall", "unit"


def _peer_drift(desired: Desired, state: HostState) -> list[str]:
    if state.running_peers != frozenset(desired.peers):
        gone = len(set(desired.peers) - state.running_peers)
        extra = len(state.running_peers - set(desired.peers))
        return [f"running peers differ from the config file ({gone} missing, {extra} unknown)"]
    out = []
    for key, want in sorted(desired.peers.items()):
        got = state.peers.get(key)
        if got is None:
            continue  # a probe that reported keys only
        if got.allowed_ips != want.allowed_ips:
            out.append(f"peer {key[:8]}… runs allowed IPs {', '.join(sorted(got.allowed_ips)) or '(none)'}")
        elif want.endpoint is not None and got.endpoint != want.endpoint:
            out.append(f"peer {key[:8]}… runs endpoint {got.endpoint or '(none)'}, not {want.endpoint}")
        elif got.keepalive != want.keepalive:
            out.append(f"peer {key[:8]}… runs keepalive {got.keepalive or 'off'}")
    if state.listen_port is not None and state.listen_port != desired.listen_port:
        out.append(f"listens on port {state.listen_port}, not {desired.listen_port}")
    return out


def _route_drift(desired: Desired, state: HostState) -> list[str]:
    if state.routes is None:
        return []
    out = []
    missing = sorted(desired.routes - state.routes)
    stale = sorted(state.routes - desired.routes)
    if missing:
        out.append(f"route{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)}")
    if stale:
        out.append(f"stale route{'s' if len(stale) > 1 else ''}: {', '.join(stale)}")
    return out


def _rule_drift(desired: Desired, state: HostState, iface: str) -> list[str]:
    if not state.rules and state.routes is None:
        return []  # a probe that does not report rules
    fwd, nat = chain_names(iface)
    chains = {"fwd": fwd, "nat": nat, "mss": mss_chain(iface)}
    out = []
    for (family, kind), expected in sorted(desired.rules.items()):
        chain = chains[kind]
        count, jump = state.rules.get((family, kind), (-1, False))
        # PostUp masquerades out of the family's egress: a host with no default route of that
        # family (an IPv4-only uplink) rightly has an empty NAT chain.
        want = 0 if kind == "nat" and count == 0 and family in state.no_egress else expected
        if count == -1:
            out.append(f"chain {chain} (IPv{family}) is missing")
        elif count != want:
            out.append(f"chain {chain} (IPv{family}) has {count} rules, not {want}")
        if not jump:
            out.append(f"no jump into {chain} (IPv{family})")
    return out


def drift(desired: Desired, state: HostState, iface: str = "wg0") -> list[tuple[str, str]]:
    """What the running interface differs in from what its config makes it run: (kind, what).
    Meaningful for an interface that is up with the desired [Interface] (else the plan restarts it)."""
    out = [(PEERS, d) for d in _peer_drift(desired, state)]
    out += [(ROUTES, d) for d in _route_drift(desired, state)]
    out += [(FIREWALL, d) for d in _rule_drift(desired, state, iface)]
    if state.systemd and state.unit != "enabled":
        out.append((UNIT, f"wg-quick@{iface} is {state.unit or 'not installed'}, not enabled"))
    return out


@dataclass(frozen=True)
class Plan:
    action: Action  # UNCHANGED, SYNCCONF, RESTART, START or REPAIR
    write: bool  # the config file must be (re)written
    reason: str
    repairs: tuple[str, ...] = ()  # drift kinds repaired besides the action (ROUTES, FIREWALL, UNIT)


def decide(desired: Desired, state: HostState, iface: str = "wg0") -> Plan:
    """The mildest action that makes the host run `desired`."""
    file_sha, iface_sha = fingerprints(desired.text)
    same_file = state.file_sha == file_sha
    if not state.interface_up:
        return Plan(Action.START, not same_file, "interface is down" if same_file else "interface is down; new config")
    if state.iface_sha != iface_sha:
        return Plan(Action.RESTART, not same_file, "[Interface] changed")
    found = drift(desired, state, iface)
    kinds = list(dict.fromkeys(kind for kind, _ in found))
    if not same_file:
        extra = tuple(k for k in kinds if k in (FIREWALL, UNIT))
        return Plan(Action.SYNCCONF, True, "peers changed" + _also(extra), extra)
    if PEERS in kinds:
        extra = tuple(k for k in kinds if k in (FIREWALL, UNIT))
        first = next(text for kind, text in found if kind == PEERS)
        return Plan(Action.SYNCCONF, False, first + _also(extra), extra)
    if kinds:
        return Plan(Action.REPAIR, False, "repaired: " + ", ".join(kinds), tuple(kinds))
    return Plan(Action.UNCHANGED, False, "up to date")


def findings(desired: Desired, state: HostState, iface: str = "wg0") -> list[str]:
    """Everything a host runs differently from the inventory, in words (status, verify)."""
    if not state.interface_up:
        return [f"interface {iface} is down"]
    out = []
    file_sha, iface_sha = fingerprints(desired.text)
    if state.file_sha != file_sha:
        out.append("its config file is not the inventory's (run 'wgmesh push')")
    if state.iface_sha != iface_sha:
        return out
    return out + [text for _, text in drift(desired, state, iface)]


def _also(kinds: tuple[str, ...]) -> str:
    return "; repaired: " + ", ".join(kinds) if kinds else ""


# ---------------------------------------------------------------- programs


def probe_program(iface: str, wait_boot: int = 0) -> Program:
    """With wait_boot, first wait (that long at most) for cloud-init to finish."""
    steps = [step(Op.WAIT_CLOUD_INIT, int(wait_boot))] if wait_boot > 0 else []
    return Program("probe", iface, (*steps, step(Op.PROBE)))


APPLY_LIMIT = 85  # seconds the host lets an apply run (the controller waits APPLY_TIMEOUT)


def apply_program(plan: Plan, iface: str, systemd: bool, text: str = "") -> Program:
    """The steps that carry out `plan` (the config `text` on standard input when plan.write)."""
    steps = [step(Op.PREPARE)]
    if plan.write:
        steps.append(step(Op.STAGE, sha256(text)))
    restarting = plan.action in (Action.START, Action.RESTART)
    if restarting:
        steps.append(step(Op.DOWN, systemd))  # with the old file, before it is replaced
    if plan.write:
        steps.append(step(Op.INSTALL))
    if restarting:
        steps.append(step(Op.START, systemd, plan.action == Action.RESTART))
    elif plan.action == Action.SYNCCONF:
        steps += [step(Op.SYNCCONF), step(Op.SYNC_ROUTES)]
    elif ROUTES in plan.repairs:
        steps.append(step(Op.SYNC_ROUTES))
    if FIREWALL in plan.repairs:
        steps.append(step(Op.RESTORE_RULES))
    if UNIT in plan.repairs:
        steps.append(step(Op.ENABLE_UNIT))
    steps.append(step(Op.FINISH))
    return Program("apply", iface, tuple(steps), stdin=plan.write, exclusive=True, time_limit=APPLY_LIMIT)


INSTALL, START, REMOVE = "install", "start", "remove"


def agent_plan(desired: Desired, state: HostState) -> tuple[str, str] | None:
    """What the failover agent needs on the host: (INSTALL / START / REMOVE, why), or None."""
    have = state.agent
    if desired.agent is None:
        return (REMOVE, "no HA site any more: agent removed") if have.installed else None
    if have.installed != ha.bundle_sha(desired.agent):
        return INSTALL, "agent installed" if have.installed is None else "agent updated"
    if not have.running:
        return START, "agent was not running: started"
    return None


def agent_program(action: str, systemd: bool, bundle: bytes | None = None) -> Program:
    steps = []
    if action == INSTALL:
        assert bundle is not None
        steps.append(step(Op.AGENT_INSTALL, ha.bundle_sha(bundle)))
    steps.append(step(Op.AGENT_REMOVE if action == REMOVE else Op.AGENT_START, systemd))
    return Program("agent", "wg0", tuple(steps), stdin=action == INSTALL, exclusive=True, time_limit=APPLY_LIMIT)


def takeover_program(iface: str) -> Program:
    return Program("failover", iface, (step(Op.AGENT_TAKEOVER),), exclusive=True, time_limit=APPLY_LIMIT)


def agent_state_program(iface: str) -> Program:
    return Program("agent state", iface, (step(Op.AGENT_STATE),))


def stop_program(iface: str) -> Program:
    return Program("stop", iface, (step(Op.STOP_ALL),), exclusive=True, time_limit=APPLY_LIMIT)


def dump_program(iface: str) -> Program:
    return Program("wg show", iface, (step(Op.DUMP),))


def ping_program(targets: list[str], iface: str, attempts: int = 3, wait: int = 2, size: int = 0) -> Program:
    """Targets are ipaddress strings made by wgmesh, never user text (and quoted all the same).
    With size, each echo carries that many bytes of data and the don't-fragment bit."""
    return Program("probe", iface, (step(Op.PING, attempts, wait, size, *targets),))


# ---------------------------------------------------------------- the probe's report


def _running_peer(fields: list[str]) -> RunningPeer:
    allowed, endpoint, keepalive = (fields + ["(none)", "(none)", "off"])[:3]
    return RunningPeer(
        frozenset() if allowed == "(none)" else frozenset(allowed.split(",")),
        None if endpoint == "(none)" else endpoint,
        None if keepalive in ("off", "0") else int(keepalive),
    )


def parse_agent_state(rest: str, installed: str | None, running: bool) -> AgentState:
    """`agent_state NOW JSON` (the host's clock, then its agent's state.json)."""
    now, _, text = rest.partition(" ")
    d = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError("agent state is not an object")
    updated = d.get("updated")
    return AgentState(
        installed=installed, running=running, role=str(d.get("role") or ""), epoch=int(d.get("epoch") or 0),
        since=float(d.get("since") or 0), cause=str(d.get("cause") or ""), active=d.get("active"),
        owners={str(k): str(v) for k, v in (d.get("owners") or {}).items()},
        route_table=str(d.get("route_table") or ""),
        age=round(float(now) - float(updated), 1) if updated is not None else None,
    )


def parse_agent_report(text: str) -> AgentState:
    """scripts/agent.sh's wgm_agent_state lines → AgentState. ValueError if garbled."""
    sha, running, state = None, False, None
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "agent":
            sha = rest or None
        elif word == "agent_running":
            running = True
        elif word == "agent_state":
            state = rest
    try:
        return parse_agent_state(state, sha, running) if state else AgentState(sha, running)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"the host's agent state is garbled ({exc})") from None


def parse_probe(text: str) -> HostState:  # noqa: PLR0912, PLR0915 - one branch per line kind of the probe
    """scripts/probe.sh's report → HostState. ValueError for a report cut short or garbled."""
    file_sha = iface_sha = unit = None
    up = systemd = False
    port = None
    peers: dict[str, RunningPeer] = {}
    routes: set[str] | None = None
    rules: dict[tuple[int, str], tuple[int, bool]] = {}
    agent_lines: list[str] = []
    no_egress: set[int] = set()
    ended = False
    try:
        for line in text.splitlines():
            word, _, rest = line.strip().partition(" ")
            fields = rest.split()
            if word == "file" and rest != "-":
                file_sha = rest
            elif word == "iface" and rest != "-":
                iface_sha = rest
            elif word == "up":
                up, routes = True, set()
            elif word == "port":
                port = int(rest)
            elif word == "peer" and fields:
                peers[fields[0]] = _running_peer(fields[1:])
            elif word == "route" and routes is not None and fields:
                routes.add(fields[0])
            elif word == "rules" and len(fields) == 4:
                rules[(int(fields[0]), fields[1])] = (int(fields[2]), fields[3] == "1")
            elif word == "noegress" and fields:
                no_egress.add(int(fields[0]))
            elif word == "systemd":
                systemd = True
            elif word == "unit":
                unit = rest or None
            elif word.startswith("agent"):
                agent_lines.append(line)
            elif word == "wg" and rest == "missing":
                raise ValueError("wireguard-tools (wg, wg-quick) is not installed on the host")
            elif word == "end":
                ended = True
    except (TypeError, ValueError) as exc:
        if "not installed" in str(exc):
            raise
        raise ValueError(f"the host's probe output is garbled ({exc})") from None
    if not ended:
        raise ValueError("the host's probe output was cut short")
    agent = parse_agent_report("\n".join(agent_lines))
    return HostState(
        reachable=True, interface_up=up, file_sha=file_sha, iface_sha=iface_sha, systemd=systemd,
        running_peers=frozenset(peers), listen_port=port, peers=peers,
        routes=frozenset(routes) if routes is not None else None, rules=rules, unit=unit, agent=agent,
        no_egress=frozenset(no_egress),
    )
