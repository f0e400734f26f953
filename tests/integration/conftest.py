"""The real lab: Terraform, network namespaces, sshd, wireguard-go, iptables.

Each test module gets its own lab name and underlay so it never meets a user's `lab`,
and everything it made is removed even when a test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LABCTL = REPO / "terraform" / "lab" / "labctl"


def lab_leftovers(name: str) -> list[str]:
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [line.split()[0] for line in ns.splitlines() if line.startswith(f"wgm-{name}-")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    left += [f"link {l.split(':')[1].strip()}" for l in links.splitlines() if f" wgm-{name}" in l]
    return left


class Lab:
    def __init__(self, root: Path, name: str, underlay: str):
        self.root = root
        self.name = name  # lab name and inventory name
        self.underlay = underlay

    def wgmesh(self, *args, check_rc: int | None = 0, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, WGMESH_DIR=str(self.root), COLUMNS="200")
        r = subprocess.run(
            [sys.executable, "-m", "wgmesh", "-i", self.name, *args],
            capture_output=True, text=True, env=env, timeout=timeout,
        )
        if check_rc is not None and r.returncode != check_rc:
            raise AssertionError(
                f"wgmesh {' '.join(args)} exited {r.returncode}, expected {check_rc}\n"
                f"--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-6000:]}"
            )
        return r

    def json(self, *args, check_rc: int | None = 0) -> dict:
        return json.loads(self.wgmesh(*args, "--json", check_rc=check_rc).stdout)

    @property
    def tf_dir(self) -> Path:
        return self.root / ".wgmesh" / self.name / "terraform"

    def tf_output(self, name: str):
        env = dict(os.environ, TF_CLI_CONFIG_FILE=str(self.tf_dir / "terraform.rc"))
        r = subprocess.run(["terraform", "output", "-json", name], cwd=self.tf_dir, capture_output=True, text=True,
                           env=env, check=True)
        return json.loads(r.stdout)

    def host(self, host: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside a lab host (its sshd's net + mount namespaces)."""
        return subprocess.run([str(LABCTL), "exec", self.name, host, "--", *cmd], capture_output=True, text=True,
                              check=check, timeout=60)

    def wg_pids(self, host: str) -> list[str]:
        """wireguard-go processes in that host's network namespace (there is no PID namespace)."""
        pids = subprocess.run(["ip", "netns", "pids", f"wgm-{self.name}-{host}"], capture_output=True,
                              text=True).stdout.split()
        out = []
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "wireguard-go":
                    out.append(pid)
            except OSError:
                continue
        return sorted(out)

    def down_all(self) -> None:
        subprocess.run([str(LABCTL), "down-all", self.name, str(self.tf_dir / "lab-state")],
                       capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces): run ./bootstrap.sh test as root")
    name = getattr(request.module, "LAB_NAME", "it")
    underlay = getattr(request.module, "LAB_UNDERLAY", "198.19.0.0/16")
    assert not lab_leftovers(name), f"a lab named {name!r} already exists: {lab_leftovers(name)}"
    root = tmp_path_factory.mktemp(f"lab-{name}")
    lab = Lab(root, name, underlay)
    try:
        yield lab
    finally:
        # Whatever happened: wgmesh destroy first (the product's own way), then the lab's own sweep.
        lab.wgmesh("destroy", check_rc=None, timeout=300)
        lab.down_all()
        left = lab_leftovers(name)
        assert not left, f"lab left behind: {left}"
