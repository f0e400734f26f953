"""Loading and saving an inventory's local state: the inventory file, the keystore, and the
pending revocations that tie the two together. Writes are atomic (fsutil.write_atomic)."""

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
    return BadInput(
        "--inventory", ws.name, f"no inventory at {ws.inventory_path}",
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
    if not ws.inventory_path.is_file():
        raise _missing(ws)
    _check_permissions(ws)


def load_if_exists(ws: Workspace) -> Inventory | None:
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


def save(ws: Workspace, inv: Inventory) -> bool:
    return write_atomic(ws.inventory_path, invmod.to_document(inv), 0o644, backups=BACKUPS)


def keystore(ws: Workspace) -> keymod.Keystore:
    return keymod.Keystore(ws.keys_dir)


def ensure_keys(ws: Workspace, inv: Inventory) -> tuple[keymod.Keys, list[str]]:
    """The keystore with a key pair for every peer (made for those without); saved if it changed."""
    store = keystore(ws)
    current = store.load()
    updated, made = keymod.ensure(current, inv.names)
    if made or not current.psk_secret:
        ws.private_state_dir()
        store.save(updated)
    return updated, made


def public_keys(keys: keymod.Keys, inv: Inventory) -> dict[str, str]:
    return {n: keys.public(n) for n in inv.names if n in keys.pairs}


def managed(inv: Inventory) -> list[str]:
    """Peers wgmesh reaches over SSH."""
    return [p.name for p in inv.peers if p.ssh is not None]


# ---------------------------------------------------------------- revocations


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
    revmod.save(ws.revocations_path, _with(revmod.load(ws.revocations_path), keys, why, hosts))


def forget_peers(ws: Workspace, remaining: Inventory, gone: list[str], done_hosts: Iterable[str] = ()) -> None:
    """Peers that left the inventory (e.g. gone from Terraform's outputs): their keys are
    purged, and every managed host that has not yet dropped them has a pending revocation."""
    if not gone:
        return
    done = set(done_hosts)
    store = keystore(ws)
    keys = store.load()
    hosts = [h for h in managed(remaining) if h not in done]
    revs = _with(revmod.load(ws.revocations_path), key_pairs_of(keys, gone), revmod.REMOVED, hosts)
    pending, _ = revmod.settle(revs, done, managed(remaining))
    revmod.save(ws.revocations_path, pending)
    store.save(keymod.purge(keys, gone))
    keymod.drop_backups(store)


def settle_revocations(ws: Workspace, inv: Inventory, done_hosts: list[str]) -> list[revmod.Revocation]:
    """Hosts that now run the full config no longer trust any revoked key; purge retired keys
    once no host trusts them."""
    revs = revmod.load(ws.revocations_path)
    if not revs:
        return []
    pending, finished = revmod.settle(revs, done_hosts, managed(inv))
    rotated = [r.key for r in finished if r.why == revmod.ROTATED]
    if rotated:
        store = keystore(ws)
        store.save(keymod.purge_retired(store.load(), rotated))
        keymod.drop_backups(store)
    revmod.save(ws.revocations_path, pending)
    return pending
