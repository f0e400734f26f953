"""PostUp / PostDown lines for wg0.conf: forwarding and NAT in chains of their own, and the
routes. Pure. wg-quick runs each line with bash; every value in them is a parsed value
(ipaddress objects, validated interface names), quoted here all the same.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from shlex import quote

from wgmesh.model import Inventory, IPNetwork, Peer


def chain_names(iface: str) -> tuple[str, str]:
    return f"WGM-{iface}-FWD", f"WGM-{iface}-NAT"


def mss_chain(iface: str) -> str:
    return f"WGM-{iface}-MSS"


def _egress_expr(peer: Peer, version: int = 4) -> str:
    if peer.egress_interface != "detect":
        return peer.egress_interface
    # The interface of the family's default route, read on the host when the tunnel comes up.
    # (wg-quick cuts a line at '#', so none may appear here.)
    return f"$(ip -o -{version} route show default | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p' | head -n 1)"


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
    """Per address family the peer forwards (the mesh pool's, its subnets'; not the IPv6 pool of
    a dual-stack mesh alone: a peer with no IPv6 subnet forwards no IPv6 and keeps its IPv6
    host settings): its own subnets of that family — the only networks it forwards to and from
    the mesh, and masquerades."""
    return [
        (version, [s for s in peer.subnets if s.version == version])
        for version in sorted({inv.mesh.pool.version} | {s.version for s in peer.subnets})
    ]


def masqueraded(own: list[IPNetwork]) -> list[IPNetwork]:
    """The own subnets masqueraded out of the egress interface: every IPv4 one; of IPv6 only
    the unique local ones (fc00::/7, unroutable on the internet) — global IPv6 subnets are routed
    as they are (IPv6 NAT only where needed)."""
    return [n for n in own if isinstance(n, IPv4Network) or n.subnet_of(ULA)]


ULA = IPv6Network("fc00::/7")


def _fixed_rules(iface: str, own: list[IPNetwork]) -> dict[str, list[str]]:
    """The rules of the filter ("fwd") and mangle ("mss") chains of one family: forward only
    between the tunnel and the own subnets, drop the rest in or out of it, clamp the TCP MSS of
    what enters it. (The NAT chain's rules are made on the host: one per own subnet.)"""
    fwd, mss = chain_names(iface)[0], mss_chain(iface)
    accept = [rule for n in own for rule in (
        f"-A {fwd} -i {iface} -d {n} -j ACCEPT", f"-A {fwd} -o {iface} -s {n} -j ACCEPT",
    )]
    return {
        "fwd": [*accept, f"-A {fwd} -i {iface} -j DROP", f"-A {fwd} -o {iface} -j DROP"],
        "mss": [f"-A {mss} -o {iface} -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"],
    }


def _lines(rules: list[str]) -> str:
    """Rules as printf text for iptables-restore: each ended by a \\n escape."""
    return "".join(rule + "\\n" for rule in rules)


def expected_rules(inv: Inventory, peer: Peer) -> dict[tuple[int, str], int]:
    """What the hooks leave on a host: (family, "fwd"/"mss"/"nat") → the number of rules in that
    chain (each chain with its jump). The probe reports the same (scripts/probe.sh, wgm_rules)."""
    out: dict[tuple[int, str], int] = {}
    for version, own in families(inv, peer):
        for kind, rules in _fixed_rules(inv.mesh.interface, own).items():
            out[(version, kind)] = len(rules)
        if masqueraded(own):
            out[(version, "nat")] = len(masqueraded(own))
    return out


def _jump(ipt: str, table: str, hook: str, chain: str, first: bool = False) -> str:
    add = f"-I {hook}" if first else f"-A {hook}"
    return f"{{ {ipt} -w -t {table} -C {hook} -j {chain} 2>/dev/null || {ipt} -w -t {table} {add} -j {chain}; }}"


def _unjump(ipt: str, table: str, hook: str, chain: str) -> str:
    return (
        f"{ipt} -w -t {table} -D {hook} -j {chain} 2>/dev/null; {ipt} -w -t {table} -F {chain} 2>/dev/null; "
        f"{ipt} -w -t {table} -X {chain} 2>/dev/null"
    )


NUDGE_DELAY = 2  # seconds before a host pings the peers whose public key sorts before its own


def nudge_command(iface: str) -> str:
    """One shell line, run in the background as the last PostUp: one ping to every peer's tunnel
    address, so a host that just (re)started opens its sessions itself at once (its peers still
    hold sessions with the instance that went down and would only notice after ~15 s).

    One direction per pair first: a host pings at once the peers whose public key sorts after
    its own, and the others NUDGE_DELAY s later. When every host starts at once (a first push),
    each pair starts one handshake, from one side (two at once stall the pair for 5 s); the late
    pings then find the session made. One fping per batch where fping is installed (a ping per
    peer would be a process per peer on every host). Derived from the running interface, so the
    line does not change with the mesh; no '#' (wg-quick cuts lines there).
    """
    return (
        f"(me=$(wg show {iface} public-key); t=$(wg show {iface} allowed-ips | LC_ALL=C awk -v me=\"$me\" "
        "'{for (i = 2; i <= NF; i++) if ($i ~ /\\/(32|128)$/) {sub(/\\/[0-9]+$/, \"\", $i); "
        f"print ($1 > me ? 0 : {NUDGE_DELAY}), $i}}}}'); for d in 0 {NUDGE_DELAY}; do sleep \"$d\"; "
        "set -- $(printf '%s\\n' \"$t\" | awk -v d=\"$d\" '$1 == d {print $2}'); [ -n \"${1:-}\" ] || continue; "
        "if command -v fping >/dev/null; then fping -q -c 1 -t 1000 \"$@\" || true; "
        "else for a in \"$@\"; do ping -n -c 1 -W 1 \"$a\" & done; wait || true; fi; done) >/dev/null 2>&1 &"
    )


def firewall_hooks(inv: Inventory, peer: Peer) -> tuple[list[str], list[str]]:
    """PostUp / PostDown lines, idempotent, in chains of their own. Least privilege: the gateway
    forwards only between the mesh and its own subnets (anything else in or out of the tunnel
    is dropped: a peer that routes a foreign destination through it gets nothing), clamps the
    TCP MSS of what it sends into the tunnel to the path MTU, and masquerades only its own
    subnets out of the egress interface (never the mesh pool: it is nobody's open NAT).

    Each family's rules are loaded with one `iptables-restore --noflush` (which empties the
    chains it declares before filling them: re-running never duplicates a rule), then the jumps
    into the chains are added only if missing.
    """
    iface = inv.mesh.interface
    fwd, nat = chain_names(iface)
    mss = mss_chain(iface)
    up: list[str] = []
    down: list[str] = []
    for version, own in families(inv, peer):
        ipt = "iptables" if version == 4 else "ip6tables"
        sysctl = "net.ipv4.ip_forward" if version == 4 else "net.ipv6.conf.all.forwarding"
        if version == 6:
            # Forwarding makes the kernel ignore router advertisements: a host that gets its IPv6
            # default route by SLAAC would lose it. accept_ra=2 on the egress keeps taking them.
            # (The slash form: an interface name may hold dots, e.g. a VLAN's eth0.100.)
            up.append(f'e6="{_egress_expr(peer, 6)}"; '
                      'if [ -n "$e6" ]; then sysctl -q -w "net/ipv6/conf/$e6/accept_ra=2"; fi')
        up.append(f"sysctl -q -w {sysctl}=1")
        fixed = _fixed_rules(iface, own)
        nat_own = masqueraded(own)
        rules = (
            f"printf '*filter\\n:{fwd} - [0:0]\\n{_lines(fixed['fwd'])}COMMIT\\n'; "
            f"printf '*mangle\\n:{mss} - [0:0]\\n{_lines(fixed['mss'])}COMMIT\\n'"
        )
        if nat_own:
            srcs = " ".join(quote(str(s)) for s in nat_own)  # parsed values; quoted all the same
            rules += (
                f"; printf '*nat\\n:{nat} - [0:0]\\n'; if [ -n \"$e\" ]; then for s in {srcs}; do "
                f"printf -- '-A {nat} -s %s -o %s -j MASQUERADE\\n' \"$s\" \"$e\"; done; fi; printf 'COMMIT\\n'"
            )
        line = (f'e="{_egress_expr(peer, version)}"; ' if nat_own else "")
        line += f"{{ {rules}; }} | {ipt}-restore -w --noflush"
        line += " && " + _jump(ipt, "filter", "FORWARD", fwd, first=True)
        line += " && " + _jump(ipt, "mangle", "FORWARD", mss)
        if nat_own:
            line += " && " + _jump(ipt, "nat", "POSTROUTING", nat)
            down.append(_unjump(ipt, "nat", "POSTROUTING", nat) + "; true")
        up.append(line)
        down.append(_unjump(ipt, "mangle", "FORWARD", mss) + "; " + _unjump(ipt, "filter", "FORWARD", fwd) + "; true")
    up.append(route_sync_command(iface))
    up.append(nudge_command(iface))
    return up, down


