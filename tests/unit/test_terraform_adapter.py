"""The Terraform adapter: which providers the local mirror serves, and what a state Terraform
could not save (errored.tfstate) does to the next run. The init tests run the real `terraform`
(no network: the registry is reached through a proxy that refuses, so the test shows where
Terraform looked, never what it downloaded)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from wgmesh.adapters.terraform import ERRORED_STATE, TerraformRunner, cli_config, mirror_providers
from wgmesh.errors import ExitStatus, Refused, TerraformFailed

needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")

DEV = "example.com/me/dev"


def _provider(mirror: Path, address: str, version: str = "0.0.1") -> None:
    """An unpacked provider in a filesystem mirror (a stand-in binary: `init` never runs it)."""
    d = mirror / address / version / "linux_amd64"
    d.mkdir(parents=True)
    exe = d / f"terraform-provider-{address.rsplit('/', 1)[1]}_v{version}"
    exe.write_text("#!/bin/sh\nexit 1\n")
    exe.chmod(0o755)


def _lists(config: str) -> tuple[list[str], list[str]]:
    include = re.search(r"filesystem_mirror \{[^}]*include = (\[[^]]*\])", config)
    exclude = re.search(r"direct \{[^}]*exclude = (\[[^]]*\])", config)
    assert include and exclude, config
    return json.loads(include.group(1)), json.loads(exclude.group(1))


def test_the_mirror_serves_exactly_the_providers_it_holds(tmp_path):
    mirror = tmp_path / "plugins"
    _provider(mirror, DEV)
    _provider(mirror, "registry.terraform.io/hashicorp/aws", "5.100.0")
    (mirror / "registry.terraform.io" / "hashicorp" / "empty").mkdir()  # no version: not served
    (mirror / ".cache" / "x" / "y" / "1").mkdir(parents=True)  # hidden: not a provider
    assert mirror_providers(mirror) == [DEV, "registry.terraform.io/hashicorp/aws"]
    config = cli_config(str(mirror))
    assert "*/*/*" not in config
    assert _lists(config) == ([DEV, "registry.terraform.io/hashicorp/aws"],) * 2


def test_no_mirror_or_an_empty_one_means_direct_for_all(tmp_path):
    assert cli_config(None) == "provider_installation {\n  direct {}\n}\n"
    (tmp_path / "registry.terraform.io" / "hashicorp" / "aws").mkdir(parents=True)
    assert cli_config(str(tmp_path)) == cli_config(None)


def _init(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    work = tmp_path / "root"
    work.mkdir()
    (work / "main.tf").write_text(
        'terraform {\n  required_providers {\n    dev = { source = "example.com/me/dev" }\n'
        '    aws = { source = "hashicorp/aws" }\n  }\n}\n'
    )
    rc = tmp_path / "terraform.rc"
    rc.write_text(config)
    env = dict(os.environ, TF_CLI_CONFIG_FILE=str(rc), CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    return subprocess.run(["terraform", "init", "-backend=false", "-input=false", "-no-color"], cwd=work,
                          capture_output=True, text=True, env=env, timeout=120)


@needs_terraform
def test_a_dev_provider_in_the_mirror_does_not_hide_the_registry(tmp_path):
    """~/.terraform.d/plugins with one dev provider: the AWS provider is still asked of its
    registry (here: a refused proxy), not searched for in the mirror and declared missing."""
    mirror = tmp_path / "plugins"
    _provider(mirror, DEV)
    r = _init(tmp_path, cli_config(str(mirror)))
    out = " ".join((r.stdout + r.stderr).split())
    assert "Installed example.com/me/dev v0.0.1" in out, out  # from the mirror
    assert "not found in any of the search locations" not in out, out
    assert "could not connect to registry.terraform.io" in out, out  # direct, for everything else


# ---------------------------------------------------------------- errored.tfstate


def test_errored_state_refuses_every_terraform_run(tmp_path):
    tf = TerraformRunner(tmp_path)
    tf.refuse_errored_state()  # none: nothing to say
    (tmp_path / ERRORED_STATE).write_text("{}")
    with pytest.raises(Refused) as exc:
        tf.refuse_errored_state()
    assert exc.value.exit_code == ExitStatus.BAD_INPUT
    assert str(tmp_path / ERRORED_STATE) in exc.value.message
    assert exc.value.hint is not None and f"terraform state push -force {ERRORED_STATE}" in exc.value.hint
    assert str(tmp_path) in exc.value.hint
    with pytest.raises(Refused):
        tf.outputs()  # not even a read: the outputs in terraform.tfstate are older than the truth


def test_a_failed_run_that_left_errored_state_says_so(tmp_path):
    tf = TerraformRunner(tmp_path)
    (tmp_path / ERRORED_STATE).write_text("{}")
    with pytest.raises(TerraformFailed) as exc:
        tf._check("apply", 1, "", "Error: Failed to persist state to backend")
    assert "Failed to persist state" in exc.value.message and ERRORED_STATE in exc.value.message
    assert exc.value.hint is not None and "terraform state push" in exc.value.hint
