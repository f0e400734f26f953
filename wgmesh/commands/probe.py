"""Not a command: what push, verify and status ask every host before anything else — what it
runs (scripts/probe.sh, with the failover agent's state) — and the drift between that and the
inventory."""

from __future__ import annotations

from collections.abc import Mapping

from wgmesh import ha, store
from wgmesh import keys as keymod
from wgmesh.commands import releasing
from wgmesh.executor import fan_out
from wgmesh.model import Action, AgentState, HostResult, HostState, Inventory, Peer
from wgmesh.remote import plan as planmod
from wgmesh.remote.exits import remote_reason
from wgmesh.remote.host import PROBE_TIMEOUT, Pool, ProbeFailed
from wgmesh.render import Renderer


def probe_host(pool: Pool, inv: Inventory, peer: Peer) -> HostState:
    """What the host runs (scripts/probe.sh). ProbeFailed (or SshError) when it cannot say."""
    wait_boot = int(pool.wait_ssh)
    rc, out, err = pool.get(peer).run(
        planmod.probe_program(inv.mesh.interface, wait_boot), timeout=PROBE_TIMEOUT + wait_boot
    )
    if rc != 0:
        raise ProbeFailed(remote_reason("probe", rc, err))
    try:
        return planmod.parse_probe(out)
    except ValueError as exc:
        raise ProbeFailed(str(exc)) from None


def probe_hosts(inv: Inventory, pool: Pool, peers: list[Peer], parallel: int) -> dict[str, HostState]:
    """The probe of every host that can answer (the others are left out: reported elsewhere)."""
    states: dict[str, HostState] = {}

    def one(peer: Peer) -> HostResult:
        states[peer.name] = probe_host(pool, inv, peer)
        return HostResult(peer.name, True, Action.PROBED)

    fan_out(peers, key=lambda p: p.name, work=releasing(pool, one), parallel=parallel)
    return states


def agents(states: Mapping[str, HostState]) -> dict[str, AgentState]:
    return {n: s.agent for n, s in states.items()}


def agent_bundle(inv: Inventory, pubs: Mapping[str, str], peer: Peer) -> bytes | None:
    """The failover agent's files for this host, where the mesh has HA sites."""
    if not ha.has_ha(inv) or peer.ssh is None:
        return None
    return ha.bundle(ha.agent_config(inv, pubs, peer))


def drift_of(
    inv: Inventory, keys: keymod.Keys, states: Mapping[str, HostState], peers: list[Peer]
) -> dict[str, list[str]]:
    """Per host, what it runs differently from what the inventory says it should (remote/plan
    findings), with the HA sites' active gateways as the agents report them."""
    if not set(inv.names) <= set(keys.pairs) or not keys.psk_secret:
        return {}  # some peer has no key yet: nothing to compare with before a push
    active = ha.active_from(inv, agents(states)) if ha.has_ha(inv) else None
    renderer = Renderer(inv, keys, active)
    pubs = store.public_keys(keys, inv)
    found: dict[str, list[str]] = {}
    for peer in peers:
        state = states.get(peer.name)
        if state is None:
            continue
        desired = planmod.desired_state(
            inv, peer, pubs, renderer.text(peer.name), active, agent_bundle(inv, pubs, peer)
        )
        seen = planmod.findings(desired, state, inv.mesh.interface)
        if (need := planmod.agent_plan(desired, state)) is not None:
            seen.append({"install": "the failover agent is missing or not the inventory's (run 'wgmesh push')",
                         "start": "the failover agent does not run",
                         "remove": "a failover agent runs, but the mesh has no HA site"}[need[0]])
        if seen:
            found[peer.name] = seen
    return dict(sorted(found.items()))


def host_drift(
    inv: Inventory, keys: keymod.Keys, pool: Pool, peers: list[Peer], parallel: int
) -> tuple[dict[str, list[str]], dict[str, HostState]]:
    """Probe the hosts, and say what each runs differently: → (drift, the probes)."""
    states = probe_hosts(inv, pool, peers, parallel)
    return drift_of(inv, keys, states, peers), states
