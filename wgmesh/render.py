"""wg0.conf text for every peer: a pure function of the inventory and the keys.

The INI is produced with wgconfig, in memory. Every value that reaches the file or a
PostUp/PostDown line comes from a parsed and re-serialised value (ipaddress objects,
validated names and numbers): no user text is pasted into a shell line.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Iterator

from wgconfig import WGConfig

from wgmesh import ha
from wgmesh.keys import Keys, psk_hasher
from wgmesh.model import Inventory, IPNetwork, Peer
from wgmesh.remote.hooks import chain_names, firewall_hooks, route_sync_command

__all__ = ["HEADER", "Renderer", "chain_names", "fingerprints", "firewall_hooks", "render", "route_sync_command"]

HEADER = "# rendered by wgmesh: changes made here are replaced by the next push"


def _host_prefix(peer: Peer) -> str:
    """Its tunnel address (both, in a dual-stack mesh) as wg-quick's Address line wants them."""
    return ", ".join(f"{a}/{a.max_prefixlen}" for a in peer.tunnel_addresses)


@functools.lru_cache(maxsize=16)
def _interface_template(mtu: int) -> tuple[list[str], str, str]:
    """The [Interface] section written once with wgconfig, with {placeholders} for what differs
    per peer (wgconfig re-parses the whole file on every call: once per render, not per peer)."""
    cfg = WGConfig()
    cfg.initialize_file(HEADER)
    cfg.add_attr(None, "Address", "{address}")
    cfg.add_attr(None, "ListenPort", "{port}")
    cfg.add_attr(None, "PrivateKey", "{private}")
    cfg.add_attr(None, "MTU", mtu)
    cfg.add_attr(None, "Table", "off")  # routes: one `ip -batch` in PostUp, see route_sync_command
    cfg.add_attr(None, "PostUp", "{hook}")
    cfg.add_attr(None, "PostDown", "{hook}")
    *head, post_up, post_down = cfg.lines
    return head, post_up, post_down


def interface_lines(inv: Inventory, keys: Keys, peer: Peer) -> list[str]:
    head, post_up, post_down = _interface_template(peer.mtu or inv.mesh.mtu)
    values = {"address": _host_prefix(peer), "port": peer.listen_port, "private": keys.pairs[peer.name].private}
    lines = [line.format(**values) for line in head]
    up, down = firewall_hooks(inv, peer)
    lines += [post_up.format(hook=h) for h in up]
    lines += [post_down.format(hook=h) for h in down]
    return lines


def peer_block(peer: Peer, public: str, allowed: tuple[IPNetwork, ...] | None = None) -> list[str]:
    """The part of a [Peer] section that is the same in every other peer's file (`allowed`:
    the AllowedIPs if not the peer's own, see ha.allowed_ips)."""
    cfg = WGConfig()
    cfg.add_peer(public, leading_comment=f"# {peer.name}")
    cfg.add_attr(public, "AllowedIPs", ", ".join(str(n) for n in (peer.allowed_ips if allowed is None else allowed)))
    if peer.endpoint is not None:
        cfg.add_attr(public, "Endpoint", peer.endpoint)
    lines: list[str] = cfg.lines[1:]  # drop the empty [Interface] header of the scratch config
    return lines


class Renderer:
    """Renders any peer's wg0.conf; what is shared between files is built once per peer.

    Per pair only the PresharedKey (and the local side's keepalive) differ, so each file is the
    [Interface] section plus, for every other peer, two cached strings around one derived line.
    Memory stays at one file at a time, whatever the number of peers.
    """

    def __init__(self, inv: Inventory, keys: Keys, active: ha.Active | None = None):
        self.inv = inv
        self.keys = keys
        self.index = {p.name: i for i, p in enumerate(inv.peers)}
        # HA sites: who holds each site's subnets (ha.allowed_ips). A gateway's partner never
        # routes them to it: its file gets the bare section (tunnel address only).
        self.active = {**ha.default_active(inv), **(active or {})}
        self.bare: dict[int, str] = {}  # peer index → its 'AllowedIPs = <tunnel>' section end
        self.partner: dict[int, int] = {}  # HA gateway index → its partner's index
        self.raw = [base64.b64decode(keys.public(p.name)) for p in inv.peers]
        self.hasher = psk_hasher(keys.psk_secret) if keys.psk_secret else None
        self._joined_cache: dict[str, tuple[str, list[int]]] = {}
        self.pre: list[str] = []  # '\n# name\n[Peer]\nPublicKey = ...\n'
        self.post: list[str] = []  # 'AllowedIPs = ...\nEndpoint = ...\n'
        for p in inv.peers:
            block = peer_block(p, keys.public(p.name), ha.allowed_ips(inv, p, "", self.active))
            self.pre.append("".join(line + "\n" for line in block[:4]))
            self.post.append("".join(line + "\n" for line in block[4:]))
        for site in ha.sites(inv).values():
            a, b = (self.index[g.name] for g in site.gateways)
            self.partner[a], self.partner[b] = b, a
            for i in (a, b):
                p = inv.peers[i]
                block = peer_block(p, keys.public(p.name), p.allowed_ips[:ha.tunnel_count(p)])
                self.bare[i] = "".join(line + "\n" for line in block[4:])

    def _joined(self, keepalive: str) -> tuple[str, list[int]]:
        """Every peer's section, joined once, with where each starts (for meshes without PSKs,
        where a section is the same in every other peer's file)."""
        got = self._joined_cache.get(keepalive)
        if got is None:
            offsets, parts, at = [], [], 0
            for pre, post in zip(self.pre, self.post, strict=True):
                offsets.append(at)
                section = pre + post + keepalive
                parts.append(section)
                at += len(section)
            offsets.append(at)
            got = self._joined_cache[keepalive] = ("".join(parts), offsets)
        return got

    def text(self, name: str) -> str:
        i = self.index[name]
        me = self.inv.peers[i]
        head = "\n".join(interface_lines(self.inv, self.keys, me)) + "\n"
        keepalive = f"PersistentKeepalive = {me.keepalive}\n" if me.keepalive else ""
        partner = self.partner.get(i)
        if not self.inv.mesh.psk and partner is None:
            joined, offsets = self._joined(keepalive)
            return head + joined[: offsets[i]] + joined[offsets[i + 1]:]
        parts = [head]
        append = parts.append
        pre, post, raw = self.pre, self.post, self.raw
        mine = raw[i]
        hasher, b64 = self.hasher, binascii.b2a_base64
        if hasher is None and self.inv.mesh.psk:  # keys.ensure always makes the secret: a keystore without one is a bug
            raise ValueError("preshared keys are on, but the keystore holds no PSK secret")
        for j in range(len(pre)):
            if j == i:
                continue
            append(pre[j])
            if hasher is not None and self.inv.mesh.psk:
                h = hasher.copy()  # keys.psk_from, inlined: this loop runs N² times
                other = raw[j]
                h.update(mine + other if mine < other else other + mine)
                append("PresharedKey = " + b64(h.digest(), newline=False).decode() + "\n")
            append(self.bare[j] if j == partner else post[j])
            if keepalive:
                append(keepalive)
        return "".join(parts)


def iter_render(inv: Inventory, keys: Keys, active: ha.Active | None = None) -> Iterator[tuple[str, str]]:
    """Yield (peer name, wg0.conf text) in name order, one file at a time."""
    r = Renderer(inv, keys, active)
    for p in inv.peers:
        yield p.name, r.text(p.name)


def render(inv: Inventory, keys: Keys, active: ha.Active | None = None) -> dict[str, str]:
    return dict(iter_render(inv, keys, active))


# ---------------------------------------------------------------- fingerprints for the plan

# Lines of [Interface] that `wg syncconf` applies by itself: changing only these needs no restart.
SYNCABLE_INTERFACE_KEYS = ("PrivateKey", "ListenPort", "FwMark")


def interface_fingerprint_lines(text: str) -> list[str]:
    """The [Interface] lines whose change needs a restart (comments, blanks and syncable keys dropped).

    The same selection is made on the host by `wgm_iface_lines` (remote/scripts/probe.sh);
    keep the two in step.
    """
    out = []
    for line in text.split("\n"):
        if line.startswith("[Peer]"):
            break
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key = stripped.split("=", 1)[0].strip()
        if key in SYNCABLE_INTERFACE_KEYS:
            continue
        out.append(line)
    return out


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprints(text: str) -> tuple[str, str]:
    """(sha256 of the whole file, sha256 of its restart-relevant [Interface] lines)."""
    iface = "".join(line + "\n" for line in interface_fingerprint_lines(text))
    return sha256(text), sha256(iface)
