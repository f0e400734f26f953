import base64
import json
import os
import stat

import pytest

from wgmesh import keys as keymod
from wgmesh.errors import BadInput, Refused


def test_generated_pair_matches_and_is_canonical():
    kp = keymod.generate_keypair()
    assert keymod.public_key(kp.private) == kp.public
    assert len(base64.b64decode(kp.private)) == 32
    assert kp.private not in repr(kp) and kp.private not in str(kp)


def test_store_modes_and_never_regenerated(tmp_path):
    store = keymod.Keystore(tmp_path / "keys")
    keys, made = keymod.ensure(store.load(), ["a", "b"])
    assert made == ["a", "b"]
    store.save(keys)
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    loaded = store.load()
    again, made2 = keymod.ensure(loaded, ["a", "b", "c"])
    assert made2 == ["c"]
    assert again.pairs["a"] == keys.pairs["a"] and again.psk_secret == keys.psk_secret


def test_public_key_is_stored_not_rederived(tmp_path, monkeypatch):
    store = keymod.Keystore(tmp_path / "keys")
    store.save(keymod.ensure(keymod.Keys(), ["a"])[0])
    calls = []
    monkeypatch.setattr(keymod, "public_key", lambda *a: calls.append(a))
    store.load().public("a")
    assert calls == []


def test_psk_per_pair_symmetric_and_distinct():
    keys, _ = keymod.ensure(keymod.Keys(), ["a", "b", "c"])
    assert keys.psk("a", "b") == keys.psk("b", "a")
    assert len({keys.psk("a", "b"), keys.psk("a", "c"), keys.psk("b", "c")}) == 3
    assert len(base64.b64decode(keys.psk("a", "b"))) == 32


def test_new_keypair_changes_its_psks():
    keys, _ = keymod.ensure(keymod.Keys(), ["a", "b", "c"])
    before = keys.psk("a", "b")
    fresh, _ = keymod.ensure(keymod.purge(keys, ["a"]), ["a"])
    assert fresh.psk("a", "b") != before
    assert fresh.psk("b", "c") == keys.psk("b", "c")


@pytest.mark.parametrize("mode_dir,mode_file", [(0o755, 0o600), (0o700, 0o644)])
def test_refuses_loose_permissions(tmp_path, mode_dir, mode_file):
    store = keymod.Keystore(tmp_path / "keys")
    store.save(keymod.ensure(keymod.Keys(), ["a"])[0])
    os.chmod(store.dir, mode_dir)
    os.chmod(store.path, mode_file)
    with pytest.raises(Refused, match="refusing"):
        store.load()


@pytest.mark.parametrize("bad", ["", "abc", "A" * 44, base64.b64encode(b"x" * 31).decode(), "!" * 43 + "="])
def test_decode_key_refuses_and_hides_value(bad):
    with pytest.raises(BadInput) as e:
        keymod.decode_key("private key", bad)
    assert (bad not in str(e.value)) or bad == ""


def test_store_file_holds_no_surprises(tmp_path):
    store = keymod.Keystore(tmp_path / "k")
    store.save(keymod.ensure(keymod.Keys(), ["a"])[0])
    doc = json.loads(store.path.read_text())
    assert set(doc) == {"format", "psk_secret", "peers"}


def test_damaged_keystore_is_refused_without_echoing_keys(tmp_path):
    store = keymod.Keystore(tmp_path / "k")
    store.save(keymod.ensure(keymod.Keys(), ["a"])[0])
    doc = json.loads(store.path.read_text())
    good = doc["peers"]["a"]["private_key"]
    doc["peers"]["a"]["private_key"] = good[:-2] + "B="  # padding bits set: not canonical
    store.path.write_text(json.dumps(doc))
    with pytest.raises(Refused, match="damaged") as e:
        store.load()
    assert good[:20] not in str(e.value)
