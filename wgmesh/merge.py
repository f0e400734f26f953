"""The three-way merge behind the shared backend's conditional writes (wgmesh.backend): a write
based on an old version of a document is merged with the newer one, entry by entry (a peer of the
inventory, a peer's key pair, a host's pins, a revocation), before it is tried again. Pure."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from wgmesh.keys import KEYSTORE

_GONE: Any = object()


class MergeConflict(Exception):
    def __init__(self, keys: list[str]) -> None:
        super().__init__(", ".join(keys))
        self.keys = keys


def merge3(base: Mapping[str, object], ours: Mapping[str, object], theirs: Mapping[str, object]) -> dict[str, object]:
    """Entries changed on one side only take that side's value (an entry missing = removed);
    the same change on both sides is taken once; different changes of one entry are a conflict."""
    out: dict[str, object] = {}
    conflicts = []
    for k in sorted(set(base) | set(ours) | set(theirs)):
        b, o, t = base.get(k, _GONE), ours.get(k, _GONE), theirs.get(k, _GONE)
        if t in (o, b):
            v = o
        elif o == b:
            v = t
        else:
            conflicts.append(k)
            continue
        if v is not _GONE:
            out[k] = v
    if conflicts:
        raise MergeConflict(conflicts)
    return out


def _explode_inventory(text: str | None) -> dict[str, object]:
    if text is None:
        return {}
    doc = json.loads(text)
    out = {f"head:{k}": v for k, v in doc.items() if k != "peers"}
    out.update({f"peer:{n}": p for n, p in (doc.get("peers") or {}).items()})
    return out


def _implode_inventory(entries: Mapping[str, object]) -> str | None:
    from wgmesh import inventory as invmod

    if not entries:
        return None
    doc: dict[str, Any] = {k[5:]: v for k, v in entries.items() if k.startswith("head:")}
    doc["peers"] = {k[5:]: v for k, v in entries.items() if k.startswith("peer:")}
    # Through the one parser: the merged inventory is checked as a mesh like any other.
    return invmod.to_document(invmod.from_document(json.dumps(doc), "merged inventory"))


def _explode_keystore(text: str | None) -> dict[str, object]:
    if text is None:
        return {}
    doc = json.loads(text)
    out: dict[str, object] = {"psk_secret": doc.get("psk_secret"), "format": doc.get("format")}
    for part in ("peers", "retired"):
        out.update({f"{part}:{n}": v for n, v in (doc.get(part) or {}).items()})
    return out


def _implode_keystore(entries: Mapping[str, object]) -> str | None:
    from wgmesh import keys

    if not entries:
        return None
    doc: dict[str, Any] = {"format": entries.get("format", 1), "psk_secret": entries.get("psk_secret")}
    for part in ("peers", "retired"):
        doc[part] = {k[len(part) + 1:]: v for k, v in entries.items() if k.startswith(f"{part}:")}
    # Through the keystore's own parser and writer: checked, and written in its one format.
    return keys.dump(keys.parse(json.dumps(doc), "merged keystore", "run the command again"))


def _explode_revocations(text: str | None) -> dict[str, object]:
    return {f"{d['peer']} {d['key']}": d for d in json.loads(text)} if text else {}


def _implode_revocations(entries: Mapping[str, object]) -> str | None:
    from wgmesh import revocations

    merged = json.dumps([entries[k] for k in sorted(entries)])
    return revocations.dump(revocations.parse(merged, "merged revocations"))


def explode_pins(text: str | None) -> dict[str, object]:
    out: dict[str, set[str]] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#"):
            out.setdefault(parts[0], set()).add(f"{parts[1]} {parts[2]}")
    return {host: sorted(keys) for host, keys in out.items()}


def implode_pins(entries: Mapping[str, object]) -> str | None:
    lines = [f"{host} {key}" for host in sorted(entries) for key in entries[host]]  # type: ignore[attr-defined]
    return "".join(f"{line}\n" for line in lines) or None


Merge = tuple[Callable[[str | None], dict[str, object]], Callable[[Mapping[str, object]], str | None]]
MERGES: dict[str, Merge] = {
    "inventory": (_explode_inventory, _implode_inventory),
    "revocations": (_explode_revocations, _implode_revocations),
    "pins": (explode_pins, implode_pins),
    KEYSTORE: (_explode_keystore, _implode_keystore),
}


def merge_text(kind: str, base: str | None, ours: str | None, theirs: str | None) -> str | None:
    explode, implode = MERGES[kind]
    return implode(merge3(explode(base), explode(ours), explode(theirs)))
