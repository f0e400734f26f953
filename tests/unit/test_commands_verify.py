"""verify on a fake host pool: priming, probes of tunnel, private and instance addresses, handshakes."""

import json

from tests.fakes import fake_mesh, peer_options, public_keys
from wgmesh import store
from wgmesh.commands.addpeer import addpeer
from wgmesh.commands.push import push
from wgmesh.commands.setpeer import setpeer
from wgmesh.commands.verify import verify
from wgmesh.errors import ExitStatus
from wgmesh.peers import PeerOptions
from wgmesh.progress import Reporter
from wgmesh.remote.steps import Op


def pinged(host):
    """The targets of every ping program the host ran, in order."""
    out = []
    for r in host.programs("probe"):
        if r.ops == [Op.PING]:
            out.append(list(r.program.steps[0].args[3:]))
    return out


def test_all_ok_after_a_push(pushed):
    ws, pool = pushed
    res = verify(ws, connect=pool.connector())
    assert res.ok and res.exit_status == ExitStatus.OK and res.failures == []
    inv = store.load(ws)
    want = sorted(
        (p.name, o.name, kind, str(addr))
        for p in inv.peers for o in inv.peers if o.name != p.name
        for kind, addr in (("tunnel", o.address), ("private", o.private_address), ("full-size", o.address))
    )
    assert sorted((p.src, p.dst, p.kind, p.address) for p in res.probes) == want
    assert len(want) == 18 and all(p.ok and p.rtt_ms == 0.1 for p in res.probes)
    assert len(res.handshakes) == 6 and {lk.state for lk in res.handshakes} == {"fresh"}
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["ok"] is True and doc["failures"] == [] and doc["unreachable"] == {}
    probe = {"from": "a", "to": "b", "path": "private", "address": "10.2.0.1", "ok": True, "rtt_ms": 0.1}
    assert probe in doc["probes"]


def test_priming_pings_one_direction_per_pair(pushed):
    ws, pool = pushed
    verify(ws, connect=pool.connector())
    addr = {p.name: str(p.address) for p in store.load(ws).peers}
    keys = public_keys(ws)
    first, second, last = sorted("abc", key=lambda n: keys[n])
    # each peer primes only the peers whose public key sorts after its own (the hosts' PostUp
    # nudge uses the same order; the last has none: no priming program), then pings every other
    # peer's tunnel and private address, then the tunnels full size
    assert pinged(pool.hosts[first])[0] == sorted([addr[second], addr[last]])
    assert pinged(pool.hosts[second])[0] == [addr[last]]
    assert [len(pinged(pool.hosts[n])) for n in (first, second, last)] == [3, 3, 2]
    subnet = {n: f"10.{i}.0.1" for i, n in enumerate("abc", 1)}
    others = [n for n in "abc" if n != last]
    assert sorted(pinged(pool.hosts[last])[0]) == sorted([*(addr[n] for n in others), *(subnet[n] for n in others)])


def test_failing_pings_are_listed(pushed):
    ws, pool = pushed
    pool.hosts["c"].ping_fails = {"10.200.0.1", "10.1.0.1"}
    res = verify(ws, connect=pool.connector())
    assert not res.ok and res.exit_status == ExitStatus.HOSTS_FAILED
    assert res.failures == [
        "c → a (full-size 10.200.0.1): no reply to 1392 bytes with DF set (path MTU below the tunnel's?)",
        "c → a (private 10.1.0.1): no reply", "c → a (tunnel 10.200.0.1): no reply",
    ]
    assert res.to_json()["ok"] is False


def test_a_path_that_cannot_carry_a_full_size_packet_fails_verify(pushed):
    """Small pings pass; a full-size packet with DF set does not: bulk TCP would stall."""
    ws, pool = pushed
    pool.hosts["b"].path_mtu = 1400  # below wg0's 1420
    res = verify(ws, connect=pool.connector())
    assert not res.ok
    bad = sorted((p.src, p.dst, p.kind) for p in res.probes if not p.ok)
    assert bad == [("b", "a", "full-size"), ("b", "c", "full-size")]
    full = next(p for p in res.to_json()["probes"] if p["from"] == "b" and p["path"] == "full-size")
    assert full["ok"] is False


def test_the_full_size_probe_fills_the_smaller_mtu(pushed):
    ws, pool = pushed
    setpeer(ws, "c", PeerOptions(mtu=1380))  # behind PPPoE
    push(ws, Reporter(), connect=pool.connector())
    pool.forget_runs()
    verify(ws, connect=pool.connector())
    sizes = {r.program.steps[0].args[2] for r in pool.hosts["a"].programs("probe") if r.ops == [Op.PING]}
    assert sizes == {0, 1392, 1352}  # 1420 - 28 to b, 1380 - 28 to c
    assert "MTU = 1380" in pool.hosts["c"].conf


def test_an_unreachable_host_is_a_failure_and_the_others_are_probed(pushed):
    ws, pool = pushed
    pool.hosts["b"].unreachable = "authentication failed"
    res = verify(ws, connect=pool.connector())
    assert res.exit_status == ExitStatus.HOSTS_FAILED
    assert res.unreachable == {"b": "authentication failed"}
    assert res.failures == ["b: authentication failed"]
    assert {p.src for p in res.probes} == {"a", "c"} and {lk.src for lk in res.handshakes} == {"a", "c"}


def test_a_host_without_sudo_fails_its_probes(pushed):
    ws, pool = pushed
    pool.hosts["a"].needs_password = True
    res = verify(ws, connect=pool.connector())
    assert list(res.unreachable) == ["a"] and res.unreachable["a"].startswith("sudo needs a password")
    assert res.exit_status == ExitStatus.HOSTS_FAILED


def test_nothing_pushed_fails_everything(tmp_path):
    ws, pool = fake_mesh(tmp_path)
    res = verify(ws, connect=pool.connector())
    assert not res.ok and not any(p.ok for p in res.probes)
    assert set(res.unreachable) == {"a", "b", "c"}  # reached, but their interfaces are not up


def test_private_instances_ping_each_other_through_their_gateways(tmp_path):
    ws, pool = fake_mesh(tmp_path, ("a",))
    addpeer(ws, "b", peer_options(2, instances=[{"name": "b-vm", "address": "10.2.0.10"}]))
    addpeer(ws, "c", peer_options(3, instances=[{"name": "c-vm", "address": "10.3.0.10"}]))
    for name in ("b", "c", "b/b-vm", "c/c-vm"):
        pool.add(name)
    assert push(ws, Reporter(), connect=pool.connector()).ok
    res = verify(ws, connect=pool.connector())
    assert res.ok, res.failures
    inst = sorted((p.src, p.dst) for p in res.probes if p.kind == "instance")
    assert inst == [("b/b-vm", "c/c-vm"), ("c/c-vm", "b/b-vm")]
    assert pinged(pool.hosts["b/b-vm"]) == [["10.3.0.10"]]
    pool.hosts["c"].up = False  # c-vm's gateway: its instance reaches nothing
    res = verify(ws, connect=pool.connector())
    assert "c/c-vm → b/b-vm (instance 10.2.0.10): no reply" in res.failures


def test_verify_with_no_managed_peer_verifies_nothing_and_says_so(tmp_path):
    ws, pool = fake_mesh(tmp_path, names=())
    for n in (1, 2):
        addpeer(ws, f"p{n}", PeerOptions(endpoint=f"198.51.100.{n}", subnets=[f"10.{n}.0.0/24"]))
    res = verify(ws, connect=pool.connector())
    assert res.probes == [] and not res.ok and res.exit_status == ExitStatus.HOSTS_FAILED
    assert res.failures == ["nothing was verified: no peer of the inventory is managed over SSH "
                            "(addpeer --ssh USER@HOST)"]
