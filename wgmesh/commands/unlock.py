"""unlock: remove a shared inventory's run lock on purpose, naming it (after a crashed run).
A lock is never broken automatically: a run that is still going would lose its protection."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from wgmesh import backend as bk
from wgmesh.commands import Succeeds
from wgmesh.errors import BadInput
from wgmesh.workspace import Workspace


@dataclass
class UnlockResult(Succeeds):
    inventory: str
    backend: str
    lock: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"inventory": self.inventory, "backend": self.backend, "unlocked": self.lock}

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.lock.get("since", 0)))
        return (f"removed lock {self.lock.get('id')} of inventory {self.inventory!r} in {self.backend}: "
                f"held by {self.lock.get('holder', '?')} on {self.lock.get('host', '?')} "
                f"(pid {self.lock.get('pid', '?')}, '{self.lock.get('command', '?')}') since {since}")


def unlock(ws: Workspace, lock_id: str) -> UnlockResult:
    wanted = bk.lock_id(lock_id)
    if ws.backend is None:
        raise BadInput("--inventory", ws.name, "is local: its lock is the kernel's and ends with the process "
                       "holding it; there is nothing to unlock")
    return UnlockResult(ws.name, str(ws.backend), ws.backend.unlock(wanted))
