"""The lab as the tests and the benchmarks drive it: one lab built by `wgmesh up`, its hosts,
its addresses and a ping across it.

Addresses are never written here: the lab's address plan lives in terraform/lab/main.tf only,
and a Lab reads every address it needs from Terraform's outputs (`peers`, `servers`, `lab`).
Used by tests/integration (the `lab` fixture) and by bench/bench.py.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
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
        return Path("/var/lib/wgmesh-lab") / self.name  # terraform/lab's default

    def tf_outputs(self) -> dict:
        """Every output of the lab's Terraform root module: name → value."""
        env = dict(os.environ, TF_CLI_CONFIG_FILE=str(self.tf_dir / "terraform.rc"))
        r = subprocess.run(["terraform", "output", "-json"], cwd=self.tf_dir, capture_output=True, text=True,
                           env=env, check=True)
        return {name: out["value"] for name, out in json.loads(r.stdout).items()}

    def tf_output(self, name: str):
        return self.tf_outputs()[name]

    def tf_apply(self, **variables: object) -> dict:
        """`terraform apply` of this checkout's lab stack in the lab's Terraform directory, with the
        lab's name and underlay and `variables`, through wgmesh's own root module and runner (as `up`
        runs it) but nothing of wgmesh after it: no inventory, keys or push. Returns the outputs."""
        from wgmesh import stacks
        from wgmesh.adapters.terraform import TerraformRunner

        pairs = {"name": self.name, "underlay": self.underlay, **variables}
        values = {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in pairs.items()}
        stack = stacks.load_stack(REPO / "terraform", "lab")
        stacks.check_vars(stack, values)
        runner = TerraformRunner(self.tf_dir)
        runner.prepare(stacks.root_module(stack, self.tf_dir, values))
        runner.init()
        runner.plan()
        runner.apply()
        return runner.outputs()

    def tf_destroy(self) -> None:
        """`terraform destroy` of what tf_apply built (nothing if there is no state)."""
        from wgmesh.adapters.terraform import TerraformRunner

        runner = TerraformRunner(self.tf_dir)
        if runner.has_state():
            runner.destroy()

    @property
    def ha_sites(self) -> dict[str, list[str]]:
        """The sites with two gateways (`--var ha=true`): site → its gateways, e.g.
        {"site2": ["site2a", "site2b"]}; empty without ha."""
        return self.tf_output("lab").get("ha") or {}

    def plan(self, host: str) -> dict:
        """What Terraform planned for a site or a server (its `peers` or `servers` output): endpoint,
        subnets, private_address, ssh_host, instances..."""
        outs = self.tf_outputs()
        return {**outs["peers"], **outs["servers"]}[host]

    def instance_address(self, host: str) -> str:
        """The private instance of a site or server (e.g. site2 → site2-vm's address)."""
        return self.plan(host)["instances"][0]["address"]

    def instance_address6(self, host: str) -> str:
        """The IPv6 address of a site's or server's private instance (a lab built with
        `--var ipv6=true`; KeyError without)."""
        return self.plan(host)["instances"][0]["address6"]

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

    def fail(self, host: str) -> None:
        """The gateway dies as an instance does (`labctl fail`): its links go down, every process
        of it is killed; its disk (/etc/wireguard, /etc/wgmesh; a systemd host's layer) stays."""
        self.labctl("fail", self.name, host)

    def heal(self, host: str) -> float:
        """The failed gateway boots again (`labctl heal`): its network as built, sshd, then its boot
        services (wg-quick up wg0, the failover agent). Returns the seconds until sshd answered."""
        t = time.monotonic()
        self.labctl("heal", self.name, host, timeout=600)
        return time.monotonic() - t

    def cut(self, a: str, b: str) -> None:
        """Gateways `a` and `b` lose sight of each other (underlay, and their LAN if they share
        one); both still reach everyone else."""
        self.labctl("cut", self.name, a, b)

    def uncut(self, a: str, b: str) -> None:
        self.labctl("uncut", self.name, a, b)

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

    def agent_log_times(self, host: str, words: str) -> list[float]:
        """Wall-clock times of the lines of a host's failover agent log that contain `words`
        (a host whose agent runs under its own supervisor: /run/wgmesh/agent.log)."""
        out = self.host(host, "cat", "/run/wgmesh/agent.log", check=False).stdout
        times = []
        for line in out.splitlines():
            stamp, _, text = line.partition(" ")
            if words in text:
                times.append(datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").timestamp())
        return times

    def down_all(self) -> None:
        """The lab's own sweep: everything of it goes, even without Terraform state."""
        self.labctl("down-all", self.name, str(self.state_dir), check=False)


class Ping:
    """ping -i 0.2 (5/s) from a lab host (a plain one: an instance) to an address.

    Around a change, with a fixed count (not a Ctrl-C at an arbitrary moment, which would count
    the packet in flight as lost): 1 s of packets before the change, the change, and at least 1 s
    after it (with `cover`, a change that leaves less is an error)::

        with Ping(lab, "site1-vm", addr) as ping:
            change()
        assert ping.lost == 0

    Or in the background until stopped (a failover: how long was the path down?)::

        ping = Ping.start(lab, "site1-vm", addr)
        ...
        sent, received, gap = ping.stop()

    Afterwards: `sent`, `received`, `lost`, `gap` (the longest time in seconds without a reply,
    from the start to the end: ~INTERVAL when nothing was lost) and, for the `with` form, `took`,
    the seconds the change took.
    """

    COUNT = 20  # 4 s
    INTERVAL = 0.2
    LEAD = 1.0
    STOP_WAIT = 1.0  # stop() waits up to this long for a reply, so that no packet is in flight

    def __init__(self, lab: Lab, src: str, dst_addr: str, count: int | None = COUNT, cover: bool = True):
        self.count, self.cover = count, cover
        limit = ["-c", str(count)] if count else []
        self.started = time.monotonic()
        self.wall_started = time.time()  # ping -D stamps each reply with this clock
        # stdbuf: ping's lines arrive as they are printed (stop() waits for a reply)
        self.p = subprocess.Popen(
            [str(LABCTL), "exec", lab.name, src, "--", "stdbuf", "-oL", "ping", "-n", "-D", "-i", str(self.INTERVAL),
             *limit, dst_addr],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._replied = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.sent = self.received = 0
        self.took = self.gap = 0.0

    @classmethod
    def start(cls, lab: Lab, src: str, dst_addr: str) -> Ping:
        """A ping that runs until stop()."""
        return cls(lab, src, dst_addr, count=None, cover=False)

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line)
            if " bytes from " in line:
                self._replied.set()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.p.pid, sig)  # ping, and nsenter's child where it forks

    def kill(self) -> None:
        """Stop it without figures (a test that failed must not leave it running)."""
        if self.p.poll() is None:
            self._signal(signal.SIGKILL)
        self.p.wait(timeout=30)
        self._reader.join(timeout=5)

    def _finish(self, ended: float) -> None:
        """Wait for ping's summary and read the figures; `ended` (wall clock): where the last gap ends."""
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(timeout=5)
        out = "".join(self.lines)
        err = self.p.stderr.read() if self.p.stderr else ""
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, f"ping printed no summary (exit {self.p.returncode}):\n{out[-2000:]}\n{err[-2000:]}"
        self.sent, self.received = int(m.group(1)), int(m.group(2))
        replies = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
        marks = [self.wall_started, *replies, max(ended, replies[-1] if replies else ended)]
        self.gap = max(b - a for a, b in zip(marks, marks[1:], strict=False))

    def stop(self) -> tuple[int, int, float]:
        """Stop a ping made by start(), right after a reply (between two packets: none is in
        flight), or after STOP_WAIT s without one (the path is down: that packet is lost anyway).
        Returns (sent, received, longest gap in seconds)."""
        if self.p.poll() is None:
            self._replied.clear()
            self._replied.wait(self.STOP_WAIT)
            ended = time.time()
            self._signal(signal.SIGINT)
        else:
            ended = time.time()
        self._finish(ended)
        return self.sent, self.received, self.gap

    def __enter__(self) -> Ping:
        time.sleep(self.LEAD)
        self.change_started = time.monotonic()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        now = time.monotonic()
        self.took = now - self.change_started
        if exc_type is not None:  # the change failed: no figures, and no ping left running
            self.kill()
            return
        changed_by = now - self.started
        self._finish(self.wall_started + (self.count or 0) * self.INTERVAL)
        if self.cover:
            assert changed_by < (self.count or 0) * self.INTERVAL - self.LEAD, (
                f"the change took too long to be covered: {changed_by:.1f} s")

    @property
    def lost(self) -> int:
        return self.sent - self.received
