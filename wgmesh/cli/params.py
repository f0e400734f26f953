"""Typer's parameter coercion without its start-up cost.

Typer (0.29) coerces every parameter value, defaults included, through a Pydantic TypeAdapter
that it builds at run time: importing Pydantic and building the adapters took ~0.09 s of every
run, more than wg-meshconf's whole start-up. wgmesh's parameters are plain str, int, float, bool,
Path and list[str]. For a value whose result is certain (a str as it is, an int written in plain
digits within its bounds, ...), `FastParam` returns what the adapter returns; any other value (a
malformed or out-of-range one, a flag from the environment) goes to Typer's own coercion, so every
result and every error message stays Typer's. tests/unit/test_cli_params.py holds both side by
side for every parameter of every command. With a Typer whose internals differ, `Typer` is
typer.Typer as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

try:  # the internals of Typer 0.29 this builds on; a Typer without them keeps its own classes
    from typer._click.core import Command as ClickCommand
    from typer._click.exceptions import BadParameter
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
    from typer._param_types import coerce_cli_path
except ImportError:  # pragma: no cover
    RuntimeParam = None  # type: ignore[assignment,misc]

MISS = object()  # "not certain: ask Typer"
Fast = Callable[[Any, Any, Any], Any]  # (value, param, ctx) → the coerced value, or MISS


def _digits(text: str, most: int) -> bool:
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def _in_bounds(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _str(value: Any, param: Any, ctx: Any) -> Any:
    return value if type(value) is str else MISS


def _bool(value: Any, param: Any, ctx: Any) -> Any:
    return value if type(value) is bool else MISS


def _str_list(value: Any, param: Any, ctx: Any) -> Any:
    if type(value) in (list, tuple) and all(type(v) is str for v in value):
        return list(value)
    return MISS


def _int(low: float | None, high: float | None) -> Fast:
    def coerce(value: Any, param: Any, ctx: Any) -> Any:
        if type(value) is str and _digits(value, 18) and (value == "0" or value[0] != "0"):
            value = int(value)
        elif type(value) is not int:
            return MISS
        return value if _in_bounds(value, low, high) else MISS

    return coerce


def _float(low: float | None, high: float | None) -> Fast:
    def coerce(value: Any, param: Any, ctx: Any) -> Any:
        if type(value) is str:
            whole, dot, fraction = value.partition(".")
            if not (_digits(whole, 9) and (not dot or _digits(fraction, 6))):
                return MISS
            value = float(value)
        elif type(value) in (int, float):
            value = float(value)
        else:
            return MISS
        return value if _in_bounds(value, low, high) else MISS

    return coerce


def _path(info: Any) -> Fast:
    def coerce(value: Any, param: Any, ctx: Any) -> Any:
        if type(value) is not str or not value or "\0" in value:
            return MISS
        # Given a Path, Typer's own checks (exists, readable, ...) run without the adapter; a value
        # they refuse goes to Typer again, whose message names the value as it was given.
        try:
            return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
        except BadParameter:
            return MISS

    return coerce


def fast_coercion(desc: TypeDescriptor) -> Fast | None:
    """The certain cases of this parameter's coercion, or None: Typer coerces all of it."""
    info, ann = desc.parameter_info, desc.annotation
    if desc.file_annotation is not None or info.parser is not None or info.clamp:
        return None
    if ann in (int, float):
        return (_int if ann is int else _float)(info.min, info.max)
    if ann is Path and info.path_type is None and not info.resolve_path and not info.allow_dash:
        return _path(info)
    return {str: _str, bool: _bool, list[str]: _str_list}.get(ann)


def install(param: Any) -> None:
    """Give one Typer parameter the fast coercion, if it has Typer's runtime coercion and a fast case."""
    if param is None or RuntimeParam is None or getattr(param, "_runtime_param", MISS) is not None:
        return
    fast = fast_coercion(param.type_descriptor)
    if fast is not None:
        param._runtime_param = FastParam(parameter_info=param.type_descriptor.parameter_info,
                                         annotation=param.type_descriptor.annotation, fast=fast)


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class FastParam(RuntimeParam):
        """Typer's runtime coercion contract (None and multi-value handling are RuntimeParam's)."""

        fast: Fast

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            got = self.fast(value, param, ctx)
            if got is not MISS:
                return got
            return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)

    class FastParams(ClickCommand):
        """Mixed into Typer's command and group: the fast coercion on their parameters and --help."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            for param in self.params:
                install(param)

        def get_help_option(self, ctx: Any) -> Any:
            option = super().get_help_option(ctx)  # made on first use, from the context's option names
            install(option)
            return option

    class Command(FastParams, TyperCommand):
        pass

    class Group(FastParams, TyperGroup):
        pass


class Typer(typer.Typer):
    """typer.Typer whose group is `Group` and whose commands are `Command` (with the Typer this
    module knows; with another, Typer's own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if RuntimeParam is not None:
            kwargs.setdefault("cls", Group)
        super().__init__(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        if RuntimeParam is not None:
            kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)
