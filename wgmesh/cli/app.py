"""The Typer app, its global options, and the one error ladder: options → command → output → exit.

No `from __future__ import annotations` (as in commands.py): Typer reads the signatures at each start.
"""

import errno
import gc
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from wgmesh import __version__
from wgmesh.cli.params import Typer
from wgmesh.errors import ExitStatus, Interrupted, WgmeshError
from wgmesh.executor import DEFAULT_PARALLEL

if TYPE_CHECKING:  # what runs a command is imported by the command (start-up: see bench/, "startup")
    from wgmesh.commands import Result
    from wgmesh.workspace import Workspace

# typer.Typer, with a parameter coercion that does not cost 0.09 s per run (params.py)
app = Typer(
    name="wgmesh",
    help="Build, run and verify a WireGuard full mesh: Terraform → inventory → keys → configs → push → verify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help text is plain text, like everything wgmesh prints: Rich markup would eat "[default: ...]"
    # and Typer's Rich panels show a type ("<bool>") beside flags, as if they took a value.
    rich_markup_mode=None,
)

JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON on stdout.")
BACKEND_HELP = (
    "Where the inventory lives: s3://BUCKET/PREFIX (state, lock and pins in S3, keys in Secrets Manager) "
    "or local [default: where it was remembered (inventories/NAME.backend), else $WGMESH_BACKEND, "
    "else the project directory]."
)
# Also on every command (wgmesh status --backend URL), as before it (wgmesh --backend URL status):
# run() reads it from the command's parameters; the command's body never needs it.
BACKEND_OPT = typer.Option(None, "--backend", help=BACKEND_HELP)
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
    backend: str = typer.Option(None, "--backend", help=BACKEND_HELP),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    def make(where_it_is: bool = False, command_backend: str | None = None) -> "Workspace":
        """The workspace; `where_it_is`: wherever the inventory is now, whatever --backend says
        (wgmesh migrate: there --backend names where it goes); `command_backend`: --backend
        given after the command."""
        from wgmesh import validate
        from wgmesh.workspace import Workspace, default_stacks_dir

        validate.name("--inventory", inventory)
        root = (directory or Path.cwd()).resolve()
        flag = backend
        if command_backend is not None:
            if backend is not None and command_backend != backend:
                from wgmesh.errors import BadInput

                raise BadInput("--backend", command_backend, f"given twice, the other time as {backend!r}")
            flag = command_backend
        shared = None
        env_backend = os.environ.get("WGMESH_BACKEND")
        if flag is not None or env_backend or (root / "inventories" / f"{inventory}.backend").exists():
            from wgmesh import backend as bk  # only then: most runs have no backend

            if where_it_is:
                url, field = bk.remembered(root, inventory), str(bk.pointer_path(root, inventory))
            else:
                url, field = bk.resolve(root, inventory, flag, os.environ)
            shared = bk.Shared(url, inventory, field) if url is not None else None
        return Workspace(root=root, name=inventory, stacks_dir=default_stacks_dir(), backend=shared)

    ctx.obj = make


Body = Callable[["Workspace"], "Result | None"]
HANGUPS = (signal.SIGTERM, signal.SIGHUP)  # a cancelled CI job, a dropped SSH session


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def hangups_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end a run the way Ctrl-C does: Terraform gets one interrupt and is waited
    for, the inventory keeps what it holds, the lock is released, exit 130. Without this they
    would kill wgmesh (and release the lock) while Terraform, in a session of its own, carries on.
    A signal that was ignored (nohup) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # (None: a handler not installed from Python, which could not be put back: left alone.)
    saved = {s: was for s in HANGUPS if (was := signal.getsignal(s)) not in (signal.SIG_IGN, None)}
    for s in saved:
        signal.signal(s, _interrupt)
    try:
        yield
    finally:
        for s, was in saved.items():
            signal.signal(s, was)


def run(
    ctx: typer.Context, command: str, body: Body, as_json: bool = False, lock: bool = True,
    pre: Callable[["Workspace"], None] | None = None, where_it_is: bool = False,
) -> None:
    """Run `pre(ws)` (checks that must pass before anything is written, even the lock file),
    then `body(ws)` under the lock; show its result (or its JSON form); exit with its status.
    Every failure becomes its exit status here, and only here."""
    from wgmesh.cli import output
    from wgmesh.workspace import RunLock

    gc.enable()  # the entry point (wgmesh/__main__.py) starts with it off: the work runs as ever
    code = ExitStatus.OK
    try:
        after = ctx.params.get("backend")  # --backend after the command name
        ws: Workspace = ctx.obj(where_it_is, after) if where_it_is or after is not None else ctx.obj()
        if pre is not None:
            pre(ws)
        with hangups_interrupt():
            if ws.backend is not None:
                from wgmesh.backend import session

                with session(ws, command, lock):
                    result = body(ws)
            elif lock:
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
        _error(exc)
        code = exc.exit_code
    except KeyboardInterrupt:
        _error(Interrupted("interrupted"))
        code = ExitStatus.INTERRUPTED
    except OSError as exc:
        if exc.errno in (errno.EPIPE, errno.EIO) and isinstance(exc.__context__, (KeyboardInterrupt, Interrupted)):
            # Interrupted, and the terminal is gone (a dropped SSH session): nothing can be said any more.
            _terminal_gone()
            code = ExitStatus.INTERRUPTED
        else:  # the machine said no (permissions, disk full, ...): say what, no traceback
            where = f" ({exc.filename})" if exc.filename else ""
            _error(WgmeshError(f"{exc.strerror or type(exc).__name__}{where}"))
            code = ExitStatus.OTHER
    raise typer.Exit(int(code))


def _error(exc: WgmeshError) -> None:
    from wgmesh.cli import output

    try:
        output.error(exc)
    except OSError:  # the terminal is gone: the exit status is all that is left to say
        _terminal_gone()


def _terminal_gone() -> None:
    """stdout and stderr can no longer be written (a dropped SSH session): point them at /dev/null,
    so what is still buffered does not turn the exit status into Python's 120 at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def need_inventory(ws: "Workspace") -> None:
    """Refuse a missing inventory before the lock file is made (the command loads and checks it)."""
    from wgmesh import store

    store.require_inventory(ws)


def start() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
