"""rotate-keys: new key pairs (and so new PSKs) for some or all peers, pushed to every peer at
once. The old public keys are pending revocations until every managed host runs the new
configs; the retired key pairs are purged then."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from wgmesh import inventory as invmod
from wgmesh import keys as keymod
from wgmesh import revocations as revmod
from wgmesh import store
from wgmesh.commands.push import PushResult, push_configs
from wgmesh.errors import ExitStatus
from wgmesh.executor import DEFAULT_PARALLEL
from wgmesh.progress import Reporter
from wgmesh.remote.host import Connector, ssh_pool
from wgmesh.workspace import Workspace


@dataclass
class RotateResult:
    rotated: list[str]
    push: PushResult

    @property
    def exit_status(self) -> ExitStatus:
        return self.push.exit_status

    def to_json(self) -> dict[str, Any]:
        return {"rotated": self.rotated, "push": self.push.to_json()}


def rotate_keys(
    ws: Workspace, names: list[str] | None, reporter: Reporter, parallel: int = DEFAULT_PARALLEL,
    connect: Connector = ssh_pool,
) -> RotateResult:
    """New key pairs for `names` (None = every peer)."""
    inv = store.load(ws)
    chosen = list(inv.names) if names is None else names
    for n in chosen:
        invmod.require_peer(inv, n, field="NAME")
    keystore = store.keystore(ws)
    current, _ = keymod.ensure(keystore.load(), inv.names)
    keys, old = keymod.rotate(current, chosen)
    revs = revmod.load(ws.revocations_path)
    now = int(time.time())
    for n, pub in old.items():
        revs = revmod.add(revs, n, pub, revmod.ROTATED, store.managed(inv), now)
    ws.private_state_dir()
    keystore.save(keys)
    revmod.save(ws.revocations_path, revs)
    reporter.expect(len(inv.peers), "push")
    with connect(ws, inv, 0.0) as pool:
        pushed = push_configs(ws, inv, keys, pool, reporter=reporter, parallel=parallel)
    return RotateResult(sorted(old), pushed)
