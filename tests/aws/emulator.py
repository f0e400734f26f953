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
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3  # installed with moto[server] from the test extra

from wgmesh import stacks
from wgmesh.adapters.terraform import TerraformRunner

REPO = Path(__file__).resolve().parents[2]
STACKS = REPO / "terraform"
REGIONS = ["cn-northwest-1", "cn-north-1"]  # the seed deployment's regions: the aws-cn partition
OPERATOR = "203.0.113.0/24"
ACCESS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # the emulator's, not a secret


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_bucket(url: str, bucket: str, region: str) -> Any:
    """A bucket on the emulator at `url` (for a shared backend), and the S3 client that made it."""
    client = boto3.client("s3", endpoint_url=url, region_name=region, **ACCESS)
    client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    return client


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port, for the duration of the block: its URL."""
    port = _free_port()
    # moto's own server, started through this module (main below) so that its fixes apply.
    proc = subprocess.Popen([sys.executable, "-m", "tests.aws.emulator", "-H", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # stopped however the block ends, a server that did not start in time included
        deadline = time.monotonic() + 90  # a second or two, but far more on a loaded machine
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fix_moto() -> None:
    """What the emulator gets wrong that the AWS provider depends on, put right in its process.

    - Its server answers each request in a thread of its own, but its models are not made for
      that: Terraform deletes a security group's rules in parallel, and two revokes at once
      (each writes back the list of rules it read) leave a rule behind or fail one with
      InvalidPermission.NotFound (the destroy of the ha stack did, three runs out of three).
      One request at a time.
    - An answer can be lost on the way back: now and then (about one `up` in eight here) the AWS
      provider got no answer to a request that moto had carried out and answered 200 (its log and
      ours said so), and the SDK sent it again: an AllocateAddress made a second address, an
      AuthorizeSecurityGroupIngress failed with InvalidPermission.Duplicate (two CI runs). Every
      attempt of one operation carries the same amz-sdk-invocation-id (the Go SDK's and botocore's),
      so a retry of an operation already carried out gets that first answer again instead of
      running twice (the last 1000 successful answers are kept; a refused operation changed
      nothing and runs again, as SDK retries after a redirect or a clock-skew error expect).
    - A subnet's IPv6 CIDR association: moto answers <ipv6CidrBlockState><state>{'State':
      'associated'}</state>, the whole dict as text, where EC2 answers <state>associated</state>;
      the provider waits for "associated" until it times out (3 min) and fails the subnet. Only
      that state is rewritten; a moto that answers it right is left as it is.
    """
    from moto.ec2.models.subnets import Subnet
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    one_at_a_time = threading.Lock()
    dispatch = DomainDispatcherApplication.__call__
    answered: OrderedDict[str, tuple[str, list, bytes]] = OrderedDict()  # invocation id -> answer

    def serial(self, environ, start_response):
        operation = environ.get("HTTP_AMZ_SDK_INVOCATION_ID")
        with one_at_a_time:
            if operation in answered:
                status, headers, body = answered[operation]
            else:
                got: dict = {}
                written: list[bytes] = []

                def keep(status, headers, exc_info=None):
                    got.update(status=status, headers=list(headers))
                    return written.append

                out = dispatch(self, environ, keep)
                try:
                    body = b"".join([*written, *out])
                finally:
                    getattr(out, "close", lambda: None)()
                status, headers = got["status"], got["headers"]
                if operation and status.startswith("2"):  # a refused operation changed nothing: run it again
                    answered[operation] = (status, headers, body)
                    while len(answered) > 1000:
                        answered.popitem(last=False)
        start_response(status, list(headers))
        return [body]

    DomainDispatcherApplication.__call__ = serial

    wrong = Subnet.ipv6_cidr_block_association_set.fget

    def state(a: dict) -> str:
        st = a["ipv6CidrBlockState"]["state"]
        return st["State"] if isinstance(st, dict) else st

    def association_set(self):
        return [{**a, "ipv6CidrBlockState": {"state": state(a)}} for a in wrong(self)]

    Subnet.ipv6_cidr_block_association_set = property(association_set)


def client(url: str, region: str, service: str = "ec2"):
    return boto3.client(service, region_name=region, endpoint_url=url, **ACCESS)


def wgmesh(root: Path, *args, rc: int = 0) -> subprocess.CompletedProcess:
    """The wgmesh CLI in `root` (WGMESH_DIR), with no AWS_* of this environment: its exit code must be rc."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(WGMESH_DIR=str(root), COLUMNS="200", AWS_EC2_METADATA_DISABLED="true")
    r = subprocess.run([sys.executable, "-m", "wgmesh", "-i", "aws", *args], capture_output=True, text=True,
                       env=env, timeout=900, check=False)  # the exit code is asserted below
    assert r.returncode == rc, f"wgmesh {' '.join(args)} → {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def up(url: str, root: Path, *variables: str) -> subprocess.CompletedProcess:
    """`wgmesh up --stack aws --no-push --json` in `root` against the emulator at `url`: a new SSH
    key (root/id_ed25519), the override beside the root module wgmesh writes, the two regions, the
    operator, AMIs the emulator knows, and `variables` (NAME=VALUE, one --var each)."""
    key = root / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    workdir = root / ".wgmesh" / "aws" / "terraform"
    workdir.mkdir(parents=True)
    (workdir / "override.tf.json").write_text(json.dumps(provider_override(url), indent=2))
    given = ["regions=" + json.dumps(REGIONS), f"operator_cidr={OPERATOR}",
             "ssh_public_key=" + key.with_suffix(".pub").read_text().strip(), f"ssh_private_key_file={key}",
             "amis=" + json.dumps(amis(url)), *variables]
    return wgmesh(root, "up", "--stack", "aws", "--no-push", "--json", *(a for v in given for a in ("--var", v)))


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


def terraform(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Terraform itself in a root module's workdir that wgmesh prepared (its CLI config: the mirror)."""
    env = dict(os.environ, TF_CLI_CONFIG_FILE=str(workdir / "terraform.rc"), TF_IN_AUTOMATION="1",
               TF_INPUT="0", CHECKPOINT_DISABLE="1")
    return subprocess.run(["terraform", *args, "-no-color"], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=900)


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
        return terraform(self.workdir, *args)

    def plan_document(self) -> dict:
        """`terraform show -json` of a fresh plan (the adapter's plan file)."""
        self.runner.plan()
        r = self.terraform("show", "-json", TerraformRunner.PLAN_FILE)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


if __name__ == "__main__":  # moto_server with fix_moto(): python -m tests.aws.emulator -H HOST -p PORT
    from moto.server import main

    fix_moto()
    main(sys.argv[1:])
