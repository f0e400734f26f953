"""migrate: move an inventory between this project directory and a shared backend (and back).

Nothing is lost on the way: every part (keystore, revocations, pins, inventory, Terraform state)
is written to the target, read back and compared with the source; only then does the inventory's
remembered place change and the source copy go (the local keys with their backups, or the
bucket's objects and the secret). A failure before that leaves the source as it was and in use.
Both places are locked for the whole move.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wgmesh import backend as bk
from wgmesh import keys as keymod
from wgmesh import revocations as revmod
from wgmesh import store
from wgmesh.commands import Succeeds
from wgmesh.errors import BackendFailed, BadInput
from wgmesh.fsutil import read_if_exists, remove_backups, write_atomic
from wgmesh.progress import Reporter
from wgmesh.workspace import Workspace

ROOT_MODULE = "main.tf.json"
STATE_FILES = ("terraform.tfstate", "terraform.tfstate.backup")


@dataclass
class MigrateResult(Succeeds):
    inventory: str
    source: str
    target: str
    moved: list[str]  # the parts copied and verified
    removed: list[str] = field(default_factory=list)  # what of the source is gone

    def to_json(self) -> dict[str, Any]:
        return {"inventory": self.inventory, "from": self.source, "to": self.target, "moved": self.moved,
                "removed": self.removed}


@dataclass
class _Parts:
    """Everything an inventory is, as text (keystore included: held in memory only)."""

    inventory: str
    keystore: str | None
    revocations: str | None
    pins: str | None


def migrate(ws: Workspace, target_text: str, reporter: Reporter) -> MigrateResult:
    target = bk.parse("--backend", target_text)
    if target is None:
        if ws.backend is None:
            raise BadInput("--backend", target_text, f"inventory {ws.name!r} is local already")
        return _to_local(ws, reporter)
    if ws.backend is not None:
        same = target == ws.backend.url
        raise BadInput("--backend", target_text, f"inventory {ws.name!r} lives in {ws.backend}"
                       + (" already" if same else ": move it back first (--backend local), then on"))
    return _to_shared(ws, target, reporter)


def _read_local(ws: Workspace) -> _Parts:
    store.require_inventory(ws)  # exists, and no one else can change it
    keys = keymod.Keystore(ws.keys_dir)
    loaded = keys.load()  # a keystore others can read is refused here, before anything moves
    return _Parts(
        inventory=ws.inventory_path.read_text(),
        keystore=keymod.dump(loaded) if keys.path.exists() else None,
        revocations=revmod.dump(revmod.load(ws.revocations_path)),
        pins=read_if_exists(ws.pins_path),
    )


def _check_same(where: str, wrote: str | None, read: str | None) -> None:
    if wrote != read:
        raise BackendFailed(f"{where} reads back different from what was written: the source is kept, unchanged",
                            hint="run migrate again; the target's partial copy is overwritten")


# ------------------------------------------------------------------ local → shared


def _to_shared(ws: Workspace, url: bk.BackendURL, reporter: Reporter) -> MigrateResult:
    parts = _read_local(ws)
    store.load(ws)  # a valid inventory only
    shared = bk.Shared(url, ws.name)
    reporter.phase(f"lock {url}")
    shared.acquire("migrate")
    try:
        if shared.read("inventory") is not None:
            raise BadInput("--backend", str(url), f"already holds an inventory ({shared.where('inventory')})",
                           hint="name an empty prefix")
        moved = _copy_up(ws, shared, parts, reporter)
        reporter.phase("switch to the backend")
        bk.remember(ws.root, ws.name, url)  # from here on, the shared copy is the inventory
        removed = _remove_local(ws)
    finally:
        shared.release()
    return MigrateResult(ws.name, str(ws.root), str(url), moved, removed)


def _copy_up(ws: Workspace, shared: bk.Shared, parts: _Parts, reporter: Reporter) -> list[str]:
    moved = []
    reporter.phase(f"copy to {shared.url}")
    for kind, text in ((bk.KEYSTORE, parts.keystore), ("revocations", parts.revocations), ("pins", parts.pins)):
        if text is not None:
            shared.write(kind, text)
            moved.append(kind)
    if _state_in(ws.tf_dir):
        _move_state(ws, backend=shared.terraform_backend(), reporter=reporter)
        moved.append("terraform state")
    shared.write("inventory", parts.inventory)  # last: a prefix without it is not an inventory yet
    moved.append("inventory")
    reporter.phase("read back and compare")
    shared.forget()
    for kind, text in ((bk.KEYSTORE, parts.keystore), ("revocations", parts.revocations),
                       ("pins", parts.pins), ("inventory", parts.inventory)):
        _check_same(shared.where(kind), text, shared.read(kind))
    return moved


def _remove_local(ws: Workspace) -> list[str]:
    removed = []
    for path in (ws.inventory_path, ws.keys_dir / keymod.STORE_FILE, ws.revocations_path):
        if path.exists():
            removed.append(str(path.relative_to(ws.root)))
        path.unlink(missing_ok=True)
        remove_backups(path)
    for name in STATE_FILES:
        state = ws.tf_dir / name
        if state.exists():
            state.unlink()
            removed.append(str(state.relative_to(ws.root)))
    return removed


# ------------------------------------------------------------------ shared → local


def _to_local(ws: Workspace, reporter: Reporter) -> MigrateResult:
    shared = ws.backend
    assert shared is not None
    if ws.inventory_path.exists():
        raise BadInput("--backend", "local", f"{ws.inventory_path} exists beside the shared inventory",
                       hint="move that file away first: migrate never overwrites an inventory")
    inventory = shared.read("inventory")
    if inventory is None:
        raise BadInput("--inventory", ws.name, f"no inventory at {shared.where('inventory')}")
    store.load(ws)  # a valid inventory only
    parts = _Parts(inventory, shared.read(bk.KEYSTORE), shared.read("revocations"), shared.read("pins"))
    keys = keymod.parse(parts.keystore, shared.where(bk.KEYSTORE), "") if parts.keystore else None
    moved = []
    reporter.phase("copy here")
    if keys is not None:
        ws.private_state_dir()
        local = keymod.Keystore(ws.keys_dir)
        local.save(keys)
        _check_same(str(local.path), keymod.dump(keys), read_if_exists(local.path))
        moved.append(bk.KEYSTORE)
    if parts.revocations is not None:
        revmod.save(ws.revocations_path, revmod.parse(parts.revocations, shared.where("revocations")))
        moved.append("revocations")
    if parts.pins is not None:
        moved.append("pins")  # the working copy here is the backend's (pulled when this run began)
    if _state_in(ws.tf_dir):
        _move_state(ws, backend=None, reporter=reporter)
        moved.append("terraform state")
    write_atomic(ws.inventory_path, inventory, 0o644)
    _check_same(str(ws.inventory_path), inventory, read_if_exists(ws.inventory_path))
    moved.append("inventory")
    reporter.phase("switch to this directory")
    bk.remember(ws.root, ws.name, None)  # from here on, the local copy is the inventory
    shared.moved_away = True
    removed = _remove_shared(shared)
    return MigrateResult(ws.name, str(shared.url), str(ws.root), moved, removed)


def _remove_shared(shared: bk.Shared) -> list[str]:
    removed = []
    for kind in ("inventory", "revocations", "pins"):
        key = shared.url.key(bk.OBJECTS[kind])
        if shared.known(kind) is not None:
            shared.objects.delete_any(key)
            removed.append(f"s3://{shared.url.bucket}/{key}")
    for key in shared.objects.keys(shared.url.key(bk.STATE_OBJECT)):
        shared.objects.delete_any(key)
        removed.append(f"s3://{shared.url.bucket}/{key}")
    if shared.known(bk.KEYSTORE) is not None:
        shared.secret.delete()
        removed.append(f"secret {shared.url.secret_name}")
    return removed


# ------------------------------------------------------------------ Terraform's state


def _state_in(tf_dir: Path) -> bool:
    return (tf_dir / ROOT_MODULE).exists()


def _move_state(ws: Workspace, backend: dict[str, Any] | None, reporter: Reporter) -> None:
    """Point the root module at the other backend and let Terraform copy its state there
    (`init -migrate-state`), then compare the two: the same resources and outputs. (Terraform
    gives the copy a lineage of its own.) On failure the source is put back as it was."""
    from wgmesh.adapters.terraform import TerraformRunner

    reporter.phase("move the Terraform state")
    runner = TerraformRunner(ws.tf_dir, on_line=reporter.line)
    path = ws.tf_dir / ROOT_MODULE
    before = json.loads(path.read_text())
    was_shared = "backend" in (before.get("terraform") or {})
    runner.init("reconfigure" if was_shared else "")
    source = runner.state_pull()
    after = json.loads(json.dumps(before))
    terraform = after.setdefault("terraform", {})
    terraform.pop("backend", None)
    if backend is not None:
        terraform["backend"] = backend
    if not terraform:
        after.pop("terraform")
    try:
        runner.prepare(after)
        runner.init("migrate")
        target = runner.state_pull()
        for key in ("resources", "outputs"):
            if source.get(key) != target.get(key):
                raise BackendFailed(f"the Terraform state's {key} differ after the move: the source is kept",
                                    hint="run migrate again")
    except BaseException:
        _put_back(ws, runner, before, source if not was_shared else None)
        raise


def _put_back(ws: Workspace, runner: Any, root: dict[str, Any], local_state: dict[str, Any] | None) -> None:
    """The root module and the backend it names as they were before a move that failed: the
    local state file as it was (Terraform empties it when it copies it away), or none beside a
    shared backend (the bucket's state was only read)."""
    runner.prepare(root)
    for name in STATE_FILES:
        (ws.tf_dir / name).unlink(missing_ok=True)
    if local_state is None:
        runner.init("reconfigure")
        return
    (ws.tf_dir / ".terraform" / "terraform.tfstate").unlink(missing_ok=True)  # its backend: local again
    write_atomic(ws.tf_dir / STATE_FILES[0], json.dumps(local_state, indent=2) + "\n", 0o644)
    runner.init("")
