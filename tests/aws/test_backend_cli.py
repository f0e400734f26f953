"""The shared backend from the command line (moto server on loopback): bad input and an unusable
backend get a message naming the field and the value, their exit code, and change nothing here
or there; two project directories share one inventory; migrate moves it and back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws.emulator import REPO, s3_bucket

REGION = "ap-south-1"
BUCKET = "cli-wgmesh"


@pytest.fixture(scope="module")
def bucket(moto):
    return s3_bucket(moto, BUCKET, REGION)


def wgmesh(root: Path, moto: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "WGMESH_BACKEND"}
    base.update(AWS_ENDPOINT_URL=moto, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="1", COLUMNS="200", WGMESH_DIR=str(root))
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "wgmesh", *args], env=base, cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def keys_in(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


@pytest.mark.parametrize(("args", "env", "field", "problem"), [
    (["--backend", "gs://cli-wgmesh/p"], {}, "--backend", "unknown scheme 'gs://'"),
    ([], {"WGMESH_BACKEND": "s3://cli-wgmesh"}, "WGMESH_BACKEND", "no prefix"),
    (["--backend", "s3://no-such-bucket-here/p"], {}, "--backend", "bucket 'no-such-bucket-here' does not exist"),
])
def test_bad_backends_are_refused_before_anything_is_written(bucket, moto, tmp_path, args, env, field, problem):
    r = wgmesh(tmp_path, moto, *args, "-i", "prod", "addpeer", "a", "--endpoint", "203.0.113.1", env=env)
    assert r.returncode == 2, r.stderr
    assert f"error: {field}: " in r.stderr and problem in r.stderr
    assert tree(tmp_path) == []
    assert keys_in(bucket, "p/") == []


def test_no_credentials_and_an_endpoint_that_does_not_answer_exit_7(bucket, moto, tmp_path):
    none = str(tmp_path / "absent")
    r = wgmesh(tmp_path, moto, "--backend", f"s3://{BUCKET}/p", "-i", "prod", "addpeer", "a", "--endpoint",
               "203.0.113.1", env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
                                   "AWS_SHARED_CREDENTIALS_FILE": none, "AWS_CONFIG_FILE": none})
    assert r.returncode == 7 and "no AWS credentials" in r.stderr and "AWS_PROFILE" in r.stderr
    r = wgmesh(tmp_path, moto, "--backend", f"s3://{BUCKET}/p", "-i", "prod", "status",
               env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert r.returncode == 7 and "cannot reach the backend" in r.stderr
    assert tree(tmp_path) == []


def test_two_directories_one_inventory_and_the_way_back(bucket, moto, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    url = f"s3://{BUCKET}/teams/prod"
    env = {"WGMESH_BACKEND": url}
    assert wgmesh(a, moto, "-i", "prod", "addpeer", "a", "--endpoint", "203.0.113.1", env=env).returncode == 0
    # B names it after the command (as the command's own option): the same place
    assert wgmesh(b, moto, "-i", "prod", "addpeer", "b", "--endpoint", "203.0.113.2", "--backend", url).returncode == 0
    twice = wgmesh(b, moto, "--backend", url, "-i", "prod", "showpeers", "--backend", url + "x")
    assert twice.returncode == 2 and "given twice" in twice.stderr
    shown = json.loads(wgmesh(a, moto, "-i", "prod", "showpeers", "--json").stdout)  # remembered: no env
    assert sorted(shown["peers"]) == ["a", "b"]
    assert (a / "inventories" / "prod.backend").read_text() == url + "\n"
    assert sorted(keys_in(bucket, "teams/prod/")) == ["teams/prod/inventory.json"]
    # The keys are in the secret, nowhere here; genconfig would write them here: refused, said why
    gen = wgmesh(a, moto, "-i", "prod", "genconfig")
    assert gen.returncode == 2 and "Secrets Manager" in gen.stderr
    assert not (a / "output").exists() and not list(a.rglob("keystore.json"))
    # Where it lives is not changed by a flag: that is what migrate is for
    r = wgmesh(a, moto, "--backend", "local", "-i", "prod", "showpeers")
    assert r.returncode == 2 and f"lives in {url}" in r.stderr and "migrate" in r.stderr
    r = wgmesh(a, moto, "-i", "prod", "unlock", "0123456789ab")
    assert r.returncode == 2 and "is not locked" in r.stderr
    # A migrate onto a prefix that holds an inventory changes nothing on either side
    (tmp_path / "c").mkdir()
    c = tmp_path / "c"
    assert wgmesh(c, moto, "-i", "prod", "addpeer", "z", "--endpoint", "203.0.113.9").returncode == 0
    before_c, before_s3 = tree(c), bucket.get_object(Bucket=BUCKET, Key="teams/prod/inventory.json")["ETag"]
    r = wgmesh(c, moto, "-i", "prod", "migrate", "--backend", url)
    assert r.returncode == 2 and "already holds an inventory" in r.stderr
    assert tree(c) == before_c
    assert bucket.get_object(Bucket=BUCKET, Key="teams/prod/inventory.json")["ETag"] == before_s3
    assert not keys_in(bucket, "teams/prod/wgmesh.lock")
    # Back into a directory: the keys come with it, the bucket and the secret are emptied
    back = wgmesh(a, moto, "-i", "prod", "migrate", "--backend", "local", "--json")
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["moved"] == ["keystore", "inventory"]
    assert keys_in(bucket, "teams/prod/") == []
    assert sorted(json.loads((a / ".wgmesh" / "prod" / "keys" / "keystore.json").read_text())["peers"]) == ["a", "b"]
    assert oct((a / ".wgmesh" / "prod" / "keys" / "keystore.json").stat().st_mode & 0o777) == "0o600"
    gone = wgmesh(b, moto, "-i", "prod", "showpeers")
    assert gone.returncode == 2 and f"no inventory at {url}/inventory.json" in gone.stderr
