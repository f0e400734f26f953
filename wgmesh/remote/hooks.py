"""PostUp / PostDown lines for wg0.conf: forwarding and NAT in chains of their own, and the
routes. Pure. wg-quick runs each line with bash; every value in them is a parsed value
(ipaddress objects, validated interface names), quoted here all the same.
"""

from __future__ import annotations

from wgmesh.model import Inventory, IPNetwork, Peer
from wgmesh.remote.compiler import q


def chain_names(iface: str) -> tuple[str, str]:
    return f"WGM-{iface}-FWD", f"WGM-{iface}-NAT"


def _egress_expr(peer: Peer) -> str:
    if peer.egress_interface != "detect":
        return peer.egress_interface
    # The interface of the default route, read on the host when the tunnel comes up.
    # (wg-quick cuts a line at '#', so none may appear here.)
    return "$(ip -o -4 route show default | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p' | head -n 1)"


def route_sync_command(iface: str) -> str:
    """One shell line: a route via the interface for every AllowedIPs the interface runs, in one
    `ip -batch` (wg-quick would spawn `ip` once per prefix: O(peers) processes per host).

    Used as PostUp (the config sets Table = off, so wg-quick adds no routes itself) and after
    `wg syncconf`. No '#' may appear (wg-quick cuts lines there); public keys never match the
    CIDR pattern (base64 keys end in '='). sed, not grep: wg-quick runs hooks with
    `set -e -o pipefail`, and grep fails when the interface has no peer yet.
    """
    return (
        f"wg show {iface} allowed-ips | tr ' \\t' '\\n\\n' "
        f"| sed -n -E 's|^([0-9a-f.:]+/[0-9]+)$|route replace \\1 dev {iface}|p' | ip -batch -"
    )


def families(inv: Inventory, peer: Peer) -> list[tuple[int, list[IPNetwork]]]:
    """Per address family the peer forwards: the sources it masquerades (the mesh pool, if of
    that family, and the peer's own subnets)."""
    out: list[tuple[int, list[IPNetwork]]] = []
    for version in sorted({inv.mesh.pool.version} | {s.version for s in peer.subnets}):
        sources = [inv.mesh.pool] if inv.mesh.pool.version == version else []
        sources += [s for s in peer.subnets if s.version == version]
        out.append((version, sources))
    return out


def expected_rules(inv: Inventory, peer: Peer) -> dict[tuple[int, str], int]:
    """What the hooks leave on a host: (family, "fwd"/"nat") → the number of rules in that chain
    (each chain with its jump). The probe reports the same (scripts/probe.sh, wgm_rules)."""
    out: dict[tuple[int, str], int] = {}
    for version, sources in families(inv, peer):
        out[(version, "fwd")] = 2
        if sources:
            out[(version, "nat")] = len(sources)
    return out


def firewall_hooks(inv: Inventory, peer: Peer) -> tuple[list[str], list[str]]:
    """PostUp / PostDown lines: forwarding and MASQUERADE, idempotent, in chains of their own.

    Each family's rules are loaded with one `iptables-restore --noflush` (which empties the
    chain it declares before filling it: re-running never duplicates a rule), then the jumps
    into the chains are added only if missing.
    """
    iface = inv.mesh.interface
    fwd, nat = chain_names(iface)
    up: list[str] = []
    down: list[str] = []
    for version, sources in families(inv, peer):
        ipt = "iptables" if version == 4 else "ip6tables"
        sysctl = "net.ipv4.ip_forward" if version == 4 else "net.ipv6.conf.all.forwarding"
        up.append(f"sysctl -q -w {sysctl}=1")
        rules = (
            f"printf '*filter\\n:{fwd} - [0:0]\\n-A {fwd} -i {iface} -j ACCEPT\\n"
            f"-A {fwd} -o {iface} -j ACCEPT\\nCOMMIT\\n'"
        )
        if sources:
            srcs = " ".join(q(str(s)) for s in sources)  # parsed values; quoted all the same
            rules += (
                f"; printf '*nat\\n:{nat} - [0:0]\\n'; if [ -n \"$e\" ]; then for s in {srcs}; do "
                f"printf -- '-A {nat} -s %s -o %s -j MASQUERADE\\n' \"$s\" \"$e\"; done; fi; printf 'COMMIT\\n'"
            )
        line = (f'e="{_egress_expr(peer)}"; ' if sources else "") + f"{{ {rules}; }} | {ipt}-restore -w --noflush && "
        line += f"{{ {ipt} -w -C FORWARD -j {fwd} 2>/dev/null || {ipt} -w -I FORWARD -j {fwd}; }}"
        if sources:
            line += (
                f" && {{ {ipt} -w -t nat -C POSTROUTING -j {nat} 2>/dev/null"
                f" || {ipt} -w -t nat -A POSTROUTING -j {nat}; }}"
            )
            down.append(
                f"{ipt} -w -t nat -D POSTROUTING -j {nat} 2>/dev/null; {ipt} -w -t nat -F {nat} 2>/dev/null; "
                f"{ipt} -w -t nat -X {nat} 2>/dev/null; true"
            )
        up.append(line)
        down.append(
            f"{ipt} -w -D FORWARD -j {fwd} 2>/dev/null; {ipt} -w -F {fwd} 2>/dev/null; "
            f"{ipt} -w -X {fwd} 2>/dev/null; true"
        )
    up.append(route_sync_command(iface))
    return up, down


