"""showpeers: the inventory (public data only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wgmesh import inventory as invmod
from wgmesh import store
from wgmesh.commands import Succeeds
from wgmesh.model import Inventory
from wgmesh.workspace import Workspace


@dataclass
class ShowResult(Succeeds):
    inventory: Inventory

    def to_json(self) -> dict[str, Any]:
        inv = self.inventory
        return {
            "inventory": inv.name,
            "mesh": invmod.mesh_to_dict(inv.mesh),
            "peers": {p.name: invmod.peer_to_dict(p) for p in inv.peers},
        }


def showpeers(ws: Workspace) -> ShowResult:
    return ShowResult(store.load(ws))
