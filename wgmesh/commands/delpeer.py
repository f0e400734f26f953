"""delpeer: stop WireGuard on the peer, purge its keys and PSKs, push the removal to the others
(hitless). Hosts not reached keep trusting its key: a pending revocation, retried by push."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wgmesh import ha, store
from wgmesh import inventory as invmod
from wgmesh import keys as keymod
from wgmesh import revocations as revmod
from wgmesh.commands.destroy import stop_hosts
from wgmesh.commands.push import PushResult, push_configs
from wgmesh.errors import BadInput, ExitStatus
from wgmesh.executor import DEFAULT_PARALLEL
from wgmesh.model import HostResult
from wgmesh.progress import Reporter
from wgmesh.remote.host import Connector, ssh_pool
from wgmesh.workspace import Workspace


@dataclass
class DelResult:
    name: str
    stop: HostResult | None  # None: the peer had no SSH access
    push: PushResult

    @property
    def exit_status(self) -> ExitStatus:
        failed = not self.push.ok or (self.stop is not None and not self.stop.ok)
        return ExitStatus.HOSTS_FAILED if failed else ExitStatus.OK

    def to_json(self) -> dict[str, Any]:
        return {"removed": self.name, "stopped": bool(self.stop and self.stop.ok),
                "stop_detail": self.stop.detail if self.stop else "", "push": self.push.to_json()}


def delpeer(
    ws: Workspace, name: str, reporter: Reporter, parallel: int = DEFAULT_PARALLEL, connect: Connector = ssh_pool
) -> DelResult:
    inv = store.load(ws)
    removed = invmod.require_peer(inv, name)
    if (site := ha.site_of(inv, name)) is not None:
        raise BadInput(
            "NAME", name, f"is one of the two gateways of HA site {site.name!r}: the site would be left without "
            "its route table", hint="a site's gateways come and go with its stack (e.g. up --var ha=false)",
        )
    remaining = invmod.remove_peer(inv, name)
    with connect(ws, inv, 0.0) as pool:
        stop = None
        if removed.ssh is not None:
            stop = stop_hosts(inv, pool, reporter, parallel, names={name}).get(name)
        keystore = store.keystore(ws)
        current = keystore.load()
        store.revoke(ws, store.key_pairs_of(current, [name]), revmod.REMOVED, store.managed(remaining))
        store.save(ws, remaining)
        keys = keymod.purge(current, [name])
        keystore.save(keys)
        keystore.drop_backups()
        pushed = push_configs(ws, remaining, keys, pool, reporter=reporter, parallel=parallel)
    return DelResult(name, stop, pushed)
