#!/usr/bin/env python3
"""wgmesh failover agent: runs on every host of a mesh that has HA sites (two gateways).

Installed and kept by `wgmesh push` (/etc/wgmesh/agent.py with its config agent.json; a systemd
unit where systemd runs, else a supervised process), it needs nothing from the controller to
act: the gateways detect a dead partner and switch by themselves.

Every agent talks to the others inside the tunnel (UDP, PORT, to their tunnel addresses): a
packet that arrives on the WireGuard interface from a tunnel address was sent by the holder of
that peer's key, so the messages need no signature of their own. A message says who sent it,
which HA gateways the sender heard lately (and how long ago) and, for an active gateway, its
claim on its site (an epoch that grows with every switch).

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

On becoming active a gateway takes its site's route table (lab / on premises: the site's
virtual router address plus gratuitous ARP; AWS: the private route tables' routes to the other
sites point at its network interface, see ec2.py). Every agent moves the prefixes of every other
HA site to the active gateway's peer entry with one `wg set` (WireGuard moves a prefix from one
peer to another atomically: one prefix, one peer, at every instant).

Standard library only (Python >= 3.9): the hosts run it with their own python3.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any

CONFIG = "/etc/wgmesh/agent.json"
RUN_DIR = "/run/wgmesh"
STATE = RUN_DIR + "/state.json"
CONTROL = RUN_DIR + "/agent.sock"
PIDFILE = RUN_DIR + "/agent.pid"
SUPERVISOR_PIDFILE = RUN_DIR + "/supervisor.pid"
LOG = RUN_DIR + "/agent.log"
GARP_AFTER = (0.0, 0.3, 1.0, 2.0)  # seconds after taking the address: gratuitous ARPs
RECHECK = 5.0  # seconds between checks that the active gateway still holds its route table
IP_PKTINFO = 8  # <linux/in.h>; not in Python's socket module before 3.13



try:  # in the package (tests); on a host wgmesh is not installed: rule.py lies beside this file
    from wgmesh.agent.rule import ACTIVE, NEVER_HEARD, OBSERVER, STANDBY, Brain, Config, Report, Site, parse_config
except ImportError:  # the ignore: mypy sees the package only (the host's layout is a flat directory)
    from rule import (  # type: ignore[import-not-found, no-redef]
        ACTIVE,
        NEVER_HEARD,
        OBSERVER,
        STANDBY,
        Brain,
        Config,
        Report,
        Site,
        parse_config,
    )

__all__ = ["ACTIVE", "NEVER_HEARD", "OBSERVER", "STANDBY", "Brain", "Config", "Report", "Site", "parse_config"]


# ---------------------------------------------------------------- effects on the host


def run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=5, check=False)


def wg_allowed(iface: str) -> dict[str, set[str]] | None:
    """public key → allowed IPs, as the interface runs them (None: the interface is down)."""
    r = run(["wg", "show", iface, "allowed-ips"])
    if r.returncode != 0:
        return None
    out: dict[str, set[str]] = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if parts:
            out[parts[0]] = {p for p in parts[1:] if p != "(none)"}
    return out


def move_prefixes(cfg: Config, site: str, owner: str, running: dict[str, set[str]]) -> list[str]:
    """Give the site's prefixes to `owner`'s peer entry and take them from the other gateway,
    if the interface does not run that already. Returns what was done (for the log)."""
    s = cfg.sites[site]
    done = []
    order = [owner] + [g for g in s.gateways if g != owner]  # the owner first: the move is atomic
    for g in order:
        key = cfg.keys.get(g)
        if key is None or key not in running:
            continue  # not (yet) a peer of this interface: never create one
        tunnel = set(cfg.tunnel(g))
        want = tunnel | (set(s.prefixes) if g == owner else set())
        have = running[key]
        keep = {p for p in have if p not in s.prefixes and p not in tunnel}  # anything else it runs
        if have == want | keep:
            continue
        r = run(["wg", "set", cfg.interface, "peer", key, "allowed-ips", ",".join(sorted(want | keep))])
        if r.returncode != 0:
            done.append(f"wg set for {g} failed: {r.stderr.strip()}")
        else:
            running[key] = want | keep
            done.append(f"{site} → {owner}" if g == owner else f"{site} off {g}")
            if g == owner:  # WireGuard took them from whichever peer had them
                for k, have_k in running.items():
                    if k != key:
                        running[k] = have_k - set(s.prefixes)
    return done


def conf_path(cfg: Config) -> str:
    return f"/etc/wireguard/{cfg.interface}.conf"


def allowed_line(cfg: Config, gateway: str, owner: bool) -> str:
    """The AllowedIPs line wgmesh renders for an HA gateway (render.py: the tunnel address,
    then the site's subnets in the inventory's order, for the active one only)."""
    nets = list(cfg.tunnel(gateway))
    site = cfg.site_of(gateway)
    if owner and site is not None:
        nets += list(cfg.sites[site].prefixes)
    return "AllowedIPs = " + ", ".join(nets)


def rewrite_conf(cfg: Config, owners: dict[str, str], path: str | None = None) -> bool:
    """Make the config file say what the interface runs: the AllowedIPs lines of the other sites'
    gateways follow `owners` (site → active gateway), so a restart (a reboot) starts with the
    sites where they are, and the file stays byte-identical to what wgmesh renders for the same
    choice. Under the host's wgmesh lock (a push may be writing the file): skipped when busy.
    Returns True if the file changed."""
    path = path or conf_path(cfg)
    if not os.path.exists(path):
        return False
    with open(os.path.join(os.path.dirname(path), ".wgmesh.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a push is writing it: the next sync (1 s) tries again
        with open(path) as f:
            text = f.read()
        new = _follow(cfg, owners, text)
        if new == text:
            return False
        tmp = f"{path}.agent.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new)
        os.replace(tmp, path)
    return True


def _follow(cfg: Config, owners: dict[str, str], text: str) -> str:
    """The config text with the other sites' gateways' AllowedIPs lines following `owners`."""
    by_key = {k: g for g, k in cfg.keys.items()}
    lines = text.split("\n")
    gateway = None
    for i, line in enumerate(lines):
        if line.startswith("PublicKey = "):
            gateway = by_key.get(line.split("=", 1)[1].strip())
        elif line.startswith("[Peer]"):
            gateway = None
        elif line.startswith("AllowedIPs = ") and gateway is not None:
            site = cfg.site_of(gateway)
            if site is not None and site != cfg.site and site in owners:
                lines[i] = allowed_line(cfg, gateway, owners[site] == gateway)
    return "\n".join(lines)


def _mac(iface: str) -> bytes:
    with open(f"/sys/class/net/{iface}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def garp(iface: str, address: str) -> None:
    """One gratuitous ARP (request and reply) for `address` from `iface`: the LAN's hosts point
    their neighbour entry for it at us at once."""
    mac = _mac(iface)
    ip = socket.inet_aton(address)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        for op in (1, 2):
            arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, ip,
                              b"\xff" * 6 if op == 2 else b"\x00" * 6, ip)
            s.send(b"\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp)


def _has_address(iface: str, cidr: str) -> bool:
    r = run(["ip", "-o", "-4", "addr", "show", "dev", iface])
    return any(cidr in line.split() for line in r.stdout.splitlines())


class RouteTable:
    """The site's route table as the active gateway holds it."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rt = cfg.route_table or {}
        self.garp_due: list[float] = []
        self.status = "-"
        self.next_check = 0.0

    def acquire(self, now: float) -> None:
        """Take the table (or check that we still hold it: at most every RECHECK s; a failure is
        retried at the next tick)."""
        if self.status == "held" and now < self.next_check:
            return
        kind = self.rt.get("kind")
        try:
            if kind == "vip":
                iface, cidr = self.rt["interface"], self.rt["address"]
                if not _has_address(iface, cidr):
                    r = run(["ip", "addr", "replace", cidr, "dev", iface])
                    if r.returncode != 0:
                        raise OSError(r.stderr.strip() or "ip addr failed")
                    self.garp_due = [now + d for d in GARP_AFTER]
                self.announce(now)
            elif kind == "aws":
                ec2 = _ec2()
                changed = ec2.replace_routes(
                    region=self.rt["region"], route_table_ids=self.rt["route_table_ids"],
                    destinations=list(self.cfg.destinations), network_interface_id=self.rt["network_interface_id"],
                    endpoint=self.rt.get("endpoint"),
                )
                if changed:
                    log(f"route tables: {', '.join(changed)} now point at {self.rt['network_interface_id']}")
            self.status = "held"
            self.next_check = now + RECHECK
        except Exception as exc:  # noqa: BLE001 - any failure: reported in the state, retried next tick
            self.status = f"error: {exc}"
            log(f"route table: {exc}")

    def announce(self, now: float) -> None:
        """The gratuitous ARPs that are due (a few, spread over 2 s after taking the address)."""
        due = [t for t in self.garp_due if t <= now]
        if due:
            self.garp_due = [t for t in self.garp_due if t > now]
            garp(self.rt["interface"], self.rt["address"].split("/")[0])

    def release(self) -> None:
        self.garp_due = []
        self.next_check = 0.0
        if self.rt.get("kind") == "vip":
            iface, cidr = self.rt["interface"], self.rt["address"]
            if _has_address(iface, cidr):
                run(["ip", "addr", "del", cidr, "dev", iface])
        self.status = "-"


def _ec2() -> Any:
    """The EC2 client: shipped beside this file on a host, wgmesh.agent.ec2 in the package."""
    import importlib

    try:
        return importlib.import_module("ec2")
    except ImportError:
        return importlib.import_module("wgmesh.agent.ec2")


# ---------------------------------------------------------------- the daemon


def log(text: str) -> None:
    now = time.time()
    line = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d} {text}\n"
    sys.stderr.write(line)
    sys.stderr.flush()


def write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, sort_keys=True)
    os.replace(tmp, path)


def load_state() -> dict[str, Any]:
    try:
        with open(STATE) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class Agent:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        now = time.monotonic()
        self.brain = Brain(cfg, started=now, since=time.time())
        prev = load_state()
        if cfg.site is not None and prev.get("name") == cfg.name and prev.get("site") == cfg.site:
            # A restart (new config, new program, a crash): carry the role on. An active gateway
            # keeps claiming at once (its address and routes are still in place); the rule then
            # decides as usual.
            self.brain.epochs[cfg.site] = int(prev.get("epoch") or 0)
            if prev.get("role") == ACTIVE:
                self.brain.role, self.brain.epoch = ACTIVE, int(prev["epoch"])
            self.brain.since = float(prev.get("since") or time.time())
            self.brain.cause = str(prev.get("cause") or "start")
        self.table = RouteTable(cfg)
        self.v6 = ":" in cfg.agents[cfg.name]
        self.sock = socket.socket(socket.AF_INET6 if self.v6 else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.v6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.sock.bind(("", cfg.port))
        self.sock.setblocking(False)
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(CONTROL)
        self.control.bind(CONTROL)
        os.chmod(CONTROL, 0o600)
        self.control.setblocking(False)
        self.by_address = {a: n for n, a in cfg.agents.items()}
        self.ifindex = 0
        self.last_sync = 0.0
        self.last_state = 0.0
        self.role_seen = self.brain.role
        self.applied: dict[str, str] = {}  # site → owner the interface was last set to
        self.changed = False
        self.reload = False

    def wg_index(self) -> int:
        try:
            return socket.if_nametoindex(self.cfg.interface)
        except OSError:
            return 0

    def receive(self, now: float) -> None:
        while True:
            try:
                data, anc, _, src = self.sock.recvmsg(4096, socket.CMSG_SPACE(20))
            except (BlockingIOError, InterruptedError):
                return
            index = 0  # the interface it arrived on: in_pktinfo starts with it, in6_pktinfo ends with it
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 4:
                    index = struct.unpack("I", value[:4])[0]
                elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(value) >= 20:
                    index = struct.unpack("I", value[16:20])[0]
            if index == 0 or index != self.ifindex:
                self.ifindex = self.wg_index()  # the interface may have been recreated
                if index == 0 or index != self.ifindex:
                    continue  # not from the tunnel: unauthenticated, ignored
            sender = self.by_address.get(src[0])
            if sender is None:
                continue
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("from") == sender and self.brain.receive(sender, msg, now):
                self.changed = True

    def requests(self) -> None:
        while True:
            try:
                data, addr = self.control.recvfrom(512)
            except (BlockingIOError, InterruptedError):
                return
            word = data.decode(errors="replace").strip()
            reply = self.brain.takeover(time.time()) if word == "takeover" else f"error: unknown request {word!r}"
            if word == "takeover":
                log(f"takeover requested: {reply}")
                self.after_decision(time.monotonic())
                self.send(time.monotonic())
            if addr:
                with contextlib.suppress(OSError):
                    self.control.sendto(reply.encode(), addr)

    def send(self, now: float) -> None:
        data = json.dumps(self.brain.message(now)).encode()
        for name in self.brain.recipients():
            with contextlib.suppress(OSError):  # no route yet (interface down): next tick
                self.sock.sendto(data, (self.cfg.agents[name], self.cfg.port))

    def after_decision(self, now: float) -> None:
        b = self.brain
        if b.role != self.role_seen:
            log(f"{self.role_seen} → {b.role}: {b.cause}")
            self.role_seen = b.role
            if b.role != ACTIVE:
                self.table.release()
            self.write_state(now)
        if b.role == ACTIVE:
            self.table.acquire(now)
        self.sync_wg(now, force=False)

    def sync_wg(self, now: float, force: bool) -> None:
        b = self.brain
        changed = [s for s, g in b.owners.items() if self.applied.get(s) != g]
        if not changed and not force:
            return
        running = wg_allowed(self.cfg.interface)
        if running is None:
            return
        for site, owner in sorted(b.owners.items()):
            done = move_prefixes(self.cfg, site, owner, running)
            for d in done:
                log(d)
            self.applied[site] = owner
        self.last_sync = now
        try:
            if rewrite_conf(self.cfg, dict(b.owners)):
                log(f"{conf_path(self.cfg)}: AllowedIPs now follow {dict(sorted(b.owners.items()))}")
        except OSError as exc:
            log(f"cannot update {conf_path(self.cfg)}: {exc}")

    def write_state(self, now: float) -> None:
        b = self.brain
        site = self.cfg.site
        data = {
            "v": 1, "name": self.cfg.name, "site": site, "role": b.role,
            "epoch": b.epochs.get(site, 0) if site else 0, "since": round(b.since, 3), "cause": b.cause,
            "owners": dict(sorted(b.owners.items())),
            "heard": {a: round(now - t, 3) for a, t in sorted(b.heard.items())},
            "route_table": self.table.status, "updated": round(time.time(), 3), "pid": os.getpid(),
        }
        if site:
            data["active"] = b.active_of(site, now)
        write_json(STATE, data)
        self.last_state = now

    def loop(self) -> None:
        self.ifindex = self.wg_index()
        tick = self.cfg.interval
        next_send = 0.0
        while not self.reload:
            now = time.monotonic()
            self.changed = False
            self.receive(now)
            self.requests()
            if self.changed:  # a claim changed: act on it now, not at the next tick
                self.brain.decide(now, time.time())
                self.after_decision(now)
            if now >= next_send:
                self.brain.decide(now, time.time())
                self.after_decision(now)
                self.send(now)
                next_send = now + tick
            if now - self.last_sync >= 1.0:
                self.sync_wg(now, force=True)  # a push with an older view is undone within a second
            if now - self.last_state >= 1.0:
                self.write_state(now)
            if self.brain.role == ACTIVE:
                self.table.announce(now)
            wait = max(0.0, min(next_send - time.monotonic(), 0.05))
            _wait_readable([self.sock, self.control], wait)
        self.write_state(time.monotonic())


def _wait_readable(socks: list[socket.socket], timeout: float) -> None:
    import selectors

    sel = selectors.DefaultSelector()  # epoll: no limit on descriptor numbers
    try:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        sel.select(timeout)
    finally:
        sel.close()


# ---------------------------------------------------------------- command line


def read_config(path: str = CONFIG) -> Config:
    with open(path) as f:
        return parse_config(json.load(f))


def cmd_run() -> int:
    """Foreground (systemd's ExecStart; the supervisor's child). SIGHUP: re-exec with the new
    program and config, keeping the role (the state file carries it)."""
    os.makedirs(RUN_DIR, exist_ok=True)
    lock = open(PIDFILE, "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        log("another agent runs already")
        return 1
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    agent = Agent(read_config())

    def hup(*_: Any) -> None:
        agent.reload = True

    def term(*_: Any) -> None:
        agent.write_state(time.monotonic())
        sys.exit(0)  # the address stays: a restart must not drop the site's traffic

    signal.signal(signal.SIGHUP, hup)
    signal.signal(signal.SIGTERM, term)
    log(f"agent {agent.cfg.name} started as {agent.brain.role}")
    agent.loop()
    log("reloading")
    agent.sock.close()
    agent.control.close()
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), "run"])
    return 0  # not reached


def _pid(path: str) -> int | None:
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
        if pid > 0:
            os.kill(pid, 0)
            return pid
    except (OSError, ValueError):
        pass
    return None


def cmd_start() -> int:
    """Where systemd does not run: start the supervisor (idempotent); it restarts the agent
    whenever it ends. If it runs already, make the agent reload its config."""
    os.makedirs(RUN_DIR, exist_ok=True)
    if _pid(SUPERVISOR_PIDFILE) is not None:
        agent = _pid(PIDFILE)
        if agent is not None:
            os.kill(agent, signal.SIGHUP)
        return 0
    if os.fork() > 0:
        time.sleep(0.05)
        return 0
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    with open(SUPERVISOR_PIDFILE + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(SUPERVISOR_PIDFILE + ".tmp", SUPERVISOR_PIDFILE)
    fd = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    stop = False

    def term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, term)
    while not stop:
        t0 = time.monotonic()
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "run"])
        while child.poll() is None and not stop:
            time.sleep(0.1)
        if stop:
            child.terminate()
            child.wait()
            break
        time.sleep(1.0 if time.monotonic() - t0 < 2.0 else 0.1)  # a crash loop waits a little
    with contextlib.suppress(OSError):
        os.unlink(SUPERVISOR_PIDFILE)
    os._exit(0)


def cmd_stop(release: bool) -> int:
    """Stop the supervisor and the agent; with release, give up the site's route table too
    (the mesh is being taken down on this host)."""
    for path in (SUPERVISOR_PIDFILE, PIDFILE):
        pid = _pid(path)
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if _pid(path) is None:
                    break
                time.sleep(0.05)
    if release:
        with contextlib.suppress(OSError, ValueError, KeyError):
            RouteTable(read_config()).release()
    return 0


def cmd_takeover() -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        me = f"{RUN_DIR}/client.{os.getpid()}.sock"
        s.bind(me)
        try:
            s.settimeout(3)
            s.sendto(b"takeover", CONTROL)
            reply = s.recv(512).decode(errors="replace")
        except OSError as exc:
            print(f"error: the agent did not answer ({exc})", file=sys.stderr)
            return 1
        finally:
            os.unlink(me)
    print(reply)
    return 0 if reply.startswith("ok") else 1


def main(argv: list[str]) -> int:
    word = argv[1] if len(argv) > 1 else ""
    if word == "run":
        return cmd_run()
    if word == "start":
        return cmd_start()
    if word in ("stop", "release"):
        return cmd_stop(release=word == "release")
    if word == "takeover":
        return cmd_takeover()
    if word == "state":
        print(json.dumps(load_state(), sort_keys=True))
        return 0
    print("usage: agent.py run|start|stop|release|takeover|state", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
