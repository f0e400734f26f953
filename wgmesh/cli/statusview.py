"""The status view: the handshake matrix, the per-peer table, the HA sites, and its live form
(`status --watch`). Loaded only by the status command's view (wgmesh/cli/output.py prints it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from wgmesh.cli.output import out

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from wgmesh import status as statmod
    from wgmesh.commands.status import StatusResult


def _state_style(state: statmod.LinkState) -> str:
    from wgmesh import status as statmod

    return {
        statmod.FRESH: "green",
        statmod.STALE: "yellow",
        statmod.NEVER: "red",
        statmod.MISSING: "red",
        statmod.DOWN: "bold red",
        statmod.UNKNOWN: "dim",
    }.get(state, "")


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _bytes(count: int) -> str:
    n = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _cell(link: statmod.Link) -> Text:
    from rich.text import Text

    from wgmesh import status as statmod

    shown = {statmod.FRESH: _age(link.age), statmod.STALE: _age(link.age)}.get(link.state, link.state)
    return Text(shown, style=_state_style(link.state))


def status_view(res: StatusResult) -> Group:
    """The mesh at a glance: a matrix of handshake ages, then one row per peer."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from wgmesh import status as statmod

    names = [p.name for p in res.peers]
    by_pair = {(lk.src, lk.dst): lk for lk in res.links}
    fresh = sum(1 for lk in res.links if lk.state == statmod.FRESH)
    m = Table(title=f"handshakes: {fresh}/{len(res.links)} fresh (row = as seen from)", show_lines=False)
    m.add_column("from \\ to", style="bold")
    for n in names:
        m.add_column(n, justify="center")
    for src in names:
        cells = [Text("·", style="dim") if src == dst else _cell(by_pair[(src, dst)]) for dst in names]
        m.add_row(Text(src, style="red" if src in res.unreachable else ""), *cells)
    t = Table(title="peers")
    for col in ("peer", "endpoint", "where", "reached", "rx", "tx", "note"):
        t.add_column(col)
    pending_by_host: dict[str, list[str]] = {}
    for r in res.pending:
        for h in r.hosts:
            pending_by_host.setdefault(h, []).append(f"still trusts {r.peer} ({r.why})")
    for p in res.peers:
        mine = [lk for lk in res.links if lk.src == p.name]
        notes = pending_by_host.get(p.name, []) + (
            [f"{len(res.foreign_keys[p.name])} unknown key(s)"] if p.name in res.foreign_keys else []
        ) + [f"drift: {d}" for d in res.drift.get(p.name, [])]
        t.add_row(
            p.name, p.endpoint or "-", "/".join(x for x in (p.cloud, p.region) if x) or "-",
            Text("no SSH", style="dim") if p.name in res.unmanaged
            else Text("no", style="red") if p.name in res.unreachable else Text("yes", style="green"),
            _bytes(sum(lk.rx for lk in mine)), _bytes(sum(lk.tx for lk in mine)),
            Text("; ".join(notes) or (res.unreachable.get(p.name) or ""), style="yellow"),
        )
    parts: list[Table | Text] = [m, t]
    if res.ha:
        parts.append(ha_table(res))
    if res.pending:
        parts.append(Text(
            f"{len(res.pending)} pending revocation(s): " + ", ".join(
                f"{r.peer} ({r.why}) on {', '.join(r.hosts)}" for r in res.pending
            ) + " — 'wgmesh push' retries them", style="bold yellow"))
    return Group(*parts)


def ha_table(res: StatusResult) -> Table:
    """One row per HA site: the active gateway, since when and why, the standby, problems."""
    import time

    from rich.table import Table
    from rich.text import Text

    t = Table(title="HA sites")
    for col in ("site", "active", "since", "epoch", "cause", "standby", "problems"):
        t.add_column(col)
    for name, v in res.ha.items():
        since = "-" if v.since is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.since))
        standby = v.standby or "-"
        t.add_row(
            name, Text(v.active or "none", style="green" if v.active else "bold red"), since, str(v.epoch),
            v.cause or "-", Text(f"{standby} ({v.roles.get(standby, '')})" if v.standby else "-"),
            Text("; ".join(v.problems), style="yellow"),
        )
    return t


def watch(fetch: Callable[[], StatusResult], interval: float) -> None:
    """Refresh the status view in place until Ctrl-C."""
    import time

    from rich.live import Live

    with Live(status_view(fetch()), console=out.rich, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(status_view(fetch()))
        except KeyboardInterrupt:
            pass
