"""destroy: stop WireGuard on the peers, terraform destroy, remove rendered configs, forget the
Terraform peers (their keys and host-key pins; hand-added peers keep theirs)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wgmesh import inventory as invmod
from wgmesh import store
from wgmesh.commands import releasing
from wgmesh.commands.up import init_mode, terraform_for
from wgmesh.errors import ExitStatus
from wgmesh.executor import DEFAULT_PARALLEL, fan_out
from wgmesh.model import Action, HostResult, Inventory, Peer, Source
from wgmesh.progress import Reporter
from wgmesh.remote import plan as planmod
from wgmesh.remote.exits import remote_reason
from wgmesh.remote.host import APPLY_TIMEOUT, Connector, Pool, ssh_pool
from wgmesh.workspace import Workspace


@dataclass
class DestroyResult:
    stopped: dict[str, HostResult]
    terraform: str  # "destroyed" / "no state" / "no stack"
    removed_peers: list[str]
    purged_keys: list[str]
    kept_keys: list[str]
    configs_removed: int
    pins_forgotten: list[str]  # known_hosts entries of the hosts that went; those of remaining peers stay

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.HOSTS_FAILED if any(not r.ok for r in self.stopped.values()) else ExitStatus.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "terraform": self.terraform, "removed_peers": self.removed_peers, "purged_keys": self.purged_keys,
            "kept_keys": self.kept_keys, "configs_removed": self.configs_removed,
            "stopped": {n: {"ok": r.ok, "detail": r.detail} for n, r in self.stopped.items()},
        }


def stop_hosts(
    inv: Inventory, pool: Pool, reporter: Reporter, parallel: int, names: Iterable[str] | None = None
) -> dict[str, HostResult]:
    """Stop and disable WireGuard on the peers (all, or `names`); remove their config."""
    program = planmod.stop_program(inv.mesh.interface)

    def one(peer: Peer) -> HostResult:
        if peer.ssh is None:
            return HostResult(peer.name, True, Action.SKIPPED, "no SSH access")
        rc, _, err = pool.get(peer).run(program, timeout=APPLY_TIMEOUT)
        if rc != 0:
            return HostResult(peer.name, False, Action.FAILED, remote_reason("stop", rc, err))
        return HostResult(peer.name, True, Action.STOPPED)

    chosen = None if names is None else set(names)
    peers = [p for p in inv.peers if chosen is None or p.name in chosen]
    return fan_out(peers, key=lambda p: p.name, work=releasing(pool, one), parallel=parallel,
                   on_start=reporter.host_start, on_done=reporter.host_done)


def _remove_outputs(ws: Workspace) -> int:
    count = 0
    if ws.output_dir.is_dir():
        for f in ws.output_dir.glob("*.conf"):
            f.unlink()
            count += 1
        for f in ws.output_dir.glob("mesh.*"):  # what `graph` drew
            f.unlink()
        if not any(ws.output_dir.iterdir()):
            ws.output_dir.rmdir()
    return count


def destroy(
    ws: Workspace, reporter: Reporter, parallel: int = DEFAULT_PARALLEL, stop: bool = True,
    connect: Connector = ssh_pool,
) -> DestroyResult:
    inv = store.load_if_exists(ws)
    stack = inv.stack if inv is not None else None
    # Every refusal (stack gone, variables no longer valid, keystore) before any host is touched.
    tf = terraform_for(ws, stack, dict(inv.vars), reporter) if inv is not None and stack else None
    store.keystore(ws).load()
    stopped: dict[str, HostResult] = {}
    if stop and inv is not None and inv.peers:
        reporter.phase("stop WireGuard on the peers")
        with connect(ws, inv, 0.0) as pool:
            stopped = stop_hosts(inv, pool, reporter, parallel)
    tf_state = "no stack"
    if tf is not None:
        runner, root = tf
        shared = ws.backend is not None
        if shared:  # the state is in the bucket: ask Terraform (prepared and initialised once)
            runner.prepare(root)
            runner.init(init_mode(ws))
        if bool(runner.state_pull().get("resources")) if shared else runner.has_state():
            reporter.phase(f"terraform destroy ({stack})")
            if not shared:
                runner.prepare(root)
                runner.init(init_mode(ws))
            runner.destroy()
            tf_state = "destroyed"
        else:
            tf_state = "no state"
    removed: list[str] = []
    purged: list[str] = []
    kept: list[str] = []
    if inv is not None:
        removed = [p.name for p in inv.peers if p.source == Source.TERRAFORM]
        remaining = invmod.forget_terraform(inv)
        before = store.keystore(ws).load()
        purged = sorted(n for n in before.pairs if n not in remaining.names)
        kept = sorted(n for n in before.pairs if n in remaining.names)
        stopped_ok = [n for n, r in stopped.items() if r.ok and r.action == Action.STOPPED]
        # Hand-added peers that were not stopped still trust the destroyed peers' keys: pending.
        store.forget_peers(ws, remaining, purged, done_hosts=stopped_ok)
        store.save(ws, remaining)
    count = _remove_outputs(ws)
    pins = _forget_pins(ws, invmod.forget_terraform(inv) if inv is not None else None)
    return DestroyResult(stopped, tf_state, removed, purged, kept, count, pins)


def _forget_pins(ws: Workspace, remaining: Inventory | None) -> list[str]:
    """Forget the host-key pins of every host no remaining peer uses (the Terraform peers and their
    instances, peers deleted earlier); a hand-added peer that stays keeps its pin."""
    if not ws.pins_path.exists():
        ws.pins_path.with_name(ws.pins_path.name + ".lock").unlink(missing_ok=True)
        return []
    from wgmesh.adapters.hostkeys import Pins, entry

    keep = set()
    for p in remaining.peers if remaining is not None else ():
        if p.ssh is not None:
            keep.add(entry(p.ssh.host, p.ssh.port))
            keep.update(entry(str(i.address), i.ssh_port) for i in p.instances)
    return Pins(ws.pins_path).keep_only(keep)
