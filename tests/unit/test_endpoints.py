"""A DNS endpoint is checked when it is given, and one that does not resolve at push time never
blocks the other hosts (it is left out of the configs, and said so)."""

import time

import pytest

from tests.fakes import pushed_mesh, rendered
from wgmesh.adapters import dns
from wgmesh.commands.push import push
from wgmesh.commands.setpeer import setpeer
from wgmesh.errors import BadInput
from wgmesh.peers import PeerOptions
from wgmesh.progress import Reporter

BAD = "no-such-host.invalid"


def test_names_are_resolved_with_a_bound():
    t0 = time.monotonic()
    assert dns.unresolved({"localhost", BAD, "127.0.0.1"}) == {BAD}
    assert time.monotonic() - t0 < dns.RESOLVE_TIMEOUT + 1
    assert dns.unresolved(set()) == set()


def test_setpeer_refuses_an_endpoint_that_does_not_resolve_unless_told(tmp_path):
    ws, _ = pushed_mesh(tmp_path)
    with pytest.raises(BadInput, match="does not resolve") as e:
        setpeer(ws, "c", PeerOptions(endpoint=f"{BAD}:51820"))
    assert e.value.field == "--endpoint" and "--allow-unresolved" in (e.value.hint or "")
    res = setpeer(ws, "c", PeerOptions(endpoint=f"{BAD}:51820"), allow_unresolved=True)
    assert res.peer.endpoint == f"{BAD}:51820"
    assert setpeer(ws, "c", PeerOptions(endpoint="localhost:51820")).peer.endpoint_host == "localhost"


def test_a_push_with_an_unresolvable_endpoint_leaves_it_out_and_converges(tmp_path):
    ws, pool = pushed_mesh(tmp_path)
    setpeer(ws, "c", PeerOptions(endpoint=f"{BAD}:51820"), allow_unresolved=True)
    t0 = time.monotonic()
    res = push(ws, Reporter(), connect=pool.connector())
    assert time.monotonic() - t0 < dns.RESOLVE_TIMEOUT + 2  # never the 90 s of a stuck `wg`
    assert res.ok and res.unresolved == {"c": f"{BAD}:51820"}
    assert {n: r.action for n, r in res.results.items()} == {"a": "syncconf", "b": "syncconf", "c": "unchanged"}
    assert BAD not in pool.hosts["a"].conf and BAD not in (ws.output_dir / "b.conf").read_text()
    assert BAD in rendered(ws)["a"]  # the inventory keeps it: once it resolves, the next push adds it
    assert res.to_json()["unresolved_endpoints"] == {"c": f"{BAD}:51820"}
