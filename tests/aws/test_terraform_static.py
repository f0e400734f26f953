"""terraform fmt -check and terraform validate on every stack (providers from the local mirror)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from wgmesh.adapters.terraform import cli_config, find_mirror

TERRAFORM = Path(__file__).resolve().parents[2] / "terraform"


def _env(tmp_path):
    rc = tmp_path / "terraform.rc"
    rc.write_text(cli_config(find_mirror()))
    return dict(os.environ, TF_CLI_CONFIG_FILE=str(rc), CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1")


def test_fmt_check(tmp_path):
    r = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)], capture_output=True,
                       text=True, env=_env(tmp_path), check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("stack", ["lab", "aws"])
def test_validate(tmp_path, stack):
    copy = tmp_path / stack
    shutil.copytree(TERRAFORM / stack, copy, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*", "lab-state"))
    env = _env(tmp_path)
    r = subprocess.run(["terraform", "init", "-backend=false", "-input=false", "-no-color"], cwd=copy,
                       capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["terraform", "validate", "-no-color"], cwd=copy, capture_output=True, text=True, env=env,
                       check=False)
    assert r.returncode == 0 and "Success" in r.stdout, r.stdout + r.stderr
