"""One module per command. Each command is a function that takes the workspace and its options,
does its work through the core and the adapters, and returns a result that knows its exit
status and its JSON form. Nothing here prints or exits: progress goes to a Reporter, failures
are WgmeshError subclasses carrying their exit status."""

from __future__ import annotations

from typing import Any, Protocol

from wgmesh.errors import ExitStatus


class Result(Protocol):
    @property
    def exit_status(self) -> ExitStatus: ...

    def to_json(self) -> dict[str, Any]: ...
