"""status on a fake host pool: the matrix from the hosts' `wg show dump`, hosts down or unreachable."""

import json
import shutil
from pathlib import Path

import pytest

from tests.fakes import HANDSHAKE_AGE, fake_mesh, public_keys
from wgmesh.commands.graph import graph
from wgmesh.commands.status import status
from wgmesh.errors import ExitStatus
from wgmesh.remote.steps import Op
from wgmesh.status import LinkState

FOREIGN = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def states(res):
    return {(lk.src, lk.dst): lk.state for lk in res.links}


def test_after_a_push_every_link_is_fresh_both_ways(pushed):
    ws, pool = pushed
    res = status(ws, connect=pool.connector())
    assert res.exit_status == ExitStatus.OK and res.unreachable == {} and res.foreign_keys == {}
    assert states(res) == {(s, d): LinkState.FRESH for s in "abc" for d in "abc" if s != d}
    assert all(HANDSHAKE_AGE <= lk.age <= HANDSHAKE_AGE + 2 for lk in res.links)
    by_pair = {(lk.src, lk.dst): lk for lk in res.links}
    assert by_pair[("a", "b")].endpoint == "198.51.100.2:51820" and by_pair[("a", "b")].rx == 1000
    assert all(r.ops == [Op.DUMP] for r in pool.hosts["a"].programs("wg show"))
    doc = json.loads(json.dumps(res.to_json()))
    assert set(doc) == {"peers", "matrix", "links", "unreachable", "unknown_keys", "pending_revocations", "drift", "ha"}
    assert doc["ha"] == {}  # no HA site in this mesh
    assert doc["drift"] == {}
    assert doc["matrix"]["a"]["c"]["state"] == "fresh" and set(doc["matrix"]["b"]) == {"a", "c"}
    assert [(p["name"], p["reached"], p["rx_bytes"]) for p in doc["peers"]] == [
        ("a", True, 2000), ("b", True, 2000), ("c", True, 2000)
    ]


def test_before_any_push_every_interface_is_down(tmp_path):
    ws, pool = fake_mesh(tmp_path)
    res = status(ws, connect=pool.connector())
    assert set(states(res).values()) == {LinkState.DOWN}
    assert res.unreachable == {n: "interface wg0 is not up" for n in "abc"}
    assert res.exit_status == ExitStatus.HOSTS_FAILED


def test_a_host_with_its_interface_down(pushed):
    ws, pool = pushed
    pool.hosts["c"].up = False
    res = status(ws, connect=pool.connector())
    st = states(res)
    assert st[("c", "a")] == st[("c", "b")] == LinkState.DOWN
    assert st[("a", "c")] == st[("b", "c")] == LinkState.NEVER  # configured, no session any more
    assert st[("a", "b")] == LinkState.FRESH
    assert res.unreachable == {"c": "interface wg0 is not up"}


def test_an_unreachable_host_is_unknown(pushed):
    ws, pool = pushed
    pool.hosts["b"].unreachable = "unreachable: timed out"
    res = status(ws, connect=pool.connector())
    st = states(res)
    assert st[("b", "a")] == st[("b", "c")] == LinkState.UNKNOWN
    assert st[("a", "b")] == LinkState.FRESH  # b still runs its tunnels; only the controller lost it
    assert res.unreachable == {"b": "unreachable: timed out"}
    assert res.exit_status == ExitStatus.HOSTS_FAILED
    assert {p["name"]: p["reached"] for p in res.to_json()["peers"]} == {"a": True, "b": False, "c": True}


def test_keys_no_peer_has_are_reported(pushed):
    ws, pool = pushed
    pool.hosts["a"].peers.add(FOREIGN)
    pool.hosts["b"].peers.discard(public_keys(ws)["c"])
    res = status(ws, connect=pool.connector())
    assert res.foreign_keys == {"a": [FOREIGN]}
    assert states(res)[("b", "c")] == LinkState.MISSING
    assert states(res)[("c", "b")] == LinkState.NEVER  # b no longer runs c's key: no session
    assert res.exit_status == ExitStatus.OK


def test_a_refused_dump_is_a_failure_with_its_reason(pushed):
    ws, pool = pushed
    pool.hosts["a"].needs_password = True
    res = status(ws, connect=pool.connector())
    assert res.unreachable["a"].startswith("sudo needs a password")
    assert states(res)[("a", "b")] == LinkState.UNKNOWN


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_graph_draws_the_matrix(pushed):
    ws, pool = pushed
    pool.hosts["b"].unreachable = "unreachable: timed out"
    pool.hosts["c"].up = False
    res = graph(ws, connect=pool.connector())
    assert [Path(f).name for f in res.files] == ["mesh.dot", "mesh.svg", "mesh.png"]
    assert all(Path(f).stat().st_size > 0 for f in res.files)
    edges = {line.split(" [")[0].strip(): line for line in res.dot.splitlines() if " -- " in line}
    assert 'tooltip="down", style=dashed' in edges['"a" -- "c"'] and 'tooltip="down"' in edges['"b" -- "c"']
    assert '"b" [label=' in res.dot and 'color="#d62728"' in next(
        line for line in res.dot.splitlines() if line.strip().startswith('"b" [label=')
    )
    assert res.status.unreachable == {"b": "unreachable: timed out", "c": "interface wg0 is not up"}
