"""delpeer, rotate-keys and destroy on a fake host pool: what each host runs, and when pending
revocations settle (.wgmesh/<inventory>/revocations.json) and retired keys are purged."""

import json

from tests.fakes import fake_mesh, public_keys, rendered
from wgmesh import revocations as revmod
from wgmesh import store
from wgmesh.commands.delpeer import delpeer
from wgmesh.commands.destroy import destroy
from wgmesh.commands.push import push
from wgmesh.commands.rotate_keys import rotate_keys
from wgmesh.commands.status import status
from wgmesh.errors import ExitStatus
from wgmesh.keys import Keystore
from wgmesh.progress import Reporter
from wgmesh.remote.steps import Op
from wgmesh.status import LinkState


def actions(res):
    return {n: r.action for n, r in res.results.items()}


def all_fresh(ws, pool):
    res = status(ws, connect=pool.connector())
    return res.exit_status == ExitStatus.OK and {lk.state for lk in res.links} == {LinkState.FRESH}


# ---------------------------------------------------------------- delpeer


def test_delpeer_stops_the_peer_and_syncs_the_others(pushed):
    ws, pool = pushed
    gone = public_keys(ws)["c"]
    res = delpeer(ws, "c", Reporter(), connect=pool.connector())
    assert res.exit_status == ExitStatus.OK
    assert res.stop is not None and res.stop.ok and res.stop.action == "stopped"
    c = pool.hosts["c"]
    assert [r.ops for r in c.ran] == [[Op.STOP_ALL]] and c.conf is None and not c.up
    assert actions(res.push) == {"a": "syncconf", "b": "syncconf"}
    for name in "ab":
        assert gone not in pool.hosts[name].peers and pool.hosts[name].conf == rendered(ws)[name]
    assert "c" not in store.load(ws).names and "c" not in public_keys(ws)
    assert not ws.revocations_path.exists()
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["removed"] == "c" and doc["stopped"] is True and doc["stop_detail"] == ""
    assert doc["push"]["ok"] is True and set(doc["push"]["hosts"]) == {"a", "b"}
    assert all_fresh(ws, pool)


def test_delpeer_with_a_host_unreachable_leaves_a_pending_revocation_until_a_push_reaches_it(pushed):
    ws, pool = pushed
    gone = public_keys(ws)["c"]
    pool.hosts["b"].unreachable = "unreachable: timed out"
    res = delpeer(ws, "c", Reporter(), connect=pool.connector())
    assert res.exit_status == ExitStatus.HOSTS_FAILED
    assert res.push.failed == ["b"] and actions(res.push)["a"] == "syncconf"
    (rev,) = res.push.pending
    assert (rev.peer, rev.key, rev.why, rev.hosts) == ("c", gone, revmod.REMOVED, ("b",))
    assert revmod.load(ws.revocations_path) == [rev]
    assert json.loads(ws.revocations_path.read_text())[0]["hosts"] == ["b"]
    assert gone in pool.hosts["b"].peers  # b still trusts the removed key
    st = status(ws, connect=pool.connector())
    assert st.pending == [rev] and st.to_json()["pending_revocations"][0]["hosts"] == ["b"]
    # b is back: the next push drops the key there, and the revocation settles
    pool.hosts["b"].unreachable = None
    again = push(ws, Reporter(), connect=pool.connector())
    assert again.exit_status == ExitStatus.OK and again.pending == []
    assert actions(again) == {"a": "unchanged", "b": "syncconf"}
    assert gone not in pool.hosts["b"].peers
    assert not ws.revocations_path.exists()


def test_delpeer_of_an_unreachable_peer_fails_its_stop(pushed):
    ws, pool = pushed
    pool.hosts["c"].unreachable = "unreachable: no route to host"
    res = delpeer(ws, "c", Reporter(), connect=pool.connector())
    assert res.exit_status == ExitStatus.HOSTS_FAILED
    assert res.stop is not None and not res.stop.ok and res.stop.detail == "unreachable: no route to host"
    assert res.to_json()["stopped"] is False and res.push.ok  # the others dropped it all the same
    assert "c" not in store.load(ws).names


# ---------------------------------------------------------------- rotate-keys


def test_rotate_keys_gives_every_host_its_new_config_hitlessly(pushed):
    ws, pool = pushed
    old = public_keys(ws)["a"]
    res = rotate_keys(ws, ["a"], Reporter(), connect=pool.connector())
    assert res.exit_status == ExitStatus.OK and res.rotated == ["a"]
    new = public_keys(ws)["a"]
    assert new != old
    texts = rendered(ws)
    for name, host in pool.hosts.items():
        assert actions(res.push)[name] == "syncconf"
        assert host.applied() == [[Op.PREPARE, Op.STAGE, Op.INSTALL, Op.SYNCCONF, Op.SYNC_ROUTES, Op.FINISH]]
        assert host.conf == texts[name]
    assert pool.hosts["a"].public_key == new
    assert new in pool.hosts["b"].peers and old not in pool.hosts["b"].peers
    assert Keystore(ws.keys_dir).load().retired == {}  # every host runs the new configs: purged at once
    assert not ws.revocations_path.exists()
    assert all_fresh(ws, pool)


def test_rotate_keys_keeps_the_old_key_pending_until_every_host_runs_the_new_config(pushed):
    ws, pool = pushed
    old = public_keys(ws)["a"]
    pool.hosts["c"].unreachable = "unreachable: connection refused"
    res = rotate_keys(ws, ["a"], Reporter(), connect=pool.connector())
    assert res.exit_status == ExitStatus.HOSTS_FAILED
    (rev,) = res.push.pending
    assert (rev.peer, rev.key, rev.why, rev.hosts) == ("a", old, revmod.ROTATED, ("c",))
    assert [kp.public for kp in Keystore(ws.keys_dir).load().retired["a"]] == [old]
    assert old in pool.hosts["c"].peers
    assert res.to_json()["push"]["pending_revocations"] == [
        {"peer": "a", "public_key": old, "why": "rotated", "hosts": ["c"]}
    ]
    pool.hosts["c"].unreachable = None
    again = push(ws, Reporter(), connect=pool.connector())
    assert again.exit_status == ExitStatus.OK
    assert actions(again) == {"a": "unchanged", "b": "unchanged", "c": "syncconf"}
    assert old not in pool.hosts["c"].peers and public_keys(ws)["a"] in pool.hosts["c"].peers
    assert Keystore(ws.keys_dir).load().retired == {} and not ws.revocations_path.exists()
    assert all_fresh(ws, pool)


def test_rotate_all_keys(pushed):
    ws, pool = pushed
    before = public_keys(ws)
    res = rotate_keys(ws, None, Reporter(), connect=pool.connector())
    assert res.rotated == ["a", "b", "c"] and res.exit_status == ExitStatus.OK
    after = public_keys(ws)
    assert all(after[n] != before[n] and pool.hosts[n].public_key == after[n] for n in "abc")
    assert all_fresh(ws, pool)


def test_a_rotated_peer_whose_syncconf_failed_gets_its_new_key_later(pushed):
    ws, pool = pushed
    pool.hosts["a"].fail_syncconf = "boom"
    rotate_keys(ws, ["a"], Reporter(), connect=pool.connector())
    pool.hosts["a"].fail_syncconf = None
    push(ws, Reporter(), connect=pool.connector())
    assert pool.hosts["a"].public_key == public_keys(ws)["a"]


# ---------------------------------------------------------------- destroy


def test_destroy_stops_every_host(pushed):
    ws, pool = pushed
    res = destroy(ws, Reporter(), connect=pool.connector())
    assert res.exit_status == ExitStatus.OK
    assert {n: (r.ok, r.action) for n, r in res.stopped.items()} == {n: (True, "stopped") for n in "abc"}
    for host in pool.hosts.values():
        assert [r.ops for r in host.ran] == [[Op.STOP_ALL]] and host.conf is None and not host.up
    doc = json.loads(json.dumps(res.to_json()))
    assert doc == {
        "terraform": "no stack", "removed_peers": [], "purged_keys": [], "kept_keys": ["a", "b", "c"],
        "configs_removed": 3, "stopped": {n: {"ok": True, "detail": ""} for n in "abc"},
    }
    assert store.load(ws).names == ("a", "b", "c")  # hand-added peers stay, with their keys
    assert not ws.output_dir.exists()


def test_destroy_with_a_host_unreachable(pushed):
    ws, pool = pushed
    pool.hosts["a"].unreachable = "unreachable: timed out"
    res = destroy(ws, Reporter(), connect=pool.connector())
    assert res.exit_status == ExitStatus.HOSTS_FAILED
    assert res.to_json()["stopped"]["a"] == {"ok": False, "detail": "unreachable: timed out"}
    assert pool.hosts["a"].up and not pool.hosts["b"].up


def test_destroy_without_stop_touches_no_host(pushed):
    ws, pool = pushed
    res = destroy(ws, Reporter(), stop=False, connect=pool.connector())
    assert res.stopped == {} and pool.opened == 1  # the push's pool only
    assert all(h.ran == [] and h.up for h in pool.hosts.values())


def test_a_peer_that_cannot_receive_its_new_key_is_not_rotated(pushed):
    """site3's sshd frozen: rotating it would switch the others to a key it does not have."""
    ws, pool = pushed
    before = public_keys(ws)
    pool.hosts["c"].unreachable = "no SSH banner within 10 s"
    res = rotate_keys(ws, ["c"], Reporter(), connect=pool.connector())
    assert res.rotated == [] and res.skipped == {"c": "no SSH banner within 10 s"}
    assert res.exit_status == ExitStatus.HOSTS_FAILED
    assert public_keys(ws) == before  # nobody was switched to a key c does not run
    assert {n: r.action for n, r in res.push.results.items() if n != "c"} == {"a": "unchanged", "b": "unchanged"}
    assert res.to_json()["skipped"] == {"c": "no SSH banner within 10 s"}
    assert revmod.load(ws.revocations_path) == []


def test_rotate_all_rotates_the_reachable_and_names_the_rest(pushed):
    ws, pool = pushed
    before = public_keys(ws)
    pool.hosts["b"].unreachable = "unreachable: connection refused"
    res = rotate_keys(ws, None, Reporter(), connect=pool.connector())
    after = public_keys(ws)
    assert res.rotated == ["a", "c"] and list(res.skipped) == ["b"]
    assert after["b"] == before["b"] and after["a"] != before["a"] and after["c"] != before["c"]
    assert pool.hosts["a"].public_key == after["a"] and pool.hosts["c"].public_key == after["c"]
    assert res.exit_status == ExitStatus.HOSTS_FAILED


_PARENT: list[int] = []


def _dies_in_a_child(args):
    """genconfig's slice writer, except that in a forked worker it dies at once."""
    import os

    from wgmesh.commands.genconfig import _write_slice

    if os.getpid() != _PARENT[0]:
        os._exit(1)
    return _write_slice(args)


def test_genconfig_finishes_when_a_forked_worker_dies(tmp_path):
    """A worker that dies must not hang genconfig (a multiprocessing.Pool waits for it forever):
    the workers' path says so (None) and write_configs writes the slices itself."""
    import os

    from wgmesh.commands import genconfig as gen

    out = tmp_path / "out"
    out.mkdir()
    names = [f"p{i}" for i in range(6)]
    _PARENT[:] = [os.getpid()]
    assert gen._in_workers(names, str(out), 2, work=_dies_in_a_child) is None
    ws, _ = fake_mesh(tmp_path / "ws", names=tuple(names))
    from wgmesh.keys import Keystore
    from wgmesh.store import load

    res = gen.write_configs(ws, load(ws), Keystore(ws.keys_dir).load(), workers=2)  # the workers' path itself
    assert sorted(res.written) == names
