"""import: Terraform peers from a saved `terraform output -json` document (Terraform run
elsewhere, e.g. by CI), refreshed into the inventory as `up` would, keys made for new peers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wgmesh import inventory as invmod
from wgmesh import store
from wgmesh.commands import Succeeds
from wgmesh.errors import BadInput
from wgmesh.model import Inventory, Peer
from wgmesh.workspace import Workspace


@dataclass
class ImportResult(Succeeds):
    inventory: Inventory
    new_keys: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"peers": len(self.inventory.peers), "new_keys": len(self.new_keys)}


def read_outputs(path: str) -> list[Peer]:
    """The Terraform peers of a saved `terraform output -json` document (or its peers map)."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise BadInput("FILE", path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except ValueError as exc:
        raise BadInput("FILE", path, f"not JSON ({exc})") from None
    if isinstance(doc, dict) and isinstance(doc.get("peers"), dict) and "value" in doc["peers"]:
        doc = doc["peers"]["value"]  # terraform output -json
    elif isinstance(doc, dict) and isinstance(doc.get("peers"), dict):
        doc = doc["peers"]
    return invmod.peers_from_outputs(doc)


def import_outputs(ws: Workspace, path: str) -> ImportResult:
    from wgmesh.commands.up import refresh

    inv = store.load_if_exists(ws) or invmod.new_inventory(ws.name)
    peers = read_outputs(path)
    store.keystore(ws).load()  # a keystore others can read is refused before anything is written
    merged = refresh(ws, inv, peers)  # as `up` does: peers gone from the outputs are revoked
    _, made = store.ensure_keys(ws, merged)
    return ImportResult(merged, made)
