"""Pending revocations: public keys that some reachable-later hosts may still trust.

A key is revoked when its peer is deleted or its key pair rotated. Every managed host must
receive a config without it; until a push to a host succeeds, that host is pending. The
file holds public data only (peer names and public keys). Pure functions, plus load/save.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wgmesh.errors import Refused
from wgmesh.fsutil import read_if_exists, write_atomic

REMOVED, ROTATED = "removed", "rotated"


@dataclass(frozen=True)
class Revocation:
    peer: str
    key: str  # the public key no host may trust any more
    why: str  # removed / rotated
    hosts: tuple[str, ...]  # hosts not yet known to have dropped it
    since: int = 0


def add(  # noqa: PLR0913, PLR0917 - a Revocation's fields, passed positionally by ops.py
    revs: list[Revocation], peer: str, key: str, why: str, hosts: Iterable[str], now: int
) -> list[Revocation]:
    """`key` is revoked on `hosts` (an earlier revocation of the same key is replaced)."""
    return [r for r in revs if r.key != key] + [Revocation(peer, key, why, tuple(sorted(set(hosts))), now)]


def settle(
    revs: list[Revocation], done_hosts: Iterable[str], known_hosts: Iterable[str]
) -> tuple[list[Revocation], list[Revocation]]:
    """Drop hosts that now run a config without the key (or no longer exist). → (pending, finished)."""
    done, known = set(done_hosts), set(known_hosts)
    pending: list[Revocation] = []
    finished: list[Revocation] = []
    for r in revs:
        left = tuple(h for h in r.hosts if h in known and h not in done)
        (pending if left else finished).append(Revocation(r.peer, r.key, r.why, left, r.since))
    return pending, finished


def load(path: Path) -> list[Revocation]:
    return parse(read_if_exists(path), str(path))


def parse(text: str | None, where: str) -> list[Revocation]:
    if text is None:
        return []
    try:
        doc = json.loads(text)
        return [Revocation(d["peer"], d["key"], d["why"], tuple(d["hosts"]), d.get("since", 0)) for d in doc]
    except (ValueError, KeyError, TypeError):
        raise Refused(
            f"{where} is damaged",
            hint="it lists public keys hosts may still trust: fix it, or remove it and run 'wgmesh push'",
        ) from None


def dump(revs: list[Revocation]) -> str | None:
    """The document (None: no revocation pending, no file)."""
    if not revs:
        return None
    doc = [{"peer": r.peer, "key": r.key, "why": r.why, "hosts": list(r.hosts), "since": r.since} for r in revs]
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def save(path: Path, revs: list[Revocation]) -> None:
    text = dump(revs)
    if text is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, text, 0o600)
