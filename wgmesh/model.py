"""Plain, frozen values passed between the layers. No behaviour with effects.

Every command imports this module as it starts, and dataclass() compiles the methods it makes
for each class there and then. So the classes here take their equality, hash and repr from
`Value`, written once, rather than from dataclass(); and each has a docstring (without one,
dataclass() writes one with inspect.signature). 4.9 ms → 3.1 ms of every command's start.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

SCHEMA_VERSION = 1
DEFAULT_POOL = "10.200.0.0/16"
DEFAULT_PORT = 51820
AGENT_PORT = 51871  # the failover agent's UDP port (wgmesh/agent, wgmesh/ha.py), inside the tunnel
DEFAULT_MTU = 1420
DEFAULT_INTERFACE = "wg0"


_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _values(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """What reads a record's field values in their order, as a tuple (operator.attrgetter: C code)."""
    get = _GETTERS.get(cls)
    if get is None:
        names = [f.name for f in fields(cls)]
        one = operator.attrgetter(*names)
        get = _GETTERS[cls] = one if len(names) > 1 else lambda obj: (one(obj),)
    return get


class Value:
    """What @dataclass(frozen=True) gives a class besides its __init__ and its immutability, as
    it gives them: equal when of the same class with equal fields, the hash of the fields, the
    repr of the fields that have one. For @dataclass(frozen=True, eq=False, repr=False)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            values = _values(self.__class__)
            return values(self) == values(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(_values(self.__class__)(self))

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)  # type: ignore[arg-type]
        return f"{self.__class__.__qualname__}({shown})"


class Source(StrEnum):
    """Where a peer comes from: refreshed from Terraform's outputs, or added by hand."""

    TERRAFORM = "terraform"
    MANUAL = "manual"


class Action(StrEnum):
    """What happened on one host (push, stop, status, verify)."""

    UNCHANGED = "unchanged"
    SYNCCONF = "syncconf"  # only peers (or the private key / port) changed: hitless
    RESTART = "restart"  # [Interface] changed
    START = "start"  # interface down: first start (or start after a stop)
    STOPPED = "stopped"
    SKIPPED = "skipped"  # no SSH access: nothing to do on the host
    FAILED = "failed"
    DOWN = "down"  # reached, but the interface is not up
    REPAIR = "repair"  # the config was right, what the host ran had drifted: repaired
    AGENT = "agent"  # only the failover agent was installed, updated or started
    OK = "ok"
    PRIMED = "primed"
    PROBED = "probed"


@dataclass(frozen=True, eq=False, repr=False)
class SshTarget(Value):
    """How wgmesh reaches a peer over SSH."""

    user: str
    host: str
    port: int = 22
    key: str | None = None  # path of a private key file; the key itself never enters the inventory

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + (f":{self.port}" if self.port != 22 else "")


@dataclass(frozen=True, eq=False, repr=False)
class Instance(Value):
    """A private machine behind a peer, reached through the peer as an SSH jump host."""

    name: str
    address: IPAddress
    ssh_user: str = "root"
    ssh_port: int = 22
    host_keys: tuple[str, ...] = ()
    address6: IPAddress | None = None  # its IPv6 address (dual-stack sites), probed by verify too


@dataclass(frozen=True, eq=False, repr=False)
class RouteTable(Value):
    """How the active gateway of an HA site points its site's traffic at itself (the agent's
    job, see wgmesh/agent/agent.py): "vip" — the site's router address (with its prefix length)
    on the gateway's LAN interface, announced by gratuitous ARP; "aws" — the private route
    tables' routes to the other sites, replaced to point at the gateway's network interface."""

    kind: str  # "vip" or "aws"
    address: str = ""  # vip: e.g. 10.10.2.1/24
    interface: str = ""  # vip: the gateway's LAN interface
    region: str = ""  # aws
    route_table_ids: tuple[str, ...] = ()  # aws
    network_interface_id: str = ""  # aws: this gateway's


@dataclass(frozen=True, eq=False, repr=False, init=False)  # __init__ below
class Peer(Value):
    """One member of the mesh: its tunnel addresses, endpoint, the subnets behind it, how wgmesh
    reaches it. Only public data (its keys are in the keystore)."""

    name: str
    address: IPAddress  # tunnel address, allocated from the mesh pool
    endpoint_host: str | None = None
    endpoint_port: int | None = None
    subnets: tuple[IPNetwork, ...] = ()
    listen_port: int = DEFAULT_PORT
    keepalive: int | None = None
    ssh: SshTarget | None = None
    host_keys: tuple[str, ...] = ()
    egress_interface: str = "detect"
    private_address: IPAddress | None = None
    region: str = ""
    cloud: str = ""
    source: Source = Source.MANUAL
    instances: tuple[Instance, ...] = ()
    mtu: int | None = None  # this peer's wg0 MTU; None: the mesh's (e.g. 1380 behind PPPoE)
    address6: IPAddress | None = None  # second tunnel address, from the mesh's IPv6 pool (dual stack)
    private_address6: IPAddress | None = None  # an IPv6 address of the gateway inside its subnets
    site: str = ""  # the HA site this peer is one of the two gateways of ("": none)
    route_table: RouteTable | None = None  # an HA gateway's: how it takes its site's traffic

    def __init__(  # noqa: PLR0913, PLR0917 (the fields, as dataclass() would take them)
        self, name: str, address: IPAddress, endpoint_host: str | None = None, endpoint_port: int | None = None,
        subnets: tuple[IPNetwork, ...] = (), listen_port: int = DEFAULT_PORT, keepalive: int | None = None,
        ssh: SshTarget | None = None, host_keys: tuple[str, ...] = (), egress_interface: str = "detect",
        private_address: IPAddress | None = None, region: str = "", cloud: str = "", source: Source = Source.MANUAL,
        instances: tuple[Instance, ...] = (), mtu: int | None = None, address6: IPAddress | None = None,
        private_address6: IPAddress | None = None, site: str = "", route_table: RouteTable | None = None,
    ) -> None:
        # Written out: reading 1000 peers makes 1000 of these, and dataclass()'s __init__ for a
        # frozen class sets each field through object.__setattr__ (2 us a peer; this: 0.9 us).
        # tests/unit/test_model.py checks that it takes the fields, in their order, with their defaults.
        self.__dict__.update(
            name=name, address=address, endpoint_host=endpoint_host, endpoint_port=endpoint_port, subnets=subnets,
            listen_port=listen_port, keepalive=keepalive, ssh=ssh, host_keys=host_keys,
            egress_interface=egress_interface, private_address=private_address, region=region, cloud=cloud,
            source=source, instances=instances, mtu=mtu, address6=address6, private_address6=private_address6,
            site=site, route_table=route_table,
        )

    @property
    def endpoint(self) -> str | None:
        if self.endpoint_host is None:
            return None
        host = f"[{self.endpoint_host}]" if ":" in self.endpoint_host else self.endpoint_host
        return f"{host}:{self.endpoint_port or self.listen_port}"

    @property
    def tunnel_addresses(self) -> tuple[IPAddress, ...]:
        """Its tunnel addresses: one per family of the mesh's pools."""
        return (self.address,) if self.address6 is None else (self.address, self.address6)

    @functools.cached_property
    def allowed_ips(self) -> tuple[IPNetwork, ...]:
        """What every other peer routes to this one: its tunnel /32 (and /128) plus its subnets."""
        if self.address6 is None:
            return (_host_network(self.address), *self.subnets)
        return (_host_network(self.address), _host_network(self.address6), *self.subnets)


def _host_network(address: IPAddress) -> IPNetwork:
    """ip_network(address), made from the address's integer (ip_network would print the address
    and parse it again: 3x slower)."""
    return IPv4Network(int(address)) if address.version == 4 else IPv6Network(int(address))


@dataclass(frozen=True, eq=False, repr=False)
class MeshSettings(Value):
    """What every peer of the mesh shares: the pools, the interface, its MTU and port, PSKs on or off."""

    pool: IPNetwork
    pool6: IPNetwork | None = None  # an IPv4 mesh's IPv6 pool (dual stack): every peer gets an address of each
    interface: str = DEFAULT_INTERFACE
    mtu: int = DEFAULT_MTU
    listen_port: int = DEFAULT_PORT
    psk: bool = True


@dataclass(frozen=True, eq=False, repr=False)
class Inventory(Value):
    """The mesh as the inventory file holds it: its settings and its peers."""

    name: str
    mesh: MeshSettings
    peers: tuple[Peer, ...] = ()  # always sorted by name
    stack: str | None = None
    vars: tuple[tuple[str, str], ...] = ()

    def peer(self, name: str) -> Peer:
        for p in self.peers:
            if p.name == name:
                return p
        raise KeyError(name)

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        """Peer names in order (computed once: callers test membership in loops)."""
        return tuple(p.name for p in self.peers)


@dataclass(frozen=True, eq=False, repr=False)
class KeyPair(Value):
    """A peer's WireGuard key pair (base64)."""

    private: str = field(repr=False)  # base64; never printed
    public: str

    def __str__(self) -> str:
        return f"KeyPair(public={self.public})"


@dataclass(frozen=True, eq=False, repr=False)
class RunningPeer(Value):
    """A peer as an interface runs it (or as the config says it should)."""

    allowed_ips: frozenset[str]
    endpoint: str | None = None  # None: not compared (not configured, or a DNS name)
    keepalive: int | None = None


@dataclass(frozen=True, eq=False, repr=False)
class AgentState(Value):
    """What a host's failover agent reports (/run/wgmesh/state.json, read by the probe)."""

    installed: str | None = None  # sha256 of the agent bundle installed (None: no agent)
    running: bool = False
    role: str = ""  # active / standby / observer ("" : no state yet)
    epoch: int = 0
    since: float = 0.0  # wall-clock time of the last switch (the host's clock)
    cause: str = ""
    active: str | None = None  # a gateway's view of its site's active gateway
    owners: Mapping[str, str] = field(default_factory=dict)  # site → gateway this host routes it to
    route_table: str = ""  # "held", "-", or "error: ..."
    age: float | None = None  # seconds since the agent last wrote its state (host clock)


@dataclass(frozen=True, eq=False, repr=False)
class HostState(Value):
    """What a host reported before a push: the file, and what it runs."""

    reachable: bool
    interface_up: bool = False
    file_sha: str | None = None  # sha256 of the whole wg0.conf, None if missing
    iface_sha: str | None = None  # sha256 of its [Interface] section
    systemd: bool = False
    running_peers: frozenset[str] = frozenset()  # public keys on the running interface
    listen_port: int | None = None
    peers: Mapping[str, RunningPeer] = field(default_factory=dict)  # public key → how it runs
    routes: frozenset[str] | None = None  # routes via the interface (None: not reported)
    rules: Mapping[tuple[int, str], tuple[int, bool]] = field(default_factory=dict)  # (family, chain) → (rules, jump)
    unit: str | None = None  # `systemctl is-enabled wg-quick@IFACE` where systemd runs
    no_egress: frozenset[int] = frozenset()  # families without a default route (no masquerade is made)
    agent: AgentState = field(default_factory=AgentState)


@dataclass(frozen=True, eq=False, repr=False)
class HostResult(Value):
    """How one host ended a command: ok or not, what was done, why, how long it took."""

    host: str
    ok: bool
    action: Action = Action.OK  # what was done
    detail: str = ""  # reason for a failure, or a short note
    seconds: float = 0.0
