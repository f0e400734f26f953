"""The shared backend's pure parts: the URL, where an inventory lives, the three-way merge that
keeps a write based on an old version from losing anything."""

from __future__ import annotations

import json

import pytest

from wgmesh import backend as bk
from wgmesh import inventory as invmod
from wgmesh import keys as keymod
from wgmesh import merge
from wgmesh import revocations as revmod
from wgmesh.errors import BadInput, ExitStatus
from wgmesh.model import Source
from wgmesh.peers import PeerOptions, cli_label, parse_peer


def _peer(name: str, endpoint: str, address: str | None = None):
    return parse_peer(name, PeerOptions(endpoint=endpoint, address=address), cli_label, Source.MANUAL)


def test_parse_an_s3_url_and_local():
    url = bk.parse("--backend", "s3://acme-wgmesh/teams/prod/")
    assert url == bk.BackendURL("acme-wgmesh", "teams/prod")
    assert str(url) == "s3://acme-wgmesh/teams/prod"
    assert url.key("inventory.json") == "teams/prod/inventory.json"
    assert url.secret_name == "wgmesh/acme-wgmesh/teams/prod"
    assert bk.parse("--backend", "local") is None


@pytest.mark.parametrize(("text", "problem"), [
    ("gs://bucket/prod", "unknown scheme 'gs://'"),
    ("bucket/prod", "expected s3://BUCKET/PREFIX"),
    ("s3://Bad_Bucket/prod", "is not an S3 bucket name"),
    ("s3://ab/prod", "is not an S3 bucket name"),
    ("s3://bucket", "no prefix"),
    ("s3://bucket/", "no prefix"),
    ("s3://bucket/a/../b", "prefix segment '..'"),
    ("s3://bucket/pro d", "prefix segment 'pro d'"),
])
def test_bad_urls_name_the_field_and_the_value(text, problem):
    with pytest.raises(BadInput) as e:
        bk.parse("WGMESH_BACKEND", text)
    assert e.value.field == "WGMESH_BACKEND" and e.value.value == text
    assert problem in e.value.problem and e.value.exit_code == ExitStatus.BAD_INPUT


def test_lock_ids_are_checked():
    assert bk.lock_id("0123456789ab") == "0123456789ab"
    with pytest.raises(BadInput, match="12 hexadecimal digits"):
        bk.lock_id("../../x")


# ------------------------------------------------------------------ where an inventory lives


def test_resolve_flag_pointer_env_local(tmp_path):
    url = "s3://acme-wgmesh/prod"
    assert bk.resolve(tmp_path, "prod", None, {}) == (None, str(bk.pointer_path(tmp_path, "prod")))
    assert bk.resolve(tmp_path, "prod", None, {bk.ENV: url})[0] == bk.parse("x", url)
    assert bk.resolve(tmp_path, "prod", url, {})[0] == bk.parse("x", url)
    bk.remember(tmp_path, "prod", bk.parse("x", url))
    assert bk.pointer_path(tmp_path, "prod").read_text() == url + "\n"
    assert bk.resolve(tmp_path, "prod", None, {})[0] == bk.parse("x", url)  # remembered
    assert bk.resolve(tmp_path, "prod", None, {bk.ENV: url})[0] == bk.parse("x", url)
    with pytest.raises(BadInput, match="lives in s3://acme-wgmesh/prod") as e:
        bk.resolve(tmp_path, "prod", "s3://acme-wgmesh/other", {})
    assert "migrate --backend s3://acme-wgmesh/other" in (e.value.hint or "")
    with pytest.raises(BadInput, match="lives in"):
        bk.resolve(tmp_path, "prod", None, {bk.ENV: "s3://acme-wgmesh/other"})
    with pytest.raises(BadInput, match="lives in"):
        bk.resolve(tmp_path, "prod", "local", {})
    bk.remember(tmp_path, "prod", None)
    assert not bk.pointer_path(tmp_path, "prod").exists()


def test_a_local_inventory_is_not_silently_shadowed(tmp_path):
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "lab.json").write_text("{}")
    with pytest.raises(BadInput, match="is local") as e:
        bk.resolve(tmp_path, "lab", None, {bk.ENV: "s3://acme-wgmesh/prod"})
    assert "--backend local" in (e.value.hint or "")
    assert bk.resolve(tmp_path, "lab", "local", {bk.ENV: "s3://acme-wgmesh/prod"})[0] is None


def test_a_damaged_pointer_is_named(tmp_path):
    bk.pointer_path(tmp_path, "prod").parent.mkdir()
    bk.pointer_path(tmp_path, "prod").write_text("ftp://x/y\n")
    with pytest.raises(BadInput) as e:
        bk.resolve(tmp_path, "prod", None, {})
    assert e.value.field.endswith("inventories/prod.backend")


# ------------------------------------------------------------------ merging


def test_merge3_takes_each_sides_changes_and_refuses_clashes():
    base = {"a": 1, "b": 2, "c": 3}
    ours = {"a": 1, "b": 20, "c": 3, "d": 4}  # changed b, added d
    theirs = {"a": 10, "c": 3, "e": 5}  # changed a, removed b, added e
    with pytest.raises(merge.MergeConflict) as e:
        merge.merge3(base, ours, theirs)  # b: changed by us, removed by them
    assert e.value.keys == ["b"]
    theirs = {"a": 10, "b": 2, "e": 5}  # changed a, removed c, added e
    assert merge.merge3(base, ours, theirs) == {"a": 10, "b": 20, "d": 4, "e": 5}
    assert merge.merge3(base, {"a": 9}, {"a": 9}) == {"a": 9}  # the same change on both sides: once


def _inv(*peers: tuple[str, str]) -> str:
    inv = invmod.new_inventory("prod")
    for name, endpoint in peers:
        inv = invmod.add_peer(inv, _peer(name, endpoint))
    return invmod.to_document(inv)


def test_two_peers_added_at_once_are_both_kept():
    base = _inv(("a", "203.0.113.1"))
    ours = _inv(("a", "203.0.113.1"), ("b", "203.0.113.2"))
    theirs = invmod.to_document(invmod.add_peer(invmod.from_document(base), _peer("c", "203.0.113.3", "10.200.0.3")))
    merged = invmod.from_document(merge.merge_text("inventory", base, ours, theirs) or "")
    assert list(merged.names) == ["a", "b", "c"]


def test_a_merge_that_breaks_the_mesh_is_refused():
    base = _inv(("a", "203.0.113.1"))
    ours = _inv(("a", "203.0.113.1"), ("b", "203.0.113.2"))  # b gets the next free address
    theirs = _inv(("a", "203.0.113.1"), ("c", "203.0.113.3"))  # so does c: the same one
    with pytest.raises(BadInput, match="merged inventory|10.200.0.2|address"):
        merge.merge_text("inventory", base, ours, theirs)


def test_pins_revocations_and_keystore_merge_per_entry():
    pins = merge.merge_text("pins", "h1 ssh-ed25519 AAA\n", "h1 ssh-ed25519 AAA\nh2 ssh-ed25519 BBB\n",
                         "h3 ssh-ed25519 CCC\n")  # they forgot h1 (destroy), we pinned h2
    assert pins == "h2 ssh-ed25519 BBB\nh3 ssh-ed25519 CCC\n"
    r1 = revmod.Revocation("a", "K1", revmod.ROTATED, ("h",), 1)
    r2 = revmod.Revocation("b", "K2", revmod.REMOVED, ("h",), 2)
    merged = merge.merge_text("revocations", None, revmod.dump([r1]), revmod.dump([r2]))
    assert {r.key for r in revmod.parse(merged, "x")} == {"K1", "K2"}
    k = keymod.ensure(keymod.Keys(), ["a"])[0]
    ka = keymod.Keys({**k.pairs, "b": keymod.generate_keypair()}, k.psk_secret)
    kb = keymod.Keys({**k.pairs, "c": keymod.generate_keypair()}, k.psk_secret)
    merged = merge.merge_text(keymod.KEYSTORE, keymod.dump(k), keymod.dump(ka), keymod.dump(kb))
    both = keymod.parse(merged or "", "m", "")
    assert sorted(both.pairs) == ["a", "b", "c"] and both.psk_secret == k.psk_secret
    ours, theirs = keymod.rotate(k, ["a"])[0], keymod.rotate(k, ["a"])[0]
    with pytest.raises(merge.MergeConflict) as e:  # both rotated a: neither new key silently dropped
        merge.merge_text(keymod.KEYSTORE, keymod.dump(k), keymod.dump(ours), keymod.dump(theirs))
    assert e.value.keys == ["peers:a"]


def test_the_backend_block_locks_in_s3(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    shared = bk.Shared(bk.BackendURL("acme-wgmesh", "prod"), "prod")
    shared.objects._region = "eu-west-1"  # what get_bucket_location answered
    assert shared.terraform_backend() == {"s3": {
        "bucket": "acme-wgmesh", "key": "prod/terraform.tfstate", "region": "eu-west-1", "use_lockfile": True}}
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    block = shared.terraform_backend()["s3"]
    assert block["use_path_style"] is True and block["skip_requesting_account_id"] is True
    assert json.dumps(block)  # plain JSON for main.tf.json
