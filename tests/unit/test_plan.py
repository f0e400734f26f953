"""The plan (probe report → steps) as tables, and the compiled scripts run under sh against
stand-ins for wg, wg-quick, ip and systemctl."""

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import fixed_keys
from wgmesh.model import Action, HostState
from wgmesh.remote import plan as P
from wgmesh.remote.compiler import command, compile_program, library
from wgmesh.remote.exits import RemoteExit, describe, remote_reason
from wgmesh.remote.steps import Op, Program, step
from wgmesh.render import fingerprints, render, route_sync_command, sha256


@pytest.fixture
def desired(lab_inventory):
    keys = fixed_keys(lab_inventory.names)
    text = render(lab_inventory, keys)["site1"]
    pubs = {n: keys.public(n) for n in lab_inventory.names}
    return P.desired_state(lab_inventory, lab_inventory.peer("site1"), pubs, text)


@pytest.fixture
def text(desired):
    return desired.text


def running(desired, up=True, same_file=True, same_iface=True, systemd=False, **changes):
    """The report of a host that runs exactly `desired`, with `changes` applied."""
    f, i = fingerprints(desired.text)
    state = HostState(
        reachable=True, interface_up=up, file_sha=f if same_file else "0" * 64,
        iface_sha=i if same_iface else "1" * 64, systemd=systemd, unit="enabled" if systemd else None,
        running_peers=frozenset(desired.peers), peers=dict(desired.peers), listen_port=desired.listen_port,
        routes=desired.routes, rules={k: (n, True) for k, n in desired.rules.items()},
    )
    return replace(state, **changes)


# (what the host reports) → (action, write, the steps of the apply program)
START_NEW = [Op.PREPARE, Op.STAGE, Op.DOWN, Op.INSTALL, Op.START, Op.FINISH]
TABLE = [
    ("first start", {"up": False, "same_file": False, "same_iface": False, "running_peers": frozenset()},
     Action.START, True, START_NEW),
    ("down, file current: start without writing", {"up": False}, Action.START, False,
     [Op.PREPARE, Op.DOWN, Op.START, Op.FINISH]),
    ("nothing changed", {}, Action.UNCHANGED, False, None),
    ("only peers changed: syncconf", {"same_file": False}, Action.SYNCCONF, True,
     [Op.PREPARE, Op.STAGE, Op.INSTALL, Op.SYNCCONF, Op.SYNC_ROUTES, Op.FINISH]),
    ("[Interface] changed: restart", {"same_file": False, "same_iface": False}, Action.RESTART, True, START_NEW),
    ("running peers drifted: syncconf, file kept", {"running_peers": frozenset({"k2", "old"})}, Action.SYNCCONF,
     False, [Op.PREPARE, Op.SYNCCONF, Op.SYNC_ROUTES, Op.FINISH]),
    ("a route deleted by hand: routes only", {"routes": frozenset({"10.200.0.2"})}, Action.REPAIR, False,
     [Op.PREPARE, Op.SYNC_ROUTES, Op.FINISH]),
    ("a chain flushed by hand: rules only", {"rules": {(4, "fwd"): (0, True), (4, "nat"): (2, True)}},
     Action.REPAIR, False, [Op.PREPARE, Op.RESTORE_RULES, Op.FINISH]),
    ("a jump deleted by hand: rules only", {"rules": {(4, "fwd"): (2, False), (4, "nat"): (2, True)}},
     Action.REPAIR, False, [Op.PREPARE, Op.RESTORE_RULES, Op.FINISH]),
    ("NAT missing (no default route at boot): rules", {"rules": {(4, "fwd"): (2, True), (4, "nat"): (0, True)}},
     Action.REPAIR, False, [Op.PREPARE, Op.RESTORE_RULES, Op.FINISH]),
    ("unit disabled: enabled again", {"systemd": True, "unit": "disabled"}, Action.REPAIR, False,
     [Op.PREPARE, Op.ENABLE_UNIT, Op.FINISH]),
    ("routes and unit at once", {"systemd": True, "unit": "disabled", "routes": frozenset()}, Action.REPAIR, False,
     [Op.PREPARE, Op.SYNC_ROUTES, Op.ENABLE_UNIT, Op.FINISH]),
    ("allowed IPs drifted: syncconf", "allowed", Action.SYNCCONF, False,
     [Op.PREPARE, Op.SYNCCONF, Op.SYNC_ROUTES, Op.FINISH]),
    ("endpoint drifted: syncconf", "endpoint", Action.SYNCCONF, False,
     [Op.PREPARE, Op.SYNCCONF, Op.SYNC_ROUTES, Op.FINISH]),
    ("listen port drifted: syncconf", {"listen_port": 51999}, Action.SYNCCONF, False,
     [Op.PREPARE, Op.SYNCCONF, Op.SYNC_ROUTES, Op.FINISH]),
    ("peers changed and a chain flushed: syncconf + rules", {"same_file": False, "rules": {}}, Action.SYNCCONF,
     True, [Op.PREPARE, Op.STAGE, Op.INSTALL, Op.SYNCCONF, Op.SYNC_ROUTES, Op.RESTORE_RULES, Op.FINISH]),
]


def _report(desired, reported):
    if reported in ("allowed", "endpoint"):
        key = sorted(desired.peers)[0]
        peers = dict(desired.peers)
        peers[key] = (replace(peers[key], allowed_ips=frozenset({"10.99.0.0/24"})) if reported == "allowed"
                      else replace(peers[key], endpoint="198.18.1.99:51820"))
        return running(desired, peers=peers)
    return running(desired, **reported)


@pytest.mark.parametrize(("case", "reported", "action", "write", "ops"), TABLE, ids=[t[0] for t in TABLE])
def test_plan_table(desired, case, reported, action, write, ops):
    state = _report(desired, reported)
    p = P.decide(desired, state)
    assert (p.action, p.write) == (action, write), p.reason
    if ops is not None:
        program = P.apply_program(p, "wg0", systemd=state.systemd, text=desired.text)
        assert program.ops() == ops and program.stdin == write
        assert program.exclusive and program.time_limit == P.APPLY_LIMIT
    if action == Action.REPAIR:
        assert p.reason.startswith("repaired: ")


def test_a_repair_names_what_it_repaired(desired):
    p = P.decide(desired, running(desired, routes=frozenset(), rules={}))
    assert p.reason == "repaired: routes, firewall"
    words = P.findings(desired, running(desired, routes=frozenset(desired.routes - {"10.10.2.0/24"})))
    assert words == ["route missing: 10.10.2.0/24"]
    assert P.findings(desired, running(desired, up=False)) == ["interface wg0 is down"]
    assert P.findings(desired, running(desired)) == []


def test_the_stage_step_carries_the_configs_sha256(desired):
    program = P.apply_program(P.Plan(Action.SYNCCONF, True, ""), "wg0", False, desired.text)
    assert step(Op.STAGE, sha256(desired.text)) in program.steps


def test_start_and_restart_carry_systemd_and_whether_it_was_up(desired):
    restart = P.apply_program(P.decide(desired, running(desired, same_iface=False, same_file=False)), "wg0", True,
                              desired.text)
    assert step(Op.DOWN, True) in restart.steps and step(Op.START, True, True) in restart.steps
    start = P.apply_program(P.decide(desired, running(desired, up=False)), "wg0", False)
    assert step(Op.START, False, False) in start.steps


def test_remote_filter_matches_local_fingerprint(text, tmp_path):
    """The awk run on hosts must select exactly the lines render.fingerprints hashes."""
    f = tmp_path / "wg0.conf"
    f.write_text(text)
    script = library("probe") + f"\nwgm_iface_lines {f} | sha256sum | cut -d' ' -f1"
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert out == fingerprints(text)[1]


def test_scripts_take_config_on_stdin_and_hold_no_key(desired, lab_inventory):
    private = fixed_keys(lab_inventory.names).pairs["site1"].private
    changes = ({"up": False, "same_file": False}, {"same_file": False, "same_iface": False}, {"same_file": False})
    for reported in changes:
        program = P.apply_program(P.decide(desired, running(desired, **reported)), "wg0", False, desired.text)
        script = compile_program(program)
        assert 'cat >"$TMP"' in script  # the config comes on stdin
        assert 'mv -f "$TMP" "$CONF"' in script and "WGDIR=/etc/wireguard" in script and "/tmp" not in script
        assert private not in command(program, "ubuntu")
    sync = compile_program(P.apply_program(P.Plan(Action.SYNCCONF, True, ""), "wg0", False))
    assert 'st=$(wg-quick strip "$IFACE") || wgm_fail "$WGM_EXIT_SYNCCONF_FAILED"' in sync
    assert "ip -force -batch -" in sync and 'wgm_fail "$WGM_EXIT_ROUTES_FAILED"' in sync
    assert "WGM_EXIT_SYNCCONF_FAILED=43" in sync and "WGM_EXIT_ROUTES_FAILED=44" in sync
    start = compile_program(P.apply_program(P.Plan(Action.START, False, ""), "wg0", True))
    # a oneshot unit may be "active" with the interface gone: restart, never a no-op enable --now
    assert 'systemctl enable "wg-quick@$IFACE" 9>&- && systemctl restart "wg-quick@$IFACE" 9>&-' in start
    assert 'systemctl disable "wg-quick@$IFACE"' in start  # a failed first start leaves no enabled unit
    assert start.splitlines()[-2:] == ["wgm_start 1 0", "wgm_finish"]
    probe = P.probe_program("wg0")
    assert command(probe, "ubuntu").startswith("sudo -n sh -c ")
    assert command(probe, "root").startswith("sh -c ")


def test_exit_statuses_are_shared():
    assert describe(42, "apply") == "wg-quick up failed, previous config restored"
    assert describe(43, "apply") == "wg syncconf failed"
    assert describe(44, "apply") == "route sync failed, previous config restored"
    assert describe(7, "apply") == "apply"
    for name in ("probe", "apply", "routes", "stop", "status"):
        for e in RemoteExit:
            if e.value >= 42:
                assert f"exit {e.value}" not in library(name)  # scripts say $WGM_EXIT_*, never the number


def _fakes(tmp_path: Path, tools: dict[str, str]) -> dict[str, str]:
    for name, body in tools.items():
        (tmp_path / name).write_text("#!/bin/sh\n" + body)
        (tmp_path / name).chmod(0o755)
    return {"PATH": f"{tmp_path}:/usr/bin:/bin"}


def test_route_sync_script_runs(tmp_path):
    """Routes for the running AllowedIPs are replaced in one batch, stale ones deleted, kernel
    routes left alone."""
    log = tmp_path / "log"
    env = _fakes(tmp_path, {
        "wg": "printf 'K/1=\\t10.200.0.2/32 10.10.2.0/24\\nK/2=\\tfd00:2::/64\\n'\n",
        "ip": f"""echo "$*" >> {log}
case "$*" in
  *batch*) sed 's/^/batch: /' >> {log};;
  *"-4 route show"*) printf '10.200.0.9 scope link\\n10.200.0.2 scope link\\n'
                     printf '10.10.2.0/24 scope link\\n10.10.9.0/24 scope link\\n';;
  *"-6 route show"*) printf 'fe80::/64 proto kernel metric 256\\nfd00:2::/64 metric 1024\\n';;
esac
""",
    })
    subprocess.run(["sh", "-c", compile_program(Program("routes", "wg0", (step(Op.SYNC_ROUTES),)))], env=env,
                   check=True)
    calls = log.read_text().splitlines()
    assert "batch: route replace 10.10.2.0/24 dev wg0" in calls and "batch: route replace fd00:2::/64 dev wg0" in calls
    assert "-4 route del 10.200.0.9 dev wg0" in calls and "-4 route del 10.10.9.0/24 dev wg0" in calls
    assert not any(("del 10.10.2.0/24" in c or "fe80" in c or "del 10.200.0.2 " in c or "del fd00" in c) for c in calls)


def test_route_batch_is_the_same_in_postup_and_after_syncconf(tmp_path):
    """PostUp (a single line in wg0.conf) and routes.sh must feed `ip -batch` the same lines."""
    batches = tmp_path / "batches"
    env = _fakes(tmp_path, {
        "wg": "printf 'K/1=\\t10.200.0.2/32 10.10.2.0/24\\nK/2=\\tfd00:2::/64\\t\\nK/3=\\t(none)\\n'\n",
        "ip": f'case "$*" in *batch*) cat >> {batches}; echo --- >> {batches};; esac\n',
    })
    subprocess.run(["bash", "-c", route_sync_command("wg0")], env=env, check=True)
    subprocess.run(["sh", "-c", compile_program(Program("routes", "wg0", (step(Op.SYNC_ROUTES),)))], env=env,
                   check=True)
    first, second, _ = batches.read_text().split("---\n")
    assert first == second and "route replace 10.10.2.0/24 dev wg0" in first


def _apply(tmp_path, program, stdin=b"", fail_up=False):
    wgdir = tmp_path / "etc"
    log = tmp_path / "calls"
    env = _fakes(tmp_path, {
        "wg": 'case "$*" in "show wg0") [ -f ' + str(tmp_path / "up") + " ];; *) exit 0;; esac\n",
        # wireguard-go, started by wg-quick up, must not inherit the host's lock (fd 9)
        "wg-quick": f'echo "wg-quick $*" >> {log}\n'
                    'if [ -e /proc/$$/fd/9 ]; then echo "lock fd leaked" >&2; exit 9; fi\n'
                    f'case "$1" in up) {"exit 1" if fail_up else "true"}; touch {tmp_path / "up"};;'
                    f' down) rm -f {tmp_path / "up"};; esac\n',
        "ip": "exit 0\n",
        "chown": "exit 0\n",
    })
    r = subprocess.run(["sh", "-c", compile_program(replace(program, directory=str(wgdir)))], input=stdin, env=env,
                       capture_output=True)
    return r, wgdir


def _files(wgdir):
    """What an apply leaves in the directory, besides the host's wgmesh lock file."""
    return sorted(f for f in os.listdir(wgdir) if f != ".wgmesh.lock")


def test_a_truncated_transfer_is_refused_and_changes_nothing(tmp_path):
    """A transfer cut between two [Peer] sections is still a valid config: the sha256 says it
    is not the one sent."""
    wgdir = tmp_path / "etc"
    wgdir.mkdir()
    (wgdir / "wg0.conf").write_text("old\n")
    whole = "[Interface]\n\n[Peer]\nPublicKey = A\n\n[Peer]\nPublicKey = B\n"
    program = P.apply_program(P.Plan(Action.SYNCCONF, True, ""), "wg0", False, whole)
    r, _ = _apply(tmp_path, program, whole[: whole.index("\n[Peer]\nPublicKey = B")].encode())
    assert r.returncode == RemoteExit.TRUNCATED
    assert b"arrived incomplete" in r.stderr
    assert (wgdir / "wg0.conf").read_text() == "old\n" and _files(wgdir) == ["wg0.conf"]


def test_first_start_installs_the_config_0600(tmp_path):
    program = P.apply_program(P.Plan(Action.START, True, ""), "wg0", False, "[Interface]\n")
    r, wgdir = _apply(tmp_path, program, b"[Interface]\n")
    assert r.returncode == 0, r.stderr
    assert (wgdir / "wg0.conf").read_bytes() == b"[Interface]\n"
    assert oct((wgdir / "wg0.conf").stat().st_mode & 0o777) == "0o600" and oct(wgdir.stat().st_mode & 0o777) == "0o700"
    assert _files(wgdir) == ["wg0.conf"]  # no temporary file, no .prev copy of the key


def test_failed_restart_puts_the_previous_config_back(tmp_path):
    wgdir = tmp_path / "etc"
    wgdir.mkdir()
    (wgdir / "wg0.conf").write_text("old\n")
    (tmp_path / "up").touch()
    program = P.apply_program(P.Plan(Action.RESTART, True, ""), "wg0", False, "new\n")
    r, _ = _apply(tmp_path, program, b"new\n", fail_up=True)
    assert r.returncode == RemoteExit.START_FAILED
    assert (wgdir / "wg0.conf").read_text() == "old\n"
    assert _files(wgdir) == ["wg0.conf"]


@pytest.mark.parametrize("failing", ["syncconf", "routes"])
def test_failed_syncconf_or_route_sync_puts_the_previous_config_back(tmp_path, failing):
    """Else the next probe would find the new file and call the host up to date."""
    wgdir = tmp_path / "etc"
    wgdir.mkdir()
    (wgdir / "wg0.conf").write_text("old\n")
    env = _fakes(tmp_path, {
        "wg": 'case "$1" in syncconf) ' + ("exit 1" if failing == "syncconf" else "cat >/dev/null") + ";; esac\n",
        "wg-quick": "echo stripped\n",
        "ip": 'case "$*" in *batch*) ' + ("exit 2" if failing == "routes" else "cat >/dev/null") + ";; esac\n",
        "chown": "exit 0\n",
    })
    program = replace(P.apply_program(P.Plan(Action.SYNCCONF, True, ""), "wg0", False, "new\n"), directory=str(wgdir))
    r = subprocess.run(["sh", "-c", compile_program(program)], input=b"new\n", env=env, capture_output=True)
    want = RemoteExit.SYNCCONF_FAILED if failing == "syncconf" else RemoteExit.ROUTES_FAILED
    assert r.returncode == want, r.stderr
    assert (wgdir / "wg0.conf").read_text() == "old\n"
    assert _files(wgdir) == ["wg0.conf"]  # no temporary file, no .prev copy of the key


def test_failed_first_start_leaves_no_config(tmp_path):
    program = P.apply_program(P.Plan(Action.START, True, ""), "wg0", False, "new\n")
    r, wgdir = _apply(tmp_path, program, b"new\n", fail_up=True)
    assert r.returncode == RemoteExit.START_FAILED
    assert _files(wgdir) == []


def test_sudo_password_prompt_is_a_clear_failure():
    msg = remote_reason("probe", 1, "sudo: a password is required\n")
    assert "passwordless sudo" in msg and "sudo -n" in msg
    assert remote_reason("apply", 42, "[#] ip link add wg0 type wireguard\nError: boom\n").endswith("Error: boom")


def test_probe_waits_for_cloud_init_only_when_asked():
    assert Op.WAIT_CLOUD_INIT not in P.probe_program("wg0").ops()
    program = P.probe_program("wg0", 300)
    assert program.ops() == [Op.WAIT_CLOUD_INIT, Op.PROBE]
    assert "wgm_wait_cloud_init 300" in compile_program(program)
    assert 'timeout "$1" cloud-init status --wait' in compile_program(program)


def test_parse_probe():
    s = P.parse_probe("file abc\niface def\nup\npeer K1=\npeer K2=\nsystemd\nend\n")
    assert s.interface_up and s.systemd and s.file_sha == "abc" and s.iface_sha == "def"
    assert s.running_peers == {"K1=", "K2="}
    s = P.parse_probe("file -\niface -\ndown\nend\n")
    assert not s.interface_up and s.file_sha is None
    with pytest.raises(ValueError, match="cut short"):
        P.parse_probe("file abc\n")
    with pytest.raises(ValueError, match="not installed"):
        P.parse_probe("wg missing\nfile -\niface -\ndown\nend\n")


def test_the_probe_script_reports_what_parse_probe_reads(tmp_path, text):
    """Against stand-ins for wg, ip and iptables: the dump (secret columns never printed), the
    routes (kernel routes left out), the chains with their rule counts and jumps."""
    (tmp_path / "wg0.conf").write_text(text)
    dump = ("PRIVATE=\tPUB0=\t51820\toff\n"
            "K1=\tPSK1=\t198.18.1.12:51820\t10.200.0.2/32,10.10.2.0/24\t0\t0\t0\toff\n"
            "K2=\tPSK2=\t(none)\t10.200.0.3/32\t0\t0\t0\t25\n")
    env = _fakes(tmp_path, {
        "wg": f'case "$*" in "show wg0 dump") printf \'{dump}\';; *) exit 1;; esac\n',
        "wg-quick": "",
        "ip": 'case "$*" in *"-4 route show dev wg0"*) printf "10.200.0.2 scope link\\n10.10.2.0/24 scope link\\n'
              '10.200.0.0/16 proto kernel scope link\\n";; esac\n',
        "iptables-save": "printf '%s\\n' '*filter' ':FORWARD ACCEPT [0:0]' ':WGM-wg0-FWD - [0:0]' "
                         "'-A FORWARD -j WGM-wg0-FWD' '-A WGM-wg0-FWD -i wg0 -j DROP' '-A WGM-wg0-FWD -o wg0 -j DROP' "
                         "COMMIT '*nat' ':WGM-wg0-FWD - [0:0]' COMMIT\n",
        "ip6tables-save": "exit 1\n",
    })
    program = replace(P.probe_program("wg0"), directory=str(tmp_path))
    out = subprocess.run(["sh", "-c", compile_program(program)], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert "PRIVATE=" not in out and "PSK1=" not in out
    s = P.parse_probe(out)
    assert (s.file_sha, s.iface_sha) == fingerprints(text) and s.interface_up and s.running_peers == {"K1=", "K2="}
    assert s.listen_port == 51820 and s.routes == {"10.200.0.2", "10.10.2.0/24"}
    assert s.peers["K1="].allowed_ips == {"10.200.0.2/32", "10.10.2.0/24"}
    assert s.peers["K1="].endpoint == "198.18.1.12:51820"
    assert s.peers["K2="].endpoint is None and s.peers["K2="].keepalive == 25
    # a chain of the same name in another table does not count; no ip6tables rules: none at all
    assert s.rules[(4, "fwd")] == (2, True) and s.rules[(4, "nat")] == (-1, False)
    assert s.rules[(4, "mss")] == (-1, False) and s.rules[(6, "fwd")] == (-1, False)
    assert s.no_egress == {4, 6}  # the stand-in ip shows no default route


def test_an_empty_nat_chain_is_no_drift_where_there_is_no_egress_of_that_family():
    """A gateway with an IPv6 subnet but an IPv4-only uplink: PostUp finds no IPv6 egress and
    writes no masquerade; that is what it should run, not drift (push could never repair it)."""
    desired = P.Desired("", {}, 51820, frozenset(), {(6, "nat"): 1})
    rules = {(6, "nat"): (0, True)}
    assert P.drift(desired, HostState(True, True, routes=frozenset(), rules=rules, no_egress=frozenset({6}))) == []
    found = P.drift(desired, HostState(True, True, routes=frozenset(), rules=rules))
    assert found == [(P.FIREWALL, "chain WGM-wg0-NAT (IPv6) has 0 rules, not 1")]


def test_a_lab_host_never_takes_the_machines_systemd_for_its_own(tmp_path):
    """A stand-in /run/systemd/system: a shell that is PID 1 of its own PID namespace sees it in
    its own mount namespace (a systemd host, as in a container); a host in a further mount
    namespace — a plain lab host on a machine that runs systemd — sees it too, but must not
    drive that PID 1's units."""
    check = library("common") + "\nif wgm_has_systemd; then echo systemd; else echo plain; fi\n"
    (tmp_path / "check.sh").write_text(check)
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    inner = " ".join(["unshare", *user, "--mount", "sh", str(tmp_path / "check.sh")])
    outer = (f"mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && sh {tmp_path / 'check.sh'} && {inner}")
    r = subprocess.run(["unshare", *user, "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c", outer],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["systemd", "plain"]
