"""The local EC2 API emulator (moto server, loopback only) and Terraform roots pointed at it, as
the tests of terraform/aws drive them: the real AWS provider from the local filesystem mirror
(never TF_CLI_CONFIG_FILE from the environment), the root module wgmesh writes for an inventory
(wgmesh.stacks), and an override file that sends every aliased provider to the emulator.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3  # installed with moto[server] from the test extra

from wgmesh import stacks
from wgmesh.adapters.terraform import TerraformRunner

REPO = Path(__file__).resolve().parents[2]
STACKS = REPO / "terraform"
VENV_BIN = Path(sys.executable).parent
REGIONS = ["cn-northwest-1", "cn-north-1"]  # the seed deployment's regions: the aws-cn partition
OPERATOR = "203.0.113.0/24"
ACCESS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # the emulator's, not a secret


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port, for the duration of the block: its URL."""
    port = _free_port()
    proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def client(url: str, region: str, service: str = "ec2"):
    return boto3.client(service, region_name=region, endpoint_url=url, **ACCESS)


def provider_override(url: str, regions: list[str] = REGIONS) -> dict:
    """Points each aliased provider at the emulator: written by the test, no test code in the stack."""
    return {"provider": {"aws": [
        {"alias": stacks.alias(r), "region": r, "access_key": "testing", "secret_key": "testing",
         "skip_credentials_validation": True, "skip_requesting_account_id": True,
         "skip_metadata_api_check": True, "skip_region_validation": True,
         "endpoints": [{"ec2": url, "sts": url, "iam": url}]}
        for r in regions
    ]}}


def amis(url: str, regions: list[str] = REGIONS) -> dict[str, str]:
    """An AMI the emulator knows in each region (an explicit AMI per region overrides the lookup)."""
    return {r: client(url, r).describe_images()["Images"][0]["ImageId"] for r in regions}


class Root:
    """The root module wgmesh writes for an inventory of a stack (by default terraform/aws), in
    `workdir`, with the emulator override; Terraform runs through wgmesh's adapter, and directly
    (`terraform(...)`) for what the adapter does not offer (plan -detailed-exitcode, show -json)."""

    def __init__(self, workdir: Path, url: str, variables: dict[str, str], *, stacks_dir: Path = STACKS,
                 regions: list[str] = REGIONS) -> None:
        self.workdir = workdir
        stack = stacks.load_stack(stacks_dir, "aws")
        stacks.check_vars(stack, variables)
        self.runner = TerraformRunner(workdir)
        self.runner.prepare(stacks.root_module(stack, workdir, variables))
        (workdir / "override.tf.json").write_text(json.dumps(provider_override(url, regions), indent=2))
        self.runner.init()

    def terraform(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, TF_CLI_CONFIG_FILE=str(self.workdir / "terraform.rc"), TF_IN_AUTOMATION="1",
                   TF_INPUT="0", CHECKPOINT_DISABLE="1")
        return subprocess.run(["terraform", *args, "-no-color"], cwd=self.workdir, env=env, capture_output=True,
                              text=True, timeout=900)

    def plan_document(self) -> dict:
        """`terraform show -json` of a fresh plan (the adapter's plan file)."""
        self.runner.plan()
        r = self.terraform("show", "-json", TerraformRunner.PLAN_FILE)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
