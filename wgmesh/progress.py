"""Progress events from the commands. The CLI's console shows them; the default ignores them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wgmesh.model import HostResult


class Reporter:
    def phase(self, text: str) -> None:
        """A new phase of the run begins (terraform apply, push, verify)."""

    def line(self, text: str) -> None:
        """A line of a tool's own output (Terraform's)."""

    def expect(self, total: int, what: str) -> None:
        """`total` hosts are about to be worked on."""

    def host_start(self, name: str) -> None:
        """Work on one host begins."""

    def host_done(self, result: HostResult) -> None:
        """Work on one host ended, with this result."""

    def close(self) -> None:
        """The run is over: stop any live display."""
