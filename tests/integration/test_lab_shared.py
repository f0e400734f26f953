"""Two operators, one mesh: a shared backend (S3 + Secrets Manager of a local moto server) and two
project directories on the real lab. A brings the mesh up; B, from a fresh directory, sees it and
adds a peer; A sees that; a second writer is refused while a run holds the lock, and a crashed
run's lock stays until `unlock`; no private key or PSK is on either disk, in the bucket or in the
Terraform state; and the inventory moves back to a directory and out again with nothing lost."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from tests.aws.emulator import moto_server, s3_bucket
from tests.labkit import REPO, Lab

LAB_NAME = "team"
BUCKET = "team-wgmesh"
REGION = "eu-west-2"
URL = f"s3://{BUCKET}/mesh/team"
AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION", "AWS_PROFILE", "WGMESH_BACKEND")
STATE: dict = {}


class Clone(Lab):
    """Operator B: a project directory of its own and a checkout of its own (a copy of terraform/,
    through WGMESH_STACKS: another module source, another labctl path), as on another machine."""

    def __init__(self, root: Path, name: str, underlay: str, stacks: Path) -> None:
        super().__init__(root, name, underlay)
        self.stacks = stacks

    def wgmesh(self, *args: str, check_rc: int | None = 0, timeout: float = 600) -> subprocess.CompletedProcess:
        saved = os.environ.get("WGMESH_STACKS")
        os.environ["WGMESH_STACKS"] = str(self.stacks)
        try:
            return super().wgmesh(*args, check_rc=check_rc, timeout=timeout)
        finally:
            if saved is None:
                os.environ.pop("WGMESH_STACKS")
            else:
                os.environ["WGMESH_STACKS"] = saved


class Team:
    def __init__(self, url: str, a: Lab, b: Lab) -> None:
        creds = {"endpoint_url": url, "region_name": REGION, "aws_access_key_id": "testing",
                 "aws_secret_access_key": "testing"}
        self.s3 = boto3.client("s3", **creds)
        self.sm = boto3.client("secretsmanager", **creds)
        self.a, self.b = a, b

    def objects(self) -> dict[str, bytes]:
        listed = self.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        return {o["Key"]: self.s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}

    def secrets(self) -> list[str]:
        return [s["Name"] for s in self.sm.list_secrets()["SecretList"]]

    def locked(self) -> bool:
        return bool(self.s3.list_objects_v2(Bucket=BUCKET, Prefix="mesh/team/wgmesh.lock").get("Contents"))

    def wait_for_lock(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.locked():
            assert time.monotonic() < deadline, "no run took the lock"
            time.sleep(0.02)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    saved = {k: os.environ.get(k) for k in AWS_VARS}
    with moto_server() as url:
        for k in AWS_VARS:
            os.environ.pop(k, None)
        os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                          AWS_DEFAULT_REGION="us-east-1", WGMESH_BACKEND=URL)
        s3_bucket(url, BUCKET, REGION)
        try:
            yield url
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None)
                if v is not None:
                    os.environ[k] = v


@pytest.fixture(scope="module")
def ops(team, lab, tmp_path_factory):
    """Operator A is the lab's own project directory (its fixture destroys the mesh through
    wgmesh, with the backend, at the end); B a fresh one with a checkout of its own."""
    b_root = tmp_path_factory.mktemp("operator-b")
    stacks = tmp_path_factory.mktemp("checkout-b") / "terraform"
    shutil.copytree(REPO / "terraform", stacks, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    return Team(team, lab, Clone(b_root, lab.name, lab.underlay, stacks))


def _states(root: Path) -> list[Path]:
    """Terraform state files (not .terraform/terraform.tfstate: that one names the backend)."""
    return [p for p in root.rglob("*.tfstate*") if ".terraform" not in p.parts]


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def test_a_brings_the_mesh_up_with_everything_shared(ops):
    a = ops.a
    doc = a.json("up", *a.up_vars(sites=2))
    assert doc["ok"] and doc["verify"]["ok"] and doc["peers"] == ["site1", "site2"]
    assert (a.root / "inventories" / "team.backend").read_text() == URL + "\n"  # remembered
    assert not (a.root / "inventories" / "team.json").exists()
    assert not (a.root / "output").exists()  # configs carry private keys: never written here
    assert not list((a.root / ".wgmesh").rglob("keystore.json"))
    assert not _states(a.root)
    objects = ops.objects()
    assert {"mesh/team/inventory.json", "mesh/team/known_hosts", "mesh/team/terraform.tfstate"} <= set(objects)
    assert "mesh/team/wgmesh.lock" not in objects  # released
    assert ops.secrets() == ["wgmesh/team-wgmesh/mesh/team"]


def test_b_in_a_fresh_directory_sees_the_same_mesh(ops):
    a, b = ops.a, ops.b
    status = b.json("status")
    assert [p["name"] for p in status["peers"] if p["reached"]] == ["site1", "site2"]
    assert {(lk["from"], lk["to"]): lk["state"] for lk in status["links"]} == {
        ("site1", "site2"): "fresh", ("site2", "site1"): "fresh"}
    assert b.json("showpeers") == a.json("showpeers")
    pids = {h: a.wg_pids(h) for h in ("site1", "site2")}
    again = b.json("up")  # B's Terraform, B's checkout, the same state: nothing to create or replace
    assert again["ok"] and {h["action"] for h in again["push"]["hosts"].values()} == {"unchanged"}
    assert {h: a.wg_pids(h) for h in ("site1", "site2")} == pids
    assert (b.root / "inventories" / "team.backend").read_text() == URL + "\n"


def test_b_adds_a_peer_and_a_sees_it(ops):
    a, b = ops.a, ops.b
    b.wgmesh("addpeer", "pub", "--endpoint", "203.0.113.7", "--allowedips", "10.77.0.0/24")
    pushed = b.json("push", check_rc=0)
    assert {n: h["action"] for n, h in pushed["hosts"].items()} == {
        "pub": "skipped", "site1": "syncconf", "site2": "syncconf"}
    assert "pub" in a.json("showpeers")["peers"]
    assert "10.77.0.0/24" in a.host("site1", "wg", "show", "wg0", "allowed-ips").stdout
    a.wgmesh("delpeer", "pub")  # A takes it out again; B's next push finds nothing to do
    assert "pub" not in b.json("showpeers")["peers"]


def test_a_second_writer_is_refused_while_a_run_holds_the_lock(ops):
    a, b = ops.a, ops.b
    env = dict(os.environ, WGMESH_DIR=str(a.root))
    a.sshd_stop("site2")  # A's run waits for it (--wait-ssh): it holds the lock meanwhile
    run = subprocess.Popen([sys.executable, "-m", "wgmesh", "-i", a.name, "up", "--wait-ssh", "120"], env=env,
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ops.wait_for_lock()
        refused = b.wgmesh("addpeer", "late", "--endpoint", "203.0.113.8", check_rc=3)
        assert re.search(r"locked by \S+ on host \S+ \(pid \d+, 'up'\) since .* lock id [0-9a-f]{12}", refused.stderr)
        b.wgmesh("push", check_rc=3)
        assert run.poll() is None  # the refusals did not wait for A: A is still running
    finally:
        a.sshd_start("site2")
        assert run.wait(timeout=300) == 0, run.stderr.read() if run.stderr else ""
    assert not ops.locked()
    assert "late" not in b.json("showpeers")["peers"]


def test_a_crashed_runs_lock_stays_until_unlock(ops):
    a, b = ops.a, ops.b
    env = dict(os.environ, WGMESH_DIR=str(a.root))
    a.sshd_stop("site2")
    try:
        run = subprocess.Popen([sys.executable, "-m", "wgmesh", "-i", a.name, "up", "--wait-ssh", "120"], env=env,
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ops.wait_for_lock()
        run.kill()  # SIGKILL: no clean-up of any kind
        run.wait()
    finally:
        a.sshd_start("site2")
    time.sleep(1)
    assert ops.locked()  # never broken automatically
    refused = b.wgmesh("push", check_rc=3)
    lock_id = re.search(r"lock id ([0-9a-f]{12})", refused.stderr).group(1)
    assert f"wgmesh -i team unlock {lock_id}" in refused.stderr
    assert b.wgmesh("unlock", "0" * 12, check_rc=2).stderr.count(lock_id) == 1  # names the real one
    unlocked = b.wgmesh("unlock", lock_id)
    out = unlocked.stdout + unlocked.stderr
    assert f"removed lock {lock_id}" in out and "'up'" in out
    assert b.json("push")["ok"]


def test_no_key_is_on_either_disk_in_the_bucket_or_in_the_state(ops):
    a, b = ops.a, ops.b
    secrets = set()
    for host in ("site1", "site2"):
        secrets.add(a.host(host, "wg", "show", "wg0", "private-key").stdout.strip())
        secrets.update(line.split()[1] for line in
                       a.host(host, "wg", "show", "wg0", "preshared-keys").stdout.splitlines())
    assert len(secrets) == 3 and all(len(s) == 44 for s in secrets)  # two private keys, one pair's PSK
    blobs = {**{str(p): d for p, d in _files(a.root).items()}, **{str(p): d for p, d in _files(b.root).items()},
             **ops.objects()}
    assert "mesh/team/terraform.tfstate" in blobs
    found = [(where, s[:6]) for where, data in blobs.items() for s in secrets if s.encode() in data]
    assert not found
    for root in (a.root, b.root):  # what is on disk is public data
        for p in _files(root):
            assert p.stat().st_mode & 0o002 == 0


def test_the_inventory_moves_to_a_directory_and_back_with_nothing_lost(ops):
    a, b = ops.a, ops.b
    private = a.host("site1", "wg", "show", "wg0", "private-key").stdout.strip()
    peers = a.json("showpeers")
    env = {k: v for k, v in os.environ.items() if k != "WGMESH_BACKEND"}
    local = subprocess.run([sys.executable, "-m", "wgmesh", "-i", a.name, "migrate", "--backend", "local", "--json"],
                           env=dict(env, WGMESH_DIR=str(a.root)), cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert local.returncode == 0, local.stderr
    moved = __import__("json").loads(local.stdout)
    assert moved["moved"] == ["keystore", "pins", "terraform state", "inventory"]
    assert not [k for k in ops.objects() if k.startswith("mesh/team/")]
    assert ops.secrets() == []
    assert private in (a.root / ".wgmesh" / "team" / "keys" / "keystore.json").read_text()
    assert not (a.root / "inventories" / "team.backend").exists()
    # Local now: up changes nothing on the hosts (same keys, same state)
    again = subprocess.run([sys.executable, "-m", "wgmesh", "-i", a.name, "up", "--json"],
                           env=dict(env, WGMESH_DIR=str(a.root)), cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert {h["action"] for h in __import__("json").loads(again.stdout)["push"]["hosts"].values()} == {"unchanged"}
    # B's remembered place is empty now: said so, not an empty mesh
    assert "no inventory at s3://team-wgmesh/mesh/team/inventory.json" in b.wgmesh("status", check_rc=2).stderr
    # ... and out again
    a.wgmesh("migrate", "--backend", URL)
    assert not (a.root / "inventories" / "team.json").exists()
    assert not list((a.root / ".wgmesh").rglob("keystore.json")) and not _states(a.root)
    assert b.json("showpeers") == peers
    assert b.json("verify")["ok"]
