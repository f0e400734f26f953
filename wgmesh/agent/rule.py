"""The failover rule of wgmesh's agent (agent.py runs it): the agent's config and the Brain,
which decides from what it heard who is active. Pure: time comes in as arguments. Shipped
beside agent.py on the hosts; standard library only (Python >= 3.9).

The rule, evaluated the same way by every party from the same facts:

- A gateway is alive while someone heard it within DEAD seconds: itself, the observer, or any
  agent whose fresh report says it did (the report carries the age, so evidence never outlives
  DEAD).
- A site's active gateway is the one with the highest claim (epoch, then the first gateway of
  the site) among its alive gateways. Everyone routes the site's prefixes to that gateway.
- A standby claims (epoch + 1) when its partner is not alive while the standby itself hears at
  least one other agent (a gateway cut off from everyone claims nothing), when neither claims
  and it is the first gateway, or when an operator asks it to (`wgmesh failover`).
- An active gateway yields to a higher claim, and steps down when it hears no other agent at all
  for DEAD seconds (nobody could reach it anyway).

So when only the link between the two gateways of a site breaks, the other agents still hear
both, report both alive, and the standby stays standby: exactly one is active.

A switch away from a gateway that is still alive (`wgmesh failover`) is a handover. WireGuard
accepts a source address from one peer only, so every other host accepts the site's traffic
from exactly one of its gateways at a time; the site's traffic must leave through that one. So
the new active gateway claims first and takes the site's route table only once every agent it
hears reports routing the site to it (at most HANDOVER seconds); the old one keeps the table
until the new one reports holding it. A gateway that takes over from a dead partner takes the
table at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACTIVE, STANDBY, OBSERVER = "active", "standby", "observer"
NEVER_HEARD = 4  # x DEAD: how long the second gateway waits for a partner never heard of
HANDOVER = 1.0  # seconds a handover waits at most for the agents to route the site to the new gateway


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Site:
    name: str
    gateways: tuple[str, ...]  # in priority order: the first wins a tie
    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    name: str
    interface: str
    port: int
    interval: float
    dead: float
    agents: dict[str, str]  # name → tunnel address (the one the agents talk on)
    tunnels: dict[str, tuple[str, ...]]  # HA gateway → its tunnel prefixes, as its AllowedIPs start
    keys: dict[str, str]  # name → WireGuard public key (the gateways of HA sites)
    sites: dict[str, Site]
    site: str | None  # the HA site this host is a gateway of
    route_table: dict[str, Any] | None
    destinations: tuple[str, ...]  # the other sites' prefixes (route tables that name them)

    @property
    def gateways(self) -> frozenset[str]:
        return frozenset(g for s in self.sites.values() for g in s.gateways)

    @property
    def partner(self) -> str | None:
        if self.site is None:
            return None
        return next(g for g in self.sites[self.site].gateways if g != self.name)

    def tunnel(self, gateway: str) -> tuple[str, ...]:
        """Its tunnel prefixes (what its AllowedIPs start with in every other peer's file)."""
        if gateway in self.tunnels:
            return self.tunnels[gateway]
        addr = self.agents[gateway]
        return (f"{addr}/{128 if ':' in addr else 32}",)

    def site_of(self, gateway: str) -> str | None:
        for s in self.sites.values():
            if gateway in s.gateways:
                return s.name
        return None


def parse_config(d: dict[str, Any]) -> Config:
    sites = {
        name: Site(name, tuple(s["gateways"]), tuple(s["prefixes"])) for name, s in d["sites"].items()
    }
    return Config(
        name=d["name"], interface=d["interface"], port=int(d["port"]), interval=float(d["interval"]),
        dead=float(d["dead"]), agents=dict(d["agents"]), keys=dict(d["keys"]), sites=sites,
        tunnels={g: tuple(t) for g, t in (d.get("tunnels") or {}).items()},
        site=d.get("site"), route_table=d.get("route_table"), destinations=tuple(d.get("destinations", ())),
    )


# ---------------------------------------------------------------- the rule (pure)


@dataclass
class Report:
    received: float  # monotonic time
    sees: dict[str, tuple[float, int]]  # HA gateway → (seconds since the sender heard it, its claim or 0)
    claims: dict[str, int]  # site → epoch
    routes: dict[str, str] = field(default_factory=dict)  # site → gateway its interface routes it to
    holds: bool = False  # (a gateway) it holds its site's route table


@dataclass
class Brain:
    """What one agent knows and decides. Pure: time comes in as arguments; decisions come out
    as a role, a claim and the owner of every HA site (tested with plain values)."""

    cfg: Config
    started: float
    role: str = OBSERVER
    epoch: int = 0  # our claim, while active
    since: float = 0.0  # wall time of the last role change
    cause: str = "start"
    heard: dict[str, float] = field(default_factory=dict)  # agent → monotonic time last heard
    reports: dict[str, Report] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # site → gateway we route it to
    epochs: dict[str, int] = field(default_factory=dict)  # site → highest epoch ever seen
    alone_since: float | None = None
    handover_until: float | None = None  # our claim took the site from a live partner: see waiting_for
    yield_until: float | None = None  # we yielded to our live partner: see may_release

    @property
    def is_active(self) -> bool:
        return self.role == ACTIVE

    def __post_init__(self) -> None:
        if self.cfg.site is not None and self.role == OBSERVER:
            self.role = STANDBY

    # -- input

    def receive(self, sender: str, msg: dict[str, Any], now: float) -> bool:
        """Take a message in; True when it changes a claim we knew (decide again at once)."""
        if sender == self.cfg.name or sender not in self.cfg.agents:
            return False
        before = self.reports.get(sender)
        self.heard[sender] = now
        sees = {str(k): (float(v[0]), int(v[1])) for k, v in (msg.get("sees") or {}).items()}
        claims = {str(k): int(v) for k, v in (msg.get("claims") or {}).items()}
        routes = {str(k): str(v) for k, v in (msg.get("routes") or {}).items()}
        self.reports[sender] = Report(now, sees, claims, routes, msg.get("holds") is True)
        for site, epoch in claims.items():
            if site in self.cfg.sites and sender in self.cfg.sites[site].gateways:
                self.epochs[site] = max(self.epochs.get(site, 0), epoch)
        return before is None or before.claims != claims

    # -- facts

    def hears(self, agent: str, now: float) -> bool:
        t = self.heard.get(agent)
        return t is not None and now - t < self.cfg.dead

    def _evidence(self, gateway: str, now: float) -> list[int]:
        """The claims relayed about `gateway` by the agents we hear, whose evidence is fresh
        (the report's age plus the age it gives is under DEAD)."""
        out = []
        for sender, r in self.reports.items():
            if sender == gateway or not self.hears(sender, now):
                continue
            seen = r.sees.get(gateway)
            if seen is not None and (now - r.received) + seen[0] < self.cfg.dead:
                out.append(seen[1])
        return out

    def alive(self, gateway: str, now: float) -> bool:
        return gateway == self.cfg.name or self.hears(gateway, now) or bool(self._evidence(gateway, now))

    def claim_of(self, gateway: str, site: str, now: float) -> int | None:
        """Its claim on the site: what it told us, or else what fresh witnesses relay."""
        if gateway == self.cfg.name:
            return self.epoch if self.role == ACTIVE else None
        if self.hears(gateway, now):
            return self.reports[gateway].claims.get(site)
        relayed = max(self._evidence(gateway, now), default=0)
        return relayed or None

    def active_of(self, site: str, now: float, direct: bool = False) -> str | None:
        """The gateway with the highest claim among the alive ones (direct: heard ourselves)."""
        best: tuple[int, int] | None = None
        winner = None
        for rank, g in enumerate(self.cfg.sites[site].gateways):
            if direct and g != self.cfg.name and not self.hears(g, now):
                continue
            if not self.alive(g, now):
                continue
            epoch = self.claim_of(g, site, now)
            if epoch is None:
                continue
            key = (epoch, -rank)
            if best is None or key > best:
                best, winner = key, g
        return winner

    def ever_heard(self, gateway: str) -> bool:
        return gateway in self.heard or any(gateway in r.sees for r in self.reports.values())

    def others_heard(self, now: float) -> list[str]:
        return [a for a in self.cfg.agents if a not in (self.cfg.name, self.cfg.partner) and self.hears(a, now)]

    # -- decisions

    def _become(self, role: str, cause: str, wall: float) -> None:
        self.role, self.cause, self.since = role, cause, wall

    def claim(self, cause: str, wall: float, now: float, by_hand: bool = False) -> None:
        """Take the site. A handover (see waiting_for) when the partner is alive and active, and
        always by hand (an operator's switch: the partner may not have been heard yet since our
        start, and the others move within milliseconds anyway when it is dead)."""
        site, partner = self.cfg.site, self.cfg.partner
        assert site is not None and partner is not None
        live = by_hand or (self.alive(partner, now) and self.claim_of(partner, site, now) is not None)
        self.epoch = max(self.epochs.get(site, 0), self.epoch) + 1
        self.epochs[site] = self.epoch
        self.handover_until = now + HANDOVER if live else None
        self.yield_until = None
        self._become(ACTIVE, cause, wall)

    def waiting_for(self, now: float) -> list[str]:
        """During a handover: the agents we hear that do not yet route our site to us (the route
        table waits for them). Empty when there is no handover, all of them do, or HANDOVER
        seconds have passed."""
        site = self.cfg.site
        if self.role != ACTIVE or self.handover_until is None or site is None:
            return []
        if now >= self.handover_until:
            self.handover_until = None
            return []
        own = self.cfg.sites[site].gateways
        return [a for a in self.cfg.agents if a not in own and self.hears(a, now)
                and self.reports[a].routes.get(site) != self.cfg.name]

    def may_release(self, now: float) -> bool:
        """Not active: may the route table go? After a yield, only once the new active gateway
        reports holding it (or it is gone, or HANDOVER + DEAD seconds have passed): until then
        the site's traffic leaves through us, towards hosts that still accept it from us."""
        if self.role == ACTIVE:
            return False
        partner = self.cfg.partner
        if self.yield_until is None or partner is None or now >= self.yield_until:
            return True
        r = self.reports.get(partner)
        return not self.hears(partner, now) or (r is not None and r.holds)

    def decide(self, now: float, wall: float) -> None:
        """One step of the rule for our own site (a gateway's), then the owners of the others."""
        site, partner = self.cfg.site, self.cfg.partner
        if site is not None and partner is not None and now - self.started >= self.cfg.dead:
            self._decide_own(site, partner, now, wall)  # once we heard what there is to hear
        for s in self.cfg.sites:
            if s == site:
                continue
            owner = self.active_of(s, now, direct=True)
            if owner is not None:
                self.owners[s] = owner

    def _decide_own(self, site: str, partner: str, now: float, wall: float) -> None:
        others = self.others_heard(now)
        if others:
            self.alone_since = None
        elif self.alone_since is None:
            self.alone_since = now
        p_claim = self.claim_of(partner, site, now)
        first = self.cfg.sites[site].gateways[0] == self.cfg.name
        if self.role == ACTIVE:
            if p_claim is not None and (p_claim, 0 if first else 1) > (self.epoch, 1 if first else 0):
                self._become(STANDBY, f"{partner} took over (epoch {p_claim})", wall)
                self.yield_until = now + HANDOVER + self.cfg.dead
                self.handover_until = None
            elif self.alone_since is not None and now - self.alone_since >= self.cfg.dead:
                self._become(STANDBY, "isolated: no other agent heard", wall)
                self.yield_until = self.handover_until = None
        elif others:
            if self.alive(partner, now):
                if p_claim is None and first:
                    self.claim("no active gateway", wall, now)
            elif self.ever_heard(partner):
                self.claim(f"{partner} lost: heard by nobody for {self.cfg.dead:g} s", wall, now)
            elif first or now - self.started >= NEVER_HEARD * self.cfg.dead:
                # At a first start the first gateway takes the site; the second waits longer
                # for a partner it has never heard of before it takes the site alone.
                self.claim(f"{partner} not heard since start", wall, now)

    def takeover(self, wall: float, now: float) -> str:
        """An operator's request (`wgmesh failover`): claim now, whatever the partner does."""
        if self.cfg.site is None:
            return "error: this host is not a gateway of an HA site"
        if self.role == ACTIVE:
            return f"ok: already active (epoch {self.epoch})"
        self.claim("failover by hand", wall, now, by_hand=True)
        return f"ok: active (epoch {self.epoch})"

    # -- output

    def message(self, now: float, routes: dict[str, str] | None = None, holds: bool = False) -> dict[str, Any]:
        """What we tell the others; `routes`: where our interface routes each HA site (default:
        where we decided to), `holds`: we hold our site's route table."""
        sees = {
            g: [round(now - self.heard[g], 3), self._told(g)] for g in self.cfg.gateways if self.hears(g, now)
        }
        claims = {self.cfg.site: self.epoch} if self.role == ACTIVE and self.cfg.site else {}
        msg = {"v": 1, "from": self.cfg.name, "sees": sees, "claims": claims,
               "routes": dict(sorted((self.owners if routes is None else routes).items()))}
        if holds:
            msg["holds"] = True
        return msg

    def _told(self, gateway: str) -> int:
        site = self.cfg.site_of(gateway)
        r = self.reports.get(gateway)
        return r.claims.get(site, 0) if r is not None and site is not None else 0

    def recipients(self) -> list[str]:
        """A gateway of an HA site tells every agent; the others only tell the HA gateways
        (nobody needs to hear them but the gateways that count witnesses)."""
        if self.cfg.site is not None:
            return [a for a in self.cfg.agents if a != self.cfg.name]
        return [a for a in self.cfg.agents if a != self.cfg.name and a in self.cfg.gateways]
