"""The failover rule of the agent (wgmesh/agent/agent.py, Brain), with plain values: agents
exchange their messages in memory, links are cut and hosts die by not delivering."""

from __future__ import annotations

import pytest

from wgmesh.agent.rule import ACTIVE, HANDOVER, OBSERVER, STANDBY, Brain, parse_config

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
        self.mute_routes: set[str] = set()  # hosts whose messages say nothing of their routes (an older agent)
        self.sent: list[tuple[float, str, str, dict]] = []  # (time, from, to, message): everything delivered

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
            msg = b.message(self.now, holds=self.holds(name))
            if name in self.mute_routes:
                del msg["routes"]
            msgs += [(name, to, msg) for to in b.recipients()]
        for frm, to, msg in msgs:
            if to not in self.dead and frozenset((frm, to)) not in self.cut:
                self.brains[to].receive(frm, msg, self.now)
                self.sent.append((self.now, frm, to, msg))

    def holds(self, name: str) -> bool:
        """As the agent runs it: an active gateway takes its route table unless a handover waits."""
        b = self.brains[name]
        return b.role == ACTIVE and not b.waiting_for(self.now)

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
    m.brains["site2b"].takeover(m.now, m.now)
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
    assert m.brains["site2b"].takeover(m.now, m.now).startswith("ok")
    m.tick()  # the claim reaches everyone
    m.tick()  # everyone decides on it (the agent decides as soon as a claim changes)
    assert m.active("site2") == ["site2b"]
    assert m.brains["site1a"].owners["site2"] == "site2b"
    assert m.brains["site2a"].cause == "site2b took over (epoch 2)"
    assert m.brains["site2b"].takeover(m.now, m.now) == "ok: already active (epoch 2)"


def test_takeover_on_a_host_of_no_site_is_refused():
    m = Mesh({"site2": ["site2a", "site2b"]}, singles=["site1"])
    assert m.brains["site1"].takeover(m.now, m.now).startswith("error")


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


def test_planned_handover_takes_the_table_only_once_every_host_routes_the_site_there():
    """WireGuard accepts the site's source addresses from one gateway at a time: the new active
    gateway takes the route table once the others route the site to it; the old one keeps it
    until the new one holds it."""
    m = Mesh(TWO, singles=["pub"])
    m.run(3)
    b, a = m.brains["site2b"], m.brains["site2a"]
    b.takeover(m.now, m.now)
    assert b.role == ACTIVE and sorted(b.waiting_for(m.now)) == ["pub", "site1a", "site1b"]
    m.tick()  # the claim reaches everyone
    assert sorted(b.waiting_for(m.now)) == ["pub", "site1a", "site1b"]
    m.tick()  # a yields, the others route site2 to b and tell it so
    assert a.role == STANDBY and not a.may_release(m.now)  # b has not said it holds the table
    assert b.waiting_for(m.now) == [] and m.holds("site2b")
    m.tick()  # b says it holds the table
    assert a.may_release(m.now)
    # Nobody said it held the table before every other host routed the site to b.
    held = min(t for t, frm, _, msg in m.sent if frm == "site2b" and msg.get("holds") and msg.get("claims"))
    told = [(t, frm) for t, frm, to, msg in m.sent if to == "site2b" and msg["routes"].get("site2") == "site2b"]
    routed = max(min(t for t, frm in told if frm == h) for h in ("pub", "site1a", "site1b"))
    assert routed < held


def test_handover_waits_at_most_handover_seconds_for_a_host_that_never_answers():
    m = Mesh(TWO)
    m.run(3)
    m.mute_routes.add("site1b")
    b = m.brains["site2b"]
    b.takeover(m.now, m.now)
    m.run(0.5)
    assert b.waiting_for(m.now) == ["site1b"]
    took = m.until(lambda: not b.waiting_for(m.now))
    assert 0.5 + took >= HANDOVER and 0.5 + took <= HANDOVER + 0.25
    m.run(0.5)
    assert m.brains["site2a"].may_release(m.now)


def test_taking_over_from_a_dead_partner_takes_the_table_at_once():
    m = Mesh(TWO)
    m.run(3)
    m.dead.add("site2a")
    b = m.brains["site2b"]
    m.until(lambda: b.role == ACTIVE)
    assert b.waiting_for(m.now) == [] and b.handover_until is None


def test_old_gateway_gives_the_table_up_when_the_new_one_never_says_it_holds_it():
    """The new active gateway's reports lose `holds` (it cannot take the table): the old one
    keeps the table HANDOVER + DEAD seconds, then lets it go; an isolated one lets it go at once."""
    m = Mesh(TWO)
    m.run(3)
    m.holds = lambda name: False  # type: ignore[method-assign]
    m.brains["site2b"].takeover(m.now, m.now)
    a = m.brains["site2a"]
    m.until(lambda: a.role == STANDBY)
    yielded = m.now
    took = m.until(lambda: a.may_release(m.now))
    assert abs(took - (HANDOVER + DEAD)) <= 0.25, took
    assert m.now - yielded >= HANDOVER + DEAD - 0.25


def test_a_takeover_by_hand_is_a_handover_even_before_the_partner_was_heard():
    """`wgmesh failover` right after a push restarted the agents: the partner is not heard yet,
    and may be alive and active; the handover costs milliseconds when it is not."""
    m = Mesh(TWO)
    b = m.brains["site2b"]
    b.takeover(m.now, m.now)
    assert b.handover_until == m.now + HANDOVER
