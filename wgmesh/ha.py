"""High availability: sites with two gateways. Pure.

A site's two gateways are both peers of the mesh, each with its own key, tunnel address and
tunnels; the site's subnets belong to one of them at a time, the active one: every other peer
has them in that gateway's AllowedIPs, none in the other's (and neither gateway has them in its
partner's: they are on its own LAN). Who is active is decided on the hosts by the failover agent
(wgmesh/agent/agent.py); the controller reads it from the agents' state when it renders, so a
push never moves a site back.

This module: which peers form HA sites, AllowedIPs under a given choice of active gateways,
the agent's config and the bundle pushed to the hosts, and the active gateways as the agents
report them.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wgmesh.errors import BadInput
from wgmesh.inventory import route_table_to_dict
from wgmesh.model import AGENT_PORT, AgentState, Inventory, IPNetwork, Peer

INTERVAL = 0.25  # seconds between an agent's messages
DEAD = 1.5  # seconds without hearing a gateway (directly or from a witness) before it counts as lost
UNIT = "wgmesh-agent.service"

Active = Mapping[str, str]  # site → its active gateway


@dataclass(frozen=True)
class Site:
    name: str
    gateways: tuple[Peer, Peer]  # in priority order (by name): the first wins a tie

    @property
    def subnets(self) -> tuple[IPNetwork, ...]:
        return self.gateways[0].subnets

    def names(self) -> tuple[str, str]:
        return self.gateways[0].name, self.gateways[1].name


def sites(inv: Inventory) -> dict[str, Site]:
    """The HA sites: a site name shared by two peers (a site with one gateway left is a plain peer)."""
    return _sites(inv.peers)


@functools.lru_cache(maxsize=8)
def _sites(peers: tuple[Peer, ...]) -> dict[str, Site]:
    groups: dict[str, list[Peer]] = {}
    for p in peers:
        if p.site:
            groups.setdefault(p.site, []).append(p)
    return {s: Site(s, (g[0], g[1])) for s, g in sorted(groups.items()) if len(g) == 2}


def site_of(inv: Inventory, name: str) -> Site | None:
    for s in sites(inv).values():
        if name in s.names():
            return s
    return None


def default_active(inv: Inventory) -> dict[str, str]:
    return {s.name: s.gateways[0].name for s in sites(inv).values()}


def allowed_ips(inv: Inventory, peer: Peer, viewer: str, active: Active | None = None) -> tuple[IPNetwork, ...]:
    """What `viewer` routes to `peer`: its tunnel address, plus its subnets unless `peer` is the
    standby gateway of an HA site, or the viewer is its partner (the subnets are on the viewer's
    own LAN)."""
    if not peer.site:
        return peer.allowed_ips
    site = sites(inv).get(peer.site)
    if site is None:
        return peer.allowed_ips
    bare = peer.allowed_ips[:tunnel_count(peer)]
    if viewer in site.names():
        return bare
    chosen = (active or {}).get(site.name) or site.gateways[0].name
    return peer.allowed_ips if chosen == peer.name else bare


def tunnel_count(peer: Peer) -> int:
    """How many of the peer's AllowedIPs are its own tunnel addresses (the rest: its subnets)."""
    return len(peer.allowed_ips) - len(peer.subnets)


def has_ha(inv: Inventory) -> bool:
    return bool(sites(inv))


# ---------------------------------------------------------------- the agent on the hosts


def agent_config(inv: Inventory, public_keys: Mapping[str, str], peer: Peer) -> dict[str, Any]:
    """The agent's config for one host (agent.json): public data only."""
    all_sites = sites(inv)
    mine = site_of(inv, peer.name)
    gateways = {g.name for s in all_sites.values() for g in s.gateways}
    own = set(mine.subnets) if mine else set(peer.subnets)
    destinations = sorted({str(n) for o in inv.peers for n in o.subnets if n not in own})
    return {
        "version": 1,
        "name": peer.name,
        "interface": inv.mesh.interface,
        "port": AGENT_PORT,
        "interval": INTERVAL,
        "dead": DEAD,
        "agents": {p.name: str(p.address) for p in inv.peers if p.ssh is not None},
        "keys": {n: public_keys[n] for n in sorted(gateways) if n in public_keys},
        "tunnels": {g.name: [str(n) for n in g.allowed_ips[:tunnel_count(g)]] for g in
                    sorted((g for s in all_sites.values() for g in s.gateways), key=lambda p: p.name)},
        "sites": {
            s.name: {"gateways": list(s.names()), "prefixes": [str(n) for n in s.subnets]}
            for s in all_sites.values()
        },
        "site": mine.name if mine else None,
        "route_table": route_table_to_dict(peer.route_table) if mine and peer.route_table else None,
        "destinations": destinations if mine else [],
    }


def unit_text() -> str:
    return (
        "[Unit]\n"
        "Description=wgmesh failover agent (HA sites; installed by wgmesh push)\n"
        "After=network-online.target wg-quick@wg0.service\n"
        "Wants=network-online.target\n\n"
        "[Service]\n"
        "ExecStart=/usr/bin/env python3 /etc/wgmesh/agent.py run\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        "Restart=always\n"
        "RestartSec=1\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


@functools.cache
def _program(name: str) -> bytes:
    from importlib import resources  # only where a bundle is made: not on every command's start

    return resources.files("wgmesh.agent").joinpath(name).read_bytes()


def bundle(config: Mapping[str, Any]) -> bytes:
    """The files a host's agent needs, as one tar (extracted into /etc/wgmesh): the program, the
    EC2 client beside it, the config, the systemd unit. Byte-identical for the same input."""
    import io
    import tarfile

    files = {
        "agent.py": _program("agent.py"),
        "ec2.py": _program("ec2.py"),
        "hostops.py": _program("hostops.py"),
        "rule.py": _program("rule.py"),
        "agent.json": (json.dumps(config, sort_keys=True, indent=1) + "\n").encode(),
        UNIT: unit_text().encode(),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600 if name.endswith(".json") else 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def bundle_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- what the agents report


def active_from(inv: Inventory, agents: Mapping[str, AgentState]) -> dict[str, str]:
    """Per HA site, the active gateway as the running agents report it: the gateway that says
    it is active with the highest epoch; else what most agents route the site to; else the first
    gateway (nothing runs yet: the first push)."""
    out = default_active(inv)
    for s in sites(inv).values():
        claims = [
            (a.epoch, -i, g.name) for i, g in enumerate(s.gateways)
            if (a := agents.get(g.name)) is not None and a.running and a.role == "active"
        ]
        if claims:
            out[s.name] = max(claims)[2]
            continue
        votes: dict[str, int] = {}
        for a in agents.values():
            if a.running and s.name in a.owners:
                votes[a.owners[s.name]] = votes.get(a.owners[s.name], 0) + 1
        if votes:
            out[s.name] = max(sorted(votes.items()), key=lambda kv: kv[1])[0]
    return out


def require_site(inv: Inventory, name: str) -> Site:
    """The HA site `name` (BadInput naming it otherwise)."""
    all_sites = sites(inv)
    if name in all_sites:
        return all_sites[name]
    found = site_of(inv, name) if name in inv.names else None
    if found is not None:
        raise BadInput("SITE", name, f"is a gateway of site {found.name!r}: name the site",
                       hint=f"wgmesh failover {found.name}")
    if name in inv.names or any(p.site == name for p in inv.peers):
        raise BadInput("SITE", name, "has one gateway: failover needs a site with two (an HA site)")
    have = ", ".join(all_sites) or "none (up --var ha=true makes them)"
    raise BadInput("SITE", name, "no such site in the inventory", hint=f"HA sites: {have}")
