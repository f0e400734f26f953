"""The shared backend against a real S3 + Secrets Manager API (moto server on loopback): conditional
writes that never lose a change, the run lock, the keystore's versions, and every refusal."""

from __future__ import annotations

import json

import boto3
import pytest

from tests.aws.emulator import moto_server, s3_bucket
from wgmesh import backend as bk
from wgmesh import inventory as invmod
from wgmesh import keys as keymod
from wgmesh.errors import BackendFailed, BadInput, ExitStatus, LockHeld
from wgmesh.model import Source
from wgmesh.peers import PeerOptions, cli_label, parse_peer

REGION = "eu-west-1"
BUCKET = "team-wgmesh"


@pytest.fixture(scope="module")
def s3(moto):
    return s3_bucket(moto, BUCKET, REGION)


@pytest.fixture
def aws_env(moto, monkeypatch):
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # not the bucket's: wgmesh asks the bucket
    bk_session_cache_clear()
    yield
    bk_session_cache_clear()


def bk_session_cache_clear():
    from wgmesh.adapters import aws

    aws._session.cache_clear()


def shared(prefix: str) -> bk.Shared:
    return bk.Shared(bk.BackendURL(BUCKET, prefix), "prod")


def _with_peer(text: str | None, name: str, endpoint: str, address: str) -> str:
    inv = invmod.from_document(text) if text else invmod.new_inventory("prod")
    peer = parse_peer(name, PeerOptions(endpoint=endpoint, address=address), cli_label, Source.MANUAL)
    return invmod.to_document(invmod.add_peer(inv, peer))


def test_a_write_based_on_an_old_version_is_merged_never_lost(s3, aws_env):
    a, b = shared("merge"), shared("merge")
    assert a.read("inventory") is None
    a.write("inventory", _with_peer(None, "a", "203.0.113.1", "10.200.0.1"))
    base_b = b.read("inventory")  # B reads; then A and B each add a peer
    a.write("inventory", _with_peer(a.read("inventory"), "x", "203.0.113.2", "10.200.0.2"))
    assert b.write("inventory", _with_peer(base_b, "y", "203.0.113.3", "10.200.0.3"))  # stale: merged, retried
    stored = s3.get_object(Bucket=BUCKET, Key="merge/inventory.json")["Body"].read().decode()
    assert list(invmod.from_document(stored).names) == ["a", "x", "y"]
    # B's next write starts from its own view (a, y) but keeps what it merged in (x)
    b.write("inventory", _with_peer(_with_peer(base_b, "y", "203.0.113.3", "10.200.0.3"), "z", "203.0.113.4",
                                    "10.200.0.4"))
    stored = s3.get_object(Bucket=BUCKET, Key="merge/inventory.json")["Body"].read().decode()
    assert list(invmod.from_document(stored).names) == ["a", "x", "y", "z"]


def test_the_same_entry_changed_on_both_sides_is_refused_and_nothing_is_written(s3, aws_env):
    a, b = shared("clash"), shared("clash")
    a.write("inventory", _with_peer(None, "a", "203.0.113.1", "10.200.0.1"))
    base = b.read("inventory")
    a.write("inventory", _with_peer(a.read("inventory"), "x", "203.0.113.2", "10.200.0.2"))
    before = s3.get_object(Bucket=BUCKET, Key="clash/inventory.json")["Body"].read()
    with pytest.raises(BackendFailed, match="changed by another run") as e:
        b.write("inventory", _with_peer(base, "x", "198.51.100.9", "10.200.0.9"))  # another x
    assert e.value.exit_code == ExitStatus.BACKEND_FAILED
    assert s3.get_object(Bucket=BUCKET, Key="clash/inventory.json")["Body"].read() == before


def test_the_run_lock_names_its_holder_and_is_only_removed_on_purpose(s3, aws_env):
    a, b = shared("lock"), shared("lock")
    lock_id = a.acquire("up")
    with pytest.raises(LockHeld) as e:
        b.acquire("addpeer")
    assert e.value.exit_code == ExitStatus.LOCKED
    assert f"lock id {lock_id}" in e.value.message and "'up'" in e.value.message
    assert f"unlock {lock_id}" in (e.value.hint or "")
    with pytest.raises(BadInput, match=f"has id {lock_id}"):
        b.unlock("0" * 12)
    assert b.unlock(lock_id)["command"] == "up"
    assert b.acquire("addpeer")
    a.release()  # A's lock is gone (removed by hand): A's release leaves B's lock alone
    assert json.loads(s3.get_object(Bucket=BUCKET, Key="lock/wgmesh.lock")["Body"].read())["command"] == "addpeer"
    b.release()
    with pytest.raises(BadInput, match="is not locked"):
        b.unlock(lock_id)


def test_the_keystore_is_one_secret_one_version_per_change(s3, aws_env, moto):
    a = shared("keys")
    store = keymod.SecretKeystore(a)
    keys = keymod.ensure(store.load(), ["a", "b"])[0]
    store.save(keys)
    rotated = keymod.rotate(keys, ["a"])[0]
    store.save(rotated)
    sm = boto3.client("secretsmanager", endpoint_url=moto, region_name=REGION, aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    versions = sm.list_secret_version_ids(SecretId="wgmesh/team-wgmesh/keys")["Versions"]
    assert len(versions) == 2  # made, then rotated: one new version each
    again = keymod.SecretKeystore(shared("keys")).load()
    assert again.pairs == rotated.pairs and again.psk_secret == keys.psk_secret
    # Not a byte of it in the bucket.
    listed = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    blobs = b"".join(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed)
    assert rotated.pairs["a"].private.encode() not in blobs


def test_a_missing_bucket_is_bad_input_naming_the_value(aws_env):
    sh = bk.Shared(bk.BackendURL("no-such-bucket", "prod"), "prod", "WGMESH_BACKEND")
    with pytest.raises(BadInput) as e:
        sh.read("inventory")
    assert e.value.field == "WGMESH_BACKEND" and e.value.value == "s3://no-such-bucket/prod"
    assert "does not exist" in e.value.problem


def test_no_credentials_and_no_endpoint_are_backend_failures(s3, aws_env, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bk_session_cache_clear()
    with pytest.raises(BackendFailed, match="no AWS credentials") as e:
        shared("creds").read("inventory")
    assert e.value.exit_code == ExitStatus.BACKEND_FAILED
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    bk_session_cache_clear()
    with pytest.raises(BackendFailed, match="cannot reach the backend"):
        shared("down").read("inventory")


def test_access_denied_is_a_backend_failure_that_says_what(monkeypatch, tmp_path):
    """A moto server that checks IAM (after the set-up requests): a user without a policy."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "3")
    with moto_server() as url:
        root = {"endpoint_url": url, "region_name": REGION, "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing"}
        s3_bucket(url, BUCKET, REGION)
        iam = boto3.client("iam", **root)
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        bk_session_cache_clear()
        try:
            with pytest.raises(BackendFailed, match="access denied") as e:
                shared("denied").read("inventory")
            assert e.value.exit_code == ExitStatus.BACKEND_FAILED and key["SecretAccessKey"] not in e.value.message
        finally:
            bk_session_cache_clear()
