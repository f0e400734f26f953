"""The one peer parser: raw values from any source → a checked Peer.

Every source of a peer gives its raw values as a `PeerOptions`: Terraform's `peers` output,
the inventory file, `addpeer`'s options, `setpeer`'s changes. Each field is checked here,
once, by the functions of `validate`, and a refusal names the field as that source calls it
(`--allowedips`, `peers.site1.subnets`, `terraform output peers.site1.subnets`). Mesh-wide
rules (overlaps, the pool, management paths) are `inventory.check`'s. Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from wgmesh import validate as v
from wgmesh.errors import BadInput
from wgmesh.model import DEFAULT_PORT, Instance, IPAddress, Peer, Source, SshTarget, Value

# A peer whose tunnel address is not chosen yet: the inventory allocates one from the pool.
UNALLOCATED: IPAddress = ipaddress.ip_address("0.0.0.0")


@dataclass(frozen=True, eq=False, repr=False, init=False)  # equality, hash, repr: from Value; __init__ below
class PeerOptions(Value):
    """One peer's raw values as a source gives them; None = not given."""

    endpoint: object = None  # HOST[:PORT], [V6]:PORT
    address: object = None  # tunnel address (a host /32 or /128 is accepted)
    address6: object = None  # the IPv6 tunnel address of a dual-stack mesh
    subnets: Iterable[object] | None = None
    listen_port: object = None
    keepalive: object = None
    ssh_target: object = None  # USER@HOST[:PORT] (the command line's form)
    ssh_user: object = None  # ... or its parts (the documents' form)
    ssh_host: object = None
    ssh_port: object = None
    ssh_key: object = None  # path of a private key file
    host_keys: Iterable[object] | None = None
    egress_interface: object = None
    private_address: object = None  # "" clears it
    private_address6: object = None  # "" clears it
    region: object = None
    cloud: object = None
    instances: Iterable[object] | None = None
    mtu: object = None
    site: object = None  # the HA site this gateway is one of two of ("": none)
    route_table: object = None  # an HA gateway's route table (an object, see validate.route_table)

    def __init__(  # noqa: PLR0913, PLR0917 (the fields, as dataclass() would take them)
        self, endpoint: object = None, address: object = None, address6: object = None,
        subnets: Iterable[object] | None = None, listen_port: object = None, keepalive: object = None,
        ssh_target: object = None, ssh_user: object = None, ssh_host: object = None, ssh_port: object = None,
        ssh_key: object = None, host_keys: Iterable[object] | None = None, egress_interface: object = None,
        private_address: object = None, private_address6: object = None, region: object = None,
        cloud: object = None, instances: Iterable[object] | None = None, mtu: object = None, site: object = None,
        route_table: object = None,
    ) -> None:
        # Written out, as Peer's is (wgmesh.model): reading 1000 peers makes 1000 of these.
        self.__dict__.update(
            endpoint=endpoint, address=address, address6=address6, subnets=subnets, listen_port=listen_port,
            keepalive=keepalive, ssh_target=ssh_target, ssh_user=ssh_user, ssh_host=ssh_host, ssh_port=ssh_port,
            ssh_key=ssh_key, host_keys=host_keys, egress_interface=egress_interface,
            private_address=private_address, private_address6=private_address6, region=region, cloud=cloud,
            instances=instances, mtu=mtu, site=site, route_table=route_table,
        )

    def given(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


Label = Callable[[str], str]

# How the command line names each field.
CLI_LABELS = {
    "endpoint": "--endpoint", "address": "--address", "subnets": "--allowedips", "listen_port": "--listen-port",
    "keepalive": "--keepalive", "ssh_target": "--ssh", "ssh_key": "--ssh-key", "host_keys": "--host-key",
    "egress_interface": "--egress-interface", "private_address": "--private-address", "mtu": "--mtu",
    "address6": "--address6", "private_address6": "--private-address6",
}

# How the documents (inventory file, Terraform outputs) name each field, under peers.NAME.
_DOC_KEYS = {
    "ssh_user": "ssh.user", "ssh_host": "ssh.host", "ssh_port": "ssh.port", "ssh_key": "ssh.key",
    "host_keys": "ssh_host_keys",
}


def cli_label(key: str) -> str:
    return CLI_LABELS.get(key, key)


def doc_label(prefix: str) -> Label:
    return lambda key: f"{prefix}.{_DOC_KEYS.get(key, key)}"


def _tunnel_address(field: str, value: object) -> IPAddress:
    if isinstance(value, str) and value.endswith(("/32", "/128")):
        value = value.split("/")[0]
    return v.address(field, value)


def _instance(field: str, d: object) -> Instance:
    if not isinstance(d, dict):
        raise BadInput(field, d, "must be an object")
    return Instance(
        name=v.name(f"{field}.name", d.get("name")),
        address=v.address(f"{field}.address", d.get("address")),
        ssh_user=v.ssh_user(f"{field}.ssh_user", d.get("ssh_user", "root")),
        ssh_port=v.port(f"{field}.ssh_port", d.get("ssh_port", 22)),
        host_keys=tuple(v.host_key(f"{field}.ssh_host_keys", k) for k in d.get("ssh_host_keys") or ()),
        address6=_family(f"{field}.address6", d["address6"], 6) if d.get("address6") else None,
    )


def _ssh(o: PeerOptions, label: Label, check_files: bool) -> SshTarget | None:
    """The SSH target: from USER@HOST[:PORT] or from its parts; the key file is a path only."""
    key = o.ssh_key
    if o.ssh_target is not None:
        user, host, port = v.ssh_target(label("ssh_target"), o.ssh_target)
    elif o.ssh_host not in (None, ""):
        host, _ = v.host_port(label("ssh_host"), o.ssh_host, None)
        user = v.ssh_user(label("ssh_user"), o.ssh_user or "root")
        port = v.port(label("ssh_port"), o.ssh_port or 22)
    else:
        if check_files and key is not None:
            raise BadInput(label("ssh_key"), key, "only makes sense with --ssh USER@HOST")
        return None
    if key is not None:
        if not isinstance(key, str) or not key or "\n" in key or "\0" in key:
            raise BadInput(label("ssh_key"), key, "must be the path of a private key file")
        if check_files:
            if not Path(key).is_file():
                raise BadInput(label("ssh_key"), key, "no such key file")
            key = str(Path(key).resolve())
    return SshTarget(user=user, host=host, port=port, key=key)


def _optional_address(field: str, value: object) -> IPAddress | None:
    return None if value == "" else v.address(field, value)


def _family(field: str, value: object, version: int) -> IPAddress:
    addr = v.address(field, value)
    if addr.version != version:
        raise BadInput(field, value, f"must be an IPv{version} address")
    return addr


def _optional_address6(field: str, value: object) -> IPAddress | None:
    if value == "":
        return None
    if isinstance(value, str) and value.endswith("/128"):
        value = value[:-4]
    return _family(field, value, 6)


def _optional_mtu(field: str, value: object) -> int | None:
    return None if value in ("", 0) else v.mtu(field, value)


def _each(one: Callable[[str, Any], Any]) -> Callable[[str, Any], tuple[Any, ...]]:
    """The parser of a list of values, each parsed by `one`."""
    return lambda f, xs: () if xs == () else tuple(one(f, x) for x in xs)


# Fields whose value is checked on its own: option → (Peer attribute, parser).
_PLAIN: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "address": ("address", _tunnel_address),
    "subnets": ("subnets", _each(v.network)),
    "keepalive": ("keepalive", v.keepalive),
    "host_keys": ("host_keys", _each(v.host_key)),
    "egress_interface": ("egress_interface", v.egress),
    "private_address": ("private_address", _optional_address),
    "address6": ("address6", _optional_address6),
    "private_address6": ("private_address6", _optional_address6),
    "region": ("region", v.text_label),
    "cloud": ("cloud", v.text_label),
    "instances": ("instances", _each(_instance)),
    "mtu": ("mtu", _optional_mtu),
    "site": ("site", lambda f, x: "" if x == "" else v.name(f, x)),
    "route_table": ("route_table", v.route_table),
}


def parse_fields(o: PeerOptions, label: Label, default_port: int, check_files: bool = False) -> dict[str, Any]:
    """The given fields of `o`, checked, as Peer attributes (only those given)."""
    out: dict[str, Any] = {}
    port = default_port
    if o.listen_port is not None:
        port = out["listen_port"] = v.port(label("listen_port"), o.listen_port)
    if o.endpoint not in (None, ""):
        out["endpoint_host"], out["endpoint_port"] = v.host_port(label("endpoint"), o.endpoint, port)
    for key, (attr, parse) in _PLAIN.items():
        value = getattr(o, key)
        if value is None or (key == "address" and value == ""):
            continue
        try:
            out[attr] = parse(key, value)
        except BadInput:  # once more, to name the field as this source calls it: labels are made for refusals only
            out[attr] = parse(label(key), value)
    if o.ssh_target is not None or o.ssh_host is not None or o.ssh_key is not None:
        out["ssh"] = _ssh(o, label, check_files)
    return out


def parse_peer(
    name: object, o: PeerOptions, label: Label, source: Source, *,
    default_port: int = DEFAULT_PORT, check_files: bool = False, name_field: str = "name",
) -> Peer:
    """A new peer. Its address is UNALLOCATED unless `o.address` was given."""
    checked = v.name(name_field, name)
    attrs = parse_fields(o, label, default_port, check_files)
    attrs.setdefault("listen_port", default_port)
    attrs.setdefault("address", UNALLOCATED)
    return Peer(name=checked, source=source, **attrs)


def require_probes_inside(peer: Peer, label: Label) -> None:
    """The peer's private addresses lie inside its subnets: verify probes them from every other
    site through the others' AllowedIPs, so one outside is routed to no one and could only ever be
    reported unreachable. Held where a peer comes in (addpeer, setpeer: `update`, Terraform's
    outputs), not where a stored inventory is read: one written before this rule still loads, and
    setpeer can put it right."""
    for key in ("private_address", "private_address6"):
        addr = getattr(peer, key)
        if addr is not None and not any(addr in s for s in peer.subnets):
            raise BadInput(label(key), str(addr), "is not inside any subnet of the peer",
                           hint="subnets: " + (", ".join(map(str, peer.subnets)) or "none"))


def update(peer: Peer, o: PeerOptions, label: Label, check_files: bool = False) -> Peer:
    """`peer` with the fields given in `o` changed. An endpoint that followed the old listen
    port follows the new one; a new SSH key keeps the SSH target, a new target keeps the key."""
    if peer.ssh is not None and o.ssh_target is None and o.ssh_key is not None:
        o = replace(o, ssh_user=peer.ssh.user, ssh_host=peer.ssh.host, ssh_port=peer.ssh.port)
    elif peer.ssh is not None and o.ssh_target is not None and o.ssh_key is None and peer.ssh.key:
        o = replace(o, ssh_key=peer.ssh.key)
    attrs = parse_fields(o, label, peer.listen_port, check_files)
    if (
        "listen_port" in attrs and "endpoint_host" not in attrs
        and peer.endpoint_host is not None and peer.endpoint_port == peer.listen_port
    ):
        attrs["endpoint_port"] = attrs["listen_port"]
    updated = replace(peer, **attrs)
    require_probes_inside(updated, label)
    return updated


def endpoint_name(peer: Peer) -> str | None:
    """The peer's endpoint host when it is a DNS name (None for an IP address or no endpoint)."""
    host = peer.endpoint_host
    if host is None:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def require_resolvable(peer: Peer, label: Label, allow_unresolved: bool) -> None:
    """A DNS endpoint must resolve when it is given (the controller asks its resolver, 3 s at
    most); `allow_unresolved` keeps it anyway: the others then wait for this peer to connect."""
    name = endpoint_name(peer)
    if name is None or allow_unresolved:
        return
    from wgmesh.adapters import dns

    if dns.unresolved({name}):
        raise BadInput(
            label("endpoint"), peer.endpoint, "does not resolve",
            hint="check the name, or give --allow-unresolved to keep it (until it resolves, the other peers "
                 "get no endpoint for it and wait for it to connect)",
        )


def document_options(d: dict[str, Any], nested_ssh: bool) -> PeerOptions:
    """The raw values of a peer in a document: the inventory file (`ssh` is an object) or
    Terraform's `peers` output (flat `ssh_user`, `ssh_host`, ...). An empty value (null, "", [])
    counts as not given: the new peer keeps its default, which is what the empty value means."""
    ssh = d.get("ssh") if nested_ssh else {
        "user": d.get("ssh_user"), "host": d.get("ssh_host"), "port": d.get("ssh_port"), "key": d.get("ssh_key"),
    }
    ssh = ssh or {}
    return PeerOptions(
        endpoint=d.get("endpoint") or None,
        address=d.get("address"),
        subnets=d.get("subnets") or None,
        listen_port=d.get("listen_port") or None,
        keepalive=d.get("keepalive"),
        ssh_user=ssh.get("user"),
        ssh_host=ssh.get("host"),
        ssh_port=ssh.get("port"),
        ssh_key=ssh.get("key"),
        host_keys=d.get("ssh_host_keys") or None,
        egress_interface=d.get("egress_interface") or None,
        private_address=d.get("private_address") or None,
        address6=d.get("address6") or None,
        private_address6=d.get("private_address6") or None,
        region=d.get("region") or None,
        cloud=d.get("cloud") or None,
        instances=d.get("instances") or None,
        mtu=d.get("mtu"),
        site=d.get("site") or None,
        route_table=d.get("route_table"),
    )
