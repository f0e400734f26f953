"""The lab as the tests and the benchmarks drive it: one lab built by `wgmesh up`, its hosts,
its addresses and a ping across it.

Addresses are never written here: the lab's address plan lives in terraform/lab/main.tf only,
and a Lab reads every address it needs from Terraform's outputs (`peers`, `servers`, `lab`).
Used by tests/integration (the `lab` fixture) and by bench/bench.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LABCTL = REPO / "terraform" / "lab" / "labctl"
# The underlay of every lab the tests and benchmarks build: not the default lab's
# 198.18.0.0/16, so they never meet a user's `lab`.
TEST_UNDERLAY = "198.19.0.0/16"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """A command whose exit status the caller reads (or ignores) itself."""
    return subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)


def lab_leftovers(name: str) -> list[str]:
    """Namespaces and links of lab `name` that still exist."""
    ns = _run(["ip", "netns", "list"]).stdout
    left = [line.split()[0] for line in ns.splitlines() if line.startswith(f"wgm-{name}-")]
    links = _run(["ip", "-o", "link", "show"]).stdout
    left += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if f" wgm-{name}" in line]
    return left


def _proc_dirs() -> list[Path]:
    return [p for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(proc: Path) -> str:
    try:
        return proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_zombie(proc: Path) -> bool:
    try:
        return proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True  # gone


def systemd_leftovers(name: str, state_dir: Path | None = None) -> list[str]:
    """What is left of the systemd hosts of lab `name` (init=systemd): their cgroups (labctl's
    `wgmesh-lab/wgm-<name>-<host>` in every cgroup hierarchy), their supervisor and systemd-nspawn
    processes, and, given the lab's state dir, any mount below it in any mount namespace (the
    hosts' overlay layers)."""
    cgroups = Path("/sys/fs/cgroup")
    left = [f"cgroup {d}" for pattern in (f"wgmesh-lab/wgm-{name}-*", f"*/wgmesh-lab/wgm-{name}-*")
            for d in cgroups.glob(pattern) if d.is_dir()]
    for proc in _proc_dirs():
        cmd = _cmdline(proc)
        if f"wgm-{name}-" in cmd and ("systemd-nspawn" in cmd or "wgmesh-lab-boot" in cmd) and not _is_zombie(proc):
            left.append(f"process {proc.name}: {cmd[:120]}")
    if state_dir is not None:
        seen = set()
        for proc in _proc_dirs():
            try:
                info = proc.joinpath("mountinfo").read_text()
            except OSError:
                continue
            for line in info.splitlines():
                fields = line.split()
                if len(fields) > 4 and fields[4].startswith(str(state_dir)) and fields[4] not in seen:
                    seen.add(fields[4])
                    left.append(f"mount {fields[4]} (pid {proc.name})")
    return left


class Lab:
    """A lab in a project directory of its own; `name` is both the lab's and the inventory's name."""

    def __init__(self, root: Path, name: str, underlay: str = TEST_UNDERLAY):
        self.root = root
        self.name = name
        self.underlay = underlay

    def up_vars(self, **more: object) -> list[str]:
        """The `--var` arguments of a first `wgmesh up` of this lab (name, underlay, and `more`)."""
        pairs = {"name": self.name, "underlay": self.underlay, **more}
        return [arg for k, v in pairs.items() for arg in ("--var", f"{k}={v}")]

    def wgmesh(self, *args: str, check_rc: int | None = 0, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, WGMESH_DIR=str(self.root), COLUMNS="200")
        r = _run([sys.executable, "-m", "wgmesh", "-i", self.name, *args], env=env, timeout=timeout)
        if check_rc is not None and r.returncode != check_rc:
            raise AssertionError(
                f"wgmesh {' '.join(args)} exited {r.returncode}, expected {check_rc}\n"
                f"--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-6000:]}"
            )
        return r

    def json(self, *args: str, check_rc: int | None = 0) -> dict:
        return json.loads(self.wgmesh(*args, "--json", check_rc=check_rc).stdout)

    # ------------------------------------------------------------ Terraform's view: the addresses

    @property
    def tf_dir(self) -> Path:
        return self.root / ".wgmesh" / self.name / "terraform"

    @property
    def state_dir(self) -> Path:
        return self.tf_dir / "lab-state"

    def tf_outputs(self) -> dict:
        """Every output of the lab's Terraform root module: name → value."""
        env = dict(os.environ, TF_CLI_CONFIG_FILE=str(self.tf_dir / "terraform.rc"))
        r = subprocess.run(["terraform", "output", "-json"], cwd=self.tf_dir, capture_output=True, text=True,
                           env=env, check=True)
        return {name: out["value"] for name, out in json.loads(r.stdout).items()}

    def tf_output(self, name: str):
        return self.tf_outputs()[name]

    def plan(self, host: str) -> dict:
        """What Terraform planned for a site or a server (its `peers` or `servers` output): endpoint,
        subnets, private_address, ssh_host, instances..."""
        outs = self.tf_outputs()
        return {**outs["peers"], **outs["servers"]}[host]

    def instance_address(self, host: str) -> str:
        """The private instance of a site or server (e.g. site2 → site2-vm's address)."""
        return self.plan(host)["instances"][0]["address"]

    # ------------------------------------------------------------ the hosts

    def labctl(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        r = _run([str(LABCTL), *args], timeout=timeout)
        if check:
            r.check_returncode()
        return r

    def host(self, host: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside a lab host (its sshd's net + mount namespaces)."""
        return self.labctl("exec", self.name, host, "--", *cmd, check=check, timeout=60)

    def sshd_stop(self, host: str) -> None:
        """Stop that host's sshd (WireGuard keeps running)."""
        self.labctl("sshd-stop", self.name, host, str(self.state_dir))

    def sshd_start(self, host: str) -> None:
        self.labctl("sshd-start", self.name, host, str(self.state_dir))

    def reboot(self, host: str) -> float:
        """Reboot a systemd host (`labctl reboot`): its systemd stops and boots again, its network
        namespace and links stay. Returns the seconds until its sshd answered again."""
        t = time.monotonic()
        self.labctl("reboot", self.name, host, timeout=600)
        return time.monotonic() - t

    def ssh(self, host: str, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """SSH from the controller to a site or server, as wgmesh does: to its public address, with
        the lab's key, the host key pinned from Terraform's outputs (a mismatch fails)."""
        plan = self.plan(host)
        known = self.root / f".labkit-known-hosts-{host}"
        known.write_text("".join(f"{plan['ssh_host']} {k}\n" for k in plan["ssh_host_keys"]))
        r = _run(["ssh", "-i", plan["ssh_key"], "-p", str(plan["ssh_port"]), "-o", "BatchMode=yes",
                  "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
                  "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
                  f"{plan['ssh_user']}@{plan['ssh_host']}", "--", *cmd], timeout=timeout)
        if check:
            r.check_returncode()
        return r

    def memory_kb(self, host: str) -> dict[str, int]:
        """Memory of the processes in a host's network namespace, in kB: `pss` (shared pages split
        among the processes that map them), `rss` and `uss` (pages no other process maps). For a
        systemd host that is the whole container; its systemd-nspawn and supervisor (outside the
        namespace) are not counted."""
        pids = _run(["ip", "netns", "pids", f"wgm-{self.name}-{host}"]).stdout.split()
        total = {"pss": 0, "rss": 0, "uss": 0}
        for pid in pids:
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:]}
            total["pss"] += fields.get("Pss", 0)
            total["rss"] += fields.get("Rss", 0)
            total["uss"] += fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
        return total

    def wg_pids(self, host: str) -> list[str]:
        """wireguard-go processes in that host's network namespace (there is no PID namespace)."""
        pids = _run(["ip", "netns", "pids", f"wgm-{self.name}-{host}"]).stdout.split()
        out = []
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "wireguard-go":
                    out.append(pid)
            except OSError:
                continue
        return sorted(out)

    def down_all(self) -> None:
        """The lab's own sweep: everything of it goes, even without Terraform state."""
        self.labctl("down-all", self.name, str(self.state_dir), check=False)


class Ping:
    """ping -i 0.2 (5/s) from a lab host to an address, spanning the change made in the `with` block.

    A fixed count (not a Ctrl-C at an arbitrary moment, which would count the packet in
    flight as lost): 1 s of packets before the change, the change, and at least 1 s after it
    (with `cover`, a change that leaves less is an error). After the block: `sent`, `received`,
    `lost`, and `took`, the seconds the change took.
    """

    COUNT = 20  # 4 s
    INTERVAL = 0.2
    LEAD = 1.0

    def __init__(self, lab: Lab, src: str, dst_addr: str, count: int = COUNT, cover: bool = True):
        self.count, self.cover = count, cover
        self.p = subprocess.Popen(
            [str(LABCTL), "exec", lab.name, src, "--", "ping", "-n", "-i", str(self.INTERVAL), "-c", str(count),
             dst_addr],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.started = time.monotonic()
        self.sent = self.received = 0
        self.took = 0.0

    def __enter__(self) -> Ping:
        time.sleep(self.LEAD)
        self.change_started = time.monotonic()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        now = time.monotonic()
        self.took = now - self.change_started
        if exc_type is not None:  # the change failed: no figures, and no ping left running
            self.p.kill()
            self.p.communicate()
            return
        changed_by = now - self.started
        out, _ = self.p.communicate(timeout=60)
        if self.cover:
            assert changed_by < self.count * self.INTERVAL - self.LEAD, (
                f"the change took too long to be covered: {changed_by:.1f} s")
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        self.sent, self.received = int(m.group(1)), int(m.group(2))

    @property
    def lost(self) -> int:
        return self.sent - self.received
