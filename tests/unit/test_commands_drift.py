"""Convergence by state on a fake host pool: what a host runs is compared with what the
inventory says, drift is repaired with the least disruptive step and named by push, status
and verify; push --dry-run says what would change and changes nothing."""

import json

import pytest

from wgmesh.commands.push import push
from wgmesh.commands.setpeer import setpeer
from wgmesh.commands.status import status
from wgmesh.commands.verify import verify
from wgmesh.errors import ExitStatus
from wgmesh.peers import PeerOptions
from wgmesh.progress import Reporter
from wgmesh.remote.steps import Op


def do_push(ws, pool, dry_run=False):
    return push(ws, Reporter(), connect=pool.connector(), dry_run=dry_run)


def test_a_deleted_route_is_repaired_without_a_restart(pushed):
    ws, pool = pushed
    a = pool.hosts["a"]
    gone = next(r for r in sorted(a.routes) if not r.endswith("/32"))
    a.routes.discard(gone)  # ip route del ... dev wg0
    running_before = a.running_conf
    pool.forget_runs()
    res = do_push(ws, pool)
    assert (res.results["a"].action, res.results["a"].detail) == ("repair", "repaired: routes")
    assert res.exit_status == ExitStatus.OK and res.results["b"].action == "unchanged"
    assert a.applied() == [[Op.PREPARE, Op.SYNC_ROUTES, Op.FINISH]]  # no restart, no syncconf, no write
    assert gone in a.routes and a.running_conf is running_before
    assert do_push(ws, pool).results["a"].action == "unchanged"


def test_a_flushed_chain_and_a_lost_jump_are_restored(pushed):
    ws, pool = pushed
    pool.hosts["b"].rules[(4, "fwd")] = (0, True)  # iptables -F WGM-wg0-FWD
    pool.hosts["c"].rules[(4, "nat")] = (2, False)  # iptables -t nat -D POSTROUTING -j WGM-wg0-NAT
    pool.forget_runs()
    res = do_push(ws, pool)
    for name in "bc":
        assert (res.results[name].action, res.results[name].detail) == ("repair", "repaired: firewall")
        assert pool.hosts[name].applied() == [[Op.PREPARE, Op.RESTORE_RULES, Op.FINISH]]
    assert pool.hosts["b"].rules[(4, "fwd")] == (4, True) and pool.hosts["c"].rules[(4, "nat")][1]


def test_a_disabled_unit_is_enabled_again(pushed):
    ws, pool = pushed
    pool.hosts["a"].unit = "disabled"  # systemctl disable wg-quick@wg0: it would not come back at boot
    res = do_push(ws, pool)
    assert (res.results["a"].action, res.results["a"].detail) == ("repair", "repaired: unit")
    assert pool.hosts["a"].unit == "enabled"


def test_dry_run_says_what_and_why_and_changes_nothing(pushed):
    ws, pool = pushed
    assert do_push(ws, pool, dry_run=True).exit_status == ExitStatus.OK  # nothing would change
    pool.hosts["a"].routes.clear()
    setpeer(ws, "c", PeerOptions(endpoint="198.51.100.33"))
    before = {n: (h.conf, h.running_conf, set(h.routes)) for n, h in pool.hosts.items()}
    pool.forget_runs()
    res = do_push(ws, pool, dry_run=True)
    assert res.exit_status == ExitStatus.CHANGES_PENDING and res.dry_run
    assert {n: r.action for n, r in res.results.items()} == {"a": "syncconf", "b": "syncconf", "c": "unchanged"}
    assert res.results["b"].detail == "peers changed"
    assert all(r.ops == [Op.PROBE] for h in pool.hosts.values() for r in h.ran)  # only probes ran
    assert {n: (h.conf, h.running_conf, set(h.routes)) for n, h in pool.hosts.items()} == before
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["dry_run"] is True and doc["hosts"]["a"]["action"] == "syncconf"


def test_dry_run_writes_no_file(pushed):
    ws, pool = pushed
    setpeer(ws, "c", PeerOptions(endpoint="198.51.100.33"))
    files = {p: p.read_bytes() for p in sorted(ws.root.rglob("*")) if p.is_file()}
    do_push(ws, pool, dry_run=True)
    assert {p: p.read_bytes() for p in sorted(ws.root.rglob("*")) if p.is_file()} == files


def test_status_and_verify_name_the_drift(pushed):
    ws, pool = pushed
    pool.hosts["a"].routes = {r for r in pool.hosts["a"].routes if r != "10.2.0.0/24"}
    pool.hosts["b"].rules[(4, "nat")] = (0, True)
    st = status(ws, connect=pool.connector())
    assert st.drift == {"a": ["route missing: 10.2.0.0/24"],
                        "b": ["chain WGM-wg0-NAT (IPv4) has 0 rules, not 1"]}
    v = verify(ws, connect=pool.connector())
    assert not v.ok and v.exit_status == ExitStatus.HOSTS_FAILED
    assert "a: drift: route missing: 10.2.0.0/24" in v.failures
    do_push(ws, pool)
    assert verify(ws, connect=pool.connector()).ok


def test_setpeer_changes_ssh_access_and_egress(pushed, tmp_path):
    from wgmesh import store

    ws, _ = pushed
    key = tmp_path / "id_new"
    key.write_text("not read here\n")
    peer = setpeer(ws, "a", PeerOptions(ssh_key=str(key))).peer
    assert peer.ssh is not None and peer.ssh.key == str(key.resolve()) and peer.ssh.host == "198.51.100.1"
    peer = setpeer(ws, "a", PeerOptions(ssh_target="admin@198.51.100.99:2222")).peer
    want = ("admin", "198.51.100.99", 2222, str(key.resolve()))
    assert (peer.ssh.user, peer.ssh.host, peer.ssh.port, peer.ssh.key) == want
    assert setpeer(ws, "a", PeerOptions(egress_interface="ens5")).peer.egress_interface == "ens5"
    assert store.load(ws).peer("a").egress_interface == "ens5"
    with pytest.raises(Exception, match="no such key file"):
        setpeer(ws, "a", PeerOptions(ssh_key=str(tmp_path / "missing")))
