"""Remote work as data: a Program is the steps one host runs, in order. Pure.

Each Op is one function of the scripts in scripts/ (`wgm_<op>`); its arguments are plain
values. The compiler (compiler.py) is the only place that turns a Program into shell.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Op(StrEnum):
    # probe.sh
    WAIT_CLOUD_INIT = "wait_cloud_init"  # (seconds)
    PROBE = "probe"
    # apply.sh
    PREPARE = "prepare"
    STAGE = "stage"  # (sha256): the config from standard input into a temporary file, checked
    DOWN = "down"  # (systemd)
    INSTALL = "install"
    START = "start"  # (systemd, was_up): rolls back and exits START_FAILED on failure
    SYNCCONF = "syncconf"
    RESTORE_RULES = "restore_rules"  # the firewall chains again, from the config's PostUp lines
    ENABLE_UNIT = "enable_unit"
    FINISH = "finish"
    # routes.sh
    SYNC_ROUTES = "sync_routes"
    # agent.sh: the failover agent of HA meshes
    AGENT_INSTALL = "agent_install"  # (sha256): its bundle (a tar) from standard input into /etc/wgmesh
    AGENT_START = "agent_start"  # (systemd): start it, or make it reload its program and config
    AGENT_REMOVE = "agent_remove"  # (systemd): stop it, give up the site's route table, remove it
    AGENT_TAKEOVER = "agent_takeover"  # ask it to make this gateway its site's active one
    AGENT_STATE = "agent_state"
    # stop.sh
    STOP_ALL = "stop_all"
    # status.sh
    DUMP = "dump"
    PING = "ping"  # (attempts, wait, targets...)


# Which script files define each op (and what it calls).
LIBRARY: dict[Op, tuple[str, ...]] = {
    Op.WAIT_CLOUD_INIT: ("probe",),
    Op.PREPARE: ("apply",), Op.STAGE: ("apply",), Op.DOWN: ("apply",), Op.INSTALL: ("apply",),
    Op.START: ("apply",), Op.SYNCCONF: ("apply",), Op.FINISH: ("apply",),
    Op.RESTORE_RULES: ("apply",), Op.ENABLE_UNIT: ("apply",),
    Op.SYNC_ROUTES: ("apply", "routes"),
    Op.AGENT_INSTALL: ("agent",), Op.AGENT_START: ("agent",), Op.AGENT_REMOVE: ("agent",),
    Op.AGENT_TAKEOVER: ("agent",), Op.AGENT_STATE: ("agent",), Op.PROBE: ("probe", "agent"),
    Op.STOP_ALL: ("stop", "agent"),
    Op.DUMP: ("status",), Op.PING: ("status",),
}

Arg = str | int | bool


@dataclass(frozen=True)
class Step:
    op: Op
    args: tuple[Arg, ...] = ()

    def __str__(self) -> str:
        return self.op.value + (f"({', '.join(map(str, self.args))})" if self.args else "")


@dataclass(frozen=True)
class Program:
    name: str  # probe, apply, stop, dump, ping: for messages
    iface: str  # a validated interface name
    steps: tuple[Step, ...]
    stdin: bool = False  # the program reads a config on standard input
    directory: str = "/etc/wireguard"  # where wg-quick reads <iface>.conf
    exclusive: bool = False  # changes the host: holds the host's lock (waits LOCK_WAIT s at most)
    time_limit: int = 0  # seconds; the host stops the script itself after that (0: no limit)

    def ops(self) -> list[Op]:
        return [s.op for s in self.steps]


def step(op: Op, *args: Arg) -> Step:
    return Step(op, tuple(args))
