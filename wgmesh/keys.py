"""The keystore: X25519 key pairs and the preshared-key secret, kept apart from the inventory.

One file, `keystore.json`, mode 0600 in a 0700 directory. A key pair is made once per
peer and never regenerated; its public key is derived once, when it is made, and stored
beside it. Per-pair preshared keys are derived from one stored secret and the two public
keys (keyed BLAKE2s), so every pair has its own PSK, a new key pair gives its pairs new PSKs,
and purging a peer's key pair purges its PSKs.

Nothing here ever puts key material into a message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wgmesh.errors import BadInput, Refused
from wgmesh.fsutil import BACKUPS, ensure_private_dir, remove_backups, write_atomic
from wgmesh.model import KeyPair

if TYPE_CHECKING:
    import hashlib

    from wgmesh.backend import Shared

KEYSTORE = "keystore"  # wgmesh.backend.KEYSTORE: the kind kept in Secrets Manager

STORE_FILE = "keystore.json"
PSK_PERSON = b"wgmpsk1"  # BLAKE2s personalisation: this derivation, version 1


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def decode_key(field_name: str, text: object) -> bytes:
    """32 bytes of canonical base64, as wg(8) writes them. The value is never echoed back."""
    if not isinstance(text, str) or len(text) != 44 or not text.endswith("="):
        raise BadInput(field_name, "(hidden)", "not a WireGuard key: 44 characters of base64 ending in '='")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(field_name, "(hidden)", "not a WireGuard key: invalid base64") from None
    if len(raw) != 32 or _b64(raw) != text:
        raise BadInput(field_name, "(hidden)", "not a WireGuard key: not 32 bytes of canonical base64")
    return raw


def public_key(private_b64: str) -> str:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    raw = decode_key("private key", private_b64)
    pub = X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()
    return _b64(pub)


def generate_keypair() -> KeyPair:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    priv = X25519PrivateKey.generate()
    return KeyPair(private=_b64(priv.private_bytes_raw()), public=_b64(priv.public_key().public_bytes_raw()))


def psk_hasher(secret: bytes) -> hashlib.blake2s:
    """The keyed BLAKE2s state, made once: each PSK then costs a copy and one block. (hashlib is
    imported here: it loads OpenSSL's libcrypto, 2.5 ms that addpeer, which makes no PSK, spares.)"""
    import hashlib

    return hashlib.blake2s(key=secret, person=PSK_PERSON)


def psk_from(hasher: hashlib.blake2s, raw_a: bytes, raw_b: bytes) -> str:
    h = hasher.copy()
    h.update(raw_a + raw_b if raw_a < raw_b else raw_b + raw_a)
    return binascii.b2a_base64(h.digest(), newline=False).decode()


def psk_for(secret: bytes, pub_a: str, pub_b: str) -> str:
    """The pair's PSK from the two public keys: keyed BLAKE2s, symmetric in a and b.

    (BLAKE2s with a key is a MAC by design, and 3x cheaper than HMAC-SHA256 here: a mesh of
    1000 peers derives a million of these per render; see Renderer.text.)
    """
    return psk_from(psk_hasher(secret), base64.b64decode(pub_a), base64.b64decode(pub_b))


@dataclass
class Keys:
    """The keystore's content in memory."""

    pairs: dict[str, KeyPair] = field(default_factory=dict)
    psk_secret: bytes = field(default=b"", repr=False)
    # Key pairs replaced by rotate-keys, kept until every peer has the new ones.
    retired: dict[str, list[KeyPair]] = field(default_factory=dict)

    def psk(self, a: str, b: str) -> str:
        return psk_for(self.psk_secret, self.pairs[a].public, self.pairs[b].public)

    def public(self, name: str) -> str:
        return self.pairs[name].public


class Keystore:
    """The keystore directory of one inventory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / STORE_FILE

    def _check_permissions(self) -> None:
        for p, want in ((self.dir, 0o700), (self.path, 0o600)):
            if not p.exists():
                continue
            mode = stat.S_IMODE(p.stat().st_mode)
            if mode & 0o077:
                raise Refused(
                    f"keystore {p} has mode {mode:04o}: refusing to use key material others can read",
                    hint=f"chmod {want:04o} {p}",
                )

    def load(self) -> Keys:
        self._check_permissions()
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return Keys()
        return parse(text, f"keystore {self.path}", "restore it from a .bak file")

    def save(self, keys: Keys) -> bool:
        ensure_private_dir(self.dir)
        return write_atomic(self.path, dump(keys), 0o600, backups=BACKUPS)

    def drop_backups(self) -> None:
        """After a purge: the rolling backups would still hold the purged keys."""
        remove_backups(self.path)


def parse(text: str, where: str, fix: str) -> Keys:
    """The keystore document (`dump`'s text); `where` names it in messages, never a key."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refused(f"{where} is not valid JSON", hint=fix) from None
    pairs = {}
    try:
        for name, d in (doc.get("peers") or {}).items():
            decode_key(f"keystore: key of {name}", d["private_key"])
            decode_key(f"keystore: public key of {name}", d["public_key"])
            pairs[name] = KeyPair(private=d["private_key"], public=d["public_key"])
        retired = {
            name: [KeyPair(private=d["private_key"], public=d["public_key"]) for d in olds]
            for name, olds in (doc.get("retired") or {}).items()
        }
        secret = base64.b64decode(doc["psk_secret"], validate=True) if doc.get("psk_secret") else b""
        if secret and len(secret) != 32:
            raise BadInput("keystore: psk_secret", "(hidden)", "must be 32 bytes")
    except (KeyError, TypeError, AttributeError, binascii.Error, BadInput) as exc:
        what = exc.message if isinstance(exc, BadInput) else type(exc).__name__
        raise Refused(f"{where} is damaged ({what})", hint=fix) from None
    return Keys(pairs=pairs, psk_secret=secret, retired=retired)


def dump(keys: Keys) -> str:
    doc: dict[str, object] = {
        "format": 1,
        "psk_secret": _b64(keys.psk_secret) if keys.psk_secret else None,
        "peers": {n: {"private_key": kp.private, "public_key": kp.public} for n, kp in sorted(keys.pairs.items())},
    }
    if keys.retired:
        doc["retired"] = {
            n: [{"private_key": kp.private, "public_key": kp.public} for kp in olds]
            for n, olds in sorted(keys.retired.items()) if olds
        }
    return json.dumps(doc, sort_keys=True) + "\n"


class SecretKeystore:
    """The keystore of an inventory with a shared backend: one Secrets Manager secret, read into
    memory, never written to this machine's disk; each save is one new version of the secret."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def load(self) -> Keys:
        text = self.shared.read(KEYSTORE)
        if text is None:
            return Keys()
        return parse(text, self.shared.where(KEYSTORE), "restore an earlier version of the secret")

    def save(self, keys: Keys) -> bool:
        return self.shared.write(KEYSTORE, dump(keys))

    def drop_backups(self) -> None:
        """Earlier versions of the secret are the service's (AWSPREVIOUS, then deprecated)."""


def ensure(keys: Keys, names: Iterable[str]) -> tuple[Keys, list[str]]:
    """Make key pairs for the names that have none (and the PSK secret). Returns the new store and who got keys."""
    pairs = dict(keys.pairs)
    made = []
    for n in sorted(set(names)):
        if n not in pairs:
            pairs[n] = generate_keypair()
            made.append(n)
    secret = keys.psk_secret or os.urandom(32)
    return Keys(pairs=pairs, psk_secret=secret, retired=keys.retired), made


def purge(keys: Keys, names: Iterable[str]) -> Keys:
    """Forget these peers' key pairs, current and retired."""
    drop = set(names)
    return Keys(
        pairs={n: kp for n, kp in keys.pairs.items() if n not in drop},
        psk_secret=keys.psk_secret,
        retired={n: olds for n, olds in keys.retired.items() if n not in drop},
    )


def rotate(keys: Keys, names: Iterable[str]) -> tuple[Keys, dict[str, str]]:
    """New key pairs for `names`; the old ones are retired. Returns the store and name → old public key."""
    pairs = dict(keys.pairs)
    retired = {n: list(olds) for n, olds in keys.retired.items()}
    old_public = {}
    for n in sorted(set(names)):
        old = pairs[n]
        retired.setdefault(n, []).append(old)
        old_public[n] = old.public
        pairs[n] = generate_keypair()
    return Keys(pairs=pairs, psk_secret=keys.psk_secret, retired=retired), old_public


def purge_retired(keys: Keys, public_keys: Iterable[str]) -> Keys:
    """Forget retired key pairs whose public key every peer has stopped trusting."""
    gone = set(public_keys)
    retired = {n: [kp for kp in olds if kp.public not in gone] for n, olds in keys.retired.items()}
    return Keys(pairs=keys.pairs, psk_secret=keys.psk_secret, retired={n: o for n, o in retired.items() if o})
