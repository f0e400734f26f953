"""Not a command: what push, verify and status ask every host before anything else — what it
runs (scripts/probe.sh) — and the drift between that and the inventory."""

from __future__ import annotations

from wgmesh import keys as keymod
from wgmesh import store
from wgmesh.executor import fan_out
from wgmesh.model import Action, HostResult, HostState, Inventory, Peer
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



def host_drift(
    inv: Inventory, keys: keymod.Keys, pool: Pool, peers: list[Peer], parallel: int
) -> dict[str, list[str]]:
    """Per host, what it runs differently from what the inventory says it should (the probe of
    push, compared by remote/plan.findings). Hosts that cannot say are left out: reported elsewhere."""
    if not set(inv.names) <= set(keys.pairs) or not keys.psk_secret:
        return {}  # some peer has no key yet: nothing to compare with before a push
    renderer = Renderer(inv, keys)
    pubs = store.public_keys(keys, inv)
    found: dict[str, list[str]] = {}

    def one(peer: Peer) -> HostResult:
        desired = planmod.desired_state(inv, peer, pubs, renderer.text(peer.name))
        seen = planmod.findings(desired, probe_host(pool, inv, peer), inv.mesh.interface)
        if seen:
            found[peer.name] = seen
        return HostResult(peer.name, True, Action.PROBED)

    fan_out(peers, key=lambda p: p.name, work=one, parallel=parallel)
    return dict(sorted(found.items()))
