"""Where an inventory's files live, and the lock that covers a whole run."""

from __future__ import annotations

import fcntl
import json
import os
import site
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from wgmesh.errors import LockHeld
from wgmesh.fsutil import ensure_private_dir

if TYPE_CHECKING:
    from wgmesh.backend import Shared

PACKAGE_DIR = Path(__file__).resolve().parent
INSTALLED_STACKS = Path("share", "wgmesh", "terraform")  # pyproject.toml: [tool.setuptools.data-files]


def default_stacks_dir() -> Path:
    """$WGMESH_STACKS; else terraform/ of the checkout wgmesh runs from; else the stacks an
    installed wheel put under its scheme's data directory (a venv's, the user's, the system's)."""
    env = os.environ.get("WGMESH_STACKS")
    if env:
        return Path(env)
    checkout = PACKAGE_DIR.parent / "terraform"
    if any(checkout.glob("*/*.tf")):  # every command asks: the checkout answers without sysconfig's work
        return checkout
    installed = [Path(base) / INSTALLED_STACKS for base in (sysconfig.get_path("data"), sys.prefix, site.getuserbase())]
    for cand in installed:
        if any(cand.glob("*/*.tf")):
            return cand
    return installed[0]


@dataclass(frozen=True)
class Workspace:
    """All paths of one inventory under a project directory.

        inventories/<name>.json        the inventory (public data only)
        output/<name>/<peer>.conf      rendered configs, 0600 in 0700
        .wgmesh/<name>/keys/           keystore, 0600 in 0700
        .wgmesh/<name>/terraform/      Terraform root module, state, CLI config
        .wgmesh/<name>/known_hosts     pinned SSH host keys
        .wgmesh/<name>/revocations.json  public keys some hosts may still trust (pending)
        .wgmesh/<name>/lock            held for the whole run of a writing command

    With a shared backend (`backend`, wgmesh.backend) the inventory, the keystore, the revocations
    and the Terraform state live there; known_hosts stays here as a working copy of the backend's.
    """

    root: Path
    name: str
    stacks_dir: Path
    backend: Shared | None = field(default=None, compare=False)

    @property
    def inventory_path(self) -> Path:
        return self.root / "inventories" / f"{self.name}.json"

    @property
    def state_dir(self) -> Path:
        return self.root / ".wgmesh" / self.name

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def tf_dir(self) -> Path:
        return self.state_dir / "terraform"

    @property
    def pins_path(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def revocations_path(self) -> Path:
        return self.state_dir / "revocations.json"

    @property
    def output_dir(self) -> Path:
        return self.root / "output" / self.name

    def private_state_dir(self) -> Path:
        ensure_private_dir(self.root / ".wgmesh")
        return ensure_private_dir(self.state_dir)


class RunLock:
    """An exclusive flock on .wgmesh/<name>/lock. The kernel drops it when the process dies."""

    def __init__(self, ws: Workspace, command: str) -> None:
        self.path = ws.state_dir / "lock"
        self.ws = ws
        self.command = command
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.ws.private_state_dir()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                info = {}
            os.close(fd)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
            raise LockHeld(
                f"another wgmesh run holds the lock of inventory {self.ws.name!r}: "
                f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
                f"'{info.get('command', '?')}' since {since}",
                hint="wait for it to finish; the lock is released when that process ends",
            ) from None
        # os.uname().nodename: what socket.gethostname() returns, without importing socket
        info = {"pid": os.getpid(), "host": os.uname().nodename, "since": int(time.time()), "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
