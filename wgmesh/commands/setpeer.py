"""setpeer: change a hand-added peer (Terraform peers change through their stack)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wgmesh import inventory as invmod
from wgmesh import peers, store
from wgmesh.commands import Succeeds
from wgmesh.errors import BadInput
from wgmesh.model import Peer, Source
from wgmesh.workspace import Workspace


@dataclass
class SetResult(Succeeds):
    peer: Peer
    workspace: str

    def to_json(self) -> dict[str, Any]:
        return {"updated": self.peer.name, "peer": invmod.peer_to_dict(self.peer)}


def setpeer(ws: Workspace, name: str, changes: peers.PeerOptions, allow_unresolved: bool = False) -> SetResult:
    """Change endpoint, subnets, keepalive, listen port or private address of a hand-added peer."""
    inv = store.load(ws)
    peer = invmod.require_peer(inv, name)
    if peer.source == Source.TERRAFORM:
        raise BadInput("name", name, "is managed by Terraform: change the stack and run 'wgmesh up'")
    if not changes.given():
        raise BadInput(
            "setpeer", name, "nothing to change",
            hint="give --endpoint, --allowedips, --keepalive, --listen-port, --private-address, --mtu, "
                 "--ssh, --ssh-key, --egress-interface or --host-key",
        )
    updated = peers.update(peer, changes, peers.cli_label, check_files=True)
    new_inv = invmod.update_peer(inv, updated)
    if changes.endpoint is not None:
        peers.require_resolvable(updated, peers.cli_label, allow_unresolved)
    store.save(ws, new_inv)
    return SetResult(invmod.require_peer(new_inv, name), ws.name)
