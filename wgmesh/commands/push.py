"""push: render and apply on every peer at once: first start / syncconf + routes / restart / nothing."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from wgmesh import ha, peers, store
from wgmesh import keys as keymod
from wgmesh import revocations as revmod
from wgmesh.commands import HostsOutcome, releasing
from wgmesh.commands.genconfig import write_configs
from wgmesh.commands.probe import agent_bundle, agents, probe_host, probe_hosts
from wgmesh.errors import ExitStatus
from wgmesh.executor import DEFAULT_PARALLEL, fan_out
from wgmesh.model import Action, HostResult, HostState, Inventory, Peer
from wgmesh.progress import Reporter
from wgmesh.remote import plan as planmod
from wgmesh.remote.exits import describe, remote_reason
from wgmesh.remote.host import APPLY_TIMEOUT, Connector, Pool, ProbeFailed, ssh_pool
from wgmesh.render import Renderer
from wgmesh.workspace import Workspace


def revocations_json(pending: list[revmod.Revocation]) -> list[dict[str, Any]]:
    return [{"peer": r.peer, "public_key": r.key, "why": r.why, "hosts": list(r.hosts)} for r in pending]


@dataclass
class PushResult(HostsOutcome):
    results: dict[str, HostResult]
    pending: list[revmod.Revocation] = field(default_factory=list)  # still trusted somewhere
    dry_run: bool = False  # results say what would be done; nothing was changed
    unresolved: dict[str, str] = field(default_factory=dict)  # peer → its DNS endpoint, left out: no answer

    @property
    def changes(self) -> list[str]:
        quiet = (Action.UNCHANGED, Action.SKIPPED)
        return [n for n, r in self.results.items() if r.ok and r.action not in quiet]

    @property
    def exit_status(self) -> ExitStatus:
        if self.dry_run and self.ok and self.changes:
            return ExitStatus.CHANGES_PENDING
        return super().exit_status

    @property
    def failed(self) -> list[str]:
        return [n for n, r in self.results.items() if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "unresolved_endpoints": self.unresolved,
            "failed": self.failed,
            "pending_revocations": revocations_json(self.pending),
            "hosts": {n: {"ok": r.ok, "action": r.action, "detail": r.detail, "seconds": r.seconds}
                      for n, r in self.results.items()},
        }


def push_host(
    pool: Pool, inv: Inventory, peer: Peer, desired: planmod.Desired, dry_run: bool = False,
    state: HostState | None = None,
) -> HostResult:
    """Probe one host (unless `state` is its probe already), decide, apply; then its failover
    agent (HA meshes). Every outcome is a HostResult."""
    t0 = time.monotonic()
    if peer.ssh is None:
        return HostResult(
            peer.name, True, Action.SKIPPED, "no SSH access: install its config from the output directory"
        )
    iface = inv.mesh.interface
    try:
        if state is None:
            state = probe_host(pool, inv, peer)
    except ProbeFailed as exc:
        return HostResult(peer.name, False, Action.FAILED, exc.reason)
    p = planmod.decide(desired, state, iface)
    agent = planmod.agent_plan(desired, state)
    action, reason = p.action, p.reason
    if agent is not None:
        action = Action.AGENT if action == Action.UNCHANGED else action
        reason = agent[1] if p.action == Action.UNCHANGED else f"{reason}; {agent[1]}"
    if action == Action.UNCHANGED or dry_run:
        return HostResult(peer.name, True, action, reason, round(time.monotonic() - t0, 3))
    host = pool.get(peer)
    if p.action != Action.UNCHANGED:
        program = planmod.apply_program(p, iface, state.systemd, desired.text)
        stdin = desired.text.encode() if p.write else None
        rc, _, err = host.run(program, stdin=stdin, timeout=APPLY_TIMEOUT)
        if rc != 0:
            return HostResult(peer.name, False, Action.FAILED, remote_reason(describe(rc, "apply"), rc, err))
    if agent is not None:
        program = planmod.agent_program(agent[0], state.systemd, desired.agent)
        rc, _, err = host.run(program, stdin=desired.agent if agent[0] == planmod.INSTALL else None,
                              timeout=APPLY_TIMEOUT)
        if rc != 0:
            return HostResult(peer.name, False, Action.FAILED, remote_reason(describe(rc, "agent"), rc, err))
    return HostResult(peer.name, True, action, reason, round(time.monotonic() - t0, 3))


def push_configs(
    ws: Workspace, inv: Inventory, keys: keymod.Keys, pool: Pool, *, reporter: Reporter, parallel: int,
    dry_run: bool = False,
) -> PushResult:
    inv, unresolved = without_unresolved(inv)
    known: dict[str, HostState] = {}
    active = None
    if ha.has_ha(inv):
        # Who is active where is the agents' call: ask the HA gateways first, and render with
        # their answer (a push never moves a site back to the gateway the inventory lists first).
        gateways = [g for s in ha.sites(inv).values() for g in s.gateways if g.ssh is not None]
        known = probe_hosts(inv, pool, gateways, parallel)
        active = ha.active_from(inv, agents(known))
    renderer = Renderer(inv, keys, active)  # each host's text is rendered by its own worker: memory stays flat
    if not dry_run and ws.backend is None:  # a shared keystore's keys never land on this disk
        write_configs(ws, inv, keys, renderer=renderer)
    pubs = store.public_keys(keys, inv)

    def one(p: Peer) -> HostResult:
        desired = planmod.desired_state(
            inv, p, pubs, renderer.text(p.name), active, agent_bundle(inv, pubs, p)
        )
        return push_host(pool, inv, p, desired, dry_run, known.get(p.name))

    results = fan_out(
        inv.peers, key=lambda p: p.name, work=releasing(pool, one), parallel=parallel,
        on_start=reporter.host_start, on_done=reporter.host_done,
    )
    if dry_run:
        return PushResult(results, store.load_revocations(ws), dry_run=True, unresolved=unresolved)
    done = [n for n, r in results.items() if r.ok and r.action != Action.SKIPPED]
    return PushResult(results, store.settle_revocations(ws, inv, done), unresolved=unresolved)


def without_unresolved(inv: Inventory) -> tuple[Inventory, dict[str, str]]:
    """A DNS endpoint that does not resolve on the controller is left out of every config (the
    others wait for that peer to connect) instead of making `wg` on every host retry the name
    and fail: one bad name never blocks the others. → (inventory as pushed, peer → endpoint)."""
    from wgmesh.adapters import dns

    names = {n for p in inv.peers if (n := peers.endpoint_name(p)) is not None}
    bad = dns.unresolved(names)
    if not bad:
        return inv, {}
    gone = {p.name: p.endpoint or "" for p in inv.peers if p.endpoint_host in bad}
    kept = tuple(
        replace(p, endpoint_host=None, endpoint_port=None) if p.name in gone else p for p in inv.peers
    )
    return replace(inv, peers=kept), gone


def push(
    ws: Workspace, reporter: Reporter, parallel: int = DEFAULT_PARALLEL, connect: Connector = ssh_pool,
    dry_run: bool = False,
) -> PushResult:
    """Apply the inventory on every host; with dry_run, only say per host what would change and why."""
    inv = store.load(ws)
    if dry_run:  # touch nothing: keys a new peer would get are made in memory only
        keys, _ = keymod.ensure(store.keystore(ws).load(), inv.names)
    else:
        keys, _ = store.ensure_keys(ws, inv)
    reporter.expect(len(inv.peers), "push")
    with connect(ws, inv, 0.0) as pool:
        return push_configs(ws, inv, keys, pool, reporter=reporter, parallel=parallel, dry_run=dry_run)
