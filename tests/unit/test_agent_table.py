"""The agent's hold on its site's route table (wgmesh/agent/agent.py, hostops.RouteTable) around a
handover: the Agent itself, its messages captured, the host's commands (`ip addr`, the gratuitous
ARP) replaced by a fake LAN interface. The rule's own decisions: test_agent_rule.py; the real thing
on real hosts: tests/integration/test_lab_ha.py."""

from __future__ import annotations

import json
import subprocess

import pytest

from wgmesh.agent import agent as agentmod
from wgmesh.agent import hostops, rule

VIP = "10.10.2.1/24"
SITES = {"site1": ["site1a", "site1b"], "site2": ["site2a", "site2b"]}


def config(name: str) -> rule.Config:
    names = sorted(g for gws in SITES.values() for g in gws)
    site = next(s for s, gws in SITES.items() if name in gws)
    return rule.parse_config({
        "name": name, "interface": "wg0", "port": 0, "interval": 0.25, "dead": 1.5,
        "agents": {a: f"10.200.0.{i + 1}" for i, a in enumerate(names)},
        "keys": {g: f"key-{g}" for g in names},
        "sites": {s: {"gateways": gws, "prefixes": [f"10.10.{s[-1]}.0/24"]} for s, gws in SITES.items()},
        "site": site, "route_table": {"kind": "vip", "address": f"10.10.{site[-1]}.1/24", "interface": "lan0"},
        "destinations": [],
    })


class Lan:
    """The gateway's LAN interface: its addresses, and every command and ARP in order."""

    def __init__(self) -> None:
        self.addresses: set[str] = set()
        self.log: list[str] = []
        self.garp_fails = False

    def run(self, cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        out = ""
        if cmd[:3] == ["ip", "-o", "-4"]:
            out = "".join(f"3: lan0    inet {a} scope global lan0\n" for a in sorted(self.addresses))
        elif cmd[:3] == ["ip", "addr", "replace"]:
            self.addresses.add(cmd[3])
            self.log.append(f"add {cmd[3]}")
        elif cmd[:3] == ["ip", "addr", "del"]:
            self.addresses.discard(cmd[3])
            self.log.append(f"del {cmd[3]}")
        return subprocess.CompletedProcess(cmd, 0, out, "")

    def garp(self, iface: str, address: str) -> None:
        if self.garp_fails:
            raise OSError("Network is down")
        self.log.append(f"garp {address}")


@pytest.fixture
def lan(monkeypatch, tmp_path):
    lan = Lan()
    monkeypatch.setattr(agentmod, "STATE", str(tmp_path / "state.json"))
    monkeypatch.setattr(agentmod, "CONTROL", str(tmp_path / "agent.sock"))
    monkeypatch.setattr(hostops, "run", lan.run)
    monkeypatch.setattr(hostops, "garp", lan.garp)
    monkeypatch.setattr(hostops, "wg_allowed", lambda iface: None)  # the tunnel is not this test's
    return lan


def start(name: str) -> tuple[agentmod.Agent, list[dict]]:
    a = agentmod.Agent(config(name))
    sent: list[dict] = []
    a.send = lambda now: sent.append(a.brain.message(now, a.applied, a.table.status == "held"))  # type: ignore[method-assign]
    return a, sent


def tell(a: agentmod.Agent, sender: str, now: float, claims=None, routes=None, holds=False) -> None:
    msg = {"v": 1, "from": sender, "sees": {}, "claims": claims or {}, "routes": routes or {}}
    if holds:
        msg["holds"] = True
    a.brain.receive(sender, msg, now)


def test_the_new_gateway_takes_the_address_only_once_every_host_routes_the_site_to_it(lan):
    a, sent = start("site2b")
    now = a.brain.started + 2
    tell(a, "site2a", now, claims={"site2": 1})
    for h in ("site1a", "site1b"):
        tell(a, h, now, routes={"site2": "site2a"})
    a.brain.takeover(0.0, now)
    a.after_decision(now)
    assert sent[0]["claims"] == {"site2": 2} and "holds" not in sent[0]  # the claim went out first
    assert a.table.status == hostops.HANDOVER and lan.log == []
    tell(a, "site1a", now + 0.01, routes={"site2": "site2b"})
    a.route_table(now + 0.01, tick=False)
    a.route_table(now + 0.3, tick=True)  # a tick changes nothing while a host still routes elsewhere
    assert a.table.status == hostops.HANDOVER and lan.log == []
    tell(a, "site1b", now + 0.32, routes={"site2": "site2b"})
    a.route_table(now + 0.32, tick=False)
    assert lan.log == ["garp 10.10.2.1", f"add {VIP}"]  # the ARP first: the address is slower
    assert a.table.status == "held" and sent[-1].get("holds") is True
    with open(agentmod.STATE) as f:
        assert json.load(f)["route_table"] == "held"


def test_a_host_that_never_answers_holds_the_handover_for_at_most_handover_seconds(lan):
    a, _ = start("site2b")
    now = a.brain.started + 2
    tell(a, "site2a", now, claims={"site2": 1})
    tell(a, "site1a", now)
    a.brain.takeover(0.0, now)
    a.after_decision(now)
    tell(a, "site1a", now + rule.HANDOVER - 0.05)  # heard, and still says nothing of site2
    a.route_table(now + rule.HANDOVER - 0.05, tick=True)
    assert lan.log == []
    a.route_table(now + rule.HANDOVER, tick=True)
    assert lan.log == ["garp 10.10.2.1", f"add {VIP}"] and a.table.status == "held"


def yielded(lan: Lan) -> tuple[agentmod.Agent, float]:
    """site2a active with the address, then site2b's higher claim: site2a yields (at the time returned)."""
    a, _ = start("site2a")
    now = a.brain.started + 2
    tell(a, "site1a", now)
    a.brain.claim("start", 0.0, now)
    a.after_decision(now)
    assert lan.addresses == {VIP} and a.table.status == "held"
    now += 0.1
    tell(a, "site2b", now, claims={"site2": 2})
    tell(a, "site1a", now)
    a.brain.decide(now, 0.0)
    a.after_decision(now)
    assert a.brain.role == rule.STANDBY
    return a, now


def test_the_old_gateway_keeps_the_address_until_the_new_one_holds_it(lan):
    a, now = yielded(lan)
    assert lan.addresses == {VIP}
    tell(a, "site2b", now + 0.2, claims={"site2": 2}, holds=True)
    a.route_table(now + 0.2, tick=False)
    assert lan.addresses == set() and lan.log[-1] == f"del {VIP}" and a.table.status == "-"


def test_the_old_gateway_lets_the_address_go_when_the_new_one_never_holds_it(lan):
    a, now = yielded(lan)
    t = now + rule.HANDOVER + 1.5 - 0.1
    for x in (now + 1, t):
        tell(a, "site2b", x, claims={"site2": 2})
        a.route_table(x, tick=True)
    assert lan.addresses == {VIP}
    tell(a, "site2b", t + 0.2, claims={"site2": 2})
    a.route_table(t + 0.2, tick=True)
    assert lan.addresses == set()


def test_an_agent_restarted_while_yielding_still_lets_the_address_go(lan, tmp_path):
    """A push re-executes every agent (SIGHUP): one that was yielding the address starts as
    standby with the address on its interface."""
    lan.addresses.add(VIP)
    with open(agentmod.STATE, "w") as f:
        json.dump({"name": "site2a", "site": "site2", "role": "standby", "epoch": 2, "route_table": "held"}, f)
    a, _ = start("site2a")
    now = a.brain.started + 0.1
    tell(a, "site2b", now, claims={"site2": 2})
    a.route_table(now, tick=True)
    assert lan.addresses == {VIP}  # site2b does not say it holds it yet
    tell(a, "site2b", now + 0.1, claims={"site2": 2}, holds=True)
    a.route_table(now + 0.1, tick=False)
    assert lan.addresses == set()


def test_an_agent_restarted_during_a_handover_goes_on_waiting(lan):
    with open(agentmod.STATE, "w") as f:
        json.dump({"name": "site2b", "site": "site2", "role": "active", "epoch": 2, "route_table": "handover"}, f)
    a, _ = start("site2b")
    now = a.brain.started + 0.1
    tell(a, "site1a", now, routes={"site2": "site2a"})
    a.route_table(now, tick=True)
    assert lan.log == [] and a.table.status == hostops.HANDOVER
    tell(a, "site1a", now + 0.1, routes={"site2": "site2b"})
    a.route_table(now + 0.1, tick=False)
    assert lan.addresses == {VIP}


def test_a_failed_gratuitous_arp_does_not_keep_the_address_from_being_taken(lan):
    lan.garp_fails = True
    a, _ = start("site2a")
    now = a.brain.started + 2
    tell(a, "site1a", now)
    a.brain.claim("site2b lost", 0.0, now)  # a dead partner: at once
    a.after_decision(now)
    assert lan.addresses == {VIP} and a.table.status == "held"
