"""The shared backend of an inventory: where a team keeps one mesh's state, so that every
operator and every CI job works on the same inventory, keys, pins, Terraform state and lock.

    s3://BUCKET/PREFIX             one inventory per prefix
      PREFIX/inventory.json        the inventory (public data)            conditional writes
      PREFIX/revocations.json      pending revocations (public keys)      conditional writes
      PREFIX/known_hosts           host-key pins                          conditional writes
      PREFIX/wgmesh.lock           wgmesh's run lock                      conditional create
      PREFIX/terraform.tfstate     Terraform's S3 backend (its lock: terraform.tfstate.tflock)
    Secrets Manager: wgmesh/BUCKET/PREFIX   the keystore; every change is one new version

Every write names the version it was based on. A write that meets a newer version is merged
with it (three-way, per peer / per key / per host: wgmesh.merge) and tried again on that version;
changes to the same entry on both sides are refused, never overwritten. Writers also hold the
run lock, so a merge happens only beside a reader that pinned a host key, or a lock broken by hand.

Where an inventory lives is remembered in inventories/NAME.backend (public, can be committed):
a fresh clone with that file, or with WGMESH_BACKEND, or with --backend, works on the same mesh.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wgmesh.errors import BackendFailed, BadInput, LockHeld
from wgmesh.keys import KEYSTORE  # the kind kept in Secrets Manager
from wgmesh.merge import MergeConflict, explode_pins, implode_pins, merge_text

if TYPE_CHECKING:
    from wgmesh.adapters.aws import S3Objects, Secret
    from wgmesh.workspace import Workspace

ENV = "WGMESH_BACKEND"
LOCAL = "local"
POINTER_SUFFIX = ".backend"
LOCK_OBJECT = "wgmesh.lock"
STATE_OBJECT = "terraform.tfstate"
OBJECTS = {"inventory": "inventory.json", "revocations": "revocations.json", "pins": "known_hosts"}
WRITE_ATTEMPTS = 5

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_LOCK_ID = re.compile(r"^[0-9a-f]{12}$")


@dataclass(frozen=True)
class BackendURL:
    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    @property
    def secret_name(self) -> str:
        return f"wgmesh/{self.bucket}/{self.prefix}"


def parse(field: str, text: str) -> BackendURL | None:
    """`s3://BUCKET/PREFIX` or `local` (None). Refused: another scheme, a bucket name S3 would
    refuse, no prefix, a prefix segment outside [A-Za-z0-9_.-] (also a Secrets Manager name)."""
    value = text.strip()
    if value == LOCAL:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise BadInput(field, text, "expected s3://BUCKET/PREFIX or 'local'")
    if scheme != "s3":
        raise BadInput(field, text, f"unknown scheme {scheme + '://'!r}: wgmesh knows s3://BUCKET/PREFIX and 'local'")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise BadInput(field, text, f"{bucket!r} is not an S3 bucket name (3-63 of a-z 0-9 . -)")
    prefix = prefix.strip("/")
    if not prefix:
        raise BadInput(field, text, "no prefix: name the inventory's place in the bucket, e.g. s3://BUCKET/prod")
    for seg in prefix.split("/"):
        if not _SEGMENT.match(seg) or seg in (".", ".."):
            raise BadInput(field, text, f"prefix segment {seg!r}: use A-Z a-z 0-9 _ . - (not starting with . _ -)")
    return BackendURL(bucket, prefix)


def lock_id(text: str) -> str:
    if not _LOCK_ID.match(text):
        raise BadInput("LOCK_ID", text, "a lock id is 12 hexadecimal digits, as the lock's holder message shows")
    return text


# ------------------------------------------------------------------ where an inventory lives


def pointer_path(root: Path, name: str) -> Path:
    return root / "inventories" / f"{name}{POINTER_SUFFIX}"


def remembered(root: Path, name: str) -> BackendURL | None:
    from wgmesh.fsutil import read_if_exists

    path = pointer_path(root, name)
    text = read_if_exists(path)
    if text is None:
        return None
    url = parse(str(path), text)
    if url is None:
        raise BadInput(str(path), text.strip(), "names no backend: remove the file to keep the inventory local")
    return url


def remember(root: Path, name: str, url: BackendURL | None) -> None:
    from wgmesh.fsutil import write_atomic

    path = pointer_path(root, name)
    if url is None:
        path.unlink(missing_ok=True)
    elif not path.exists() or path.read_text().strip() != str(url):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, f"{url}\n", 0o644)


def resolve(root: Path, name: str, flag: str | None, env: Mapping[str, str]) -> tuple[BackendURL | None, str]:
    """Where inventory `name` lives, and what said so: --backend, else the remembered place,
    else WGMESH_BACKEND, else this project directory. A choice that contradicts where it
    already is is refused (moving it is `wgmesh migrate`)."""
    where = remembered(root, name)
    pointer = str(pointer_path(root, name))
    if flag is not None:
        field, value = "--backend", flag
    elif env.get(ENV):
        field, value = ENV, env[ENV]
    else:
        return where, pointer
    chosen = parse(field, value)
    move = f"'wgmesh -i {name} migrate --backend {value}'"
    if where is not None and chosen != where:
        raise BadInput(field, value, f"inventory {name!r} lives in {where} ({pointer})",
                       hint=f"move it with {move}, or use --backend {where}")
    if chosen is not None and where is None and (root / "inventories" / f"{name}.json").exists():
        raise BadInput(field, value, f"inventory {name!r} is local (inventories/{name}.json)",
                       hint=f"move it with {move}, or pass --backend local to use it where it is")
    return chosen, field


# ------------------------------------------------------------------ the session


@dataclass
class _Seen:
    text: str | None  # the backend's version as last read or written by this process
    version: str | None  # its ETag / secret VersionId; None: there was none
    base: str | None  # this process's own view, which its next write changes


class Shared:
    """One inventory's shared state for the length of one command."""

    def __init__(self, url: BackendURL, name: str, field: str = "--backend") -> None:
        self.url = url
        self.name = name
        self.field = field  # where the URL came from, for messages
        self._objects: S3Objects | None = None
        self._secret: Secret | None = None
        self._seen: dict[str, _Seen] = {}
        self._lock: tuple[str, str] | None = None  # (id, etag) of the lock this process holds
        self.moved_away = False  # migrate moved the inventory out: nothing more goes there

    def __str__(self) -> str:
        return str(self.url)

    @property
    def objects(self) -> S3Objects:
        if self._objects is None:
            from wgmesh.adapters.aws import S3Objects

            self._objects = S3Objects(self.url.bucket, self.field, str(self.url))
        return self._objects

    @property
    def secret(self) -> Secret:
        if self._secret is None:
            from wgmesh.adapters.aws import Secret

            self._secret = Secret(self.url.secret_name, self.objects.region)
        return self._secret

    def check(self) -> str:
        """The bucket exists and these credentials reach it (else BadInput / BackendFailed): its region."""
        return self.objects.region

    def forget(self) -> None:
        """Read everything again (the lock was just taken: what was read before may be old)."""
        self._seen.clear()

    def known(self, kind: str) -> str | None:
        """What this process last read or wrote of `kind` (None: nothing, or not read)."""
        seen = self._seen.get(kind)
        return seen.base if seen is not None else None

    def where(self, kind: str) -> str:
        if kind == KEYSTORE:
            return f"secret {self.url.secret_name}"
        return f"{self.url}/{OBJECTS[kind]}"

    # ---------------------------------------------------------- documents

    def _fetch(self, kind: str) -> tuple[str | None, str | None]:
        if kind == KEYSTORE:
            return self.secret.get()
        return self.objects.get(self.url.key(OBJECTS[kind]))

    def read(self, kind: str, fresh: bool = False) -> str | None:
        """The backend's current text of `kind` (None: there is none); read once per command
        unless `fresh`."""
        seen = self._seen.get(kind)
        if seen is None or fresh:
            text, version = self._fetch(kind)
            seen = self._seen[kind] = _Seen(text, version, text)
        return seen.base

    def write(self, kind: str, ours: str | None) -> bool:
        """Make the backend hold `ours`, merged with whatever changed there since this process
        read it. Returns whether anything was written."""
        if kind not in self._seen:
            self.read(kind)
        seen = self._seen[kind]
        for _ in range(WRITE_ATTEMPTS):
            try:
                merged = ours if seen.text == seen.base else merge_text(kind, seen.base, ours, seen.text)
            except MergeConflict as exc:
                raise BackendFailed(
                    f"{self.where(kind)} was changed by another run in the same places as this one ({exc}): "
                    "nothing of this change was written there",
                    hint="run the command again: it starts from the new version",
                ) from None
            except BadInput as exc:
                raise BackendFailed(
                    f"{self.where(kind)} was changed by another run and the two changes together are refused: "
                    f"{exc.message}", hint="run the command again: it starts from the new version",
                ) from None
            if merged == seen.text:
                seen.base = ours
                return False
            version = self._put(kind, merged, seen.version)
            if version is not None:
                self._seen[kind] = _Seen(merged, version or None, ours)
                return True
            text, version = self._fetch(kind)  # a newer version: merge with it and try again
            seen = self._seen[kind] = _Seen(text, version, seen.base)
        raise BackendFailed(f"{self.where(kind)} kept changing under this run ({WRITE_ATTEMPTS} attempts)",
                            hint="another process writes it without the lock: find it")

    def _put(self, kind: str, text: str | None, version: str | None) -> str | None:
        """Write on top of `version`: the new version ('' for none), or None if `version` is not
        the backend's version any more."""
        if kind == KEYSTORE:
            if text is None:
                raise BackendFailed(f"refusing to empty {self.where(kind)}")
            return self.secret.put(text, version)
        key = self.url.key(OBJECTS[kind])
        if text is None:
            return "" if self.objects.delete(key, if_match=version) else None
        return self.objects.put(key, text.encode(), if_match=version)

    # ---------------------------------------------------------- pins: a local working copy

    def pull_pins(self, path: Path) -> None:
        from wgmesh.fsutil import write_atomic

        text = self.read("pins")
        if text is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, text, 0o600)

    def push_pins(self, path: Path) -> bool:
        from wgmesh.fsutil import read_if_exists

        if "pins" not in self._seen:
            return False
        return self.write("pins", implode_pins(explode_pins(read_if_exists(path))))

    # ---------------------------------------------------------- the run lock

    def acquire(self, command: str) -> str:
        import getpass
        import secrets

        info = {
            "id": secrets.token_hex(6), "holder": getpass.getuser(), "host": os.uname().nodename,
            "pid": os.getpid(), "command": command, "since": int(time.time()),
        }
        key = self.url.key(LOCK_OBJECT)
        etag = self.objects.put(key, json.dumps(info, sort_keys=True).encode(), if_match=None)
        if etag is None:
            raise self._held()
        self._lock = (str(info["id"]), etag)
        return str(info["id"])

    def holder(self) -> tuple[dict[str, Any], str] | None:
        text, etag = self.objects.get(self.url.key(LOCK_OBJECT))
        if text is None or etag is None:
            return None
        try:
            info = json.loads(text)
        except ValueError:
            info = {}
        return (info if isinstance(info, dict) else {}), etag

    def _held(self) -> LockHeld:
        held = self.holder()
        info = held[0] if held else {}
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(info.get("since", 0)))
        return LockHeld(
            f"inventory {self.name!r} in {self.url} is locked by {info.get('holder', '?')} on host "
            f"{info.get('host', '?')} (pid {info.get('pid', '?')}, '{info.get('command', '?')}') since {since}; "
            f"lock id {info.get('id', '?')}",
            hint=f"wait for that run to end; if it crashed: wgmesh -i {self.name} unlock {info.get('id', 'LOCK_ID')}",
        )

    def release(self) -> None:
        if self._lock is not None:
            self.objects.delete(self.url.key(LOCK_OBJECT), if_match=self._lock[1])
            self._lock = None

    def unlock(self, wanted: str) -> dict[str, Any]:
        """Remove the lock `wanted` on purpose (after a crashed run); what it said."""
        held = self.holder()
        if held is None:
            raise BadInput("LOCK_ID", wanted, f"inventory {self.name!r} in {self.url} is not locked")
        info, etag = held
        if info.get("id") != wanted:
            raise BadInput("LOCK_ID", wanted, f"the lock of inventory {self.name!r} has id {info.get('id', '?')} "
                           f"(held by {info.get('holder', '?')} on {info.get('host', '?')})")
        if not self.objects.delete(self.url.key(LOCK_OBJECT), if_match=etag):
            raise BackendFailed("the lock changed while it was being removed: nothing removed",
                                hint="look again: wgmesh unlock names the lock it removes")
        return info

    # ---------------------------------------------------------- Terraform

    def terraform_backend(self) -> dict[str, Any]:
        """The S3 backend block: state and its S3-native lock beside the inventory. Endpoint and
        credentials come from the standard AWS variables, which Terraform reads as boto3 does."""
        block: dict[str, Any] = {
            "bucket": self.url.bucket, "key": self.url.key(STATE_OBJECT),
            "region": self.objects.region, "use_lockfile": True,
        }
        if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
            # An S3 of one's own (MinIO, an emulator): path-style addressing, no AWS account lookups.
            block.update(use_path_style=True, skip_credentials_validation=True, skip_requesting_account_id=True,
                         skip_metadata_api_check=True, skip_region_validation=True)
        return {"s3": block}


@contextmanager
def session(ws: Workspace, command: str, lock: bool) -> Iterator[None]:
    """A command's run against its shared backend: the local lock (this clone) and the backend's
    run lock (every clone) for a writing command; the pins pulled before and pushed after, even
    when the command fails (what it learned of host keys stays true); the place remembered."""
    from wgmesh.workspace import RunLock

    shared = ws.backend
    assert shared is not None
    shared.check()  # before anything is written here or there
    with RunLock(ws, command) if lock else nullcontext():
        if lock:
            shared.acquire(command)
            shared.forget()
        try:
            ws.private_state_dir()
            shared.pull_pins(ws.pins_path)
            yield
        finally:
            try:
                if not shared.moved_away:
                    shared.push_pins(ws.pins_path)
                    if shared.known("inventory") is not None:
                        remember(ws.root, ws.name, shared.url)
            finally:
                if lock:
                    shared.release()
