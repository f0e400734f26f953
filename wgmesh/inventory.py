"""Inventory: the document (to and from JSON), Terraform outputs → peers, tunnel address
allocation, changes (each checked as a mesh: wgmesh/meshcheck.py). Pure: `store` reads and
writes the file.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from wgmesh import peers
from wgmesh import validate as v
from wgmesh.errors import BadInput
from wgmesh.meshcheck import check, fits
from wgmesh.model import (
    DEFAULT_INTERFACE,
    DEFAULT_MTU,
    DEFAULT_POOL,
    DEFAULT_PORT,
    SCHEMA_VERSION,
    Instance,
    Inventory,
    IPAddress,
    IPNetwork,
    MeshSettings,
    Peer,
    RouteTable,
    Source,
)

# Kept as names: tests, bench and older code say invmod.TERRAFORM / invmod.MANUAL.
TERRAFORM = Source.TERRAFORM
MANUAL = Source.MANUAL
_SOURCES = tuple(Source)


def new_inventory(name: str, pool: str = DEFAULT_POOL, stack: str | None = None) -> Inventory:
    return Inventory(
        name=v.name("inventory", name),
        mesh=MeshSettings(pool=v.network("mesh.pool", pool)),
        stack=stack,
    )


# --------------------------------------------------------------------------- documents


def mesh_to_dict(m: MeshSettings) -> dict[str, Any]:
    return {
        "interface": m.interface,
        "listen_port": m.listen_port,
        "mtu": m.mtu,
        "pool": str(m.pool),
        **({"pool6": str(m.pool6)} if m.pool6 is not None else {}),  # only when set: files stay as they were
        "preshared_keys": m.psk,
    }


def mesh_from_dict(d: dict[str, Any]) -> MeshSettings:
    if not isinstance(d, dict):
        raise BadInput("mesh", d, "must be an object")
    mtu = v.mtu("mesh.mtu", d.get("mtu", DEFAULT_MTU))
    psk = d.get("preshared_keys", True)
    if not isinstance(psk, bool):
        raise BadInput("mesh.preshared_keys", psk, "true or false")
    pool6 = d.get("pool6")
    return MeshSettings(
        pool=v.network("mesh.pool", d.get("pool", DEFAULT_POOL)),
        pool6=None if pool6 is None else pool6_network("mesh.pool6", pool6),
        interface=v.interface_name("mesh.interface", d.get("interface", DEFAULT_INTERFACE)),
        mtu=mtu,
        listen_port=v.port("mesh.listen_port", d.get("listen_port", DEFAULT_PORT)),
        psk=psk,
    )


def pool6_network(field: str, value: object) -> IPNetwork:
    """An IPv6 pool: an IPv6 network of at least 4 addresses."""
    net = v.network(field, value)
    if net.version != 6:
        raise BadInput(field, value, "the second pool of a mesh is IPv6 (e.g. fd00:1234:5678::/64)")
    return net


def ula_pool(name: str) -> IPNetwork:
    """The IPv6 pool an inventory gets when none is given: a unique local /64 (RFC 4193) whose
    40-bit global ID comes from a stable hash of the inventory's name."""
    import hashlib  # here: most meshes never make one, and hashlib loads OpenSSL (2 ms of a start)

    gid = hashlib.sha256(f"wgmesh:{name}".encode()).digest()[:5]
    return ipaddress.ip_network((b"\xfd" + gid + b"\x00\x00" + bytes(8), 64))


def dual_stack(inv: Inventory, pool6: IPNetwork | None = None) -> Inventory:
    """An IPv4 mesh becomes dual stack when an IPv6 pool is given or a peer has an IPv6 subnet
    (else those subnets would get routes but no IPv6 source could use them): the pool (given, or
    ula_pool), and an IPv6 tunnel address for every peer that has none. Unchanged otherwise."""
    mesh = inv.mesh
    if mesh.pool.version == 6:
        return inv
    if pool6 is not None and mesh.pool6 is not None and pool6 != mesh.pool6 and any(p.address6 for p in inv.peers):
        raise BadInput("--pool6", str(pool6), f"the inventory's peers already have addresses in {mesh.pool6}",
                       hint="a pool is chosen when it is first needed")
    wanted = pool6 or mesh.pool6 or (ula_pool(inv.name) if any(s.version == 6 for p in inv.peers for s in p.subnets)
                                      else None)
    if wanted is None:
        return inv
    need = [p for p in inv.peers if p.address6 is None]
    fresh = iter(allocate(wanted, {p.address6 for p in inv.peers if p.address6 is not None}, len(need),
                          field="mesh.pool6"))
    addr6 = {p.name: next(fresh) for p in need}
    return replace(
        inv, mesh=replace(mesh, pool6=wanted),
        peers=tuple(replace(p, address6=addr6[p.name]) if p.name in addr6 else p for p in inv.peers),
    )


def peer_to_dict(p: Peer) -> dict[str, Any]:
    d: dict[str, Any] = {
        "source": p.source,
        "address": str(p.address),
        "endpoint": p.endpoint,
        "listen_port": p.listen_port,
        "subnets": [str(s) for s in p.subnets],
        "private_address": str(p.private_address) if p.private_address else None,
        "keepalive": p.keepalive,
        "egress_interface": p.egress_interface,
        "ssh": None
        if p.ssh is None
        else {"user": p.ssh.user, "host": p.ssh.host, "port": p.ssh.port, "key": p.ssh.key},
        "ssh_host_keys": list(p.host_keys),
        "region": p.region,
        "cloud": p.cloud,
        "instances": [_instance_to_dict(i) for i in p.instances],
    }
    # Only when set: files stay as they were. (The document's keys are sorted when it is written.)
    if p.address6:
        d["address6"] = str(p.address6)
    if p.private_address6:
        d["private_address6"] = str(p.private_address6)
    if p.mtu is not None:
        d["mtu"] = p.mtu
    if p.site:
        d["site"] = p.site
    if p.route_table:
        d["route_table"] = route_table_to_dict(p.route_table)
    return d


def _instance_to_dict(i: Instance) -> dict[str, Any]:
    d: dict[str, Any] = {"name": i.name, "address": str(i.address), "ssh_user": i.ssh_user,
                         "ssh_port": i.ssh_port, "ssh_host_keys": list(i.host_keys)}
    if i.address6:
        d["address6"] = str(i.address6)
    return d


def route_table_to_dict(rt: RouteTable) -> dict[str, Any]:
    if rt.kind == "vip":
        return {"kind": rt.kind, "address": rt.address, "interface": rt.interface}
    return {"kind": rt.kind, "region": rt.region, "route_table_ids": list(rt.route_table_ids),
            "network_interface_id": rt.network_interface_id}


def peer_from_dict(name: str, d: Any) -> Peer:
    """A peer as stored in the inventory document (address already allocated)."""
    f = f"peers.{name}"
    v.name(f, name)
    if not isinstance(d, dict):
        raise BadInput(f, d, "must be an object")
    if d.get("ssh") is not None and not isinstance(d["ssh"], dict):
        raise BadInput(f"{f}.ssh", d["ssh"], "must be an object")
    source = d.get("source", Source.MANUAL)
    if source not in _SOURCES:
        raise BadInput(f"{f}.source", source, "must be 'terraform' or 'manual'")
    if d.get("address") in (None, ""):
        raise BadInput(f"{f}.address", d.get("address"), "an IP address is required")
    return peers.parse_peer(
        name, peers.document_options(d, nested_ssh=True), peers.doc_label(f), Source(source), name_field=f
    )


# json.dumps(x, sort_keys=True), with its encoder made once (a peer's dict holds no cycle to look for)
_SORTED_JSON = json.JSONEncoder(sort_keys=True, check_circular=False).encode


def to_document(inv: Inventory) -> str:
    """Human-readable, deterministic JSON: keys sorted, one line per peer (in name order), so a
    change to a peer is a one-line diff; written with the C encoder, so 1000 peers cost little."""
    head = {
        "schema": SCHEMA_VERSION,
        "name": inv.name,
        "stack": inv.stack,
        "vars": dict(inv.vars),
        "mesh": mesh_to_dict(inv.mesh),
    }
    lines = ["{"]
    for key in sorted(head):
        lines.append(f"  {json.dumps(key)}: {json.dumps(head[key], sort_keys=True)},")
    peers = sorted(inv.peers, key=lambda p: p.name)
    if not peers:
        lines.append('  "peers": {}')
    else:
        lines.append('  "peers": {')
        for i, p in enumerate(peers):
            sep = "," if i < len(peers) - 1 else ""
            lines.append(f"    {json.dumps(p.name)}: {_SORTED_JSON(peer_to_dict(p))}{sep}")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def from_document(text: str, source: str = "inventory") -> Inventory:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(source, f"line {exc.lineno}", f"not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise BadInput(source, type(doc).__name__, "must be a JSON object")
    schema = doc.get("schema")
    if schema != SCHEMA_VERSION:
        raise BadInput(f"{source}: schema", schema, f"this wgmesh reads schema {SCHEMA_VERSION}")
    peers = doc.get("peers") or {}
    if not isinstance(peers, dict):
        raise BadInput("peers", peers, "must be an object keyed by peer name")
    vars_ = doc.get("vars") or {}
    if not isinstance(vars_, dict) or not all(isinstance(x, str) for x in vars_.values()):
        raise BadInput("vars", vars_, "must be an object of strings")
    stack = doc.get("stack")
    if stack is not None:
        v.name("stack", stack)
    inv = Inventory(
        name=v.name("name", doc.get("name")),
        mesh=mesh_from_dict(doc.get("mesh") or {}),
        peers=tuple(sorted((peer_from_dict(n, d) for n, d in peers.items()), key=lambda p: p.name)),
        stack=stack,
        vars=tuple(sorted(vars_.items())),
    )
    check(inv)
    return inv


# --------------------------------------------------------------------------- Terraform outputs


def peers_from_outputs(outputs: Any) -> list[Peer]:
    """The `peers` output (the output contract in the README) → peers without tunnel
    addresses yet (`merge_terraform` allocates them)."""
    if not isinstance(outputs, dict):
        raise BadInput("terraform output peers", type(outputs).__name__, "must be a map of peer name to object")
    result = []
    for name, d in sorted(outputs.items()):
        f = f"terraform output peers.{name}"
        if not isinstance(d, dict):
            v.name(f, name)
            raise BadInput(f, d, "must be an object")
        opts = replace(peers.document_options(d, nested_ssh=False), address=None, address6=None)
        peer = peers.parse_peer(name, opts, peers.doc_label(f), Source.TERRAFORM, name_field=f)
        peers.require_probes_inside(peer, peers.doc_label(f))
        result.append(peer)
    return result


def merge_terraform(inv: Inventory, tf_peers: Iterable[Peer]) -> Inventory:
    """Refresh the Terraform peers from outputs; keep manual peers; keep known addresses."""
    tf_peers = list(tf_peers)
    old = {p.name: p for p in inv.peers}
    for p in tf_peers:
        if p.name in old and old[p.name].source == MANUAL:
            raise BadInput(
                f"terraform output peers.{p.name}",
                p.name,
                "a peer added with addpeer already has this name",
                hint=f"remove it with 'wgmesh delpeer {p.name}' or rename the Terraform peer",
            )
    kept = [p for p in inv.peers if p.source == MANUAL]
    used = {p.address for p in kept} | {old[p.name].address for p in tf_peers if p.name in old}
    fresh = [p.name for p in tf_peers if p.name not in old]
    new_addrs = iter(allocate(inv.mesh.pool, used, len(fresh)))
    merged = list(kept)
    for p in tf_peers:
        addr = old[p.name].address if p.name in old else next(new_addrs)
        merged.append(replace(p, address=addr, address6=old[p.name].address6 if p.name in old else None))
    out = dual_stack(replace(inv, peers=tuple(sorted(merged, key=lambda p: p.name))))
    check(out)
    return out


def known_part(planned: dict[str, Any]) -> dict[str, Any]:
    """The planned `peers` output, with what Terraform cannot know before apply left out (a
    plan shows unknown values as missing): instances whose address is not known yet, subnets not
    known yet (and with them the addresses that must lie inside them), and an AWS route table's
    ids (placeholders of the right form stand in for them)."""
    out: dict[str, Any] = {}
    for name, d in planned.items():
        if isinstance(d, dict):
            known = [i for i in d.get("instances") or [] if isinstance(i, dict) and i.get("address")]
            out[name] = {**d, "instances": known}
            if isinstance(d.get("subnets"), list):  # e.g. a VPC's IPv6 CIDR, known once the VPC exists
                out[name]["subnets"] = [s for s in d["subnets"] if s is not None]
            else:  # not known before apply (ipv6 turned on): nothing can be held against them yet
                out[name] = {k: x for k, x in out[name].items() if k not in ("private_address", "private_address6")}
                out[name]["instances"] = []
            rt = d.get("route_table")
            if isinstance(rt, dict) and rt.get("kind") == "aws":
                ids = [i for i in rt.get("route_table_ids") or [] if i] or ["rtb-0"]
                out[name]["route_table"] = {**rt, "route_table_ids": ids,
                                            "network_interface_id": rt.get("network_interface_id") or "eni-0"}
        else:
            out[name] = d
    return out


def forget_terraform(inv: Inventory) -> Inventory:
    return replace(inv, peers=tuple(p for p in inv.peers if p.source != TERRAFORM))


# --------------------------------------------------------------------------- allocation


def allocate(pool: IPNetwork, used: set[IPAddress], count: int, field: str = "mesh.pool") -> list[IPAddress]:
    """The `count` lowest free host addresses of `pool`, in order."""
    if count <= 0:
        return []
    out: list[IPAddress] = []
    for addr in pool.hosts():
        if addr not in used:
            out.append(addr)
            if len(out) == count:
                return out
    capacity = pool.num_addresses - 2 if pool.prefixlen < pool.max_prefixlen - 1 else pool.num_addresses
    raise BadInput(
        field,
        str(pool),
        f"too small: {len(used) + count} peers need addresses, the pool holds {capacity}",
        hint=f"choose a larger pool with --{field.removeprefix('mesh.')}",
    )


# --------------------------------------------------------------------------- changes


def require_peer(inv: Inventory, name: str, field: str = "name") -> Peer:
    """The peer called `name`, or BadInput naming the peers there are."""
    for p in inv.peers:
        if p.name == name:
            return p
    raise BadInput(field, name, "no such peer in this inventory", hint="peers: " + (", ".join(inv.names) or "none"))


def require_new_name(inv: Inventory, name: object) -> None:
    """No peer may have this name, also in another case or with spaces around it."""
    if isinstance(name, str):
        for p in inv.peers:
            if p.name == name.strip().lower():
                raise BadInput("name", name, f"a peer named {p.name!r} already exists")


def add_peer(inv: Inventory, peer: Peer) -> Inventory:
    """Add a peer made by `peers.parse_peer` to `inv`, an inventory that passed `check` (as every
    inventory wgmesh reads or makes has); allocate its address unless one was given."""
    if peer.address == peers.UNALLOCATED:
        peer = replace(peer, address=allocate(inv.mesh.pool, {p.address for p in inv.peers}, 1)[0])
    out = dual_stack(replace(inv, peers=tuple(sorted((*inv.peers, peer), key=lambda p: p.name))))
    if not fits(inv, out, peer.name):
        check(out)  # the whole mesh again: it refuses with the message it always gave
    return out


def update_peer(inv: Inventory, peer: Peer) -> Inventory:
    out = dual_stack(replace(inv, peers=tuple(peer if p.name == peer.name else p for p in inv.peers)))
    check(out)
    return out


def remove_peer(inv: Inventory, name: str) -> Inventory:
    require_peer(inv, name)
    return replace(inv, peers=tuple(p for p in inv.peers if p.name != name))
