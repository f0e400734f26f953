"""HA on real systemd hosts (`--var init=systemd --var ha=true`): the failover agent runs as the
systemd unit wgmesh-agent, survives the death and boot of its host with no push, and a dead
active gateway is replaced under a 5/s ping."""

from __future__ import annotations

import time

from tests.labkit import Ping

LAB_NAME = "hs"
FIGURES: dict[str, object] = {}


def _ha(lab) -> dict:
    return lab.json("status", check_rc=None)["ha"]


def _until(cond, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.5)


def test_up_runs_the_agent_as_a_systemd_unit(lab):
    doc = lab.json("up", *lab.up_vars(sites=2, servers=0, ha="true", init="systemd"))
    assert doc["ok"], doc
    for h in ("site1a", "site1b", "site2a", "site2b"):
        assert lab.host(h, "systemctl", "is-enabled", "wgmesh-agent").stdout.strip() == "enabled"
        assert lab.host(h, "systemctl", "is-active", "wgmesh-agent").stdout.strip() == "active"
    assert _ha(lab)["site2"]["active"] == "site2a"


def test_dead_active_gateway_is_replaced_and_comes_back_as_standby_by_itself(lab):
    ping = Ping.start(lab, "site1-vm", lab.instance_address("site2a"))
    try:
        time.sleep(2)
        lab.fail("site2a")
        time.sleep(6)
    finally:
        sent, received, gap = ping.stop()
    FIGURES["systemd: active gateway killed: longest gap (s)"] = round(gap, 2)
    assert gap <= 4.0, (sent, received, gap)
    assert _ha(lab)["site2"]["active"] == "site2b"
    with Ping(lab, "site1-vm", lab.instance_address("site2a"), count=40) as ping:
        FIGURES["systemd: heal (boot until sshd answers, s)"] = round(lab.heal("site2a"), 2)
        # systemd starts wg-quick@wg0 and wgmesh-agent at boot: no push
        _until(lambda: _ha(lab)["site2"]["gateways"]["site2a"]["role"] == "standby", 20)
    FIGURES["systemd: heal: lost / sent"] = f"{ping.lost} / {ping.sent}"
    assert ping.lost == 0, (ping.sent, ping.lost)
    assert _ha(lab)["site2"]["active"] == "site2b"


def test_failover_back_and_verify(lab):
    with Ping(lab, "site1-vm", lab.instance_address("site2a"), count=30) as ping:
        doc = lab.json("failover", "site2")
    FIGURES["systemd: wgmesh failover: lost / sent"] = f"{ping.lost} / {ping.sent}"
    assert doc["ok"] and doc["to"] == "site2a" and ping.lost <= 1, (doc, ping.lost)  # see test_lab_ha
    v = lab.json("verify", check_rc=None)
    assert v["ok"], v["failures"]


def test_figures():
    print()
    for k, val in FIGURES.items():
        print(f"  {k}: {val}")
    assert FIGURES
