"""A picture of the mesh: Graphviz DOT from the inventory and the handshake matrix. Pure."""

from __future__ import annotations

from collections.abc import Set

from wgmesh import status as statmod
from wgmesh.model import Inventory

EDGE_COLOR = {"up": "#2e9d3a", "stale": "#e69500", "down": "#d62728", "unknown": "#9e9e9e"}


def edge_health(a_to_b: statmod.Link | None, b_to_a: statmod.Link | None) -> str:
    """One tunnel, seen from both ends: down if either end says so, stale if either is stale, up
    if the ends that were seen are fresh (an end not seen — no SSH access, unreachable — does
    not count against the other's view), unknown if no end was seen."""
    states = {link.state for link in (a_to_b, b_to_a) if link is not None}
    if not states or states <= {statmod.UNKNOWN}:
        return "unknown"
    if states & {statmod.NEVER, statmod.MISSING, statmod.DOWN}:
        return "down"
    if statmod.STALE in states:
        return "stale"
    if states <= {statmod.FRESH, statmod.UNKNOWN}:
        return "up" if statmod.FRESH in states else "unknown"
    return "down"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _q(text: str) -> str:
    return '"' + _esc(text) + '"'


def _label(*lines: str) -> str:
    """A multi-line DOT label (\\n between lines)."""
    return '"' + "\\n".join(_esc(line) for line in lines) + '"'


def to_dot(inv: Inventory, links: list[statmod.Link], unreachable: Set[str] = frozenset()) -> str:
    by_pair = {(link.src, link.dst): link for link in links}
    lines = [
        f"graph {_q('wgmesh ' + inv.name)} {{",
        '  graph [layout=circo, fontname="Helvetica", label='
        + _q(f"wgmesh mesh '{inv.name}' — pool {inv.mesh.pool}")
        + ", labelloc=t];",
        '  node [shape=box, style="rounded,filled", fillcolor="#f4f7fb", fontname="Helvetica", fontsize=10];',
        '  edge [penwidth=2, fontname="Helvetica", fontsize=8];',
    ]
    for p in inv.peers:
        where = "/".join(x for x in (p.cloud, p.region) if x) or "-"
        subnets = [str(s) for s in p.subnets] or ["(no subnets)"]
        label = _label(p.name, f"{'  '.join(map(str, p.tunnel_addresses))}  {where}", *subnets)
        color = ', color="#d62728", fillcolor="#fdecec"' if p.name in unreachable else ""
        lines.append(f"  {_q(p.name)} [label={label}{color}];")
    names = inv.names
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            health = edge_health(by_pair.get((a, b)), by_pair.get((b, a)))
            style = ", style=dashed" if health in ("unknown", "down") else ""
            lines.append(f"  {_q(a)} -- {_q(b)} [color={_q(EDGE_COLOR[health])}, tooltip={_q(health)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
