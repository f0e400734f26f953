"""push on a fake host pool: first start, nothing to do, hitless syncconf, drift, faults."""

import json

from tests.fakes import public_keys, rendered
from wgmesh.commands.addpeer import addpeer
from wgmesh.commands.push import push
from wgmesh.commands.setpeer import setpeer
from wgmesh.errors import ExitStatus
from wgmesh.peers import PeerOptions
from wgmesh.progress import Reporter
from wgmesh.remote.steps import Op

START_OPS = [Op.PREPARE, Op.STAGE, Op.DOWN, Op.INSTALL, Op.START, Op.FINISH]
SYNC_WRITE_OPS = [Op.PREPARE, Op.STAGE, Op.INSTALL, Op.SYNCCONF, Op.SYNC_ROUTES, Op.FINISH]


def do_push(ws, pool):
    return push(ws, Reporter(), connect=pool.connector())


def actions(res):
    return {n: (r.ok, r.action) for n, r in res.results.items()}


def test_first_push_starts_every_host_with_its_config(mesh):
    ws, pool = mesh
    res = do_push(ws, pool)
    assert res.exit_status == ExitStatus.OK and res.ok
    assert actions(res) == {n: (True, "start") for n in "abc"}
    texts, pubs = rendered(ws), public_keys(ws)
    for name, host in pool.hosts.items():
        assert [r.program.name for r in host.ran] == ["probe", "apply"]
        (apply,) = host.programs("apply")
        assert apply.ops == START_OPS and apply.stdin == texts[name].encode()
        assert host.conf == texts[name] and host.up
        assert host.public_key == pubs[name]
        assert host.peers == {pubs[o] for o in "abc" if o != name}
        assert (ws.output_dir / f"{name}.conf").read_text() == texts[name]
    # PostUp's route sync: every other peer's tunnel address and subnet, via the interface
    assert pool.hosts["a"].routes == {"10.200.0.2/32", "10.2.0.0/24", "10.200.0.3/32", "10.3.0.0/24"}
    assert (pool.opened, pool.closed) == (1, 1)


def test_second_push_changes_nothing(pushed):
    ws, pool = pushed
    res = do_push(ws, pool)
    assert res.exit_status == ExitStatus.OK
    assert actions(res) == {n: (True, "unchanged") for n in "abc"}
    assert all([r.program.name for r in h.ran] == ["probe"] for h in pool.hosts.values())


def test_a_changed_peer_is_applied_with_syncconf_on_the_others(pushed):
    ws, pool = pushed
    setpeer(ws, "b", PeerOptions(endpoint="198.51.100.22:51900", subnets=["10.2.0.0/24", "10.22.0.0/24"]))
    res = do_push(ws, pool)
    # b's own [Interface] carries its subnets (NAT sources in PostUp): b restarts, the others sync
    assert actions(res) == {"a": (True, "syncconf"), "b": (True, "restart"), "c": (True, "syncconf")}
    texts = rendered(ws)
    for name in "ac":
        host = pool.hosts[name]
        assert host.applied() == [SYNC_WRITE_OPS]
        assert host.conf == texts[name] and host.running_conf == texts[name]
        assert {"10.22.0.0/24", "10.2.0.0/24"} <= host.routes
    assert "Endpoint = 198.51.100.22:51900" in pool.hosts["a"].conf
    assert pool.hosts["b"].applied() == [[Op.PREPARE, Op.STAGE, Op.DOWN, Op.INSTALL, Op.START, Op.FINISH]]


def test_an_endpoint_change_leaves_the_changed_peer_alone(pushed):
    ws, pool = pushed
    setpeer(ws, "c", PeerOptions(endpoint="198.51.100.33"))
    res = do_push(ws, pool)
    assert actions(res) == {"a": (True, "syncconf"), "b": (True, "syncconf"), "c": (True, "unchanged")}
    assert pool.hosts["c"].applied() == []
    assert res.results["a"].detail == "peers changed"


def test_an_unreachable_host_fails_with_its_reason_and_the_others_converge(mesh):
    ws, pool = mesh
    pool.hosts["b"].unreachable = "unreachable: connection refused (198.51.100.2:22)"
    res = do_push(ws, pool)
    assert res.exit_status == ExitStatus.HOSTS_FAILED and res.failed == ["b"]
    assert res.results["b"].detail == "unreachable: connection refused (198.51.100.2:22)"
    assert actions(res)["a"] == (True, "start") and actions(res)["c"] == (True, "start")
    assert pool.hosts["b"].ran == [] and pool.hosts["b"].conf is None
    doc = json.loads(json.dumps(res.to_json()))
    assert set(doc) == {"ok", "dry_run", "unresolved_endpoints", "failed", "pending_revocations", "hosts"}
    assert doc["dry_run"] is False and doc["unresolved_endpoints"] == {}
    assert doc["ok"] is False and doc["failed"] == ["b"] and doc["pending_revocations"] == []
    assert doc["hosts"]["b"]["ok"] is False and doc["hosts"]["b"]["action"] == "failed"
    assert doc["hosts"]["b"]["detail"].startswith("unreachable: connection refused")
    assert doc["hosts"]["a"] == {"ok": True, "action": "start", "detail": "interface is down; new config",
                                 "seconds": doc["hosts"]["a"]["seconds"]}
    # the next push, with the host back, repairs it and touches nothing else
    pool.hosts["b"].unreachable = None
    res = do_push(ws, pool)
    assert res.exit_status == ExitStatus.OK
    assert actions(res) == {"a": (True, "unchanged"), "b": (True, "start"), "c": (True, "unchanged")}


def test_a_failing_first_start_leaves_nothing_and_the_others_converge(mesh):
    ws, pool = mesh
    pool.hosts["b"].fail_start = "RTNETLINK answers: Operation not supported"
    res = do_push(ws, pool)
    assert res.exit_status == ExitStatus.HOSTS_FAILED and res.failed == ["b"]
    detail = res.results["b"].detail
    assert "wg-quick up failed, previous config restored" in detail
    assert "(exit 42)" in detail and detail.endswith("RTNETLINK answers: Operation not supported")
    b = pool.hosts["b"]
    assert b.conf is None and not b.up  # a failed first start leaves no config
    assert actions(res)["a"] == (True, "start") and actions(res)["c"] == (True, "start")


def test_a_failing_restart_keeps_the_previous_config_running(pushed):
    ws, pool = pushed
    before = rendered(ws)["b"]
    setpeer(ws, "b", PeerOptions(subnets=["10.2.0.0/24", "10.22.0.0/24"]))  # b's PostUp changes: restart
    pool.hosts["b"].fail_start = "Error: boom"
    res = do_push(ws, pool)
    assert res.failed == ["b"] and res.results["b"].detail == (
        "wg-quick up failed, previous config restored (exit 42): Error: boom"
    )
    b = pool.hosts["b"]
    assert b.conf == before and b.up and b.running_conf == before
    assert b.peers == {public_keys(ws)[o] for o in "ac"}


def test_a_failing_syncconf_is_reported(pushed):
    ws, pool = pushed
    setpeer(ws, "c", PeerOptions(endpoint="198.51.100.33"))
    pool.hosts["a"].fail_syncconf = "Line unrecognized: `Endpoint=...'"
    res = do_push(ws, pool)
    assert res.failed == ["a"] and res.exit_status == ExitStatus.HOSTS_FAILED
    assert res.results["a"].detail.startswith("wg syncconf failed (exit 43): Line unrecognized")
    assert actions(res)["b"] == (True, "syncconf")


def test_a_failed_syncconf_is_retried_by_the_next_push(pushed):
    ws, pool = pushed
    setpeer(ws, "c", PeerOptions(endpoint="198.51.100.33"))
    pool.hosts["a"].fail_syncconf = "boom"
    assert do_push(ws, pool).failed == ["a"]
    pool.hosts["a"].fail_syncconf = None
    res = do_push(ws, pool)
    assert actions(res)["a"] == (True, "syncconf")  # not "unchanged": the previous file went back
    assert pool.hosts["a"].running_conf == rendered(ws)["a"], res.results["a"]


def test_drift_of_the_running_peers_is_synced_without_writing(pushed):
    ws, pool = pushed
    pubs = public_keys(ws)
    a = pool.hosts["a"]
    a.peers.discard(pubs["c"])  # someone ran `wg set wg0 peer ... remove` by hand
    a.peers.add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    res = do_push(ws, pool)
    assert actions(res) == {"a": (True, "syncconf"), "b": (True, "unchanged"), "c": (True, "unchanged")}
    assert res.results["a"].detail == "running peers differ from the config file (1 missing, 1 unknown)"
    (apply,) = a.programs("apply")
    assert apply.ops == [Op.PREPARE, Op.SYNCCONF, Op.SYNC_ROUTES, Op.FINISH] and apply.stdin is None
    assert a.peers == {pubs["b"], pubs["c"]}


def test_an_interface_found_down_is_started_with_the_same_file(pushed):
    ws, pool = pushed
    pool.hosts["c"].up = False  # the host rebooted without the unit enabled
    res = do_push(ws, pool)
    assert actions(res)["c"] == (True, "start") and res.results["c"].detail == "interface is down"
    (apply,) = pool.hosts["c"].programs("apply")
    assert apply.ops == [Op.PREPARE, Op.DOWN, Op.START, Op.FINISH] and apply.stdin is None
    assert pool.hosts["c"].up


def test_sudo_asking_for_a_password_is_a_clear_failure(mesh):
    ws, pool = mesh
    pool.hosts["c"].needs_password = True
    res = do_push(ws, pool)
    assert res.failed == ["c"]
    assert res.results["c"].detail.startswith("sudo needs a password")
    assert [r.program.name for r in pool.hosts["c"].ran] == ["probe"] and pool.hosts["c"].conf is None


def test_a_peer_without_ssh_is_skipped(mesh):
    ws, pool = mesh
    addpeer(ws, "d", PeerOptions(endpoint="198.51.100.4", subnets=["10.4.0.0/24"]))
    res = do_push(ws, pool)
    assert res.exit_status == ExitStatus.OK
    assert actions(res)["d"] == (True, "skipped")
    assert (ws.output_dir / "d.conf").read_text() == rendered(ws)["d"]  # to install by hand
    assert public_keys(ws)["d"] in pool.hosts["a"].peers


def test_systemd_is_handed_to_the_apply_steps(mesh):
    ws, pool = mesh
    pool.hosts["a"].systemd = False
    do_push(ws, pool)
    starts = {n: h.programs("apply")[0].program.steps[4] for n, h in pool.hosts.items()}
    assert {n: s.op for n, s in starts.items()} == {n: Op.START for n in "abc"}
    assert {n: s.args for n, s in starts.items()} == {"a": (False, False), "b": (True, False), "c": (True, False)}


def test_a_transfer_cut_midway_is_refused_on_the_host(pushed):
    """The host checks the config's sha256 before the rename: a file cut between two [Peer]
    sections would be a valid config that silently drops peers."""
    ws, pool = pushed
    setpeer(ws, "c", PeerOptions(endpoint="198.51.100.33"))
    a = pool.hosts["a"]
    before = a.conf
    a.cut_stdin = 200  # the channel delivers only the first 200 bytes
    res = do_push(ws, pool)
    assert res.failed == ["a"] and res.exit_status == ExitStatus.HOSTS_FAILED
    assert res.results["a"].detail.startswith("the config did not arrive whole (exit 45)")
    assert a.conf == before and res.results["b"].action == "syncconf"


def test_every_host_is_released_when_its_push_is_done(tmp_path):
    """A pool that cannot keep every host open may close a host's connections as soon as the
    command is done with it (HostPool.release): push says so for each host."""
    from tests.fakes import fake_mesh

    ws, pool = fake_mesh(tmp_path)
    assert push(ws, Reporter(), connect=pool.connector()).ok
    assert pool.released == {"a": 1, "b": 1, "c": 1}
