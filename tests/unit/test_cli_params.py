"""The CLI's fast parameter coercion (wgmesh/cli/params.py) gives what Typer's own coercion gives,
for every parameter of every command: the same value of the same type, or the same error."""

from __future__ import annotations

import pytest
from typer.main import get_command

from wgmesh.cli import app, params

pytestmark = pytest.mark.skipif(params.RuntimeParam is None, reason="a Typer without runtime coercion")

SAMPLES = [
    None, "", " ", "0", "00", "1", "2", "16", "256", "257", "65535", "007", " 5", "5 ", "+5", "-1", "5.0",
    "1.5", "0.5", "0.49", ".5", "5.", "1e3", "1_000", "9" * 30, "abc", "١٢", "１", "\x00", "true", "no",
    "maybe", "x/../y/", "~", "/", ".", "/nonexistent/dir", True, False, 0, 1, 16, 300, 0.0, 2.5, (), ("a",),
    ("a", "b"), ["10.0.0.0/8"], ("",), (1, 2),
]


def every_parameter():
    from typer._click.core import Context

    group = get_command(app)
    commands = [("", group), *sorted(group.commands.items())]
    for name, command in commands:
        ctx = Context(command, info_name=name or "wgmesh")
        for param in [*command.params, command.get_help_option(ctx)]:
            yield name, command, ctx, param


def outcome(fn):
    try:
        value = fn()
    except Exception as exc:  # the same error: its type and its words
        return "error", type(exc).__name__, getattr(exc, "format_message", exc.__str__)()
    return "value", type(value).__name__, value


def test_every_parameter_has_the_fast_coercion():
    """So no command pays for Pydantic at start-up: every parameter (and --help) is one the fast path knows."""
    missing = [f"{name} {param.name}" for name, _, _, param in every_parameter()
               if not isinstance(param._runtime_param, params.FastParam)]
    assert not missing, missing


@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_fast_coercion_is_typers(value):
    from typer._coercion import build_runtime_param

    for name, _, ctx, param in every_parameter():
        typer_own = build_runtime_param(param.type_descriptor)
        fast = param._runtime_param
        want = outcome(lambda typer_own=typer_own, param=param, ctx=ctx: typer_own.coerce(value, param=param, ctx=ctx))
        got = outcome(lambda fast=fast, param=param, ctx=ctx: fast.coerce(value, param=param, ctx=ctx))
        assert got == want, (name, param.name, value)
