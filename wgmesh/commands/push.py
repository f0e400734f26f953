"""push: render and apply on every peer at once: first start / syncconf + routes / restart / nothing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from wgmesh import keys as keymod
from wgmesh import revocations as revmod
from wgmesh import store
from wgmesh.commands import HostsOutcome
from wgmesh.commands.genconfig import write_configs
from wgmesh.executor import DEFAULT_PARALLEL, fan_out
from wgmesh.model import Action, HostResult, Inventory, Peer
from wgmesh.progress import Reporter
from wgmesh.remote import plan as planmod
from wgmesh.remote.exits import describe, remote_reason
from wgmesh.remote.host import APPLY_TIMEOUT, PROBE_TIMEOUT, Connector, Pool, ssh_pool
from wgmesh.render import Renderer
from wgmesh.workspace import Workspace


def revocations_json(pending: list[revmod.Revocation]) -> list[dict[str, Any]]:
    return [{"peer": r.peer, "public_key": r.key, "why": r.why, "hosts": list(r.hosts)} for r in pending]


@dataclass
class PushResult(HostsOutcome):
    results: dict[str, HostResult]
    pending: list[revmod.Revocation] = field(default_factory=list)  # still trusted somewhere

    @property
    def failed(self) -> list[str]:
        return [n for n, r in self.results.items() if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "pending_revocations": revocations_json(self.pending),
            "hosts": {n: {"ok": r.ok, "action": r.action, "detail": r.detail, "seconds": r.seconds}
                      for n, r in self.results.items()},
        }


def push_host(pool: Pool, inv: Inventory, peer: Peer, text: str, peer_keys: frozenset[str]) -> HostResult:
    """Probe one host, decide, apply. Every outcome is a HostResult."""
    t0 = time.monotonic()
    if peer.ssh is None:
        return HostResult(
            peer.name, True, Action.SKIPPED, "no SSH access: install its config from the output directory"
        )
    host = pool.get(peer)
    iface = inv.mesh.interface
    wait_boot = int(pool.wait_ssh)
    rc, out, err = host.run(planmod.probe_program(iface, wait_boot), timeout=PROBE_TIMEOUT + wait_boot)
    if rc != 0:
        return HostResult(peer.name, False, Action.FAILED, remote_reason("probe", rc, err))
    try:
        state = planmod.parse_probe(out)
    except ValueError as exc:
        return HostResult(peer.name, False, Action.FAILED, str(exc))
    p = planmod.decide(text, peer_keys, state)
    if p.action == Action.UNCHANGED:
        return HostResult(peer.name, True, p.action, p.reason, round(time.monotonic() - t0, 3))
    program = planmod.apply_program(p, iface, state.systemd)
    rc, out, err = host.run(program, stdin=text.encode() if p.write else None, timeout=APPLY_TIMEOUT)
    if rc != 0:
        return HostResult(peer.name, False, Action.FAILED, remote_reason(describe(rc, "apply"), rc, err))
    return HostResult(peer.name, True, p.action, p.reason, round(time.monotonic() - t0, 3))


def push_configs(
    ws: Workspace, inv: Inventory, keys: keymod.Keys, pool: Pool, *, reporter: Reporter, parallel: int
) -> PushResult:
    renderer = Renderer(inv, keys)  # each host's text is rendered by its own worker: memory stays flat
    write_configs(ws, inv, keys, renderer=renderer)
    pubs = store.public_keys(keys, inv)
    everyone = frozenset(pubs.values())
    results = fan_out(
        inv.peers,
        key=lambda p: p.name,
        work=lambda p: push_host(pool, inv, p, renderer.text(p.name), everyone - {pubs[p.name]}),
        parallel=parallel,
        on_start=reporter.host_start,
        on_done=reporter.host_done,
    )
    done = [n for n, r in results.items() if r.ok and r.action != Action.SKIPPED]
    return PushResult(results, store.settle_revocations(ws, inv, done))


def push(
    ws: Workspace, reporter: Reporter, parallel: int = DEFAULT_PARALLEL, connect: Connector = ssh_pool
) -> PushResult:
    inv = store.load(ws)
    keys, _ = store.ensure_keys(ws, inv)
    reporter.expect(len(inv.peers), "push")
    with connect(ws, inv, 0.0) as pool:
        return push_configs(ws, inv, keys, pool, reporter=reporter, parallel=parallel)
