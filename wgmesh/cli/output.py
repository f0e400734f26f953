"""The only module that prints: Rich tables and progress on the terminal, or JSON on stdout.

Progress and Terraform's output go to stderr, so `--json` on stdout stays parseable.

Start-up: every command imports this module, so it imports neither Rich nor a command module.
The consoles (`out`, `err`) are made on first use; tables, progress bars and the result types
come with the view that needs them (views are found by the result's class name); a plain line
(genconfig's summary) is written as Rich would write it, without loading Rich.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wgmesh.progress import Reporter

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from wgmesh.commands.addpeer import AddResult
    from wgmesh.commands.delpeer import DelResult
    from wgmesh.commands.destroy import DestroyResult
    from wgmesh.commands.failover import FailoverResult
    from wgmesh.commands.genconfig import GenResult
    from wgmesh.commands.graph import GraphResult
    from wgmesh.commands.import_outputs import ImportResult
    from wgmesh.commands.migrate import MigrateResult
    from wgmesh.commands.push import PushResult
    from wgmesh.commands.rotate_keys import RotateResult
    from wgmesh.commands.setpeer import SetResult
    from wgmesh.commands.showpeers import ShowResult
    from wgmesh.commands.status import StatusResult
    from wgmesh.commands.unlock import UnlockResult
    from wgmesh.commands.up import UpResult
    from wgmesh.commands.verify import VerifyResult
    from wgmesh.errors import WgmeshError
    from wgmesh.model import HostResult, Inventory, Peer

class LazyConsole:
    """A Rich console of stdout (or stderr), made on first use. Nothing from hosts or users is
    markup, or an emoji code (and so the emoji table is never loaded)."""

    def __init__(self, stderr: bool = False) -> None:
        self.stderr = stderr

    @functools.cached_property
    def rich(self) -> Console:
        from rich.console import Console

        return Console(stderr=self.stderr, highlight=False, soft_wrap=True, markup=False, emoji=False)

    def print(self, *objects: Any) -> None:
        self.rich.print(*objects)


out = LazyConsole()
err = LazyConsole(stderr=True)


def plain(*lines: str, stderr: bool = False) -> None:
    """Unstyled lines on stdout (or stderr), without loading Rich when it would change nothing:
    printable ASCII has no style, and soft wrap never breaks it."""
    if all(line.isascii() and line.isprintable() for line in lines):
        stream = sys.stderr if stderr else sys.stdout
        stream.write("".join(line + "\n" for line in lines))
        stream.flush()
    else:
        for line in lines:
            (err if stderr else out).print(line)


def emit_json(data: Any) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def error(exc: WgmeshError) -> None:
    from rich.text import Text

    err.print(Text("error: ", style="bold red") + Text(exc.message))
    if exc.hint:
        err.print(Text("hint: ", style="yellow") + Text(exc.hint))


def info(text: str) -> None:
    plain(text, stderr=True)  # what Rich would print for it: no style, no markup


class RichReporter(Reporter):
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.total = 0

    def phase(self, text: str) -> None:
        from rich.text import Text

        self._stop()
        if not self.quiet:
            err.print(Text("▶ ", style="bold cyan") + Text(text, style="bold"))

    def line(self, text: str) -> None:
        from rich.text import Text

        if not self.quiet:
            err.print(Text("  │ " + text, style="dim"))

    def expect(self, total: int, what: str) -> None:
        self._stop()
        self.total = total
        if self.quiet or not total:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err.rich, transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(what, total=total)

    def host_start(self, name: str) -> None:
        pass

    def host_done(self, result: HostResult) -> None:
        from rich.text import Text

        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)
        if not result.ok and not self.quiet:
            err.print(Text(f"  ✗ {result.host}: {result.detail}", style="red"))

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def close(self) -> None:
        self._stop()


# ---------------------------------------------------------------- tables


PEER_COLUMNS = ("peer", "address", "endpoint", "subnets", "ssh", "region", "source")


def _peers_title(inv: Inventory) -> str:
    pools = str(inv.mesh.pool) + (f" and {inv.mesh.pool6}" if inv.mesh.pool6 else "")
    return f"inventory {inv.name}: {len(inv.peers)} peers, pool {pools}"


def _peer_row(p: Peer) -> tuple[str, ...]:
    return (
        p.name, ", ".join(map(str, p.tunnel_addresses)), p.endpoint or "-", ", ".join(map(str, p.subnets)) or "-",
        str(p.ssh) if p.ssh else "-", "/".join(x for x in (p.cloud, p.region) if x) or "-", p.source,
    )


def peers_table(inv: Inventory, only: list[str] | None = None) -> None:
    from rich.table import Table

    t = Table(title=_peers_title(inv))
    for col in PEER_COLUMNS:
        t.add_column(col)
    for p in inv.peers:
        if only is not None and p.name not in only:
            continue
        t.add_row(*_peer_row(p))
    out.print(t)


def plain_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A small table as plain text: the title, then the header and the rows in columns two
    spaces apart; nothing is cut, whatever the terminal's width."""
    widths = [max(len(cell) for cell in column) for column in zip(columns, *rows, strict=True)]
    plain(title, *("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                   for row in (columns, *rows)))


def host_table(title: str, results: dict[str, HostResult]) -> None:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title)
    for col in ("host", "result", "action", "seconds", "detail"):
        t.add_column(col)
    for name, r in results.items():
        t.add_row(
            name, Text("ok", style="green") if r.ok else Text("FAILED", style="bold red"),
            r.action, f"{r.seconds:.2f}", r.detail,
        )
    out.print(t)


def pending_lines(res: PushResult) -> None:
    from rich.text import Text

    for name, endpoint in sorted(res.unresolved.items()):
        out.print(Text(f"endpoint of {name} ({endpoint}) does not resolve: left out of the configs, the others "
                       f"wait for {name} to connect; the next push puts it back once it resolves", style="yellow"))
    for r in res.pending:
        out.print(Text(f"pending revocation: {r.hosts and ', '.join(r.hosts)} still trust(s) the old key of "
                       f"{r.peer} ({r.why}); 'wgmesh push' retries", style="bold yellow"))


def verify_table(res: VerifyResult) -> None:
    from rich.table import Table
    from rich.text import Text

    from wgmesh import status as statmod

    t = Table(title=f"verify: {len(res.probes)} probes, {len(res.handshakes)} handshakes, {res.seconds:.1f} s")
    for col in ("from", "to", "path", "address", "result", "rtt ms"):
        t.add_column(col)
    for p in res.probes:
        t.add_row(
            p.src, p.dst, p.kind, p.address,
            Text("ok", style="green") if p.ok else Text("FAIL", style="bold red"),
            f"{p.rtt_ms:.2f}" if p.rtt_ms is not None else "-",
        )
    out.print(t)
    bad = res.failures
    if bad:
        out.print(Text(f"verify FAILED: {len(bad)} problem(s)", style="bold red"))
        for line in bad:
            out.print(Text(f"  ✗ {line}", style="red"))
    else:
        fresh = sum(1 for lk in res.handshakes if lk.state == statmod.FRESH)
        out.print(Text(f"verify passed: every probe answered, {fresh} fresh handshakes, no drift",
                       style="bold green"))


def gen_summary(res: GenResult) -> None:
    plain(f"{len(res.written)} written, {len(res.unchanged)} unchanged, {len(res.removed)} removed in {res.directory}")


def destroy_summary(res: DestroyResult) -> None:
    if res.stopped:
        host_table("WireGuard stopped", res.stopped)
    out.print(f"terraform: {res.terraform}")
    out.print(f"peers removed from the inventory: {', '.join(res.removed_peers) or 'none'}")
    out.print(f"keys purged: {', '.join(res.purged_keys) or 'none'}; keys kept (peers still in the inventory): "
              f"{', '.join(res.kept_keys) or 'none'}")
    pins = ", ".join(res.pins_forgotten) or "none (the remaining peers' pins are kept)"
    out.print(f"rendered configs removed: {res.configs_removed}; host-key pins forgotten: {pins}")


# ---------------------------------------------------------------- one view per result


VIEWS: dict[str, Callable[[Any], None]] = {}  # "module.Class" of a result → its view


def view(result_class: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Register the view of the result class named "wgmesh.commands.<module>.<Class>": by name, so
    that this module imports no command to show its result (tests/unit/test_cli_startup.py checks
    that every result has a view and every view a result)."""

    def register(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        VIEWS[result_class] = fn
        return fn

    return register


def show(result: object) -> None:
    for cls in type(result).__mro__:
        fn = VIEWS.get(f"{cls.__module__}.{cls.__qualname__}")
        if fn is not None:
            fn(result)
            return
    raise TypeError(f"no view for {type(result).__name__}")  # a new command without a view: a bug


view("wgmesh.commands.genconfig.GenResult")(gen_summary)
view("wgmesh.commands.destroy.DestroyResult")(destroy_summary)
view("wgmesh.commands.verify.VerifyResult")(verify_table)


@view("wgmesh.commands.up.UpResult")
def _(res: UpResult) -> None:
    if not res.pushed:
        peers_table(res.inventory)
        info(f"configs rendered in {res.output_dir}; nothing was pushed" if res.output_dir else
             "nothing was pushed, and no config written: the keys stay in the secret store")
    else:
        host_table("push", res.push.results)
    if res.verify:
        verify_table(res.verify)
    info("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items()))


@view("wgmesh.commands.addpeer.AddResult")
def _(res: AddResult) -> None:
    # One row: plain text (Rich and its table would be a fifth of a 0.1 s addpeer; bench/, "inventory").
    plain_table(_peers_title(res.inventory), PEER_COLUMNS, [_peer_row(res.peer)])
    info(f"added {res.peer.name} ({res.peer.address}); run 'wgmesh -i {res.workspace} push' to apply it")


@view("wgmesh.commands.import_outputs.ImportResult")
def _(res: ImportResult) -> None:
    info(f"{len(res.inventory.peers)} peers in inventory {res.inventory.name}; {len(res.new_keys)} new key pairs")


@view("wgmesh.commands.delpeer.DelResult")
def _(res: DelResult) -> None:
    host_table(f"after removing {res.name}", res.push.results)
    pending_lines(res.push)
    if res.stop is not None and not res.stop.ok:
        info(f"{res.name} was not reached: {res.stop.detail}")


@view("wgmesh.commands.showpeers.ShowResult")
def _(res: ShowResult) -> None:
    peers_table(res.inventory)


@view("wgmesh.commands.push.PushResult")
def _(res: PushResult) -> None:
    if res.dry_run:
        host_table("push --dry-run: what would be done (nothing was changed)", res.results)
        info(f"{len(res.changes)} host(s) would change" if res.changes else "nothing would change")
    else:
        host_table("push", res.results)
    pending_lines(res)


@view("wgmesh.commands.failover.FailoverResult")
def _(res: FailoverResult) -> None:
    from rich.text import Text

    if res.unchanged:
        out.print(Text(f"{res.site}: {res.after} is active already (epoch {res.epoch}): nothing to do", style="green"))
        return
    style = "green" if res.ok else "bold red"
    out.print(Text(f"{res.site}: {res.before or 'nobody'} → {res.after or 'nobody'} (epoch {res.epoch}), "
                   f"every host follows in {res.seconds:.1f} s" if res.ok else
                   f"{res.site}: failover to {res.wanted} incomplete after {res.seconds:.1f} s", style=style))
    for p in res.problems:
        out.print(Text(f"  {p}", style="yellow"))


@view("wgmesh.commands.status.StatusResult")
def _(res: StatusResult) -> None:
    from wgmesh.cli.statusview import status_view

    out.print(status_view(res))


@view("wgmesh.commands.graph.GraphResult")
def _(res: GraphResult) -> None:
    for f in res.files:
        out.print(f)


@view("wgmesh.commands.setpeer.SetResult")
def _(res: SetResult) -> None:
    info(f"updated {res.peer.name}; run 'wgmesh -i {res.workspace} push' to apply it")


@view("wgmesh.commands.rotate_keys.RotateResult")
def _(res: RotateResult) -> None:
    from rich.text import Text

    host_table(f"rotated {', '.join(res.rotated) or 'nothing'}", res.push.results)
    pending_lines(res.push)
    for name, why in sorted(res.skipped.items()):
        out.print(Text(f"not rotated: {name}: {why}; it keeps its key pair", style="bold yellow"))


@view("wgmesh.commands.unlock.UnlockResult")
def _(res: UnlockResult) -> None:
    info(res.describe())


@view("wgmesh.commands.migrate.MigrateResult")
def _(res: MigrateResult) -> None:
    info(f"inventory {res.inventory!r} moved from {res.source} to {res.target}: {', '.join(res.moved)} "
         "copied and read back")
    for gone in res.removed:
        out.print(f"  removed from the source: {gone}")
