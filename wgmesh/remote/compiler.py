"""Steps → the shell script a host runs. All quoting happens here.

A compiled script is: `set -u`, the variables the scripts use (the interface and its paths,
the RemoteExit statuses), the script files the program's steps need (function definitions
only), then one call per step with its arguments quoted. The command line that carries it is
`sh -c SCRIPT` (under `sudo -n` for other users than root). Nothing secret is ever in it:
configs travel on standard input.
"""

from __future__ import annotations

import functools
import shlex

from wgmesh.remote.exits import RemoteExit
from wgmesh.remote.steps import LIBRARY, Arg, Program, Step


def q(value: Arg) -> str:
    """One shell word. Booleans are 1 or 0."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return shlex.quote(str(value))


@functools.cache
def library(name: str) -> str:
    """The text of scripts/NAME.sh (package data)."""
    from importlib import resources  # only when a program is compiled: render needs q() alone

    return resources.files("wgmesh.remote").joinpath("scripts", f"{name}.sh").read_text()


def preamble(program: Program) -> list[str]:
    return [
        "set -u",
        f"IFACE={q(program.iface)}",
        f"WGDIR={q(program.directory)}",
        'CONF="$WGDIR/$IFACE.conf"',
        'PREV="$WGDIR/.$IFACE.conf.prev"',
        'LOG="$WGDIR/.$IFACE.up.log"',  # in the 0700 directory, not a guessable /tmp name
        *(f"WGM_EXIT_{e.name}={e.value}" for e in RemoteExit),
        # `wg` retries a DNS endpoint that does not resolve for about 15 s: bounded to ~2 s here.
        "export WG_ENDPOINT_RESOLUTION_RETRIES=2",
    ]


def call(s: Step) -> str:
    return " ".join([f"wgm_{s.op.value}", *(q(a) for a in s.args)])


LOCK_WAIT = 30  # seconds a changing program waits for another wgmesh run on the same host


def compile_program(program: Program) -> str:
    libs = list(dict.fromkeys(["common", *(name for s in program.steps for name in LIBRARY[s.op])]))
    lock = [f"wgm_lock {LOCK_WAIT}"] if program.exclusive else []
    return "\n".join(
        [*preamble(program), *(library(n) for n in libs), *lock, *(call(s) for s in program.steps)]
    )


def command(program: Program, user: str) -> str:
    """The remote command line: a fixed shell running the compiled script; with a time limit,
    under `timeout`, so the host stops the work itself (not only the channel) — TERM first,
    which puts the previous config back, KILL 5 s later."""
    cmd = "sh -c " + shlex.quote(compile_program(program))
    if program.time_limit:
        cmd = f"timeout -k 5 {int(program.time_limit)} {cmd}"
    return cmd if user == "root" else "sudo -n " + cmd
