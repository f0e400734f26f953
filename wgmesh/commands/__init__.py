"""One module per command. Each command is a function that takes the workspace and its options,
does its work through the core and the adapters, and returns a result that knows its exit
status and its JSON form. Nothing here prints or exits: progress goes to a Reporter, failures
are WgmeshError subclasses carrying their exit status."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from wgmesh.errors import ExitStatus

if TYPE_CHECKING:
    from wgmesh.model import Peer
    from wgmesh.remote.host import Pool

T = TypeVar("T")
R = TypeVar("R")


def releasing(pool: Pool, work: Callable[[T], R], peer_of: Callable[[T], Peer] | None = None) -> Callable[[T], R]:
    """`work` for one host, then the pool may let go of that host's connections (it keeps them
    where it can hold every host of the run: see HostPool.release)."""

    def run(item: T) -> R:
        try:
            return work(item)
        finally:
            pool.release(peer_of(item) if peer_of is not None else item)  # type: ignore[arg-type]

    return run


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
