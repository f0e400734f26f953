"""Dual stack without hosts: an IPv4 mesh gets an IPv6 pool when a peer has an IPv6 subnet (or
one is given), every peer an IPv6 tunnel address; old IPv4 inventories stay byte-identical; bad
pools are refused naming the field; render, plan, HA and verify carry both families."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from tests.conftest import fixed_keys, lab_outputs
from tests.fakes import FakeHost, FakePool, parse_conf
from wgmesh import inventory as invmod
from wgmesh import store
from wgmesh.commands.addpeer import addpeer
from wgmesh.commands.push import push
from wgmesh.commands.verify import verify
from wgmesh.errors import BadInput
from wgmesh.peers import PeerOptions
from wgmesh.progress import Reporter
from wgmesh.remote import plan as planmod
from wgmesh.render import render
from wgmesh.workspace import Workspace, default_stacks_dir

net = ipaddress.ip_network


def lab(n: int = 3):
    return invmod.merge_terraform(invmod.new_inventory("lab", stack="lab"), invmod.peers_from_outputs(lab_outputs(n)))


def with_v6_subnet(inv, name="site2", subnet="fd00:10:2::/64"):
    p = inv.peer(name)
    return invmod.update_peer(inv, replace(p, subnets=(*p.subnets, net(subnet))))


def test_an_ipv4_inventory_stays_as_it_was():
    inv = lab()
    assert inv.mesh.pool6 is None and all(p.address6 is None for p in inv.peers)
    doc = invmod.to_document(inv)
    assert "pool6" not in doc and "address6" not in doc
    assert invmod.to_document(invmod.from_document(doc)) == doc


def test_an_ipv6_subnet_makes_the_mesh_dual_stack_with_a_stable_ula_pool():
    inv = with_v6_subnet(lab())
    pool6 = inv.mesh.pool6
    assert pool6 == invmod.ula_pool("lab") and pool6.prefixlen == 64 and pool6.subnet_of(net("fd00::/8"))
    assert invmod.ula_pool("lab") == invmod.ula_pool("lab") != invmod.ula_pool("prod")
    addrs = [p.address6 for p in inv.peers]
    assert all(a in pool6 for a in addrs) and len(set(addrs)) == len(addrs)
    again = invmod.from_document(invmod.to_document(inv))
    assert again == inv  # pool6 and every address6 are kept in the document


def test_an_ipv6_pool_can_be_given_and_is_checked():
    inv = invmod.dual_stack(lab(), net("fd12:3456:789a::/64"))
    assert inv.mesh.pool6 == net("fd12:3456:789a::/64")
    with pytest.raises(BadInput) as e:
        invmod.pool6_network("--pool6", "10.99.0.0/16")
    assert "--pool6" in e.value.message and "10.99.0.0/16" in e.value.message
    with pytest.raises(BadInput) as e:
        invmod.dual_stack(lab(), net("fd12:3456:789a::/127"))
    assert "mesh.pool6" in e.value.message and "too small" in e.value.message
    with pytest.raises(BadInput) as e:
        with_v6_subnet(inv, subnet="fd12:3456:789a::/80")
    assert "overlaps the mesh's IPv6 pool" in e.value.message and "fd12:3456:789a::/80" in e.value.message
    with pytest.raises(BadInput) as e:
        invmod.dual_stack(inv, net("fd99::/64"))
    assert "already have addresses" in e.value.message


def test_both_families_reach_the_config_and_the_plan():
    inv = with_v6_subnet(lab())
    keys = fixed_keys(inv.names)
    files = render(inv, keys)
    iface, peers = parse_conf(files["site1"])
    s1, s2 = inv.peer("site1"), inv.peer("site2")
    assert iface["Address"] == f"10.200.0.1/32, {s1.address6}/128"
    want = f"{s2.address}/32, {s2.address6}/128, 10.10.2.0/24, fd00:10:2::/64"
    assert peers[keys.public("site2")]["AllowedIPs"] == want
    desired = planmod.desired_state(inv, s1, {n: keys.public(n) for n in inv.names}, files["site1"])
    assert {str(s2.address6), "fd00:10:2::/64", "10.10.2.0/24"} <= desired.routes
    # site2 forwards IPv6 (its subnet): v6 chains, NAT for a unique local subnet, RAs kept
    assert "ip6tables-restore" in files["site2"] and "accept_ra=2" in files["site2"]
    assert "for s in fd00:10:2::/64" in files["site2"]


def test_a_global_ipv6_subnet_is_routed_not_masqueraded():
    inv = with_v6_subnet(lab(), subnet="2001:db8:2::/64")
    text = render(inv, fixed_keys(inv.names))["site2"]
    v6 = next(line for line in text.splitlines() if "ip6tables-restore" in line)
    assert "-d 2001:db8:2::/64 -j ACCEPT" in v6 and "*nat" not in v6 and "MASQUERADE" not in v6


def test_push_and_verify_probe_both_families(tmp_path):
    ws = Workspace(tmp_path, "lab", default_stacks_dir())
    addpeer(ws, "a", PeerOptions(ssh_target="root@198.51.100.1", endpoint="198.51.100.1",
                                 subnets=["10.1.0.0/24", "fd00:1::/64"], private_address="10.1.0.1",
                                 private_address6="fd00:1::1"))
    addpeer(ws, "b", PeerOptions(ssh_target="root@198.51.100.2", endpoint="198.51.100.2", subnets=["10.2.0.0/24"]))
    inv = store.load(ws)
    assert inv.mesh.pool6 is not None and inv.peer("b").address6 is not None
    pool = FakePool({"a": FakeHost(), "b": FakeHost()})
    assert push(ws, Reporter(), connect=pool.connector()).ok
    doc = verify(ws, connect=pool.connector()).to_json()
    assert doc["ok"], doc["failures"]
    got = {(p["from"], p["path"], p["address"]) for p in doc["probes"]}
    a6 = str(inv.peer("a").address6)
    assert {("b", "tunnel", a6), ("b", "full-size", a6), ("b", "private", "fd00:1::1"),
            ("b", "private", "10.1.0.1")} <= got


def test_a_plan_whose_ipv6_subnet_is_not_known_yet_is_checked_with_the_rest():
    """Before apply, a VPC's Amazon-provided IPv6 CIDR is unknown: the plan shows null there."""
    o = {"r1": {"endpoint": "198.51.100.1", "subnets": ["10.100.0.0/16", None]}}
    peers = invmod.peers_from_outputs(invmod.known_part(o))
    assert [str(s) for s in peers[0].subnets] == ["10.100.0.0/16"]
    with pytest.raises(BadInput, match="subnets"):
        invmod.peers_from_outputs(o)
