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

The rule (rule.py, pure) decides who is active; this file runs it: the messages, the daemon,
its supervisor and the command line; hostops.py does what it decides to the host.

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
IP_PKTINFO = 8  # <linux/in.h>; not in Python's socket module before 3.13


try:  # in the package (tests); on a host wgmesh is not installed: rule.py and hostops.py lie beside this file
    from wgmesh.agent import hostops, rule
except ImportError:  # the ignore: mypy sees the package only (the host's layout is a flat directory)
    import hostops  # type: ignore[import-not-found, no-redef]
    import rule  # type: ignore[import-not-found, no-redef]


# ---------------------------------------------------------------- the daemon


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
    def __init__(self, cfg: rule.Config):
        self.cfg = cfg
        now = time.monotonic()
        self.brain = rule.Brain(cfg, started=now, since=time.time())
        prev = load_state()
        if cfg.site is not None and prev.get("name") == cfg.name and prev.get("site") == cfg.site:
            # A restart (new config, new program, a crash): carry the role on. An active gateway
            # keeps claiming at once (its address and routes are still in place); the rule then
            # decides as usual.
            self.brain.epochs[cfg.site] = int(prev.get("epoch") or 0)
            if prev.get("role") == rule.ACTIVE:
                self.brain.role, self.brain.epoch = rule.ACTIVE, int(prev["epoch"])
                if prev.get("route_table") == hostops.HANDOVER:  # restarted during a handover: go on with it
                    self.brain.handover_until = now + rule.HANDOVER
            self.brain.since = float(prev.get("since") or time.time())
            self.brain.cause = str(prev.get("cause") or "start")
        self.table = hostops.RouteTable(cfg)
        if self.brain.role != rule.ACTIVE and self.table.holds_address():
            # Not active, yet the site's address is here (restarted while yielding it, or a
            # crash): it goes as a yield's does, once the partner holds it or after the delay.
            self.table.status = "held"
            self.brain.yield_until = now + rule.HANDOVER + cfg.dead
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
            now = time.monotonic()
            reply = self.brain.takeover(time.time(), now) if word == "takeover" else f"error: unknown request {word!r}"
            if word == "takeover":
                hostops.log(f"takeover requested: {reply}")
                self.after_decision(now)
            if addr:
                with contextlib.suppress(OSError):
                    self.control.sendto(reply.encode(), addr)

    def send(self, now: float) -> None:
        data = json.dumps(self.brain.message(now, self.applied, self.table.status == "held")).encode()
        for name in self.brain.recipients():
            with contextlib.suppress(OSError):  # no route yet (interface down): next tick
                self.sock.sendto(data, (self.cfg.agents[name], self.cfg.port))

    def after_decision(self, now: float) -> None:
        b = self.brain
        if b.role != self.role_seen:
            hostops.log(f"{self.role_seen} → {b.role}: {b.cause}")
            self.role_seen = b.role
            if b.role == rule.ACTIVE:
                self.send(now)  # the claim first: the other hosts move the site while we take its table
            self.write_state(now)
        self.route_table(now, tick=True)
        self.sync_wg(now, force=False)

    def route_table(self, now: float, tick: bool) -> None:
        """Take the site's route table, or give it up, as the rule allows (RouteTable.follow)."""
        before = self.table.status
        if self.table.follow(self.brain, now, tick):
            self.send(now)  # taken after a handover: the old gateway gives it up when it hears this
        if self.table.status != before:
            self.write_state(now)  # `wgmesh failover` waits for the table to be held

    def sync_wg(self, now: float, force: bool) -> None:
        b = self.brain
        changed = [s for s, g in b.owners.items() if self.applied.get(s) != g]
        if not changed and not force:
            return
        running = hostops.wg_allowed(self.cfg.interface)
        if running is None:
            return
        moved = False
        for site, owner in sorted(b.owners.items()):
            done = hostops.move_prefixes(self.cfg, site, owner, running)
            for d in done:
                hostops.log(d)
            if any(d.startswith("wg set for") for d in done):
                continue  # failed: not applied, retried at the next decision
            moved = moved or bool(done) or self.applied.get(site) != owner
            self.applied[site] = owner
        self.last_sync = now
        if moved:
            self.send(now)  # tells a gateway that takes its site over that we route it there now
        try:
            if hostops.rewrite_conf(self.cfg, dict(b.owners)):
                hostops.log(f"{hostops.conf_path(self.cfg)}: AllowedIPs now follow {dict(sorted(b.owners.items()))}")
        except OSError as exc:
            hostops.log(f"cannot update {hostops.conf_path(self.cfg)}: {exc}")

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
            else:
                self.route_table(now, tick=False)  # a handover may have just been answered
            if now >= next_send:
                self.brain.decide(now, time.time())
                self.after_decision(now)
                self.send(now)
                next_send = now + tick
            if now - self.last_sync >= 1.0:
                self.sync_wg(now, force=True)  # a push with an older view is undone within a second
            if now - self.last_state >= 1.0:
                self.write_state(now)
            if self.brain.role == rule.ACTIVE:
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


def read_config(path: str = CONFIG) -> rule.Config:
    with open(path) as f:
        return rule.parse_config(json.load(f))


def cmd_run() -> int:
    """Foreground (systemd's ExecStart; the supervisor's child). SIGHUP: re-exec with the new
    program and config, keeping the role (the state file carries it)."""
    os.makedirs(RUN_DIR, exist_ok=True)
    lock = open(PIDFILE, "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        hostops.log("another agent runs already")
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
    hostops.log(f"agent {agent.cfg.name} started as {agent.brain.role}")
    agent.loop()
    hostops.log("reloading")
    agent.sock.close()
    agent.control.close()
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), "run"])
    return 0  # not reached


def cmd_start() -> int:
    """Where systemd does not run: start the supervisor (idempotent); it restarts the agent
    whenever it ends. If it runs already, make the agent reload its config."""
    os.makedirs(RUN_DIR, exist_ok=True)
    if hostops.pid_alive(SUPERVISOR_PIDFILE) is not None:
        agent = hostops.pid_alive(PIDFILE)
        if agent is not None:
            os.kill(agent, signal.SIGHUP)
        return 0
    return hostops.supervise([sys.executable, os.path.abspath(__file__), "run"], SUPERVISOR_PIDFILE, LOG)


def cmd_stop(release: bool) -> int:
    """Stop the supervisor and the agent; with release, give up the site's route table too
    (the mesh is being taken down on this host)."""
    for path in (SUPERVISOR_PIDFILE, PIDFILE):
        pid = hostops.pid_alive(path)
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if hostops.pid_alive(path) is None:
                    break
                time.sleep(0.05)
    if release:
        with contextlib.suppress(OSError, ValueError, KeyError):
            hostops.RouteTable(read_config()).release()
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
