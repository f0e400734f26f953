"""Day-2 safety: a run ended by SIGTERM/SIGHUP leaves no Terraform running, a state Terraform
could not save is explained and never forked, vanished Terraform peers are revoked by `import`,
unreachable hosts make `graph` exit 4, and an inventory others can write is refused.

The Terraform tests run the real `terraform` on small stacks of `terraform_data` and local-exec
(no provider, no network), through `python -m wgmesh` in a process of its own so that it can be
signalled like a real run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_cli import mesh, run, snapshot  # noqa: F401 - mesh is a fixture
from tests.conftest import lab_outputs
from wgmesh.workspace import RunLock, Workspace

needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")

# One peer made at once; then a provisioner that takes 30 s (it marks when it started; `exec`: the
# process Terraform stops on an interrupt is the sleep itself).
SLOW = """
resource "terraform_data" "site" {
  input = "203.0.113.1"
}

resource "terraform_data" "slow" {
  depends_on = [terraform_data.site]
  provisioner "local-exec" {
    command = "touch slow-started; exec sleep 30"
  }
}

output "peers" {
  value = { site1 = { endpoint = terraform_data.site.output, subnets = ["10.1.0.0/24"] } }
}
"""

# With break_state=yes, a provisioner makes Terraform's state backup impossible to write: the
# apply fails to save its state and Terraform leaves it in errored.tfstate.
FRAGILE = """
variable "break_state" {
  type    = string
  default = "no"
}

resource "terraform_data" "base" {
  input = "x"
}

resource "terraform_data" "breaker" {
  count = var.break_state == "yes" ? 1 : 0
  provisioner "local-exec" {
    command = "rm -rf terraform.tfstate.backup; mkdir terraform.tfstate.backup"
  }
}

output "peers" {
  value = {}
}
"""


def _stacks(tmp_path: Path, **stacks: str) -> Path:
    root = tmp_path / "stacks"
    for name, text in stacks.items():
        (root / name).mkdir(parents=True)
        (root / name / "main.tf").write_text(text)
    return root


def _env(proj: Path, stacks: Path) -> dict[str, str]:
    return dict(os.environ, WGMESH_DIR=str(proj), WGMESH_STACKS=str(stacks), COLUMNS="200")


def _running_in(directory: Path) -> list[int]:
    """Processes whose working directory is `directory` (Terraform and its provisioners)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "cwd")) == directory:
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def slow(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    tf_dir = proj / ".wgmesh" / "lab" / "terraform"
    yield proj, _stacks(tmp_path, slow=SLOW), tf_dir
    for pid in _running_in(tf_dir):  # what a failing test left behind (this test's processes only)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@needs_terraform
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_or_sighup_stops_terraform_refreshes_the_inventory_and_exits_130(slow, signum):
    """A cancelled CI job (SIGTERM) or a dropped SSH session (SIGHUP, and the terminal gone)
    mid-apply: Terraform gets one interrupt and is waited for, the inventory holds what Terraform
    made, the lock is free, exit 130."""
    proj, stacks, tf_dir = slow
    p = subprocess.Popen([sys.executable, "-m", "wgmesh", "up", "--stack", "slow", "--no-push"], cwd=proj,
                         env=_env(proj, stacks), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not (tf_dir / "slow-started").exists():
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.1)
    if signum == signal.SIGHUP:  # the terminal is gone: every write wgmesh makes now fails
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()
        p.send_signal(signum)
        rc = p.wait(timeout=90)
        err = ""
    else:
        p.send_signal(signum)
        _, err = p.communicate(timeout=90)
        rc = p.returncode
    assert _running_in(tf_dir) == [], "Terraform (or its provisioner) outlived wgmesh"
    assert rc == 130, err
    if err:
        assert "interrupted" in err
    peers = json.loads((proj / "inventories" / "lab.json").read_text())["peers"]
    assert list(peers) == ["site1"]  # what Terraform made before the interrupt
    with RunLock(Workspace(proj, "lab", stacks), "test"):
        pass  # released


@needs_terraform
def test_errored_state_is_explained_refused_and_recoverable(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    stacks = _stacks(tmp_path, fragile=FRAGILE)
    tf_dir = proj / ".wgmesh" / "lab" / "terraform"
    env = {"WGMESH_STACKS": str(stacks)}
    r = run(proj, "up", "--stack", "fragile", "--no-push", env=env)
    assert r.exit_code == 0, r.output
    # Terraform cannot save its state: it leaves errored.tfstate, wgmesh says what it is and what to do.
    r = run(proj, "up", "--var", "break_state=yes", "--no-push", env=env)
    assert r.exit_code == 5, r.output
    err = " ".join(r.stderr.split())
    assert f"left it in {tf_dir / 'errored.tfstate'}" in err, err
    assert f"in {tf_dir} run 'terraform state push -force errored.tfstate && rm errored.tfstate'" in err, err
    # No Terraform run on the old state (it would fork it): refused, nothing changed.
    state = (tf_dir / "terraform.tfstate").read_bytes()
    for args in (["up", "--no-push"], ["destroy", "--no-stop"]):
        r = run(proj, *args, env=env)
        assert r.exit_code == 2, r.output
        assert "errored.tfstate" in r.stderr and "fork" in r.stderr
    assert (tf_dir / "terraform.tfstate").read_bytes() == state and (tf_dir / "errored.tfstate").exists()
    # The hint works: the cause removed, the state pushed, the next run creates nothing again.
    (tf_dir / "terraform.tfstate.backup").rmdir()
    tf_env = dict(os.environ, TF_CLI_CONFIG_FILE=str(tf_dir / "terraform.rc"), CHECKPOINT_DISABLE="1")
    subprocess.run("terraform state push -force errored.tfstate && rm errored.tfstate", shell=True, cwd=tf_dir,
                   env=tf_env, check=True, capture_output=True)
    r = run(proj, "up", "--no-push", env=env)
    assert r.exit_code == 0, r.output
    listed = subprocess.run(["terraform", "state", "list"], cwd=tf_dir, env=tf_env, check=True,
                            capture_output=True, text=True).stdout.split()
    assert listed == ["module.stack.terraform_data.base", "module.stack.terraform_data.breaker[0]"]


def test_import_revokes_terraform_peers_that_vanished(tmp_path):
    """As `up` does: a Terraform peer gone from the outputs has its keys purged, and every
    managed host that may still trust it has a pending revocation (shown by status, retried by push)."""
    doc = tmp_path / "out.json"
    proj = tmp_path / "p"
    proj.mkdir()
    doc.write_text(json.dumps({"peers": {"value": lab_outputs(3)}}))
    assert run(proj, "import", str(doc)).exit_code == 0
    keystore = proj / ".wgmesh" / "lab" / "keys" / "keystore.json"
    gone_key = json.loads(keystore.read_text())["peers"]["site3"]["public_key"]
    doc.write_text(json.dumps({"peers": {"value": lab_outputs(2)}}))
    r = run(proj, "import", str(doc), "--json")
    assert r.exit_code == 0, r.output
    assert sorted(json.loads(run(proj, "showpeers", "--json").stdout)["peers"]) == ["site1", "site2"]
    assert "site3" not in json.loads(keystore.read_text())["peers"]
    pending = json.loads((proj / ".wgmesh" / "lab" / "revocations.json").read_text())
    assert [(r["peer"], r["key"], sorted(r["hosts"])) for r in pending] == [("site3", gone_key, ["site1", "site2"])]


def test_up_counts_pending_revocations_like_push():
    from wgmesh import inventory as invmod
    from wgmesh import revocations as revmod
    from wgmesh.commands.push import PushResult
    from wgmesh.commands.up import UpResult
    from wgmesh.errors import ExitStatus

    pending = [revmod.Revocation("gone", "K" * 43 + "=", revmod.REMOVED, ("a",), 0)]
    push = PushResult({}, pending=pending)
    res = UpResult(invmod.new_inventory("lab"), [], push, None, {})
    assert push.exit_status == ExitStatus.HOSTS_FAILED
    assert res.exit_status == ExitStatus.HOSTS_FAILED and res.to_json()["ok"] is False


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_graph_exits_4_when_a_host_was_not_reached(mesh):  # noqa: F811 - the fixture
    assert run(mesh, "addpeer", "c", "--ssh", "root@127.0.0.1:1").exit_code == 0
    r = run(mesh, "graph", "--json")
    assert r.exit_code == 4, r.output
    doc = json.loads(r.stdout)
    assert list(doc["unreachable"]) == ["c"] and all(Path(f).exists() for f in doc["files"])


# (`up --stack nosuch`: were the refusal missing, nothing would be provisioned either.)
@pytest.mark.parametrize("args", [
    ["showpeers"], ["genconfig"], ["push"], ["addpeer", "c"], ["up", "--stack", "nosuch"],
])
def test_an_inventory_others_can_write_is_refused(mesh, args):  # noqa: F811 - the fixture
    inv = mesh / "inventories" / "lab.json"
    inv.chmod(0o664)
    before = snapshot(mesh)
    r = run(mesh, *args)
    assert r.exit_code == 2, r.output
    assert "refusing" in r.stderr and f"chmod go-w {inv}" in r.stderr
    assert snapshot(mesh) == before
