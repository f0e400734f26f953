"""What the failover agent does to its host (agent.py decides when): the WireGuard peers'
allowed IPs (`wg set`), the two AllowedIPs lines of wg0.conf rewritten as wgmesh renders them,
the site's route table (a virtual router address with gratuitous ARP, or AWS routes through
ec2.py), and the agent's log. Shipped beside agent.py; standard library only (Python >= 3.9).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wgmesh.agent.rule import Brain, Config

GARP_AFTER = (0.3, 1.0, 2.0)  # seconds after taking the address: gratuitous ARPs (the first: at once)
HANDOVER = "handover"  # RouteTable.status while a handover waits for the other hosts (rule.py)
RECHECK = 5.0  # seconds between checks that the active gateway still holds its route table


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


def _garp_logged(iface: str, address: str) -> None:
    """A gratuitous ARP whose failure is logged, never fatal: the address is taken anyway (the
    LAN's hosts then find it at their next ARP request, and the later ones are retried)."""
    try:
        garp(iface, address)
    except OSError as exc:
        log(f"gratuitous ARP for {address} on {iface}: {exc}")


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

    @property
    def kind(self) -> str | None:
        return self.rt.get("kind")

    def holds_address(self) -> bool:
        """(vip) The site's address is on our interface."""
        return self.kind == "vip" and _has_address(self.rt["interface"], self.rt["address"])

    def follow(self, brain: Brain, now: float, tick: bool) -> bool:
        """Take the table or give it up when the rule allows (rule.py: a handover waits for the
        other hosts, a yield for the new active gateway). `tick`: also check (or retry) a table
        we hold; else only act on what a message just allowed. True: taken at the end of a
        handover (tell the others now)."""
        if brain.is_active:
            if self.status == "held" and not tick:
                return False
            waiting = brain.waiting_for(now) if self.kind == "vip" and self.status != "held" else []
            if waiting:
                if self.status != HANDOVER:
                    log(f"handover: taking the route table once {', '.join(waiting)} route the site here")
                    self.status = HANDOVER
                return False
            if not (tick or self.status == HANDOVER):
                return False
            handover = self.status == HANDOVER
            if handover:
                why = "every host routes the site here" if brain.handover_until is not None else "no answer in time"
                log(f"handover: {why}; taking the route table")
            self.acquire(now)
            return handover and self.status == "held"
        if self.status == HANDOVER or (self.status != "-" and brain.may_release(now)):
            self.release()  # (a handover that never took the table has nothing to keep)
        return False

    def acquire(self, now: float) -> None:
        """Take the table (or check that we still hold it: at most every RECHECK s; a failure is
        retried at the next tick)."""
        if self.status == "held" and now < self.next_check:
            return
        kind = self.rt.get("kind")
        try:
            if kind == "vip":
                iface, cidr = self.rt["interface"], self.rt["address"]
                if self.status != "held" or not _has_address(iface, cidr):
                    _garp_logged(iface, cidr.split("/")[0])  # first of all: the LAN's hosts send to us now
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
            _garp_logged(self.rt["interface"], self.rt["address"].split("/")[0])

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


def log(text: str) -> None:
    now = time.time()
    line = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d} {text}\n"
    sys.stderr.write(line)
    sys.stderr.flush()


def pid_alive(path: str) -> int | None:
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
        if pid > 0:
            os.kill(pid, 0)
            return pid
    except (OSError, ValueError):
        pass
    return None


def supervise(program: list[str], pidfile: str, logfile: str) -> int:
    """Daemonize (returns 0 in the caller at once) and run `program` again whenever it ends,
    its output appended to `logfile`, until SIGTERM; the supervisor's pid in `pidfile`."""
    if os.fork() > 0:
        time.sleep(0.05)
        return 0
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(pidfile + ".tmp", pidfile)
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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
        child = subprocess.Popen(program)
        while child.poll() is None and not stop:
            time.sleep(0.1)
        if stop:
            child.terminate()
            child.wait()
            break
        time.sleep(1.0 if time.monotonic() - t0 < 2.0 else 0.1)  # a crash loop waits a little
    with contextlib.suppress(OSError):
        os.unlink(pidfile)
    os._exit(0)
