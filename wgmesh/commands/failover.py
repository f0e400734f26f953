"""failover: a planned switch of an HA site to its other gateway (maintenance, failback).

The controller only asks: the standby's agent claims the site (a higher epoch), takes the site's
route table and tells every other agent, which move the site's prefixes to it; the old active
one yields when it hears the claim and keeps forwarding what is still in flight meanwhile. Then
the controller waits until every agent routes the site to the new gateway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from wgmesh import ha, store
from wgmesh.commands import HostsOutcome
from wgmesh.commands.status import SiteView, ha_view
from wgmesh.commands.verify import agent_states
from wgmesh.errors import BadInput, HostsFailed
from wgmesh.executor import DEFAULT_PARALLEL
from wgmesh.model import Inventory, Peer
from wgmesh.remote import plan as planmod
from wgmesh.remote.exits import describe, remote_reason
from wgmesh.remote.host import APPLY_TIMEOUT, Connector, Pool, ssh_pool
from wgmesh.workspace import Workspace

SETTLE = 10.0  # seconds to wait for every agent to route the site to the new gateway


@dataclass
class FailoverResult(HostsOutcome):
    site: str
    before: str | None  # the active gateway before
    after: str | None  # the active gateway after (as every agent reports it)
    wanted: str
    epoch: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # what still disagrees after SETTLE s
    unchanged: bool = False  # the wanted gateway was active already

    @property
    def ok(self) -> bool:
        return self.after == self.wanted and not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "site": self.site, "from": self.before, "to": self.after, "wanted": self.wanted,
            "epoch": self.epoch, "seconds": self.seconds, "unchanged": self.unchanged, "problems": self.problems,
        }


def failover(
    ws: Workspace, site_name: str, to: str | None = None, parallel: int = DEFAULT_PARALLEL,
    connect: Connector = ssh_pool,
) -> FailoverResult:
    inv = store.load(ws)
    site = ha.require_site(inv, site_name)
    if to is not None and to not in site.names():
        raise BadInput("--to", to, f"is not a gateway of site {site.name!r} ({', '.join(site.names())})")
    managed = [p for p in inv.peers if p.ssh is not None]
    with connect(ws, inv, 0.0) as pool:
        t0 = time.monotonic()
        view = ha_view(inv, agent_states(inv, pool, managed, parallel))[site.name]
        wanted = to or view.standby or _other(site, view)
        target = inv.peer(wanted)
        if view.active == wanted and not view.problems:
            return FailoverResult(site.name, view.active, view.active, wanted, view.epoch, unchanged=True)
        if view.roles.get(wanted) not in ("standby", "active"):
            raise HostsFailed(
                f"cannot fail {site.name} over to {wanted}: its agent is {view.roles.get(wanted, 'unreachable')}",
                hint="wgmesh status shows the site; wgmesh push restarts a stopped agent",
            )
        rc, _, err = pool.get(target).run(planmod.takeover_program(inv.mesh.interface), timeout=APPLY_TIMEOUT)
        if rc != 0:
            raise HostsFailed(f"{wanted}: {remote_reason(describe(rc, 'failover'), rc, err)}")
        after = _settle(inv, pool, managed, parallel, site.name, wanted)
        return FailoverResult(
            site.name, view.active, after.active, wanted, after.epoch, round(time.monotonic() - t0, 2),
            list(after.problems) + ([] if after.active == wanted else [f"{after.active or 'nobody'} is active"]),
        )


def _other(site: ha.Site, view: SiteView) -> str:
    """No gateway is active (or both are): the one that is not listed first."""
    return site.names()[1] if view.active in (None, site.names()[0]) else site.names()[0]


def _settle(inv: Inventory, pool: Pool, managed: list[Peer], parallel: int, site: str, wanted: str) -> SiteView:
    deadline = time.monotonic() + SETTLE
    while True:
        view = ha_view(inv, agent_states(inv, pool, managed, parallel))[site]
        if (view.active == wanted and not view.problems) or time.monotonic() >= deadline:
            return view
        time.sleep(0.2)

