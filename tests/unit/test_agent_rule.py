"""The failover rule of the agent (wgmesh/agent/agent.py, Brain), with plain values: agents
exchange their messages in memory, links are cut and hosts die by not delivering."""

from __future__ import annotations

import pytest

from wgmesh.agent.rule import ACTIVE, OBSERVER, STANDBY, Brain, parse_config

INTERVAL, DEAD = 0.25, 1.5


def config(name: str, sites: dict[str, list[str]], singles: list[str]) -> dict:
    agents = [g for gws in sites.values() for g in gws] + singles
    my_site = next((s for s, gws in sites.items() if name in gws), None)
    return {
        "name": name, "interface": "wg0", "port": 51821, "interval": INTERVAL, "dead": DEAD,
        "agents": {a: f"10.200.0.{i + 1}" for i, a in enumerate(sorted(agents))},
        "keys": {g: f"key-{g}" for gws in sites.values() for g in gws},
        "sites": {
            s: {"gateways": gws, "prefixes": [f"10.10.{i + 1}.0/24"]} for i, (s, gws) in enumerate(sites.items())
        },
        "site": my_site, "route_table": None, "destinations": [],
    }


class Mesh:
    """Brains ticking together every INTERVAL; a message is delivered unless a host is dead or
    the link between the two is cut."""

    def __init__(self, sites: dict[str, list[str]], singles: list[str] = ()):
        self.sites, self.singles = sites, list(singles)
        self.now = 100.0
        self.brains = {n: self._brain(n) for n in self.names()}
        self.dead: set[str] = set()
        self.cut: set[frozenset[str]] = set()

    def names(self) -> list[str]:
        return [g for gws in self.sites.values() for g in gws] + self.singles

    def _brain(self, name: str) -> Brain:
        return Brain(parse_config(config(name, self.sites, self.singles)), started=self.now, since=self.now)

    def restart(self, name: str) -> None:
        """The host comes back with nothing remembered (a dead instance booted again)."""
        self.dead.discard(name)
        self.brains[name] = self._brain(name)

    def tick(self) -> None:
        self.now += INTERVAL
        msgs = []
        for name, b in self.brains.items():
            if name in self.dead:
                continue
            b.decide(self.now, self.now)
            msgs += [(name, to, b.message(self.now)) for to in b.recipients()]
        for frm, to, msg in msgs:
            if to not in self.dead and frozenset((frm, to)) not in self.cut:
                self.brains[to].receive(frm, msg, self.now)

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / INTERVAL)):
            self.tick()

    def until(self, cond, limit: float = 20.0) -> float:
        """Seconds until cond() holds (fails after limit)."""
        t0 = self.now
        while not cond():
            assert self.now - t0 < limit, "condition never held"
            self.tick()
        return self.now - t0

    def roles(self) -> dict[str, str]:
        return {n: b.role for n, b in self.brains.items() if n not in self.dead}

    def active(self, site: str) -> list[str]:
        return [g for g in self.sites[site] if g not in self.dead and self.brains[g].role == ACTIVE]


TWO = {"site1": ["site1a", "site1b"], "site2": ["site2a", "site2b"]}


def test_first_gateways_take_their_sites_and_everyone_routes_to_them():
    m = Mesh(TWO)
    m.run(3)
    assert m.roles() == {"site1a": ACTIVE, "site1b": STANDBY, "site2a": ACTIVE, "site2b": STANDBY}
    for n in ("site1a", "site1b"):
        assert m.brains[n].owners == {"site2": "site2a"}
    for n in ("site2a", "site2b"):
        assert m.brains[n].owners == {"site1": "site1a"}


def test_dead_gateway_is_replaced_within_dead_time_and_everyone_moves():
    m = Mesh(TWO)
    m.run(3)
    m.dead.add("site2a")
    took = m.until(lambda: m.brains["site2b"].role == ACTIVE)
    assert took <= DEAD + 2 * INTERVAL
    assert "site2a lost" in m.brains["site2b"].cause
    m.tick()  # the claim reaches the others
    assert m.brains["site1a"].owners["site2"] == "site2b"
    assert m.brains["site1b"].owners["site2"] == "site2b"
    assert m.brains["site2b"].epoch == 2


def test_healed_gateway_returns_as_standby_and_nothing_moves():
    m = Mesh(TWO)
    m.run(3)
    m.dead.add("site2a")
    m.run(3)
    m.restart("site2a")
    m.run(10)
    assert m.active("site2") == ["site2b"]
    assert m.brains["site2a"].role == STANDBY
    assert m.brains["site1a"].owners["site2"] == "site2b"


def test_cut_between_the_two_gateways_keeps_exactly_one_active():
    m = Mesh(TWO)
    m.run(3)
    m.cut.add(frozenset(("site2a", "site2b")))
    for _ in range(60):  # 15 s, checked at every tick
        m.tick()
        assert m.active("site2") == ["site2a"]
    assert m.brains["site1a"].owners["site2"] == "site2a"


def test_cut_with_the_second_gateway_active_keeps_it_active():
    """The first gateway, standby after a failover, must not take the site back when it merely
    stops hearing its partner (the witnesses still do and relay its claim)."""
    m = Mesh(TWO)
    m.run(3)
    m.brains["site2b"].takeover(m.now)
    m.run(2)
    assert m.active("site2") == ["site2b"]
    m.cut.add(frozenset(("site2a", "site2b")))
    for _ in range(60):
        m.tick()
        assert m.active("site2") == ["site2b"]


def test_one_witness_is_enough_against_split_brain():
    m = Mesh({"site2": ["site2a", "site2b"]}, singles=["site1"])
    m.run(3)
    assert m.brains["site1"].role == OBSERVER
    m.cut.add(frozenset(("site2a", "site2b")))
    for _ in range(60):
        m.tick()
        assert m.active("site2") == ["site2a"]


def test_standby_cut_off_from_everyone_claims_nothing():
    m = Mesh(TWO)
    m.run(3)
    m.cut |= {frozenset(("site2b", o)) for o in m.names() if o != "site2b"}
    m.run(10)
    assert m.active("site2") == ["site2a"]


def test_active_cut_off_from_everyone_steps_down_and_the_standby_takes_over():
    m = Mesh(TWO)
    m.run(3)
    m.cut |= {frozenset(("site2a", o)) for o in m.names() if o != "site2a"}
    m.until(lambda: m.brains["site2b"].role == ACTIVE)
    m.until(lambda: m.brains["site2a"].role == STANDBY)
    assert m.brains["site2a"].cause.startswith("isolated")
    m.cut.clear()
    m.run(5)
    assert m.active("site2") == ["site2b"]


def test_takeover_by_hand_moves_the_site_at_the_next_decision():
    m = Mesh(TWO)
    m.run(3)
    assert m.brains["site2b"].takeover(m.now).startswith("ok")
    m.tick()  # the claim reaches everyone
    m.tick()  # everyone decides on it (the agent decides as soon as a claim changes)
    assert m.active("site2") == ["site2b"]
    assert m.brains["site1a"].owners["site2"] == "site2b"
    assert m.brains["site2a"].cause == "site2b took over (epoch 2)"
    assert m.brains["site2b"].takeover(m.now) == "ok: already active (epoch 2)"


def test_takeover_on_a_host_of_no_site_is_refused():
    m = Mesh({"site2": ["site2a", "site2b"]}, singles=["site1"])
    assert m.brains["site1"].takeover(m.now).startswith("error")


@pytest.mark.parametrize("second_first", [False, True])
def test_second_gateway_alone_at_first_start_waits_then_takes_the_site(second_first):
    """The first gateway's agent is not running yet (a first push, host after host)."""
    m = Mesh(TWO)
    m.dead.add("site2a")
    m.run(2 * DEAD)
    assert m.brains["site2b"].role == STANDBY  # waits longer for a partner never heard of
    m.run(3 * DEAD)
    assert m.brains["site2b"].role == ACTIVE
    if second_first:
        m.restart("site2a")
        m.run(5)
        assert m.active("site2") == ["site2b"]
