"""Distance on the real lab (`--var wan_delay_ms=40`): the router holds every packet it forwards
40 ms, so a round trip controller → gateway, gateway → gateway and through the tunnels takes
at least 80 ms; wgmesh up and verify pass at that distance; a change of the delay re-times the
relay and rebuilds no host; destroy leaves no relay process behind."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tests.labkit import lab_leftovers

LAB_NAME = "wd"
DELAY = 40
FIGURES: dict[str, object] = {}
RELAY: list[str] = []  # the pids in the router namespace while the delay runs


def _rtts(out: str) -> list[float]:
    return [float(x) for x in re.findall(r" time=([\d.]+) ms", out)]


def _ping_from_controller(addr: str) -> list[float]:
    r = subprocess.run(["ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", addr], capture_output=True, text=True,
                       check=False, timeout=30)
    return _rtts(r.stdout)


def _ping_from(lab, host: str, addr: str) -> list[float]:
    return _rtts(lab.host(host, "ping", "-n", "-c", "5", "-i", "0.2", "-W", "2", addr, check=False).stdout)


def _router_pids(lab) -> list[str]:
    return subprocess.run(["ip", "netns", "pids", f"wgm-{lab.name}-rt"], capture_output=True, text=True,
                          check=False).stdout.split()


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_up_at_40_ms_builds_a_verified_mesh(lab):
    t = time.monotonic()
    doc = lab.json("up", *lab.up_vars(sites=2, servers=0, wan_delay_ms=DELAY))
    FIGURES["up, 2 sites at 40 ms (s)"] = round(time.monotonic() - t, 2)
    FIGURES["up's own timings (s)"] = doc["timings"]
    assert doc["ok"] and doc["peers"] == ["site1", "site2"], doc
    assert lab.tf_output("lab")["wan_delay_ms"] == DELAY
    RELAY.extend(_router_pids(lab))
    cmds = [_cmdline(p) for p in RELAY]
    assert any("wgmesh-lab-wan-relay wan0 40" in c for c in cmds), cmds


def test_round_trips_pay_the_delay_twice(lab):
    """Once each way, never twice (160 ms): the kernel answers the underlay pings; the tunnel's
    also cross wireguard-go at both ends (user space, on cores shared with every lab host)."""
    site1, site2 = lab.plan("site1"), lab.plan("site2")
    got = {
        "controller → site1": (_ping_from_controller(site1["ssh_host"]), 150),
        "site1 → site2 (underlay)": (_ping_from(lab, "site1", site2["endpoint"]), 150),
        "site1-vm → site2-vm (through the tunnel)": (_ping_from(lab, "site1-vm", lab.instance_address("site2")), 400),
    }
    for what, (rtts, most) in got.items():
        assert len(rtts) >= 4, (what, rtts)
        FIGURES[f"RTT {what} (ms, min/max)"] = (min(rtts), max(rtts))
        assert min(rtts) >= 2 * DELAY and max(rtts) < most, (what, rtts)
    # Inside a site nothing is delayed: the gateway's own LAN.
    lan = _ping_from(lab, "site1-vm", site1["private_address"])
    assert lan and max(lan) < 20, lan


def test_verify_passes_at_40_ms(lab):
    t = time.monotonic()
    doc = lab.json("verify")
    FIGURES["verify, 2 sites at 40 ms (s)"] = round(time.monotonic() - t, 2)
    assert doc["ok"] and not doc["failures"], doc["failures"]


def test_a_new_delay_retimes_the_relay_and_rebuilds_no_host(lab):
    before = lab.wg_pids("site1")
    doc = lab.json("up", "--var", "wan_delay_ms=10")
    assert doc["ok"], doc
    assert lab.wg_pids("site1") == before, "the host was rebuilt (its wireguard-go changed)"
    rtts = _ping_from_controller(lab.plan("site1")["ssh_host"])
    FIGURES["RTT controller → site1 at 10 ms (ms, min/max)"] = (min(rtts), max(rtts))
    assert min(rtts) >= 20 and max(rtts) < 80, rtts
    RELAY.extend(_router_pids(lab))


def test_destroy_leaves_no_relay_behind(lab):
    lab.wgmesh("destroy")
    assert not lab_leftovers(lab.name), lab_leftovers(lab.name)
    alive = [f"{p}: {_cmdline(p)[:80]}" for p in RELAY if "wgmesh-lab-wan" in _cmdline(p)]
    assert not alive, alive
    assert not Path(lab.state_dir, "wan-delay.log").exists()


def test_figures():
    print()
    for k, val in FIGURES.items():
        print(f"  {k}: {val}")
    assert any(k.startswith("RTT") for k in FIGURES), FIGURES
