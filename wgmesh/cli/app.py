"""The Typer app, its global options, and the one error ladder: options → command → output → exit."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import typer

from wgmesh import __version__
from wgmesh.commands import Result
from wgmesh.errors import ExitStatus, Interrupted, WgmeshError
from wgmesh.executor import DEFAULT_PARALLEL
from wgmesh.workspace import Workspace

app = typer.Typer(
    name="wgmesh",
    help="Build, run and verify a WireGuard full mesh: Terraform → inventory → keys → configs → push → verify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON on stdout.")
PARALLEL_OPT = typer.Option(DEFAULT_PARALLEL, "--parallel", min=1, max=256, help="Hosts handled at once.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wgmesh {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    ctx: typer.Context,
    inventory: str = typer.Option("lab", "--inventory", "-i", help="Inventory name (inventories/NAME.json)."),
    directory: Path = typer.Option(
        None, "--dir", envvar="WGMESH_DIR",
        help="Project directory holding inventories/, output/ and .wgmesh/ [default: .]",
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    def make() -> Workspace:
        from wgmesh import validate
        from wgmesh.workspace import default_stacks_dir

        validate.name("--inventory", inventory)
        return Workspace(root=(directory or Path.cwd()).resolve(), name=inventory, stacks_dir=default_stacks_dir())

    ctx.obj = make


Body = Callable[[Workspace], Result | None]


def run(
    ctx: typer.Context, command: str, body: Body, as_json: bool = False, lock: bool = True,
    pre: Callable[[Workspace], None] | None = None,
) -> None:
    """Run `pre(ws)` (checks that must pass before anything is written, even the lock file),
    then `body(ws)` under the lock; show its result (or its JSON form); exit with its status.
    Every failure becomes its exit status here, and only here."""
    from wgmesh.cli import output
    from wgmesh.workspace import RunLock

    code = ExitStatus.OK
    try:
        ws: Workspace = ctx.obj()
        if pre is not None:
            pre(ws)
        if lock:
            with RunLock(ws, command):
                result = body(ws)
        else:
            result = body(ws)
        if result is not None:
            if as_json:
                output.emit_json(result.to_json())
            else:
                output.show(result)
            code = result.exit_status
    except WgmeshError as exc:
        output.error(exc)
        code = exc.exit_code
    except KeyboardInterrupt:
        output.error(Interrupted("interrupted"))
        code = ExitStatus.INTERRUPTED
    except OSError as exc:  # the machine said no (permissions, disk full, ...): say what, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        output.error(WgmeshError(f"{exc.strerror or type(exc).__name__}{where}"))
        code = ExitStatus.OTHER
    raise typer.Exit(int(code))


def need_inventory(ws: Workspace) -> None:
    """Refuse a missing inventory before the lock file is made (the command loads and checks it)."""
    from wgmesh import store

    store.require_inventory(ws)


def start() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
