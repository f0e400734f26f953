"""Exit statuses of the remote scripts, shared by both sides: the compiler hands them to the
scripts as WGM_EXIT_* variables, and the commands turn them into reasons."""

from __future__ import annotations

from enum import IntEnum


class RemoteExit(IntEnum):
    OK = 0
    FAILED = 1
    START_FAILED = 42  # wg-quick up (or the unit) failed; the previous config was put back
    SYNCCONF_FAILED = 43
    ROUTES_FAILED = 44
    TRUNCATED = 45  # the config arrived incomplete: nothing was changed
    LOCKED = 46  # another wgmesh run holds the host's lock
    RULES_FAILED = 47
    UNIT_FAILED = 48
    AGENT_FAILED = 49  # the failover agent could not be installed, started or asked
    KILLED = 124  # the remote time limit stopped the script; the previous config was put back

    @property
    def what(self) -> str:
        return _WHAT.get(self, "apply")


_WHAT = {
    RemoteExit.START_FAILED: "wg-quick up failed, previous config restored",
    RemoteExit.SYNCCONF_FAILED: "wg syncconf failed",
    RemoteExit.ROUTES_FAILED: "route sync failed, previous config restored",
    RemoteExit.TRUNCATED: "the config did not arrive whole",
    RemoteExit.LOCKED: "the host is busy with another wgmesh run",
    RemoteExit.RULES_FAILED: "restoring the firewall rules failed",
    RemoteExit.UNIT_FAILED: "enabling the wg-quick unit failed",
    RemoteExit.AGENT_FAILED: "the failover agent failed",
    RemoteExit.KILLED: "stopped by the remote time limit, previous config restored",
}


def describe(rc: int, default: str) -> str:
    """What a script's exit status says, or `default` for one that is not ours."""
    for e, what in _WHAT.items():
        if e.value == rc:
            return what
    return default


def remote_reason(what: str, rc: int, err: str) -> str:
    """A short reason from a script's exit status and the tail of its stderr (wireguard-go's
    warnings and wg-quick's decorations left out)."""
    if "sudo" in err and "password" in err:
        return "sudo needs a password: give the SSH user passwordless sudo (sudo -n is used)"
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and "wireguard-go" not in ln and "│" not in ln]
    tail = "; ".join(lines[-3:])
    return f"{what} (exit {rc})" + (f": {tail}" if tail else "")
