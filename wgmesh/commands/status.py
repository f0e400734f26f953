"""status: who has a handshake with whom, how long ago, bytes each way; unreachable hosts,
pending revocations and unknown keys."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wgmesh import ha, store
from wgmesh import keys as keymod
from wgmesh import revocations as revmod
from wgmesh import status as statmod
from wgmesh.commands import releasing
from wgmesh.commands.probe import host_drift
from wgmesh.errors import ExitStatus
from wgmesh.executor import DEFAULT_PARALLEL, fan_out
from wgmesh.model import Action, HostResult, HostState, Inventory, Peer
from wgmesh.remote import plan as planmod
from wgmesh.remote.exits import remote_reason
from wgmesh.remote.host import PROBE_TIMEOUT, Connector, Pool, ssh_pool
from wgmesh.workspace import Workspace


@dataclass(frozen=True)
class SiteView:
    """An HA site as its agents report it."""

    site: str
    gateways: tuple[str, str]
    active: str | None
    epoch: int = 0
    since: float | None = None  # wall-clock time (the active gateway's clock) of the last switch
    cause: str = ""
    roles: dict[str, str] = field(default_factory=dict)  # gateway → active / standby / "agent down" / "unreachable"
    route_table: dict[str, str] = field(default_factory=dict)  # gateway → held / - / error: …
    problems: tuple[str, ...] = ()

    @property
    def standby(self) -> str | None:
        if self.active is None:
            return None
        return next(g for g in self.gateways if g != self.active)

    def to_json(self) -> dict[str, Any]:
        return {
            "active": self.active, "standby": self.standby, "epoch": self.epoch,
            "since": None if self.since is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
            "cause": self.cause, "gateways": {g: {"role": self.roles.get(g, "unreachable"),
                                                  "route_table": self.route_table.get(g, "")} for g in self.gateways},
            "problems": list(self.problems),
        }


def ha_view(inv: Inventory, states: Mapping[str, HostState]) -> dict[str, SiteView]:
    """Per HA site: who is active, since when and why, and anything wrong (no active gateway,
    two, a host that routes the site elsewhere, a gateway whose route table fails). Pure."""
    out = {}
    for site in ha.sites(inv).values():
        names = site.names()
        roles = {g: _role(states.get(g)) for g in names}
        tables = {g: st.agent.route_table for g in names if (st := states.get(g)) is not None and st.agent.running}
        actives = [g for g in names if roles[g] == "active"]
        problems = []
        if not actives:
            problems.append("no gateway is active")
        elif len(actives) == 2:
            problems.append("both gateways say they are active")
        active = max(actives, key=lambda g: states[g].agent.epoch) if actives else None
        for g, t in tables.items():
            if t.startswith("error"):
                problems.append(f"{g}: route table: {t}")
            elif g == active and t != "held":
                problems.append(f"{g}: route table not taken yet ({t})")
            elif g != active and active is not None and t == "held":
                problems.append(f"{g}: standby still holds the route table")
        if active is not None:
            for name, st in sorted(states.items()):
                if name in names or not st.agent.running or site.name not in st.agent.owners:
                    continue
                if st.agent.owners[site.name] != active:
                    problems.append(f"{name} routes {site.name} to {st.agent.owners[site.name]}, not {active}")
        a = states[active].agent if active else None
        out[site.name] = SiteView(
            site.name, names, active, a.epoch if a else 0, a.since if a else None, a.cause if a else "",
            roles, tables, tuple(problems),
        )
    return out


def _role(st: HostState | None) -> str:
    if st is None:
        return "unreachable"
    if not st.agent.running:
        return "agent down"
    return st.agent.role or "starting"


@dataclass
class StatusResult:
    links: list[statmod.Link]
    unreachable: dict[str, str]  # peer → reason
    foreign_keys: dict[str, list[str]]  # peer → public keys configured there that no inventory peer has
    peers: list[Peer] = field(default_factory=list)
    pending: list[revmod.Revocation] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)  # peers without SSH access: no view of their own
    drift: dict[str, list[str]] = field(default_factory=dict)  # host → what it runs differently
    ha: dict[str, SiteView] = field(default_factory=dict)  # HA site → as its agents report it

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.HOSTS_FAILED if self.unreachable or self.pending else ExitStatus.OK

    def to_json(self) -> dict[str, Any]:
        by_pair = {(lk.src, lk.dst): lk for lk in self.links}
        names = [p.name for p in self.peers]
        return {
            "peers": [
                {"name": p.name, "endpoint": p.endpoint, "address": str(p.address),
                 "address6": str(p.address6) if p.address6 else None, "region": p.region,
                 "cloud": p.cloud, "managed": p.name not in self.unmanaged,
                 "reached": p.name not in self.unreachable and p.name not in self.unmanaged,
                 "rx_bytes": sum(lk.rx for lk in self.links if lk.src == p.name),
                 "tx_bytes": sum(lk.tx for lk in self.links if lk.src == p.name)}
                for p in self.peers
            ],
            "matrix": {
                a: {b: {"state": by_pair[(a, b)].state, "handshake_age": by_pair[(a, b)].age}
                    for b in names if b != a and (a, b) in by_pair}
                for a in names
            },
            "links": [
                {"from": lk.src, "to": lk.dst, "state": lk.state, "handshake_age": lk.age, "endpoint": lk.endpoint,
                 "rx_bytes": lk.rx, "tx_bytes": lk.tx}
                for lk in self.links
            ],
            "unreachable": self.unreachable,
            "unknown_keys": self.foreign_keys,
            "drift": self.drift,
            "ha": {name: v.to_json() for name, v in self.ha.items()},
            "pending_revocations": [
                {"peer": r.peer, "public_key": r.key, "why": r.why, "hosts": list(r.hosts), "since": r.since}
                for r in self.pending
            ],
        }


def collect_status(inv: Inventory, keys: keymod.Keys, pool: Pool, parallel: int) -> StatusResult:
    dumps: dict[str, statmod.InterfaceStatus | None] = {}
    down: set[str] = set()
    iface = inv.mesh.interface

    def one(peer: Peer) -> HostResult:
        if peer.ssh is None:  # not managed by wgmesh: seen only through the others' views
            dumps[peer.name] = None
            return HostResult(peer.name, True, Action.SKIPPED, "no SSH access")
        rc, out, err = pool.get(peer).run(planmod.dump_program(iface), timeout=PROBE_TIMEOUT)
        if rc != 0 or not out.strip():
            dumps[peer.name] = None
            if "No such device" in err or "Unable to access interface" in err:
                down.add(peer.name)
                return HostResult(peer.name, False, Action.DOWN, f"interface {iface} is not up")
            return HostResult(peer.name, False, Action.FAILED, remote_reason("wg show", rc, err))
        dumps[peer.name] = statmod.parse_dump(out)
        return HostResult(peer.name, True, Action.OK)

    results = fan_out(inv.peers, key=lambda p: p.name, work=releasing(pool, one), parallel=parallel)
    reasons: dict[str, str] = {}
    for name, r in results.items():
        if not r.ok:
            reasons[name] = r.detail
            dumps.setdefault(name, None)
    pubs = store.public_keys(keys, inv)
    foreign = {n: statmod.unknown_keys(pubs, d) for n, d in dumps.items() if d is not None}
    links = statmod.matrix(inv, pubs, dumps, int(time.time()), down)
    unmanaged = sorted(p.name for p in inv.peers if p.ssh is None)
    return StatusResult(links, reasons, {n: k for n, k in foreign.items() if k}, list(inv.peers), unmanaged=unmanaged)


def status(ws: Workspace, parallel: int = DEFAULT_PARALLEL, connect: Connector = ssh_pool) -> StatusResult:
    inv = store.load(ws)
    keys = store.keystore(ws).load()
    with connect(ws, inv, 0.0) as pool:
        res = collect_status(inv, keys, pool, parallel)
        reached = [p for p in inv.peers if p.ssh is not None and p.name not in res.unreachable]
        res.drift, states = host_drift(inv, keys, pool, reached, parallel)
        res.ha = ha_view(inv, states)
    res.pending = store.load_revocations(ws)
    return res
