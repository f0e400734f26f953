"""wgmesh benchmarks, side by side with the alternatives, in one run on one machine.

Cases (see README "Benchmarks"):
  startup     what every command pays before its work: `wgmesh genconfig --help` (the console
              script users run) against `wg-meshconf genconfig --help`, and `python -c pass`;
              interleaved runs, medians and their ratio
  genconfig   wgmesh genconfig vs wg-meshconf genconfig on the same peers, plus the floor:
              writing the same bytes; wall time and peak RSS
  inventory   1000 peers from a Terraform-outputs document; one addpeer on a 1000-peer
              inventory, and a loop of 100, against wg-meshconf addpeer
  push        the lab with N sites: wgmesh push vs a serial loop of OpenSSH scp + ssh wg-quick up;
              wgmesh up end to end with the Terraform share
  change      ping at 5/s between two private instances during addpeer + push, an endpoint
              change, and a restart-style change
  verify      wgmesh verify on N sites
  failover    an HA lab (2 sites, two gateways each): ping at 5/s between the private instances
              while the active gateway of site2 is killed (labctl fail), healed, and switched back
              by hand (wgmesh failover); the longest gap, detection and switch times, packets lost
  scale       (only when named: long) a lab of 200 plain sites: wgmesh push after a reset (first
              start everywhere) and a no-op push; the controller's wall time, peak RSS and its peak
              open fds and threads (sampled from /proc every 50 ms), fds per host

Every command is run as a separate process; wall time is measured around it and peak RSS is
taken from wait4() (the process and the children it waited for). Each case runs a warm-up,
then --repeat times; the table shows median, min and max, and ratios of medians pair by pair.
Where wgmesh and an alternative are compared, their runs are interleaved (one of each in turn),
and a quick comparison (start-up, genconfig up to 100 peers, one addpeer) gets 10 x --repeat
rounds: a change of load on this 2-core machine then moves both sides alike.
"""

from __future__ import annotations

import argparse
import base64
import compileall
import csv
import datetime
import ipaddress
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # wgmesh, and the lab helpers shared with the tests
from tests.labkit import Lab, Ping  # the lab as the integration tests drive it

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = str(ROOT / ".venv" / "bin" / "python")
WGMESH = [PY, "-m", "wgmesh"]


# ---------------------------------------------------------------- measuring


class Run:
    def __init__(self, seconds: float, rss_mb: float, rc: int, out: str, err: str):
        self.seconds, self.rss_mb, self.rc, self.out, self.err = seconds, rss_mb, rc, out, err


def measure(cmd: list[str], cwd: Path | None = None, env: dict | None = None, check: bool = True,
            watch: Peaks | None = None) -> Run:
    """Wall time of one process, and its peak RSS (with the children it waited for) from wait4();
    `watch` samples the process while it runs."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        if watch is not None:
            watch.start(p.pid)
        _, status, ru = os.wait4(p.pid, 0)
        if watch is not None:
            watch.stop()
        seconds = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(errors="replace"), fe.read().decode(errors="replace")
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {p.returncode}:\n{err[-2000:]}\n{out[-1000:]}")
    return Run(seconds, ru.ru_maxrss / 1024, p.returncode, out, err)


class Peaks:
    """A process's open file descriptors and threads, read from /proc every `every` s while it
    runs (from a thread of the bench): the highest counts seen."""

    def __init__(self, every: float = 0.05):
        self.every, self.fds, self.threads = every, 0, 0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, pid: int) -> None:
        self._done.clear()
        self._thread = threading.Thread(target=self._sample, args=(pid,), daemon=True)
        self._thread.start()

    def _sample(self, pid: int) -> None:
        while not self._done.is_set():
            try:
                fds = len(os.listdir(f"/proc/{pid}/fd"))
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return  # gone
            threads = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:")), 0)
            self.fds, self.threads = max(self.fds, fds), max(self.threads, threads)
            self._done.wait(self.every)

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()


class Table:
    def __init__(self):
        self.rows: list[dict] = []
        self.notes: list[str] = []

    def add(self, case: str, size: str, tool: str, runs: list[Run] | list[float], extra: str = "") -> dict:
        secs = [r.seconds if isinstance(r, Run) else r for r in runs]
        rss = max((r.rss_mb for r in runs if isinstance(r, Run)), default=None)
        row = {"case": case, "size": size, "tool": tool, "median": statistics.median(secs), "min": min(secs),
               "max": max(secs), "n": len(secs), "rss": rss, "extra": extra}
        self.rows.append(row)
        print(f"  {case:<10} {size:>8}  {tool:<34} median {row['median']:8.3f} s  "
              f"(min {row['min']:.3f}, max {row['max']:.3f}, n={row['n']})"
              + (f"  peak {rss:.0f} MB" if rss is not None else "") + (f"  {extra}" if extra else ""), flush=True)
        return row

    def ratio(self, case: str, size: str, a: dict, b: dict, what: str) -> None:
        r = b["median"] / a["median"] if a["median"] > 0 else float("inf")
        self.rows.append({"case": case, "size": size, "tool": f"ratio: {what}", "ratio": r})
        print(f"  {case:<10} {size:>8}  ratio {what}: {r:.2f}x", flush=True)

    def markdown(self, header: str) -> str:
        lines = [header, "", "| case | size | what | median s | min s | max s | runs | peak RSS MB | ratio / notes |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            if "ratio" in r:  # two decimals where it is near 1 (which side is faster is the question)
                shown = f"{r['ratio']:.2f}" if r["ratio"] < 2 else f"{r['ratio']:.1f}"
                lines.append(f"| {r['case']} | {r['size']} | **{r['tool']}** | | | | | | **{shown}x** |")
            else:
                rss = f"{r['rss']:.0f}" if r["rss"] is not None else ""
                lines.append(f"| {r['case']} | {r['size']} | {r['tool']} | {r['median']:.4f} | {r['min']:.4f} | "
                             f"{r['max']:.4f} | {r['n']} | {rss} | {r['extra']} |")
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


def repeat(fn, times: int, warmup: bool) -> list:
    if warmup:
        fn()
    return [fn() for _ in range(times)]


def interleaved(fns: list, times: int, warmup: bool) -> list[list]:
    """`times` rounds of one run of each of `fns` in turn (after a warm-up of each): a change of
    load on the machine (the lab, another job) then weighs on all of them alike. → their runs."""
    if warmup:
        for fn in fns:
            fn()
    runs: list[list] = [[] for _ in fns]
    for _ in range(times):
        for fn, got in zip(fns, runs, strict=True):
            got.append(fn())
    return runs


QUICK = 10  # a quick comparison (a run well under a second) gets QUICK x --repeat interleaved rounds


@dataclass(frozen=True)
class Settings:
    reps: int  # timed runs per case
    warm: bool  # a warm-up run first
    meshconf: str  # the wg-meshconf executable
    work: Path  # scratch directory


# ---------------------------------------------------------------- the same peers for both tools


def make_peers(n: int) -> list[dict]:
    pool = ipaddress.ip_network("10.200.0.0/16")
    base_ep = ipaddress.ip_address("100.64.0.1")  # never contacted: configs only
    out = []
    for i in range(n):
        out.append({
            "name": f"p{i:05d}",
            "address": str(pool.network_address + 1 + i),
            "endpoint": str(base_ep + i),
            "subnet": f"10.{100 + i // 256}.{i % 256}.0/24",
        })
    return out


def write_wgmesh_project(d: Path, peers: list[dict], keys: dict[str, tuple[str, str]], psk: bool) -> None:
    from wgmesh.fsutil import ensure_private_dir

    (d / "inventories").mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": 1, "name": "bench", "stack": None, "vars": {},
        "mesh": {"interface": "wg0", "listen_port": 51820, "mtu": 1420, "pool": "10.200.0.0/16", "preshared_keys": psk},
        "peers": {
            p["name"]: {"source": "manual", "address": p["address"], "endpoint": f"{p['endpoint']}:51820",
                        "listen_port": 51820, "subnets": [p["subnet"]], "keepalive": 25, "egress_interface": "eth0",
                        "ssh": None, "ssh_host_keys": [], "region": "", "cloud": "", "instances": [],
                        "private_address": None}
            for p in peers
        },
    }
    (d / "inventories" / "bench.json").write_text(json.dumps(doc))
    ensure_private_dir(d / ".wgmesh")
    ensure_private_dir(d / ".wgmesh" / "bench")
    kd = ensure_private_dir(d / ".wgmesh" / "bench" / "keys")
    store = {"format": 1, "psk_secret": base64.b64encode(os.urandom(32)).decode(),
             "peers": {n: {"private_key": k[0], "public_key": k[1]} for n, k in keys.items()}}
    f = kd / "keystore.json"
    f.write_text(json.dumps(store))
    f.chmod(0o600)


def write_meshconf_csv(path: Path, peers: list[dict], keys: dict[str, tuple[str, str]]) -> None:
    """wg-meshconf's database, written directly: same addresses, endpoints, subnets, keepalive, MTU
    and the same NAT/forwarding rules (wgmesh's PostUp/PostDown lines, joined: it takes one line)."""
    from wgmesh import inventory as invmod
    from wgmesh.render import firewall_hooks

    fields = ["Name", "Address", "Endpoint", "AllowedIPs", "ListenPort", "PersistentKeepalive", "FwMark",
              "PrivateKey", "DNS", "MTU", "Table", "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fields, quoting=csv.QUOTE_ALL)
        w.writeheader()
        inv = invmod.new_inventory("bench")
        for p in peers:
            peer = invmod.Peer(name=p["name"], address=ipaddress.ip_address(p["address"]),
                               subnets=(ipaddress.ip_network(p["subnet"]),), egress_interface="eth0")
            up, down = firewall_hooks(inv, peer)
            w.writerow({"Name": p["name"], "Address": f"{p['address']}/32", "Endpoint": p["endpoint"],
                        "AllowedIPs": p["subnet"], "ListenPort": 51820, "PersistentKeepalive": 25,
                        "PrivateKey": keys[p["name"]][0], "MTU": 1420, "PostUp": "; ".join(up),
                        "PostDown": "; ".join(down)})


def gen_keys(names: list[str]) -> dict[str, tuple[str, str]]:
    from wgmesh.keys import generate_keypair

    return {n: (kp.private, kp.public) for n in names for kp in [generate_keypair()]}


def wenv(d: Path) -> dict:
    return dict(os.environ, WGMESH_DIR=str(d), COLUMNS="160")


FLOOR = r"""
import os, sys, time
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
data = [(p.name, p.read_bytes()) for p in sorted(src.glob("*.conf"))]
dst.mkdir()
t = time.perf_counter()
for name, b in data:
    with open(dst / name, "wb") as f:
        f.write(b)
print(time.perf_counter() - t, sum(len(b) for _, b in data))
"""


# ---------------------------------------------------------------- cases


def case_startup(t: Table, s: Settings) -> None:
    """What every command pays before any work: interpreter, imports, building the CLI, parsing.
    The same question to both tools: the help of their genconfig (wg-meshconf's argparse builds
    all its subcommands first, as Typer builds all of wgmesh's). The runs are interleaved, one of
    each in turn, so that a change of load on the machine weighs on all alike."""
    tools = {"python -c pass (the interpreter alone)": [PY, "-c", "pass"],
             "wgmesh genconfig --help": [str(ROOT / ".venv" / "bin" / "wgmesh"), "genconfig", "--help"],
             "wg-meshconf genconfig --help": [s.meshconf, "genconfig", "--help"]}
    runs = QUICK * s.reps if s.warm else s.reps
    got = dict(zip(tools, interleaved([lambda cmd=cmd: measure(cmd) for cmd in tools.values()], runs, s.warm),
                   strict=True))
    rows = {what: t.add("startup", "-", what, got[what], "runs interleaved, one of each in turn") for what in tools}
    t.ratio("startup", "-", rows["wg-meshconf genconfig --help"], rows["wgmesh genconfig --help"],
            "wgmesh / wg-meshconf start-up (target: at most 1.2x)")


def case_genconfig(t: Table, sizes: list[int], big: list[int], s: Settings):
    reps, warm, meshconf, work = s.reps, s.warm, s.meshconf, s.work
    for n in sizes + big:
        peers = make_peers(n)
        keys = gen_keys([p["name"] for p in peers])
        d = work / f"gen{n}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        write_wgmesh_project(d, peers, keys, psk=False)
        dpsk = work / f"gen{n}psk"
        shutil.rmtree(dpsk, ignore_errors=True)
        dpsk.mkdir(parents=True)
        write_wgmesh_project(dpsk, peers, keys, psk=True)
        out = d / "output" / "bench"

        def wgm(dd=d):
            shutil.rmtree(dd / "output", ignore_errors=True)
            os.sync()  # every writer starts with no earlier run's data still being written back
            return measure(WGMESH + ["-i", "bench", "genconfig"], env=wenv(dd))

        times = reps if n not in big else 1
        if n in big:
            a = t.add("genconfig", str(n), "wgmesh genconfig", repeat(wgm, times, False))
        else:  # against wg-meshconf, the runs of both interleaved (more of them when they are quick)
            csvp = d / "database.csv"
            write_meshconf_csv(csvp, peers, keys)

            def wmc(d=d, csvp=csvp):
                shutil.rmtree(d / "wmc-out", ignore_errors=True)
                os.sync()
                return measure([meshconf, "-d", str(csvp), "genconfig", "-o", str(d / "wmc-out")])

            quick = n <= 100 and warm
            mine, theirs = interleaved([wgm, wmc], QUICK * reps if quick else reps, warm)
            note = f"{len(mine)} rounds interleaved with wg-meshconf's" if quick else "interleaved with wg-meshconf's"
            a = t.add("genconfig", str(n), "wgmesh genconfig", mine, note)
        total = sum(f.stat().st_size for f in out.glob("*.conf"))

        def floor(out=out):
            dst = work / "floor"
            shutil.rmtree(dst, ignore_errors=True)
            os.sync()
            r = measure([PY, "-c", FLOOR, str(out), str(dst)])
            shutil.rmtree(dst, ignore_errors=True)
            return float(r.out.split()[0])

        f = t.add("genconfig", str(n), f"floor: write the same {total / 1e6:.1f} MB", repeat(floor, times, False))
        t.ratio("genconfig", str(n), f, a, "wgmesh / floor (time)")
        t.add("genconfig", str(n), "wgmesh genconfig, with PSKs",
              repeat(lambda dpsk=dpsk: wgm(dpsk), times, False), "per-pair PresharedKey (wg-meshconf has none)")
        if n not in big:
            b = t.add("genconfig", str(n), "wg-meshconf 2.5.1 genconfig", theirs)
            t.ratio("genconfig", str(n), a, b, "wgmesh faster than wg-meshconf")
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(dpsk, ignore_errors=True)


def case_inventory(t: Table, n: int, loop: int, s: Settings):
    reps, warm, meshconf, work = s.reps, s.warm, s.meshconf, s.work
    peers = make_peers(n)
    outputs = {"peers": {"sensitive": False, "type": "map", "value": {
        f"site{i + 1}": {"endpoint": p["endpoint"], "listen_port": 51820, "private_address": None,
                         "subnets": [p["subnet"]], "ssh_user": "root", "ssh_host": p["endpoint"], "ssh_port": 22,
                         "ssh_key": None, "ssh_host_keys": [], "egress_interface": "detect",
                         "region": "r1", "cloud": "lab", "instances": []}
        for i, p in enumerate(peers)}}}
    doc = work / "outputs.json"
    doc.write_text(json.dumps(outputs))

    def imp():
        d = work / "imp"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        os.sync()
        return measure(WGMESH + ["-i", "bench", "import", str(doc)], env=wenv(d))

    t.add("inventory", str(n), f"wgmesh import ({n} peers from outputs JSON)", repeat(imp, reps, warm),
          "incl. key pairs for every peer")

    # One addpeer on an n-peer inventory, and a loop of `loop` of them.
    keys = gen_keys([p["name"] for p in peers])
    d = work / "add"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    write_wgmesh_project(d, peers, keys, psk=True)
    csvp = d / "database.csv"
    write_meshconf_csv(csvp, peers, keys)
    counter = iter(range(10**6))

    def wgm_add():
        i = next(counter)
        os.sync()  # addpeer fsyncs: it must not wait for an earlier case's writeback
        return measure(WGMESH + ["-i", "bench", "addpeer", f"x{i}", "--endpoint", f"192.0.2.{i % 250 + 1}",
                                 "--allowedips", f"10.180.{i // 256}.{i % 256}/32"], env=wenv(d))

    def wmc_add():
        i = next(counter)
        os.sync()
        return measure([meshconf, "-d", str(csvp), "addpeer", f"x{i}", "--address", f"10.201.{i // 256}.{i % 256}/32",
                        "--endpoint", f"192.0.2.{i % 250 + 1}"])

    mine, theirs = interleaved([wgm_add, wmc_add], QUICK * reps if warm else reps, warm)
    a = t.add("inventory", str(n), "wgmesh addpeer (one)", mine,
              f"start-up included; {len(mine)} rounds interleaved with wg-meshconf's")
    b = t.add("inventory", str(n), "wg-meshconf addpeer (one)", theirs)
    t.ratio("inventory", str(n), a, b, "wgmesh addpeer vs wg-meshconf (target: at least 1.0x)")

    def loop_of(fn):
        return sum(fn().seconds for _ in range(loop))  # the commands' own time (not the syncs between)

    a = t.add("inventory", str(n), f"wgmesh addpeer x{loop} (loop)", [loop_of(wgm_add)])
    b = t.add("inventory", str(n), f"wg-meshconf addpeer x{loop} (loop)", [loop_of(wmc_add)])
    t.ratio("inventory", str(n), a, b, f"loop of {loop}")
    shutil.rmtree(d, ignore_errors=True)


class BenchLab(Lab):
    """A lab of N sites built by `wgmesh up`, for the push/verify/change cases; wgmesh runs measured."""

    def __init__(self, n: int, servers: int, work: Path):
        root = work / f"lab{n}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        super().__init__(root, f"bn{n}")
        self.n, self.servers = n, servers
        self.sites = [f"site{i}" for i in range(1, n + 1)]

    def wg(self, *args, check=True) -> Run:
        return measure([*WGMESH, "-i", self.name, *args], env=wenv(self.root), check=check)

    def up(self) -> tuple[Run, dict]:
        r = self.wg("up", "--json", *self.up_vars(sites=self.n, servers=self.servers))
        return r, json.loads(r.out)

    def reset(self) -> None:
        """WireGuard down and its config gone on every site (not timed)."""
        down = "wg-quick down wg0 >/dev/null 2>&1; rm -f /etc/wireguard/wg0.conf"
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda h: self.host(h, "sh", "-c", down, check=False), self.sites))

    def seed_loop(self) -> float:
        """What users run today: for each host, one after the other, scp the config and ssh wg-quick up."""
        inv = json.loads((self.root / "inventories" / f"{self.name}.json").read_text())
        kh = self.root / ".wgmesh" / self.name / "known_hosts"
        t0 = time.perf_counter()
        for name in self.sites:
            p = inv["peers"][name]
            opts = ["-q", "-i", p["ssh"]["key"], "-o", f"UserKnownHostsFile={kh}", "-o", "StrictHostKeyChecking=yes",
                    "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
            host = p["ssh"]["host"]
            subprocess.run(["scp", *opts, str(self.root / "output" / self.name / f"{name}.conf"),
                            f"root@{host}:/etc/wireguard/wg0.conf"], check=True, capture_output=True)
            subprocess.run(["ssh", *opts, f"root@{host}", "wg-quick up wg0"], check=True, capture_output=True)
        return time.perf_counter() - t0

    def all_up(self) -> bool:
        return all(self.host(h, "wg", "show", "wg0", check=False).returncode == 0 for h in self.sites)

    def destroy(self) -> None:
        self.wg("destroy", check=False)
        self.down_all()


def case_push_verify(t: Table, sizes: list[int], s: Settings, change_at: int | None):
    reps, warm = s.reps, s.warm
    for n in sizes:
        lab = BenchLab(n, 1 if n == change_at else 0, s.work)
        try:
            r, doc = lab.up()
            assert doc["ok"], doc.get("verify", {}).get("failures")
            tm = doc["timings"]
            t.add("up", str(n), "wgmesh up (fresh lab, end to end)", [r],
                  f"terraform {tm['terraform']:.2f} s ({100 * tm['terraform'] / r.seconds:.0f}%), "
                  f"push {tm['push']:.2f} s, verify {tm['verify']:.2f} s")

            def wpush(lab=lab):
                lab.reset()
                res = lab.wg("push")
                assert lab.all_up()
                return res

            def seed(lab=lab):
                lab.reset()
                s = lab.seed_loop()
                assert lab.all_up()
                return s

            a = t.add("push", str(n), "wgmesh push (all hosts, first start)", repeat(wpush, reps, warm))
            b = t.add("push", str(n), "serial scp + ssh wg-quick up loop", repeat(seed, reps, warm))
            t.ratio("push", str(n), a, b, "wgmesh push faster than the loop")
            lab.reset()
            lab.wg("push")
            t.add("verify", str(n), "wgmesh verify (all pairs, subnets, instances)",
                  repeat(lambda lab=lab: lab.wg("verify"), reps, warm),
                  f"{n * (n - 1)} ordered pairs x 4 paths + handshakes + drift")
            if n == change_at:
                case_change(t, lab)
        finally:
            lab.destroy()


def case_change(t: Table, lab: BenchLab) -> None:
    s = lab.plan("srv1")
    site2_vm = lab.instance_address("site2")
    n = str(lab.n)

    def add():
        lab.wg("addpeer", "pub", "--endpoint", s["endpoint"], "--ssh", f"root@{s['ssh_host']}",
               "--allowedips", s["subnets"][0])
        lab.wg("push")

    def endpoint():
        lab.wg("setpeer", "pub", "--listen-port", "51821")
        lab.wg("push")

    def restart():
        _set_mtu(lab, 1380)
        lab.wg("push")

    for what, change in [
        ("addpeer + push (syncconf)", add),
        ("endpoint change + push (syncconf)", endpoint),
        ("[Interface] change + push (restart)", restart),
    ]:
        # The change's time is reported, not judged (cover=False): a slow one is a figure, not an error.
        with Ping(lab, "site1-vm", site2_vm, count=25, cover=False) as ping:
            change()
        t.add("change", n, what, [ping.took], f"ping 5/s site1-vm→site2-vm: {ping.sent} sent, **{ping.lost} lost**")


def case_failover(t: Table, s: Settings) -> None:
    """Kill the active gateway of site2 under a 5/s ping, heal it, switch back by hand: per run."""
    lab = BenchLab(2, 0, s.work)
    lab.name = "bnha"
    gaps, detect, switch, lost_fail, lost_heal, lost_back, back, heals, handover = [], [], [], [], [], [], [], [], []
    try:
        r = lab.wg("up", "--json", *lab.up_vars(sites=2, servers=0, ha="true"))
        assert json.loads(r.out)["ok"]
        dst = lab.instance_address("site2a")
        for _ in range(s.reps if not s.warm else max(s.reps, 2)):  # --smoke: once
            active = json.loads(lab.wg("status", "--json").out)["ha"]["site2"]["active"]
            standby = next(g for g in ("site2a", "site2b") if g != active)
            ping = Ping.start(lab, "site1-vm", dst)
            try:
                time.sleep(2)
                killed = time.time()
                lab.fail(active)
                time.sleep(6)
            finally:
                sent, received, gap = ping.stop()
            claims = [x for x in lab.agent_log_times(standby, "→ active") if x > killed]
            moves = [x for x in lab.agent_log_times("site1a", f"site2 → {standby}") if x > killed]
            gaps.append(gap)
            lost_fail.append(sent - received)
            detect.append(claims[0] - killed)
            switch.append(moves[0] - claims[0])
            with Ping(lab, "site1-vm", dst, count=25, cover=False) as p:
                heals.append(lab.heal(active))
                time.sleep(2)
            lost_heal.append(p.lost)
            asked = time.time()
            with Ping(lab, "site1-vm", dst, count=25, cover=False) as p:
                doc = json.loads(lab.wg("failover", "site2", "--json").out)
            assert doc["ok"], doc
            lost_back.append(p.lost)
            back.append(doc["seconds"])
            claimed = [x for x in lab.agent_log_times(active, "takeover requested") if x > asked]
            taken = [x for x in lab.agent_log_times(active, "taking the route table") if x > asked]
            handover.append(taken[0] - claimed[0])
    finally:
        lab.destroy()
    ms = lambda xs: f"{statistics.median(xs) * 1000:.0f} ms"  # noqa: E731
    t.add("failover", "2 sites", "active gateway killed: longest ping gap", gaps,
          f"detection (kill → standby claims) {ms(detect)}, switch (claim → other site moved) {ms(switch)}; "
          f"{sum(lost_fail)} pings lost in {len(gaps)} runs (~40 sent each); the VyOS/Serf design: 12 s detection "
          "+ 1 s switch")
    t.add("failover", "2 sites", "healed gateway returns as standby (boot until sshd answers)", heals,
          f"ping 5/s: **{sum(lost_heal)} lost** in {len(lost_heal)} heals")
    t.add("failover", "2 sites", "wgmesh failover (planned, until every host follows)", back,
          f"ping 5/s: **{sum(lost_back)} lost** in {len(back)} switches; handover (claim → every host routes the "
          f"site to it → route table taken) {ms(handover)}")


INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")


def case_scale(t: Table, n: int, s: Settings) -> None:
    """The controller's cost per host: a lab of n plain sites (no servers, no verify at build),
    then `wgmesh push` after a reset (first start on every host) and a no-op push, each watched
    from /proc: peak open fds and threads of the wgmesh process, and fds per host.

    Every wireguard-go holds an inotify instance (on its UAPI socket), and the kernel allows 128
    per user by default: past ~120 sites the rest fail at `wg setconf`. The limit is raised for
    the case and put back."""
    lab = BenchLab(n, 0, s.work)
    lab.name = f"bs{n}"
    inotify = int(INOTIFY.read_text())
    try:
        INOTIFY.write_text(str(max(inotify, 4 * n)))
        r = lab.wg("up", "--no-verify", "--json", *lab.up_vars(sites=n, servers=0))
        doc = json.loads(r.out)
        assert doc["ok"], doc["push"]["failed"]
        tm = doc["timings"]
        t.add("scale", str(n), "wgmesh up --no-verify (build the lab, push)", [r],
              f"terraform {tm['terraform']:.2f} s, push {tm['push']:.2f} s")
        scale_pushes(t, lab, s.reps)
    finally:
        lab.destroy()
        INOTIFY.write_text(str(inotify))


def scale_pushes(t: Table, lab: BenchLab, reps: int) -> None:
    for what, first in [("first start everywhere", True), ("no-op", False)]:
        peaks = Peaks()

        def one(first=first, peaks=peaks) -> Run:
            if first:
                lab.reset()
            res = measure([*WGMESH, "-i", lab.name, "push"], env=wenv(lab.root), watch=peaks)
            assert not first or lab.all_up()
            return res

        t.add("scale", str(lab.n), f"wgmesh push ({what})", repeat(one, reps, False),
              f"peak {peaks.fds} open fds ({peaks.fds / lab.n:.2f} per host), peak {peaks.threads} threads")


def _set_mtu(lab: BenchLab, mtu: int) -> None:
    p = lab.root / "inventories" / f"{lab.name}.json"
    doc = json.loads(p.read_text())
    doc["mesh"]["mtu"] = mtu
    p.write_text(json.dumps(doc))


# ---------------------------------------------------------------- main


def machine(meshconf: str) -> str:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem = next((line.split()[1] for line in meminfo if line.startswith("MemTotal")), "?")
    tf = subprocess.run(["terraform", "version"], check=False, capture_output=True, text=True,
                        env=dict(os.environ, TF_CLI_CONFIG_FILE="/dev/null")).stdout.splitlines()[0]
    wmc = subprocess.run([str(Path(meshconf).parent / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('wg-meshconf'))"],
                         check=False, capture_output=True, text=True).stdout.strip()
    wgm = subprocess.run([*WGMESH, "--version"], check=False, capture_output=True, text=True).stdout.strip()
    return (f"{datetime.date.today().isoformat()} · {os.cpu_count()} cores · {int(mem) / 1024 / 1024:.1f} GiB · "
            f"Linux {platform.release()} · Python {platform.python_version()} · {tf} · {wgm} · wg-meshconf {wmc}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wg-meshconf", required=True)
    ap.add_argument("--smoke", action="store_true", help="smallest sizes, once each")
    ap.add_argument("--cases", default="startup,genconfig,inventory,push,verify,change,failover,wan,sites50")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--work", default=str(HERE / "work"))
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (the push/verify/change cases build a lab of network namespaces)", file=sys.stderr)
        return 2
    cases = set(a.cases.split(","))
    reps, warm = (1, False) if a.smoke else (a.repeat, True)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    # Bytecode as an installed package has it: with PYTHONDONTWRITEBYTECODE set, a module changed
    # since its last compile would be compiled again at every run of every case (pip compiled
    # wg-meshconf's).
    compileall.compile_dir(ROOT / "wgmesh", quiet=1)
    s = Settings(reps, warm, a.wg_meshconf, work)
    info = machine(a.wg_meshconf)
    print(f"machine: {info}", flush=True)
    t = Table()
    t0 = time.perf_counter()
    try:
        if "startup" in cases:
            case_startup(t, s)
        if "genconfig" in cases:
            case_genconfig(t, [10] if a.smoke else [10, 100, 300, 1000], [] if a.smoke else [5000], s)
        if "inventory" in cases:
            case_inventory(t, 10 if a.smoke else 1000, 3 if a.smoke else 100, s)
        if cases & {"push", "verify", "change"}:
            case_push_verify(t, [10] if a.smoke else [10, 30], s, 10 if "change" in cases else None)
        if "failover" in cases:
            case_failover(t, s)
        if cases & {"wan", "sites50"}:  # bench/wan.py: distance (wan_delay_ms), 50 sites end to end
            __import__("wan").run_cases(t, s, cases, a.smoke)
        if "scale" in cases:  # never in the default list nor --smoke: a 200-site lab takes minutes
            case_scale(t, 200, s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mode = "smoke run (smallest sizes, one run each)" if a.smoke else f"full run ({reps} runs after a warm-up)"
    header = (f"# wgmesh benchmarks\n\n{mode}, {time.perf_counter() - t0:.0f} s in all.\n\n"
              f"Machine: {info}\n\nProduced by `bench/run`{' --smoke' if a.smoke else ''}; "
              "see bench/bench.py for what each row measures.")
    Path(a.out).write_text(t.markdown(header))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
