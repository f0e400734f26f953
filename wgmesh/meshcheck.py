"""The mesh-wide checks of an inventory: unique names and addresses, HA sites, one AllowedIPs
prefix for one peer, no prefix over a management path (an endpoint or SSH address), pools that
hold every peer; and `fits`, the O(n) check of one new peer against the others that add_peer runs
first (the whole check runs when it cannot tell). Pure."""

from __future__ import annotations

import bisect
import functools
import ipaddress
from collections.abc import Iterable, Sequence

from wgmesh import validate as v
from wgmesh.errors import BadInput
from wgmesh.model import AGENT_PORT, Inventory, IPAddress, IPNetwork, Peer


@functools.cache  # the checks of one run read every endpoint more than once (see add_peer)
def _ip_or_none(text: str | None) -> IPAddress | None:
    if text is None:
        return None
    try:
        return v.ip(text)
    except ValueError:
        return None  # a DNS name: cannot be checked here


def _check_peer(p: Peer, pool: IPNetwork, pool6: IPNetwork | None = None) -> None:
    """One peer's own rules: its addresses are hosts of the pools, its subnets are no default
    route and stay out of the pools, its instances sit in its subnets."""
    if p.address not in pool:
        raise BadInput(f"peers.{p.name}.address", str(p.address), f"outside the mesh pool {pool}")
    if p.address6 is not None and (pool6 is None or p.address6 not in pool6):
        raise BadInput(f"peers.{p.name}.address6", str(p.address6), f"outside the mesh's IPv6 pool {pool6 or '(none)'}")
    if pool6 is not None and p.address6 is None:
        raise BadInput(f"peers.{p.name}.address6", None, f"a dual-stack mesh gives every peer an address of {pool6}")
    for s in p.subnets:
        if pool6 is not None and s.version == 6 and s.overlaps(pool6):
            raise BadInput(f"peers.{p.name}.subnets", str(s), f"overlaps the mesh's IPv6 pool {pool6}")
    if p.address in (pool.network_address, pool.broadcast_address) and pool.prefixlen < pool.max_prefixlen - 1:
        raise BadInput(f"peers.{p.name}.address", str(p.address), f"is not a host address of {pool}")
    _check_subnets(p, pool)
    for inst in p.instances:
        for what, addr in (("address", inst.address), ("address6", inst.address6)):
            if addr is not None and not any(addr in s for s in p.subnets):
                raise BadInput(
                    f"peers.{p.name}.instances.{inst.name}.{what}", str(addr), "is not inside any subnet of the peer",
                )


def _check_subnets(p: Peer, pool: IPNetwork) -> None:
    """No subnet is a default route or overlaps the mesh pool."""
    pool_first, pool_last = _span(pool)
    for s in p.subnets:
        if s.prefixlen == 0:
            raise BadInput(f"peers.{p.name}.subnets", str(s), "a default route cannot be an AllowedIPs in a mesh")
        if s.version == pool.version:
            first, last = _span(s)
            if first <= pool_last and pool_first <= last:
                raise BadInput(f"peers.{p.name}.subnets", str(s), f"overlaps the mesh pool {pool}")


def _check_unique(inv: Inventory) -> None:
    """Names (also in another case or with spaces) and tunnel addresses are unique."""
    seen_names: dict[str, str] = {}
    seen_addr: dict[IPAddress, str] = {}
    for p in inv.peers:
        key = p.name.strip().lower()
        if key in seen_names:
            raise BadInput(f"peers.{p.name}", p.name, f"a peer named {seen_names[key]!r} already exists")
        seen_names[key] = p.name
        for what, addr in (("address", p.address), ("address6", p.address6)):
            if addr is None:
                continue
            if addr in seen_addr:
                raise BadInput(f"peers.{p.name}.{what}", str(addr), f"already used by peer {seen_addr[addr]!r}")
            seen_addr[addr] = p.name


def _check_sites(inv: Inventory) -> dict[str, list[Peer]]:
    """HA sites: at most two gateways each (see _check_pair); a site is never named like a peer.
    → site → its gateways (one or two)."""
    sites: dict[str, list[Peer]] = {}
    for p in inv.peers:
        if p.site:
            sites.setdefault(p.site, []).append(p)
        elif p.route_table is not None:
            raise BadInput(f"peers.{p.name}.route_table", p.route_table.kind, "only a gateway of a site (site) has one")
    names = set(inv.names)
    for site, gws in sites.items():
        if len(gws) > 2:
            raise BadInput(f"peers.{gws[2].name}.site", site,
                           f"a site has two gateways at most ({gws[0].name}, {gws[1].name})")
        if site in names and site not in {g.name for g in gws}:
            raise BadInput(f"peers.{gws[0].name}.site", site, "a peer has this name: name the site differently")
        if len(gws) == 2:
            _check_pair(site, gws[0], gws[1])
    if any(len(g) == 2 for g in sites.values()):
        for p in inv.peers:
            if p.listen_port == AGENT_PORT:
                raise BadInput(f"peers.{p.name}.listen_port", p.listen_port,
                               "is the port of the failover agent of HA sites: choose another")
    return sites


def _check_pair(site: str, first: Peer, second: Peer) -> None:
    """The two gateways of a site serve the same subnets, each has a route table of the same
    kind, a router address inside the subnets."""
    if set(second.subnets) != set(first.subnets):
        raise BadInput(
            f"peers.{second.name}.subnets", ", ".join(map(str, second.subnets)),
            f"the two gateways of site {site!r} must serve the same subnets ({first.name}: "
            f"{', '.join(map(str, first.subnets)) or 'none'})",
        )
    for g in (first, second):
        if g.route_table is None:
            raise BadInput(f"peers.{g.name}.route_table", None, f"a gateway of HA site {site!r} needs a route table")
        if g.route_table.kind == "vip":
            addr = ipaddress.ip_interface(g.route_table.address)
            if not any(addr.ip in n for n in g.subnets):
                raise BadInput(f"peers.{g.name}.route_table.address", g.route_table.address,
                               "is not inside the site's subnets")
    assert first.route_table is not None and second.route_table is not None
    if first.route_table.kind != second.route_table.kind:
        raise BadInput(f"peers.{second.name}.route_table.kind", second.route_table.kind,
                       f"the other gateway of site {site!r} has {first.route_table.kind}")


def _span(net: IPNetwork) -> tuple[int, int]:
    """The first and last address of a network, as integers: what the checks compare (without
    the address objects ipaddress would make for each comparison)."""
    first = int(net.network_address)
    return first, first | ((1 << (net.max_prefixlen - net.prefixlen)) - 1)


# A prefix of a peer's AllowedIPs, as the mesh-wide checks compare it:
# (version, first address, last address, the prefix, its peer, whether it is one of the peer's subnets)
Prefix = tuple[int, int, int, IPNetwork, str, bool]


def _prefixes(inv: Inventory) -> list[Prefix]:
    """Every prefix of every peer's AllowedIPs, peer by peer, in their order."""
    out: list[Prefix] = []
    for p in inv.peers:
        tunnels = len(p.allowed_ips) - len(p.subnets)
        for i, net in enumerate(p.allowed_ips):
            if i < tunnels:  # a tunnel address: one address
                first = last = int(net.network_address)
            else:
                first, last = _span(net)
            out.append((net.version, first, last, net, p.name, i >= tunnels))
    return out


def _check_overlaps(inv: Inventory, prefixes: list[Prefix]) -> None:
    """One prefix belongs to one peer: sort and compare neighbours (O(n log n)). The two gateways
    of an HA site share their subnets (one of them holds them at a time): counted once."""
    seconds = {gws[1].name for gws in _check_sites(inv).values() if len(gws) == 2}
    for version in (4, 6):
        # in the order of (network address, prefix length)
        nets = sorted((x for x in prefixes if x[0] == version and not (x[5] and x[4] in seconds)),
                      key=lambda x: (x[1], x[3].prefixlen))
        widest: Prefix | None = None  # of the prefixes so far, the one that ends last
        for _, first, last, net, owner, _ in nets:
            if widest is not None and widest[2] >= first:  # it starts before `net` does: they overlap
                raise BadInput(
                    f"peers.{owner}.allowed_ips", str(net),
                    f"overlaps {widest[3]} of peer {widest[4]!r}: an AllowedIPs prefix belongs to one peer only",
                )
            if widest is None or last > widest[2]:
                widest = (version, first, last, net, owner, False)


def _management_paths(peers: Iterable[Peer]) -> list[tuple[IPAddress, str, str]]:
    """The controller's paths to the peers that an AllowedIPs could cut: (address, peer, what)."""
    paths: list[tuple[IPAddress, str, str]] = []
    for p in peers:
        if (a := _ip_or_none(p.endpoint_host)) is not None:
            paths.append((a, p.name, "endpoint"))
        if p.ssh is not None and (a := _ip_or_none(p.ssh.host)) is not None:
            paths.append((a, p.name, "ssh address"))
    return paths


def _check_management_paths(inv: Inventory, prefixes: list[Prefix]) -> None:
    """No AllowedIPs may cover the controller's path to a peer: SSH addresses and endpoints."""
    paths = _management_paths(inv.peers)
    if not paths:
        return
    paths.sort(key=lambda x: (x[0].version, int(x[0])))
    keys = [(a.version, int(a)) for a, _, _ in paths]
    for version, first, last, net, name, _ in prefixes:
        lo = bisect.bisect_left(keys, (version, first))
        if lo == len(keys) or keys[lo] > (version, last):
            continue  # (most prefixes cover no path)
        for addr, owner, what in paths[lo:bisect.bisect_right(keys, (version, last))]:
            if what == "ssh address" and owner == name:
                continue  # reaching a peer through its own subnet does not cut anything
            raise BadInput(
                f"peers.{name}.allowed_ips", str(net),
                f"covers the {what} {addr} of peer {owner!r}: that would cut the management link",
            )


def fits(before: Inventory, after: Inventory, name: str) -> bool:
    """True if `after` — `before`, which passed `check`, plus the peer `name` — passes `check`
    too, known from that peer's rules alone: its own fields, its name and addresses against the
    others', its prefixes against theirs, its prefixes against every management path and its
    paths against every prefix (O(n): `check` sorts the whole mesh again). False when one of
    those rules may be broken, or when this cannot tell (the mesh changed as a whole, as when it
    becomes dual stack; an HA gateway): then `check` decides, and names what is wrong."""
    others = [p for p in after.peers if p.name != name]
    if after.mesh != before.mesh or len(others) != len(before.peers):
        return False
    if any(a is not b for a, b in zip(others, before.peers, strict=True)):
        return False
    new = next(p for p in after.peers if p.name == name)
    if new.site or new.route_table is not None:
        return False
    try:
        _check_peer(new, after.mesh.pool, after.mesh.pool6)
    except BadInput:
        return False
    return _unique_among(new, others) and _apart_from(new, others)


def _unique_among(new: Peer, others: list[Peer]) -> bool:
    """Its name and tunnel addresses are no other peer's, nor its name a site's (and its port
    not the failover agent's where there are HA sites)."""
    key = new.name.strip().lower()
    mine = new.tunnel_addresses
    sites = set()
    for p in others:
        if p.name.strip().lower() == key or p.address in mine or (p.address6 is not None and p.address6 in mine):
            return False
        if p.site:
            sites.add(p.site)
    return new.name not in sites and not (sites and new.listen_port == AGENT_PORT)


def _apart_from(new: Peer, others: list[Peer]) -> bool:
    """Its prefixes meet neither each other nor another peer's, cover no management path (its
    own SSH address aside), and no other peer's prefix covers its endpoint or SSH address."""
    spans = [(n.version, *_span(n)) for n in new.allowed_ips]  # (version, first, last)
    paths = [(a.version, int(a), what) for a, _, what in _management_paths([new])]
    for i, (version, first, last) in enumerate(spans):
        if _meets(version, first, last, spans[i + 1:]):
            return False
        if any(w == version and first <= a <= last and what != "ssh address" for w, a, what in paths):
            return False
    taken = spans + [(w, a, a) for w, a, _ in paths]  # what no other peer's prefix may meet
    for p in others:
        for net in p.allowed_ips:
            if _meets(net.version, *_span(net), taken):
                return False
        for host in (p.endpoint_host, p.ssh.host if p.ssh is not None else None):
            if (addr := _ip_or_none(host)) is not None and _meets(addr.version, int(addr), int(addr), spans):
                return False
    return True


def _meets(version: int, first: int, last: int, spans: Sequence[tuple[int, int, int]]) -> bool:
    """Whether first..last (addresses of one family, as integers) meets one of `spans`:
    (version, first, last) each. (A loop, not any(): this runs for every prefix of the mesh.)"""
    for w, a, b in spans:  # noqa: SIM110
        if w == version and first <= b and a <= last:
            return True
    return False


def check(inv: Inventory) -> None:
    """Mesh-wide rules. Raises BadInput naming the peer, the field and the value."""
    _check_unique(inv)
    if inv.mesh.pool6 is not None and inv.mesh.pool.version == 6:
        raise BadInput("mesh.pool6", str(inv.mesh.pool6), "an IPv6 mesh has one pool: mesh.pool")
    for p in inv.peers:
        _check_peer(p, inv.mesh.pool, inv.mesh.pool6)
    prefixes = _prefixes(inv)
    _check_overlaps(inv, prefixes)
    _check_management_paths(inv, prefixes)
