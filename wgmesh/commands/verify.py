"""verify: prime one direction per pair, then every gateway pings every other peer's tunnel and
private address, every private instance pings every other site's instance (through its
gateway as jump host), every handshake must be fresh, and no host may run anything else than
what the inventory says (drift: routes, firewall chains, running peers, the unit)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from wgmesh import ha, store
from wgmesh import keys as keymod
from wgmesh import status as statmod
from wgmesh.commands import HostsOutcome, releasing
from wgmesh.commands.probe import host_drift
from wgmesh.commands.status import SiteView, collect_status, ha_view
from wgmesh.executor import DEFAULT_PARALLEL, fan_out
from wgmesh.model import Action, HostResult, HostState, Instance, Inventory, Peer
from wgmesh.remote import plan as planmod
from wgmesh.remote.exits import remote_reason
from wgmesh.remote.host import PROBE_TIMEOUT, Connector, Host, Pool, ProbeFailed, ssh_pool
from wgmesh.workspace import Workspace


@dataclass(frozen=True)
class Probe:
    src: str  # peer name, or "peer/instance"
    dst: str  # peer name, or "peer/instance"
    kind: str  # "tunnel" / "private" / "instance"
    address: str
    ok: bool
    rtt_ms: float | None = None
    detail: str = ""


@dataclass
class VerifyResult(HostsOutcome):
    probes: list[Probe]
    handshakes: list[statmod.Link]
    unreachable: dict[str, str]
    seconds: float = 0.0
    drift: dict[str, list[str]] = field(default_factory=dict)  # host → what it runs differently
    ha: dict[str, SiteView] = field(default_factory=dict)  # HA site → as its agents report it

    @property
    def failures(self) -> list[str]:
        out = [f"{p.src} → {p.dst} ({p.kind} {p.address}): {p.detail or 'no reply'}" for p in self.probes if not p.ok]
        out += [
            f"{lk.src} → {lk.dst}: handshake {lk.state}" for lk in self.handshakes
            if lk.state not in (statmod.FRESH, statmod.UNKNOWN)
        ]
        out += [f"{n}: {r}" for n, r in sorted(self.unreachable.items())]
        out += [f"{n}: drift: {d}" for n, found in sorted(self.drift.items()) for d in found]
        out += [f"site {n}: {problem}" for n, v in self.ha.items() for problem in v.problems]
        if not self.probes and not self.handshakes and not self.unreachable:
            out.append("nothing was verified: no peer of the inventory is managed over SSH (addpeer --ssh USER@HOST)")
        return out

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": self.seconds,
            "failures": self.failures,
            "probes": [
                {"from": p.src, "to": p.dst, "path": p.kind, "address": p.address, "ok": p.ok, "rtt_ms": p.rtt_ms}
                for p in self.probes
            ],
            "handshakes": [{"from": lk.src, "to": lk.dst, "state": lk.state, "age": lk.age} for lk in self.handshakes],
            "unreachable": self.unreachable,
            "drift": self.drift,
            "ha": {name: v.to_json() for name, v in self.ha.items()},
        }


def full_size(inv: Inventory, a: Peer, b: Peer, version: int | None = None) -> int:
    """ICMP data bytes that fill the smaller of the two tunnels' MTU exactly (IP + ICMP headers:
    28 bytes for IPv4, 48 for IPv6), for a packet of that family (default: b's first address's)."""
    mtu = min(a.mtu or inv.mesh.mtu, b.mtu or inv.mesh.mtu)
    return mtu - (28 if (version or b.address.version) == 4 else 48)


def ping_from(host: Host, iface: str, targets: list[str], size: int = 0) -> dict[str, float | None]:
    if not targets:
        return {}
    rc, out, err = host.run(planmod.ping_program(targets, iface, size=size), timeout=PROBE_TIMEOUT + 10)
    got = statmod.parse_pings(out)
    if not got:
        raise ProbeFailed(remote_reason("probe", rc, err))
    return got


HA_SETTLE = 8.0  # seconds verify waits for the agents of HA sites to agree (a first start takes ~2 s)


def agent_states(inv: Inventory, pool: Pool, peers: list[Peer], parallel: int) -> dict[str, HostState]:
    """The failover agents' reports (scripts/agent.sh), as probes that carry only that."""
    states: dict[str, HostState] = {}

    def one(peer: Peer) -> HostResult:
        rc, out, err = pool.get(peer).run(planmod.agent_state_program(inv.mesh.interface), timeout=PROBE_TIMEOUT)
        if rc != 0:
            raise ProbeFailed(remote_reason("agent state", rc, err))
        states[peer.name] = HostState(reachable=True, agent=planmod.parse_agent_report(out))
        return HostResult(peer.name, True, Action.PROBED)

    fan_out(peers, key=lambda p: p.name, work=releasing(pool, one), parallel=parallel)
    return states


def settle_ha(
    inv: Inventory, pool: Pool, peers: list[Peer], parallel: int, wait: float = HA_SETTLE
) -> dict[str, SiteView]:
    """The HA sites as the agents report them, once they agree (each site one active gateway,
    every agent routing it there) or after `wait` s with what is still wrong."""
    deadline = time.monotonic() + wait
    while True:
        views = ha_view(inv, agent_states(inv, pool, peers, parallel))
        if all(not v.problems for v in views.values()) or time.monotonic() >= deadline:
            return views
        time.sleep(0.5)


def full_size_probes(inv: Inventory, host: Host, peer: Peer) -> list[Probe]:
    """A full-size packet with DF set through every tunnel: small pings pass where bulk TCP
    would need ICMP "fragmentation needed" to cross every firewall."""
    out = []
    by_size: dict[int, list[tuple[Peer, str]]] = {}
    for o in inv.peers:
        if o.name != peer.name:
            for addr in o.tunnel_addresses:  # both families of a dual-stack mesh
                by_size.setdefault(full_size(inv, peer, o, addr.version), []).append((o, str(addr)))
    for size, others in sorted(by_size.items()):
        got = ping_from(host, inv.mesh.interface, sorted(t for _, t in others), size=size)
        for o, target in others:
            rtt = got.get(target)
            detail = "" if rtt is not None else f"no reply to {size} bytes with DF set (path MTU below the tunnel's?)"
            out.append(Probe(peer.name, o.name, "full-size", target, rtt is not None, rtt, detail))
    return out


def _private_reachable(inv: Inventory, peer: Peer, other: Peer, standby: set[str]) -> bool:
    """Whether `peer` can reach `other`'s LAN address: not a standby gateway's from another site."""
    return other.name not in standby or (other.site != "" and other.site == peer.site)


def run_verify(inv: Inventory, keys: keymod.Keys, pool: Pool, parallel: int) -> VerifyResult:
    t0 = time.monotonic()
    iface = inv.mesh.interface
    managed = [p for p in inv.peers if p.ssh is not None]
    # HA sites: the standby gateway is probed on its tunnel address (its tunnels must work: it
    # may take over any moment) but not on its LAN address (the site's subnets are routed to the
    # active one, so the answer would come back on the wrong tunnel), and the site's instances
    # through the active one.
    views = settle_ha(inv, pool, managed, parallel) if ha.has_ha(inv) else {}
    standby = {sb for v in views.values() if (sb := v.standby)}
    # The order of the pair's public keys (as the hosts' own PostUp nudge uses it, see
    # remote/hooks.nudge_command); peers without a key yet sort by name, after the others.
    pubs = store.public_keys(keys, inv)
    order = {n: (n not in pubs, pubs.get(n, ""), n) for n in inv.names}
    probes: list[Probe] = []
    unreachable: dict[str, str] = {}

    def note(results: dict[str, HostResult]) -> None:
        unreachable.update({n: r.detail for n, r in results.items() if not r.ok})

    # 1. One direction per pair first (the side whose public key sorts first starts), so two
    #    peers never start a handshake with each other at once.
    def prime(peer: Peer) -> HostResult:
        later = [str(o.address) for o in inv.peers if order[o.name] > order[peer.name]]
        ping_from(pool.get(peer), iface, later)
        return HostResult(peer.name, True, Action.PRIMED)

    note(fan_out(managed, key=lambda p: p.name, work=releasing(pool, prime), parallel=parallel))

    # 2. Every gateway → every other peer's tunnel and private address.
    def full(peer: Peer) -> HostResult:
        targets: list[tuple[str, str, str]] = []
        for o in inv.peers:
            if o.name == peer.name:
                continue
            targets += [(o.name, "tunnel", str(a)) for a in o.tunnel_addresses]
            if _private_reachable(inv, peer, o, standby):
                targets += [(o.name, "private", str(a)) for a in (o.private_address, o.private_address6) if a]
        host = pool.get(peer)
        got = ping_from(host, iface, sorted({t[2] for t in targets}))
        for dst, kind, addr in targets:
            rtt = got.get(addr)
            probes.append(Probe(peer.name, dst, kind, addr, rtt is not None, rtt))
        probes.extend(full_size_probes(inv, host, peer))
        return HostResult(peer.name, True, Action.PROBED)

    reachable = [p for p in managed if p.name not in unreachable]
    note(fan_out(reachable, key=lambda p: p.name, work=releasing(pool, full), parallel=parallel))

    # 3. Private instance → every other peer's private instances, through the gateway as a jump host.
    all_instances = [(p, i) for p in inv.peers if p.name not in standby for i in p.instances]

    def from_instance(item: tuple[Peer, Instance]) -> HostResult:
        peer, inst = item
        targets = [(o, oi, str(a)) for o, oi in all_instances if o.name != peer.name
                   for a in (oi.address, oi.address6) if a is not None]  # both families where it has both
        got = ping_from(pool.get_instance(peer, inst), iface, sorted({a for _, _, a in targets}))
        for o, oi, a in targets:
            rtt = got.get(a)
            probes.append(Probe(f"{peer.name}/{inst.name}", f"{o.name}/{oi.name}", "instance", a, rtt is not None, rtt))
        return HostResult(f"{peer.name}/{inst.name}", True, Action.PROBED)

    with_instances = [(p, i) for p, i in all_instances if p.ssh is not None and p.name not in unreachable]
    note(fan_out(with_instances, key=lambda x: f"{x[0].name}/{x[1].name}",
                 work=releasing(pool, from_instance, lambda x: x[0]), parallel=parallel))

    # 4. Handshakes: every reachable peer has a fresh one with every other peer.
    st = collect_status(inv, keys, pool, parallel)
    managed_names = {p.name for p in managed}
    for name, reason in st.unreachable.items():
        if name in managed_names:
            unreachable.setdefault(name, reason)
    handshakes = [lk for lk in st.links if lk.src not in unreachable and lk.src in managed_names]
    probes.sort(key=lambda p: (p.src, p.dst, p.kind))
    drift, _ = host_drift(inv, keys, pool, [p for p in managed if p.name not in unreachable], parallel)
    return VerifyResult(probes, handshakes, unreachable, round(time.monotonic() - t0, 2), drift, views)


def verify(ws: Workspace, parallel: int = DEFAULT_PARALLEL, connect: Connector = ssh_pool) -> VerifyResult:
    inv = store.load(ws)
    keys = store.keystore(ws).load()
    with connect(ws, inv, 0.0) as pool:
        return run_verify(inv, keys, pool, parallel)
