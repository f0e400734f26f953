"""What the commands need from the hosts: run a Program, get a reply. The real pool is SSH
(wgmesh/hosts.py over adapters/ssh.py); tests use a scripted pool of fake hosts."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple, Protocol

from wgmesh.model import Instance, Inventory, Peer
from wgmesh.remote.steps import Program
from wgmesh.workspace import Workspace

PROBE_TIMEOUT = 20.0
APPLY_TIMEOUT = 90.0


class ProbeFailed(Exception):
    """The host answered, but a probe on it did not work: `reason` says why (no secrets)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Reply(NamedTuple):
    rc: int
    out: str
    err: str


class Host(Protocol):
    def run(self, program: Program, stdin: bytes | None = None, timeout: float = PROBE_TIMEOUT) -> Reply: ...


class Pool(Protocol):
    """A host handle per peer (and per private instance behind it), good for a whole run; the
    connections behind them are the pool's business (the SSH pool keeps a bounded number open)."""

    wait_ssh: float  # keep retrying hosts that do not answer yet this long (new machines)

    def get(self, peer: Peer) -> Host: ...

    def get_instance(self, peer: Peer, inst: Instance) -> Host: ...

    def release(self, peer: Peer) -> None:
        """The command is done with this peer (and its instances) for now: a hint. The SSH pool
        closes their idle connections at once where the inventory has more hosts than it keeps
        open; otherwise they stay for the command's next pass. Their handles stay usable."""

    def close(self) -> None: ...

    def __enter__(self) -> Pool: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


Connector = Callable[[Workspace, Inventory, float], Pool]


def ssh_pool(
    ws: Workspace, inv: Inventory, wait_ssh: float = 0.0, *,
    strict_host_keys: bool = False, on_first_use: Callable[[str, str], None] | None = None,
) -> Pool:
    """The real pool: SSH with the inventory's pinned host keys (paramiko is loaded only now:
    addpeer and genconfig stay fast). `strict_host_keys` refuses a host whose key nothing vouches
    for; otherwise such a key is pinned and `on_first_use(host, fingerprint)` is told."""
    from wgmesh.adapters.hostkeys import Pins
    from wgmesh.hosts import HostPool

    return HostPool(
        Pins(ws.pins_path), inv, wait_ssh=wait_ssh, strict_host_keys=strict_host_keys, on_first_use=on_first_use
    )
