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


class Succeeds:
    """A result whose command either worked or raised: its exit status is always OK."""

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.OK


class HostsOutcome:
    """A result that is OK only when every host (or every probe) is: else HOSTS_FAILED."""

    @property
    def ok(self) -> bool:
        raise NotImplementedError

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus.OK if self.ok else ExitStatus.HOSTS_FAILED
