"""addpeer: a peer Terraform does not manage (another cloud, on-prem), optionally with its
existing WireGuard key (from a file, never argv)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wgmesh import inventory as invmod
from wgmesh import keys as keymod
from wgmesh import peers, store
from wgmesh.commands import Succeeds
from wgmesh.errors import BadInput
from wgmesh.model import Inventory, KeyPair, Peer, Source, Value
from wgmesh.workspace import Workspace


@dataclass
class AddResult(Succeeds):
    """The inventory with the new peer, and whether a key pair was made for it."""

    inventory: Inventory
    peer: Peer
    new_key: bool
    workspace: str

    def to_json(self) -> dict[str, Any]:
        return {"added": self.peer.name, "peer": invmod.peer_to_dict(self.peer), "new_key": self.new_key}


def imported_key(private_key_file: str | None, public_key: str | None) -> KeyPair | None:
    """The key pair in --private-key-file, checked against --public-key. Never echoed."""
    if private_key_file is None:
        if public_key is not None:
            raise BadInput("--public-key", "(given)", "only checks an imported key: give --private-key-file too")
        return None
    try:
        text = Path(private_key_file).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput("--private-key-file", private_key_file, f"cannot be read ({type(exc).__name__})") from None
    keymod.decode_key("--private-key-file", text)
    derived = keymod.public_key(text)
    if public_key is not None:
        keymod.decode_key("--public-key", public_key)
        if public_key != derived:
            raise BadInput("--public-key", public_key, "does not match the private key in --private-key-file")
    return KeyPair(private=text, public=derived)


@dataclass(frozen=True, eq=False, repr=False)  # equality, hash, repr: from Value (start-up: see wgmesh.model)
class KeyImport(Value):
    """addpeer's options that are not the peer's own fields."""

    private_key_file: str | None = None  # the peer's existing WireGuard key (a file, never argv)
    public_key: str | None = None  # checked against it
    allow_unresolved: bool = False  # keep a DNS endpoint that does not resolve now


def plan_add(
    inv: Inventory, name: str, options: peers.PeerOptions, extra: KeyImport
) -> tuple[Inventory, KeyPair | None]:
    """Every check of addpeer's input, in one place; changes nothing. → the new inventory."""
    invmod.require_new_name(inv, name)
    peer = peers.parse_peer(
        name, options, peers.cli_label, Source.MANUAL, default_port=inv.mesh.listen_port, check_files=True
    )
    peers.require_probes_inside(peer, peers.cli_label)
    imported = imported_key(extra.private_key_file, extra.public_key)
    new_inv = invmod.add_peer(inv, peer)
    peers.require_resolvable(peer, peers.cli_label, extra.allow_unresolved)
    return new_inv, imported


def check(ws: Workspace, name: str, options: peers.PeerOptions, extra: KeyImport) -> None:
    """In a new project, refuse bad input before the lock creates .wgmesh/ (an existing
    inventory already has it; `addpeer` checks everything again under the lock)."""
    if ws.backend is not None:  # against the shared inventory as it is now (read again under the lock)
        plan_add(store.load_if_exists(ws) or invmod.new_inventory(ws.name), name, options, extra)
    elif not ws.inventory_path.exists():
        plan_add(invmod.new_inventory(ws.name), name, options, extra)


def addpeer(ws: Workspace, name: str, options: peers.PeerOptions, extra: KeyImport | None = None) -> AddResult:
    inv = store.load_if_exists(ws) or invmod.new_inventory(ws.name)
    new_inv, imported = plan_add(inv, name, options, extra or KeyImport())
    old_names = set(inv.names)
    peer = next(p for p in new_inv.peers if p.name not in old_names)
    keystore = store.keystore(ws)
    current = keystore.load()
    if imported is not None:
        if imported.public in {kp.public for kp in current.pairs.values()}:
            raise BadInput("--private-key-file", "(hidden)", "this key already belongs to another peer")
        current = keymod.Keys(pairs={**current.pairs, peer.name: imported}, psk_secret=current.psk_secret,
                              retired=current.retired)
    keys, made = keymod.ensure(current, new_inv.names)
    ws.private_state_dir()
    keystore.save(keys)
    store.save(ws, new_inv)
    return AddResult(new_inv, peer, bool(made), ws.name)
