"""`wg show <if> dump` → per-peer status; the mesh matrix; the ping probe's results. Pure.
(What runs on the hosts is in remote/scripts/status.sh.)"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from wgmesh.model import Inventory

FRESH_SECONDS = 180  # WireGuard drops a session 180 s after its last handshake (REJECT_AFTER_TIME)


class LinkState(StrEnum):
    """One direction of a pair, as seen from its source."""

    FRESH = "fresh"
    STALE = "stale"
    NEVER = "never"  # configured, never a handshake
    MISSING = "missing"  # the peer is not configured there
    UNKNOWN = "unknown"  # the source was not reached
    DOWN = "down"  # the source was reached, but its interface is not up


FRESH, STALE, NEVER, MISSING, UNKNOWN, DOWN = (
    LinkState.FRESH, LinkState.STALE, LinkState.NEVER, LinkState.MISSING, LinkState.UNKNOWN, LinkState.DOWN,
)


@dataclass(frozen=True)
class PeerStatus:
    public_key: str
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int  # unix time, 0 = never
    rx: int
    tx: int
    keepalive: int | None


@dataclass(frozen=True)
class InterfaceStatus:
    public_key: str
    listen_port: int
    peers: tuple[PeerStatus, ...]


def _int(field: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"wg dump: {field} is not a number: {value!r}") from None


def parse_dump(text: str) -> InterfaceStatus:
    """Parse `wg show <if> dump` (one interface). Secret columns are ignored, whatever they hold."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("wg dump: empty output")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise ValueError(f"wg dump: interface line has {len(head)} fields, expected 4")
    peers = []
    for n, line in enumerate(lines[1:], 2):
        f = line.split("\t")
        if len(f) != 8:
            raise ValueError(f"wg dump: line {n} has {len(f)} fields, expected 8")
        pub, _psk, endpoint, allowed, hs, rx, tx, ka = f
        peers.append(
            PeerStatus(
                public_key=pub,
                endpoint=None if endpoint == "(none)" else endpoint,
                allowed_ips=() if allowed == "(none)" else tuple(allowed.split(",")),
                latest_handshake=_int("latest-handshake", hs),
                rx=_int("transfer-rx", rx),
                tx=_int("transfer-tx", tx),
                keepalive=None if ka == "off" else _int("persistent-keepalive", ka),
            )
        )
    return InterfaceStatus(public_key=head[1], listen_port=_int("listen-port", head[2]), peers=tuple(peers))


@dataclass(frozen=True)
class Link:
    """One direction of one pair, as seen from `src`."""

    src: str
    dst: str
    state: LinkState
    age: int | None  # seconds since the last handshake
    endpoint: str | None
    rx: int
    tx: int


def matrix(
    inv: Inventory, public_keys: dict[str, str], dumps: dict[str, InterfaceStatus | None], now: int,
    down: frozenset[str] | set[str] = frozenset(),
) -> list[Link]:
    """Every ordered pair (src, dst), src's view of dst. `dumps[src]` None = src not reachable,
    or, for names in `down`, reached with its interface down."""
    by_key = {k: n for n, k in public_keys.items()}
    links = []
    for src in inv.names:
        dump = dumps.get(src)
        seen: dict[str, PeerStatus] = {}
        if dump is not None:
            for ps in dump.peers:
                name = by_key.get(ps.public_key)
                if name is not None:
                    seen[name] = ps
        for dst in inv.names:
            if dst == src:
                continue
            if dump is None:
                links.append(Link(src, dst, DOWN if src in down else UNKNOWN, None, None, 0, 0))
                continue
            got = seen.get(dst)
            if got is None:
                links.append(Link(src, dst, MISSING, None, None, 0, 0))
            elif got.latest_handshake == 0:
                links.append(Link(src, dst, NEVER, None, got.endpoint, got.rx, got.tx))
            else:
                age = max(0, now - got.latest_handshake)
                state = FRESH if age <= FRESH_SECONDS else STALE
                links.append(Link(src, dst, state, age, got.endpoint, got.rx, got.tx))
    return links


def unknown_keys(public_keys: dict[str, str], dump: InterfaceStatus) -> list[str]:
    """Public keys configured on a host that belong to no peer of the inventory."""
    known = set(public_keys.values())
    return [p.public_key for p in dump.peers if p.public_key not in known]


# ---------------------------------------------------------------- reachability probes (wgm_ping)

_PING_LINE = re.compile(r"^(ok|fail) (\S+)(?: (\d+(?:\.\d+)?))?$")


def parse_pings(text: str) -> dict[str, float | None]:
    """ADDR → round-trip ms (ok) or None (fail)."""
    out: dict[str, float | None] = {}
    for line in text.splitlines():
        m = _PING_LINE.match(line.strip())
        if not m:
            continue
        kind, addr, rtt = m.groups()
        out[addr] = (float(rtt) if rtt else 0.0) if kind == "ok" else None
    return out
