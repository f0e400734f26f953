"""A fake host pool for unit tests of the commands that touch hosts (push, status, verify,
delpeer, rotate-keys, destroy): no SSH, no root, no network.

A FakeHost is a small model of one WireGuard host. It interprets a Program by its ops, the
way scripts/*.sh do, and never parses shell. Its state:

- `conf`: the text of /etc/wireguard/<iface>.conf (None: no file);
- `up`: whether the interface runs; `running_conf`: the text it was (re)loaded from by the
  last start or syncconf; `peers`: the public keys it runs (a test may change them: drift);
- `routes`: the prefixes routed via the interface (PostUp's and sync_routes' `ip -batch`);
- `rules`: (family, "fwd"/"nat") → (rules in the wgmesh chain, jump present), as the PostUp
  lines of the running file leave them (counted from those lines) and PostDown removes them;
- `systemd`: whether systemd is PID 1; `unit`: what `systemctl is-enabled` says.

What it does not model: file modes and owners, the rules' content (only their number), real
packets (a ping succeeds when the
source's interface is up and the target is not in `ping_fails`), transfer counters (fixed
numbers once a handshake exists) and time (a handshake is always 5 s old).

Scripted faults: `unreachable` (the pool's get() raises SshError with that reason),
`fail_start` (START exits 42 with that stderr; the previous file and interface come back),
`fail_syncconf` (SYNCCONF exits 43 and puts the previous file back),
`needs_password` (every program: rc 1, sudo's message).
Every program a host was asked to run is recorded in `ran`, with its standard input.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from wgmesh.adapters.hostkeys import SshError
from wgmesh.commands.addpeer import addpeer
from wgmesh.commands.push import push
from wgmesh.keys import Keystore, public_key
from wgmesh.model import Instance, Inventory, Peer
from wgmesh.peers import PeerOptions
from wgmesh.progress import Reporter
from wgmesh.remote.exits import RemoteExit
from wgmesh.remote.host import PROBE_TIMEOUT, Connector, Reply
from wgmesh.remote.steps import Op, Program, Step
from wgmesh.render import fingerprints, render
from wgmesh.store import load
from wgmesh.workspace import Workspace, default_stacks_dir

NO_DEVICE = "Unable to access interface: No such device"
SUDO_PASSWORD = "sudo: a password is required"
HANDSHAKE_AGE = 5


class Ran(NamedTuple):
    program: Program
    stdin: bytes | None

    @property
    def ops(self) -> list[Op]:
        return self.program.ops()


def parse_conf(text: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """A wg-quick file → ([Interface] values, public key → that [Peer]'s values)."""
    interface: dict[str, str] = {}
    peers: dict[str, dict[str, str]] = {}
    section: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "[Interface]":
            section = interface
        elif line == "[Peer]":
            section = {}
        elif section is not None and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            if key == "PublicKey":
                peers[value] = section
            section.setdefault(key, value)  # PostUp appears many times: the first is enough here
    return interface, peers


class _Exit(Exception):
    """A script's `exit N`."""

    def __init__(self, rc: int, err: str = ""):
        super().__init__(rc)
        self.rc = rc
        self.err = err


@dataclass
class FakeHost:
    conf: str | None = None
    up: bool = False
    systemd: bool = True
    peers: set[str] = field(default_factory=set)
    running_conf: str | None = None
    routes: set[str] = field(default_factory=set)
    rules: dict[tuple[int, str], tuple[int, bool]] = field(default_factory=dict)
    unit: str = "disabled"
    # scripted faults
    unreachable: str | None = None
    fail_start: str | None = None
    fail_syncconf: str | None = None
    needs_password: bool = False
    ping_fails: set[str] = field(default_factory=set)
    path_mtu: int | None = None  # a DF ping larger than this fails (None: any size passes)
    cut_stdin: int | None = None  # standard input arrives cut after this many bytes
    # the failover agent (HA meshes): its bundle's sha256 and config, whether it runs; its role
    # comes from the pool's `active` (site → (gateway, epoch)), as if the agents had agreed
    agent_sha: str | None = None
    agent_config: dict | None = None
    agent_running: bool = False
    route_table: str | None = None  # what its agent says of its route table (default: held while active)
    # what the host was asked to run
    ran: list[Ran] = field(default_factory=list)
    pool: FakePool | None = field(default=None, repr=False)
    gateway: FakeHost | None = field(default=None, repr=False)  # for a private instance: its jump host

    # ------------------------------------------------------------ what the model says

    @property
    def public_key(self) -> str | None:
        """The public key of the running interface (from the PrivateKey it was loaded with)."""
        if not self.up or self.running_conf is None:
            return None
        private = parse_conf(self.running_conf)[0].get("PrivateKey")
        return public_key(private) if private else None

    def programs(self, name: str | None = None) -> list[Ran]:
        return [r for r in self.ran if name is None or r.program.name == name]

    def applied(self) -> list[list[Op]]:
        """The ops of every apply program this host ran."""
        return [r.ops for r in self.programs("apply")]

    # ------------------------------------------------------------ running programs

    def run(self, program: Program, stdin: bytes | None = None, timeout: float = PROBE_TIMEOUT) -> Reply:
        lock = self.pool.lock if self.pool is not None else threading.Lock()
        with lock:
            self.ran.append(Ran(program, stdin))
            if self.needs_password:
                return Reply(1, "", SUDO_PASSWORD + "\n")
            out: list[str] = []
            if stdin is not None and self.cut_stdin is not None:
                stdin = stdin[: self.cut_stdin]  # a transfer cut midway
            regs = {"stdin": stdin, "prev": None, "had": True}
            try:
                for s in program.steps:
                    out += self._step(s, regs)
            except _Exit as ex:
                return Reply(ex.rc, "".join(out), ex.err)
            return Reply(0, "".join(out), "")

    def _step(self, s: Step, regs: dict) -> list[str]:  # noqa: PLR0911, PLR0912 - one branch per op
        op = s.op
        if op in (Op.WAIT_CLOUD_INIT, Op.PREPARE):
            return []
        if op == Op.PROBE:
            return self._probe()
        if op == Op.STAGE:
            if hashlib.sha256(regs["stdin"] or b"").hexdigest() != s.args[0]:
                raise _Exit(RemoteExit.TRUNCATED, "the config arrived incomplete: nothing was changed\n")
            regs["staged"] = (regs["stdin"] or b"").decode()
            regs["prev"], regs["had"] = self.conf, self.conf is not None
            return []
        if op == Op.DOWN:
            self._down()
            return []
        if op == Op.INSTALL:
            self.conf = regs["staged"]
            return []
        if op == Op.START:
            self._start(bool(s.args[1]), regs)
            return []
        if op == Op.SYNCCONF:
            if self.fail_syncconf is not None or not self.up or self.conf is None:
                self._restore(regs)  # wgm_fail
                raise _Exit(RemoteExit.SYNCCONF_FAILED, (self.fail_syncconf or NO_DEVICE) + "\n")
            self._load(self.conf)
            return []
        if op == Op.SYNC_ROUTES:
            self._sync_routes()
            return []
        if op == Op.RESTORE_RULES:
            self._apply_rules(self.conf or "")
            return []
        if op == Op.ENABLE_UNIT:
            self.unit = "enabled"
            return []
        if op == Op.FINISH:
            raise _Exit(0)
        if op in (Op.AGENT_INSTALL, Op.AGENT_START, Op.AGENT_REMOVE, Op.AGENT_TAKEOVER, Op.AGENT_STATE):
            return self._agent_step(s, regs)
        if op == Op.STOP_ALL:
            self._agent_remove()
            self._down()
            self.conf = None
            self.unit = "disabled"
            raise _Exit(0)
        if op == Op.DUMP:
            return self._dump()
        if op == Op.PING:
            return [self._ping(str(t), int(s.args[2])) for t in s.args[3:]]
        raise AssertionError(f"FakeHost: no model for op {op}")

    def _probe(self) -> list[str]:
        lines = ["file -", "iface -"]
        if self.conf is not None:
            file_sha, iface_sha = fingerprints(self.conf)
            lines = [f"file {file_sha}", f"iface {iface_sha}"]
        if self.up:
            interface, sections = parse_conf(self.running_conf or "")
            lines += ["up", f"port {interface.get('ListenPort', '51820')}"]
            for key in sorted(self.peers):
                sec = sections.get(key, {})
                allowed = ",".join(p.strip() for p in sec.get("AllowedIPs", "(none)").split(","))
                lines.append(f"peer {key} {allowed} {sec.get('Endpoint', '(none)')} "
                             f"{sec.get('PersistentKeepalive', 'off')}")
            lines += [f"route {r.removesuffix('/32').removesuffix('/128')}" for r in sorted(self.routes)]
            lines += [f"rules {f} {k} {n} {int(j)}" for (f, k), (n, j) in sorted(self.rules.items())]
        else:
            lines.append("down")
        lines += ["systemd", f"unit {self.unit}"] if self.systemd else []
        return [line + "\n" for line in [*lines, *self._agent_lines(), "end"]]

    # ------------------------------------------------------------ the failover agent

    def _agent_step(self, s: Step, regs: dict) -> list[str]:
        if s.op == Op.AGENT_INSTALL:
            data = regs["stdin"] or b""
            if hashlib.sha256(data).hexdigest() != s.args[0]:
                raise _Exit(RemoteExit.TRUNCATED, "the agent's files arrived incomplete\n")
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = tar.extractfile("agent.json")
                assert member is not None
                self.agent_config = json.loads(member.read())
            self.agent_sha = s.args[0]
        elif s.op == Op.AGENT_START:
            self.agent_running = True
            site = (self.agent_config or {}).get("site")
            if site is not None and self.pool is not None and site not in self.pool.active:
                first = self.agent_config["sites"][site]["gateways"][0]  # type: ignore[index]
                self.pool.active[site] = (first, 1)
        elif s.op == Op.AGENT_REMOVE:
            self._agent_remove()
        elif s.op == Op.AGENT_TAKEOVER:
            site = (self.agent_config or {}).get("site")
            if not self.agent_running or site is None or self.pool is None:
                raise _Exit(RemoteExit.AGENT_FAILED, "the failover agent does not run on this host\n")
            _, epoch = self.pool.active.get(site, ("", 0))
            self.pool.active[site] = (self.agent_config["name"], epoch + 1)  # type: ignore[index]
            return ["ok: active\n"]
        elif s.op == Op.AGENT_STATE:
            return [line + "\n" for line in self._agent_lines()]
        return []

    def _agent_remove(self) -> None:
        self.agent_sha, self.agent_config, self.agent_running = None, None, False

    def _agent_lines(self) -> list[str]:
        lines = [f"agent {self.agent_sha}"] if self.agent_sha else []
        if not self.agent_running or self.agent_config is None or self.pool is None:
            return lines
        cfg, active = self.agent_config, self.pool.active
        site = cfg.get("site")
        state: dict[str, Any] = {
            "role": "observer", "epoch": 0, "updated": 1000, "route_table": "-",
            "owners": {s: g for s, (g, _) in active.items() if s != site},
        }
        if site is not None:
            holder, epoch = active.get(site, ("", 0))
            state.update(role="active" if holder == cfg["name"] else "standby", epoch=epoch, since=900,
                         cause="start", route_table=self.route_table or ("held" if holder == cfg["name"] else "-"))
        return [*lines, "agent_running", f"agent_state 1001 {json.dumps(state)}"]

    def _apply_rules(self, text: str) -> None:
        """The PostUp lines' chains: the rules each restore line declares (one MASQUERADE per
        source of its loop), with their jumps."""
        for line in text.splitlines():
            if not line.startswith("PostUp = ") or "-restore" not in line:
                continue
            family = 6 if "ip6tables-restore" in line else 4
            for kind, chain in (("fwd", "FWD"), ("mss", "MSS")):
                self.rules[(family, kind)] = (len(re.findall(rf"-A WGM-\S+-{chain} ", line)), True)
            sources = re.search(r"for s in (.*?); do", line)
            if sources:
                self.rules[(family, "nat")] = (len(sources.group(1).split()), True)

    def _restore(self, regs: dict) -> None:
        """wgm_fail: the previous file goes back (or none, if there was none)."""
        if regs["prev"] is not None:
            self.conf = regs["prev"]
        elif not regs["had"]:
            self.conf = None

    def _load(self, text: str) -> None:
        """wg setconf / syncconf: the interface runs the file's key and peers."""
        self.running_conf = text
        self.peers = set(parse_conf(text)[1])

    def _sync_routes(self) -> None:
        sections = parse_conf(self.running_conf or "")[1]
        self.routes = {
            prefix.strip() for k in self.peers for prefix in sections.get(k, {}).get("AllowedIPs", "").split(",")
            if prefix.strip()
        }

    def _down(self) -> None:
        self.up = False
        self.peers = set()
        self.running_conf = None
        self.routes = set()
        self.rules = {}  # PostDown

    def _bring_up(self) -> None:
        if self.conf is None:
            raise _Exit(RemoteExit.START_FAILED, "wg-quick: `/etc/wireguard/wg0.conf' does not exist\n")
        self.up = True
        self._load(self.conf)
        self._apply_rules(self.conf)  # PostUp
        self._sync_routes()
        if self.systemd:
            self.unit = "enabled"  # wgm_up: systemctl enable, then restart

    def _start(self, was_up: bool, regs: dict) -> None:
        """wgm_start: on failure the previous file (or none) is put back, and the interface
        comes up again with it if it was up before."""
        if self.fail_start is None:
            self._bring_up()
            return
        self._down()
        if regs["prev"] is not None:
            self.conf = regs["prev"]
            if was_up:
                self._bring_up()
        elif not regs["had"]:
            self.conf = None
        raise _Exit(RemoteExit.START_FAILED, self.fail_start + "\n")

    def _dump(self) -> list[str]:
        if not self.up or self.running_conf is None:
            raise _Exit(1, NO_DEVICE + "\n")
        interface, sections = parse_conf(self.running_conf)
        lines = [f"(hidden)\t{self.public_key}\t{interface.get('ListenPort', '51820')}\toff"]
        now = int(time.time())
        for key in sorted(self.peers):
            sec = sections.get(key, {})
            shook = self.pool is not None and self.pool.handshake(self, key)
            hs, rx, tx = (now - HANDSHAKE_AGE, 1000, 2000) if shook else (0, 0, 0)
            lines.append("\t".join([
                key, "(hidden)", sec.get("Endpoint", "(none)"),
                ",".join(p.strip() for p in sec.get("AllowedIPs", "(none)").split(",")),
                str(hs), str(rx), str(tx), sec.get("PersistentKeepalive", "off"),
            ]))
        return [line + "\n" for line in lines]

    def _ping(self, target: str, size: int = 0) -> str:
        """A reply when the tunnel is up (the gateway's, for a private instance), the test did
        not say otherwise, and a packet with DF set fits the host's path MTU (`path_mtu`)."""
        via = self.gateway or self
        fits = not size or self.path_mtu is None or size + 28 <= self.path_mtu
        return f"ok {target} 0.1\n" if via.up and target not in self.ping_fails and fits else f"fail {target}\n"


class FakePool:
    """The Pool the commands get from `connector()`: one FakeHost per peer name, and per
    private instance under "peer/instance"."""

    def __init__(self, hosts: dict[str, FakeHost]):
        self.hosts = hosts
        self.active: dict[str, tuple[str, int]] = {}  # HA site → (active gateway, epoch): the agents' view
        self.released: dict[str, int] = {}  # peer → how often a command released it
        self.wait_ssh = 0.0
        self.lock = threading.RLock()
        self.opened = 0
        self.closed = 0
        for h in hosts.values():
            h.pool = self

    def connector(self) -> Connector:
        def connect(ws: Workspace, inv: Inventory, wait_ssh: float) -> FakePool:
            self.wait_ssh = wait_ssh
            self.opened += 1
            return self

        return connect

    def _host(self, name: str) -> FakeHost:
        host = self.hosts.get(name)
        if host is None:
            raise SshError(f"unreachable: no fake host {name}")
        if host.unreachable is not None:
            raise SshError(host.unreachable)
        return host

    def get(self, peer: Peer) -> FakeHost:
        if peer.ssh is None:
            raise SshError("no SSH access in the inventory (addpeer --ssh USER@HOST)")
        return self._host(peer.name)

    def get_instance(self, peer: Peer, inst: Instance) -> FakeHost:
        host = self._host(f"{peer.name}/{inst.name}")
        host.gateway = self.get(peer)  # reached through its gateway, and routed by it
        return host

    def add(self, name: str) -> FakeHost:
        """A new host (a peer's, or "peer/instance"): no file, interface down."""
        host = self.hosts[name] = FakeHost(pool=self)
        return host

    def handshake(self, host: FakeHost, key: str) -> bool:
        """`host` has a session with the running interface whose key is `key`: both are up and
        run each other's public keys."""
        mine = host.public_key
        return any(o is not host and o.public_key == key and mine in o.peers for o in self.hosts.values())

    def release(self, peer: Peer) -> None:
        """A command is done with the host for now: counted (a fake keeps no connection)."""
        self.released[peer.name] = self.released.get(peer.name, 0) + 1

    def close(self) -> None:
        self.closed += 1

    def __enter__(self) -> FakePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def forget_runs(self) -> None:
        """Clear every host's record of the programs it ran."""
        for h in self.hosts.values():
            h.ran.clear()


# ---------------------------------------------------------------- a mesh of hand-added peers


def peer_options(n: int, **more: Any) -> PeerOptions:
    """Peer number n: SSH and endpoint at 198.51.100.n, subnet 10.n.0.0/24, private address 10.n.0.1."""
    return PeerOptions(
        ssh_target=f"root@198.51.100.{n}", endpoint=f"198.51.100.{n}", subnets=[f"10.{n}.0.0/24"],
        private_address=f"10.{n}.0.1", **more,
    )


def fake_mesh(root: Path, names: tuple[str, ...] = ("a", "b", "c")) -> tuple[Workspace, FakePool]:
    """A workspace under `root` with the named peers added by hand (peer i+1 of peer_options),
    and a pool with a fresh FakeHost for each: no file, interface down."""
    ws = Workspace(root, "lab", default_stacks_dir())
    for i, name in enumerate(names, 1):
        addpeer(ws, name, peer_options(i))
    return ws, FakePool({name: FakeHost() for name in names})


def pushed_mesh(root: Path, names: tuple[str, ...] = ("a", "b", "c")) -> tuple[Workspace, FakePool]:
    """fake_mesh after a first push that worked, with the hosts' records of it cleared."""
    ws, pool = fake_mesh(root, names)
    res = push(ws, Reporter(), connect=pool.connector())
    assert res.ok, res.to_json()
    pool.forget_runs()
    return ws, pool


def public_keys(ws: Workspace) -> dict[str, str]:
    """Peer name → its current public key, from the workspace's keystore."""
    return {n: kp.public for n, kp in Keystore(ws.keys_dir).load().pairs.items()}


def rendered(ws: Workspace) -> dict[str, str]:
    """Peer name → the config wgmesh renders for it now."""
    return render(load(ws), Keystore(ws.keys_dir).load())
