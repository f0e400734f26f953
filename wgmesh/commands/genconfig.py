"""genconfig: output/<inventory>/<peer>.conf for every peer (0600 in 0700); nothing pushed."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wgmesh import keys as keymod
from wgmesh import store
from wgmesh.commands import Succeeds
from wgmesh.errors import Refused
from wgmesh.fsutil import ensure_private_dir, write_atomic
from wgmesh.model import Inventory
from wgmesh.render import Renderer
from wgmesh.workspace import Workspace


@dataclass
class GenResult(Succeeds):
    """The configs written, left as they were and removed, in `directory`."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    directory: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "written": self.written, "unchanged": self.unchanged,
                "removed": self.removed}


# Handed to forked workers (copy-on-write): a Renderer holds every public key and the PSK state.
_SHARED: dict[str, Renderer] = {}


def _write_slice(args: tuple[list[str], str]) -> tuple[list[str], list[str]]:
    names, out_dir = args
    renderer = _SHARED["renderer"]
    written: list[str] = []
    unchanged: list[str] = []
    for name in names:
        changed = write_atomic(Path(out_dir) / f"{name}.conf", renderer.text(name), 0o600, durable=False)
        (written if changed else unchanged).append(name)
    return written, unchanged


Slice = tuple[list[str], list[str]]  # (written, unchanged)


def _in_workers(
    names: list[str], out_dir: str, workers: int, work: Callable[[tuple[list[str], str]], Slice] = _write_slice
) -> list[Slice] | None:
    """The slices rendered by forked workers; None if a worker died (a multiprocessing.Pool would
    wait for it forever: seen once in a benchmark run): the caller then writes them itself (the
    files are written atomically, so a half-done slice leaves nothing torn)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as procs:
            return list(procs.map(work, [(names[i::workers], out_dir) for i in range(workers)]))
    except BrokenProcessPool:
        return None


def write_configs(
    ws: Workspace, inv: Inventory, keys: keymod.Keys, workers: int = 1, renderer: Renderer | None = None
) -> GenResult:
    """output/<inventory>/<peer>.conf for every peer, one file at a time (0600 in 0700).

    With workers > 1 (genconfig on a large mesh), forked processes render and write slices of
    the peers in parallel; each holds one file at a time.
    """
    out_dir = ws.output_dir
    ensure_private_dir(out_dir.parent)
    ensure_private_dir(out_dir)
    res = GenResult(directory=str(out_dir))
    names = list(inv.names)
    _SHARED["renderer"] = renderer or Renderer(inv, keys)
    try:
        parts = None
        if workers > 1 and len(names) >= 2 * workers:
            parts = _in_workers(names, str(out_dir), workers)
        if parts is None:
            parts = [_write_slice((names, str(out_dir)))]
    finally:
        _SHARED.clear()
    res.written = sorted(n for w, _ in parts for n in w)
    res.unchanged = sorted(n for _, u in parts for n in u)
    wanted = set(names)
    for f in sorted(out_dir.glob("*.conf")):
        if f.stem not in wanted:
            f.unlink()
            res.removed.append(f.stem)
    return res


def genconfig(ws: Workspace) -> GenResult:
    if ws.backend is not None:
        raise Refused(
            f"genconfig writes every peer's private key to {ws.output_dir}, but the keys of inventory "
            f"{ws.name!r} are kept in Secrets Manager ({ws.backend.where('keystore')}) and never on this disk",
            hint="'wgmesh push' installs the configs on the peers it reaches; to keep files of them here, "
                 "move the inventory back first: wgmesh migrate --backend local",
        )
    inv = store.load(ws)
    keys, _ = store.ensure_keys(ws, inv)
    # Large meshes with PSKs: render on every core (N² sections, each with its own derived PSK).
    # Without PSKs every file is a slice of one joined string: a single process is faster.
    workers = min(os.cpu_count() or 1, 8) if inv.mesh.psk and len(inv.peers) >= 200 else 1
    return write_configs(ws, inv, keys, workers)
