"""Loading and saving an inventory's state: the inventory, the keystore, and the pending
revocations that tie the two together. Local files are written atomically (fsutil.write_atomic);
an inventory with a shared backend (wgmesh.backend) keeps all three there instead."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterable

from wgmesh import inventory as invmod
from wgmesh import keys as keymod
from wgmesh import revocations as revmod
from wgmesh.errors import BadInput, Refused
from wgmesh.fsutil import BACKUPS, write_atomic
from wgmesh.model import Inventory
from wgmesh.workspace import Workspace


def _missing(ws: Workspace) -> BadInput:
    where = ws.backend.where("inventory") if ws.backend is not None else ws.inventory_path
    return BadInput(
        "--inventory", ws.name, f"no inventory at {where}",
        hint="run 'wgmesh up' or 'wgmesh addpeer' first",
    )


def _check_permissions(ws: Workspace) -> None:
    """The inventory says where keys and configs go (endpoints, SSH targets, subnets): one that
    others can change is refused, as a keystore others can read is."""
    path = ws.inventory_path
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o022:
        raise Refused(
            f"inventory {path} has mode {mode:04o}: refusing an inventory others can change",
            hint=f"chmod go-w {path}",
        )


def require_inventory(ws: Workspace) -> None:
    if ws.backend is not None:
        if ws.backend.read("inventory") is None:  # read once: the command's load uses it
            raise _missing(ws)
        return
    if not ws.inventory_path.is_file():
        raise _missing(ws)
    _check_permissions(ws)


def load_if_exists(ws: Workspace) -> Inventory | None:
    if ws.backend is not None:
        text = ws.backend.read("inventory")
        return None if text is None else _named(ws, invmod.from_document(text, ws.backend.where("inventory")))
    try:
        _check_permissions(ws)
        text = ws.inventory_path.read_text()
    except FileNotFoundError:
        return None
    return invmod.from_document(text, str(ws.inventory_path))


def load(ws: Workspace) -> Inventory:
    inv = load_if_exists(ws)
    if inv is None:
        raise _missing(ws)
    return inv


def _named(ws: Workspace, inv: Inventory) -> Inventory:
    if inv.name != ws.name:
        raise BadInput("--inventory", ws.name, f"{ws.backend} holds inventory {inv.name!r}, not {ws.name!r}",
                       hint="one inventory per prefix: name this one's place, e.g. --backend s3://BUCKET/" + ws.name)
    return inv


def save(ws: Workspace, inv: Inventory) -> bool:
    if ws.backend is not None:
        return ws.backend.write("inventory", invmod.to_document(inv))
    return write_atomic(ws.inventory_path, invmod.to_document(inv), 0o644, backups=BACKUPS)


def keystore(ws: Workspace) -> keymod.Keystore | keymod.SecretKeystore:
    if ws.backend is not None:
        return keymod.SecretKeystore(ws.backend)
    return keymod.Keystore(ws.keys_dir)


def ensure_keys(ws: Workspace, inv: Inventory) -> tuple[keymod.Keys, list[str]]:
    """The keystore with a key pair for every peer (made for those without); saved if it changed."""
    store = keystore(ws)
    current = store.load()
    updated, made = keymod.ensure(current, inv.names)
    if made or not current.psk_secret:
        if ws.backend is None:
            ws.private_state_dir()
        store.save(updated)
    return updated, made


def public_keys(keys: keymod.Keys, inv: Inventory) -> dict[str, str]:
    return {n: keys.public(n) for n in inv.names if n in keys.pairs}


def managed(inv: Inventory) -> list[str]:
    """Peers wgmesh reaches over SSH."""
    return [p.name for p in inv.peers if p.ssh is not None]


# ---------------------------------------------------------------- revocations


def load_revocations(ws: Workspace) -> list[revmod.Revocation]:
    if ws.backend is not None:
        return revmod.parse(ws.backend.read("revocations"), ws.backend.where("revocations"))
    return revmod.load(ws.revocations_path)


def save_revocations(ws: Workspace, revs: list[revmod.Revocation]) -> None:
    if ws.backend is not None:
        ws.backend.write("revocations", revmod.dump(revs))
    else:
        revmod.save(ws.revocations_path, revs)


def key_pairs_of(keys: keymod.Keys, names: Iterable[str]) -> list[tuple[str, str]]:
    """(peer, public key) of every key pair of `names`, current and retired."""
    out: list[tuple[str, str]] = []
    for name in names:
        pairs = ([keys.pairs[name]] if name in keys.pairs else []) + keys.retired.get(name, [])
        out.extend((name, kp.public) for kp in pairs)
    return out


def _with(revs: list[revmod.Revocation], keys: Iterable[tuple[str, str]], why: str, hosts: list[str]
          ) -> list[revmod.Revocation]:
    now = int(time.time())
    for peer, public in keys:
        revs = revmod.add(revs, peer, public, why, hosts, now)
    return revs


def revoke(ws: Workspace, keys: Iterable[tuple[str, str]], why: str, hosts: list[str]) -> None:
    """These (peer, public key)s become pending revocations on `hosts`."""
    save_revocations(ws, _with(load_revocations(ws), keys, why, hosts))


def forget_peers(ws: Workspace, remaining: Inventory, gone: list[str], done_hosts: Iterable[str] = ()) -> None:
    """Peers that left the inventory (e.g. gone from Terraform's outputs): their keys are
    purged, and every managed host that has not yet dropped them has a pending revocation."""
    if not gone:
        return
    done = set(done_hosts)
    store = keystore(ws)
    keys = store.load()
    hosts = [h for h in managed(remaining) if h not in done]
    revs = _with(load_revocations(ws), key_pairs_of(keys, gone), revmod.REMOVED, hosts)
    pending, _ = revmod.settle(revs, done, managed(remaining))
    save_revocations(ws, pending)
    store.save(keymod.purge(keys, gone))
    store.drop_backups()


def settle_revocations(ws: Workspace, inv: Inventory, done_hosts: list[str]) -> list[revmod.Revocation]:
    """Hosts that now run the full config no longer trust any revoked key; purge retired keys
    once no host trusts them."""
    revs = load_revocations(ws)
    if not revs:
        return []
    pending, finished = revmod.settle(revs, done_hosts, managed(inv))
    rotated = [r.key for r in finished if r.why == revmod.ROTATED]
    if rotated:
        store = keystore(ws)
        store.save(keymod.purge_retired(store.load(), rotated))
        store.drop_backups()
    save_revocations(ws, pending)
    return pending
