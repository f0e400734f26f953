"""Distance and size on the lab, for bench/bench.py: the cases `wan` and `sites50`.

  wan       a lab of 30 sites (3 with --smoke) whose router holds every packet it forwards 40 ms
            (terraform/lab wan_delay_ms): 80 ms of round trip between the controller and every
            host, and between hosts, as between distant regions. wgmesh up end to end (with its
            terraform / push / verify split), wgmesh push after a reset (first start everywhere)
            against the serial scp + ssh wg-quick up loop on the same lab, their ratio (target:
            at least 10x; the loop runs once: ~85 s), wgmesh verify with the time of each of its
            passes; the round trips measured with ping
  sites50   (not with --smoke) wgmesh up --var sites=50 end to end, a second up (nothing to do),
            wgmesh verify with the time of each of its passes, then addpeer of one server + push

Peak RSS is wait4()'s, as bench.measure takes it: the largest of wgmesh and the processes it
waited for (Terraform, ssh). All the lab's hosts share this machine's cores: every row says the
load average (1 min) when it began.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys

# bench.py runs as a script (__main__): that module is `bench` here too. A second import would
# make classes of its own, and the table it builds would not know this module's runs.
if "bench" not in sys.modules and hasattr(sys.modules["__main__"], "BenchLab"):
    sys.modules["bench"] = sys.modules["__main__"]
from bench import PY, BenchLab, Run, Settings, Table, measure, repeat, wenv  # noqa: E402

DELAY_MS = 40
WAN_SITES = 30
BIG = 50


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def rtts(lab: BenchLab, src: str | None, addr: str) -> str:
    """min/median/max of 5 pings to `addr`, from the controller (src None) or from a lab host."""
    cmd = ["ping", "-n", "-q", "-c", "5", "-i", "0.2", "-W", "2", addr]
    out = (lab.host(src, *cmd, check=False) if src else subprocess.run(cmd, capture_output=True, text=True,
                                                                       check=False)).stdout
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", out)
    return f"{m.group(1)}/{m.group(2)}/{m.group(3)} ms" if m else "no reply"


def _split(doc: dict) -> str:
    tm = doc["timings"]
    return ", ".join(f"{k} {tm[k]:.2f} s" for k in ("terraform", "push", "verify") if k in tm)


def case_wan(t: Table, s: Settings, n: int, delay: int = DELAY_MS) -> None:
    lab = BenchLab(n, 0, s.work)
    lab.name = f"bw{n}"
    size = f"{n} @ {delay} ms"
    try:
        ld = load()
        r = lab.wg("up", "--json", *lab.up_vars(sites=n, servers=0, wan_delay_ms=delay))
        doc = json.loads(r.out)
        assert doc["ok"], doc.get("verify", {}).get("failures")
        t.add("wan", size, "wgmesh up (fresh lab, end to end)", [r], f"{_split(doc)}; {ld}")
        far = f"site{n}"
        t.notes.append(f"wan, {size}: ping RTT min/avg/max: controller → site1 "
                       f"{rtts(lab, None, lab.plan('site1')['ssh_host'])}, site1 → {far} (underlay) "
                       f"{rtts(lab, 'site1', lab.plan(far)['endpoint'])}, site1-vm → {far}-vm (through the "
                       f"tunnel) {rtts(lab, 'site1-vm', lab.instance_address(far))}")

        def wpush() -> Run:
            lab.reset()
            res = lab.wg("push")
            assert lab.all_up()
            return res

        def seed() -> float:
            lab.reset()
            took = lab.seed_loop()
            assert lab.all_up()
            return took

        ld = load()
        a = t.add("wan", size, "wgmesh push (all hosts, first start)", repeat(wpush, s.reps, s.warm), ld)
        ld = load()
        # once: at this distance the loop is round trips, ~85 s at 30 sites, and varies by < 1%
        b = t.add("wan", size, "serial scp + ssh wg-quick up loop", [seed()], f"one run; {ld}")
        t.ratio("wan", size, a, b, "wgmesh push faster than the loop (target: at least 10x)")
        lab.reset()
        lab.wg("push")
        ld = load()
        runs: list[tuple[Run, dict, list[tuple[str, float]]]] = repeat(lambda: profiled_verify(lab), s.reps, s.warm)
        for v, doc, _ in runs:
            assert v.rc == 0 and doc["ok"], (v.rc, doc.get("failures"))
        t.add("wan", size, "wgmesh verify (all pairs, subnets, instances)", [v for v, _, _ in runs],
              f"{n * (n - 1)} ordered pairs; last run: {_passes(runs[-1][2])}; {ld}")
    finally:
        lab.destroy()


# `wgmesh verify` with the time of each of its passes on stderr ("verify-pass NAME SECONDS"): the
# module's helpers wrapped where they are looked up (wgmesh itself unchanged). A pass whose helper
# is not there any more is simply not timed.
PROFILED_VERIFY = r"""
import sys, time
import wgmesh.commands.verify as v

def timed(name, fn):
    def run(*a, **k):
        t = time.monotonic()
        try:
            return fn(*a, **k)
        finally:
            print(f"verify-pass {name(a, k) if callable(name) else name} {time.monotonic() - t:.3f}",
                  file=sys.stderr, flush=True)
    return run

PASSES = {"prime": "prime (1 ping per pair, SSH connections opened)", "full": "full (tunnel, private, full-size)",
          "from_instance": "instances (through the gateways)", "one": "agent states"}
def pass_name(a, k):
    work = k.get("work", a[2] if len(a) > 2 else None)
    todo = [work]
    while todo and len(todo) < 50:  # a wrapper (e.g. releasing) holds the pass's own function
        fn = todo.pop(0)
        if getattr(fn, "__name__", "") in PASSES:
            return PASSES[fn.__name__]
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                if callable(cell.cell_contents):
                    todo.append(cell.cell_contents)
            except ValueError:
                pass
    return getattr(work, "__name__", "?")

if hasattr(v, "fan_out"):
    v.fan_out = timed(pass_name, v.fan_out)
for attr, name in (("collect_status", "handshakes (wg show)"), ("host_drift", "drift"), ("settle_ha", "ha")):
    if hasattr(v, attr):
        setattr(v, attr, timed(name, getattr(v, attr)))
sys.argv = ["wgmesh", *sys.argv[1:]]
from wgmesh.__main__ import main
main()
"""


def _passes(passes: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {sec:.2f} s" for name, sec in passes) or "passes not timed"


def profiled_verify(lab: BenchLab) -> tuple[Run, dict, list[tuple[str, float]]]:
    r = measure([PY, "-c", PROFILED_VERIFY, "-i", lab.name, "verify", "--json"], env=wenv(lab.root), check=False)
    passes = [(m.group(1), float(m.group(2))) for m in re.finditer(r"^verify-pass (.+) ([\d.]+)$", r.err, re.M)]
    return r, json.loads(r.out), passes


def case_sites50(t: Table, s: Settings, n: int = BIG) -> None:
    lab = BenchLab(n, 1, s.work)  # one server: the peer added by hand
    lab.name = f"b{n}"
    size = f"{n} sites"
    try:
        ld = load()
        r = lab.wg("up", "--json", *lab.up_vars(sites=n, servers=1), check=False)
        doc = json.loads(r.out) if r.out.strip() else {}
        assert r.rc == 0 and doc.get("ok"), (r.rc, (doc.get("verify") or {}).get("failures"), r.err[-3000:])
        t.add("sites50", size, f"wgmesh up --var sites={n} (fresh lab, end to end)", [r],
              f"{_split(doc)}; peak RSS: wgmesh, Terraform, ssh; {ld}")
        ld = load()
        r = lab.wg("up", "--json")
        doc = json.loads(r.out)
        assert doc["ok"], doc
        t.add("sites50", size, "wgmesh up again (nothing to change)", [r], f"{_split(doc)}; {ld}")

        ld = load()
        v, doc, passes = profiled_verify(lab)
        assert v.rc == 0 and doc["ok"], (v.rc, doc.get("failures"))
        probes = doc["probes"]
        t.add("sites50", size, "wgmesh verify (all pairs, subnets, instances)", [v],
              f"{n * (n - 1)} ordered pairs, {len(probes)} probes, {len(doc['handshakes'])} handshakes, "
              f"rtt median {statistics.median(p['rtt_ms'] for p in probes if p['rtt_ms'] is not None):.2f} ms; "
              f"{_passes(passes)}; {ld}")

        srv = lab.plan("srv1")
        ld = load()
        a = lab.wg("addpeer", "pub", "--endpoint", srv["endpoint"], "--ssh", f"root@{srv['ssh_host']}",
                   "--allowedips", srv["subnets"][0])
        p = lab.wg("push")
        t.add("sites50", size, "addpeer + push (one new peer: it starts, 50 syncconf)", [a.seconds + p.seconds],
              f"addpeer {a.seconds:.2f} s ({a.rss_mb:.0f} MB), push {p.seconds:.2f} s ({p.rss_mb:.0f} MB); {ld}")
    finally:
        lab.destroy()


def run_cases(t: Table, s: Settings, cases: set[str], smoke: bool) -> None:
    """The hook of bench.py's main()."""
    if "wan" in cases:
        case_wan(t, s, 3 if smoke else WAN_SITES)
    if "sites50" in cases:
        if smoke:
            print("  sites50: not with --smoke (a 50-site lab takes minutes)", flush=True)
        else:
            case_sites50(t, s)
