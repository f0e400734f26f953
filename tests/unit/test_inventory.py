import contextlib
import ipaddress
import json
from dataclasses import replace

import pytest

from tests.conftest import lab_outputs
from wgmesh import inventory as invmod
from wgmesh import peers
from wgmesh.errors import BadInput
from wgmesh.model import Peer, Source, SshTarget


def manual(name, **kw):
    return Peer(name=name, address=ipaddress.ip_address("0.0.0.0"), **kw)


def test_outputs_to_peers(lab_inventory):
    inv = lab_inventory
    assert inv.names == ("site1", "site2", "site3")
    p = inv.peer("site2")
    assert str(p.address) == "10.200.0.2"
    assert p.endpoint == "198.18.1.12:51820"
    assert [str(s) for s in p.subnets] == ["10.10.2.0/24"]
    assert p.ssh == SshTarget("root", "198.18.1.12", 22, "/lab/id_ed25519")
    assert p.source == "terraform" and p.region == "lab-2" and p.cloud == "lab"
    assert str(p.instances[0].address) == "10.10.2.10"
    assert [str(n) for n in p.allowed_ips] == ["10.200.0.2/32", "10.10.2.0/24"]


def test_refresh_keeps_addresses_and_manual_peers(lab_inventory):
    inv = invmod.add_peer(lab_inventory, manual("pub", subnets=(ipaddress.ip_network("10.77.1.0/24"),)))
    assert str(inv.peer("pub").address) == "10.200.0.4"
    # site1 disappears from Terraform, site4 appears: site4 must not take a used address.
    outs = lab_outputs(4)
    del outs["site1"]
    again = invmod.merge_terraform(inv, invmod.peers_from_outputs(outs))
    assert again.names == ("pub", "site2", "site3", "site4")
    assert str(again.peer("site2").address) == "10.200.0.2"
    assert str(again.peer("pub").address) == "10.200.0.4"
    assert str(again.peer("site4").address) == "10.200.0.1"  # the lowest free one


def test_terraform_peer_may_not_take_a_manual_name(lab_inventory):
    inv = invmod.remove_peer(lab_inventory, "site3")
    inv = invmod.add_peer(inv, manual("site3"))
    with pytest.raises(BadInput, match="addpeer already has this name"):
        invmod.merge_terraform(inv, invmod.peers_from_outputs(lab_outputs()))


def test_document_round_trip_is_deterministic(lab_inventory):
    text = invmod.to_document(lab_inventory)
    assert invmod.from_document(text) == lab_inventory
    assert invmod.to_document(invmod.from_document(text)) == text
    doc = json.loads(text)
    assert doc["schema"] == 1 and list(doc["peers"]) == ["site1", "site2", "site3"]
    assert "private" not in text.lower().replace("private_address", "")


def test_document_refuses_other_schema(lab_inventory):
    doc = json.loads(invmod.to_document(lab_inventory))
    doc["schema"] = 99
    with pytest.raises(BadInput, match="schema"):
        invmod.from_document(json.dumps(doc))


def test_pool_too_small():
    inv = invmod.new_inventory("t", pool="10.9.0.0/29")  # 6 host addresses
    for i in range(6):
        inv = invmod.add_peer(inv, manual(f"p{i}"))
    with pytest.raises(BadInput) as e:
        invmod.add_peer(inv, manual("p6"))
    assert e.value.field == "mesh.pool" and "too small" in e.value.message


def test_pool_must_not_overlap_subnets(lab_inventory):
    with pytest.raises(BadInput, match="overlaps the mesh pool"):
        invmod.add_peer(lab_inventory, manual("x", subnets=(ipaddress.ip_network("10.200.5.0/24"),)))


@pytest.mark.parametrize("cidr", ["10.10.1.0/24", "10.10.0.0/16", "10.10.1.128/25"])
def test_overlapping_allowedips_refused(lab_inventory, cidr):
    with pytest.raises(BadInput, match="belongs to one peer only"):
        invmod.add_peer(lab_inventory, manual("x", subnets=(ipaddress.ip_network(cidr),)))


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_default_route_refused(lab_inventory, cidr):
    with pytest.raises(BadInput):
        invmod.add_peer(lab_inventory, manual("x", subnets=(ipaddress.ip_network(cidr),)))


def test_allowedips_covering_another_peers_endpoint_or_ssh_refused(lab_inventory):
    with pytest.raises(BadInput, match="endpoint 198.18.1.11"):
        invmod.add_peer(lab_inventory, manual("x", subnets=(ipaddress.ip_network("198.18.1.0/24"),)))
    ssh_only = invmod.add_peer(
        invmod.new_inventory("t"), manual("a", ssh=SshTarget("root", "192.0.2.10"))
    )
    with pytest.raises(BadInput, match="ssh address 192.0.2.10"):
        invmod.add_peer(ssh_only, manual("b", subnets=(ipaddress.ip_network("192.0.2.0/28"),)))


def test_duplicate_names_refused(lab_inventory):
    with pytest.raises(BadInput, match="already exists"):
        invmod.add_peer(lab_inventory, manual("site1"))


def test_explicit_address_must_be_free_and_in_pool(lab_inventory):
    with pytest.raises(BadInput, match="already used"):
        invmod.add_peer(lab_inventory, replace(manual("x"), address=ipaddress.ip_address("10.200.0.1")))
    with pytest.raises(BadInput, match="outside the mesh pool"):
        invmod.add_peer(lab_inventory, replace(manual("x"), address=ipaddress.ip_address("10.201.0.1")))


def test_instances_must_sit_in_a_subnet():
    outs = lab_outputs(1)
    outs["site1"]["instances"][0]["address"] = "10.99.0.1"
    with pytest.raises(BadInput, match="not inside any subnet"):
        invmod.merge_terraform(invmod.new_inventory("t"), invmod.peers_from_outputs(outs))


def test_a_private_address_outside_the_subnets_is_refused_where_it_comes_in():
    outs = lab_outputs(1)
    outs["site1"]["private_address"] = "10.99.0.1"
    with pytest.raises(BadInput, match=r"terraform output peers.site1.private_address: '10.99.0.1': is not inside"):
        invmod.peers_from_outputs(outs)
    inv = invmod.merge_terraform(invmod.new_inventory("t"), invmod.peers_from_outputs(lab_outputs(1)))
    opts = peers.PeerOptions(endpoint="198.51.100.1", subnets=["192.0.2.0/28"], private_address6="2001:db8::1")
    with pytest.raises(BadInput, match="--private-address6: '2001:db8::1'"):
        peers.require_probes_inside(peers.parse_peer("x", opts, peers.cli_label, Source.MANUAL), peers.cli_label)
    x = peers.parse_peer("x", replace(opts, private_address6=None, private_address="192.0.2.5"), peers.cli_label,
                         Source.MANUAL)
    peers.require_probes_inside(x, peers.cli_label)
    inv = invmod.add_peer(inv, x)

    # An inventory written before the rule still loads; a change of that peer must put it right.
    doc = json.loads(invmod.to_document(inv))
    doc["peers"]["x"]["private_address"] = "198.51.100.9"
    old = invmod.from_document(json.dumps(doc))
    x = old.peer("x")
    with pytest.raises(BadInput, match="--private-address: '198.51.100.9'"):
        peers.update(x, peers.PeerOptions(listen_port=51000), peers.cli_label)
    fixed = peers.update(x, peers.PeerOptions(private_address="192.0.2.6"), peers.cli_label)
    assert str(invmod.update_peer(old, fixed).peer("x").private_address) == "192.0.2.6"


def test_the_plan_check_leaves_out_what_must_lie_inside_subnets_not_known_yet():
    """`up --var ipv6=true` on a mesh that exists: the plan does not know the subnets yet (the
    VPC's IPv6 CIDR), but knows the gateway's and the instances' addresses."""
    planned = lab_outputs(1)
    del planned["site1"]["subnets"]
    assert planned["site1"]["private_address"] and planned["site1"]["instances"]
    known = invmod.known_part(planned)
    assert "private_address" not in known["site1"] and known["site1"]["instances"] == []
    invmod.merge_terraform(invmod.new_inventory("t"), invmod.peers_from_outputs(known))
    # Subnets that are known still hold them to it.
    planned = lab_outputs(1)
    planned["site1"]["private_address"] = "10.99.0.1"
    with pytest.raises(BadInput, match="private_address: '10.99.0.1'"):
        invmod.peers_from_outputs(invmod.known_part(planned))


def test_bad_output_value_named():
    outs = lab_outputs(1)
    outs["site1"]["subnets"] = ["10.10.1.5/24"]
    with pytest.raises(BadInput) as e:
        invmod.peers_from_outputs(outs)
    assert e.value.field == "terraform output peers.site1.subnets"


def test_planned_peers_are_checked_with_their_known_part():
    """A plan leaves unknown values out: instances without an address yet are dropped, and what
    is known is still checked (capacity, overlaps)."""
    outs = lab_outputs(2)
    del outs["site1"]["instances"][0]["address"]  # unknown until apply
    for p in outs.values():
        p.pop("ssh_host_keys")
    planned = invmod.known_part(outs)
    assert planned["site1"]["instances"] == [] and len(planned["site2"]["instances"]) == 1
    inv = invmod.new_inventory("t", pool="10.9.0.0/30")  # holds 2
    invmod.merge_terraform(inv, invmod.peers_from_outputs(planned))
    with pytest.raises(BadInput, match="too small: 3 peers"):
        invmod.merge_terraform(invmod.new_inventory("t", pool="10.9.0.0/30"),
                               invmod.peers_from_outputs(invmod.known_part(lab_outputs(3))))


# ---------------------------------------------------------------- add_peer: the new peer against the others


def _random_peer(rnd, name):
    def v4(*parts):
        return ".".join(str(p) for p in parts)

    subnets = []
    for _ in range(rnd.choice([0, 1, 1, 2])):
        length = rnd.choice([16, 24, 24, 25, 32])
        net = ipaddress.ip_network(f"{v4(10, rnd.randrange(4), rnd.randrange(4), rnd.choice([0, 128, 7]))}/{length}",
                                   strict=False)
        subnets.append(net)
    if rnd.random() < 0.15:
        subnets.append(ipaddress.ip_network(f"fd{rnd.randrange(3):02x}::/64"))
    if rnd.random() < 0.05:
        subnets.append(ipaddress.ip_network("10.200.0.0/30"))  # the pool's
    host = rnd.choice([v4(10, rnd.randrange(4), rnd.randrange(4), rnd.randrange(1, 9)),
                       v4(203, 0, 113, rnd.randrange(1, 20)), v4(10, 200, 0, rnd.randrange(1, 30)), "vpn.example.com"])
    ssh = None
    if rnd.random() < 0.5:
        ssh = SshTarget("root", rnd.choice([host, v4(10, rnd.randrange(4), rnd.randrange(4), rnd.randrange(1, 9))]))
    address = ipaddress.ip_address("0.0.0.0")
    if rnd.random() < 0.3:
        address = ipaddress.ip_address(v4(10, 200, 0, rnd.randrange(0, 40)))
    return Peer(name=name, address=address, subnets=tuple(subnets), endpoint_host=rnd.choice([host, None]),
                endpoint_port=51820, ssh=ssh, listen_port=rnd.choice([51820, 51820, 51871]))


def _outcome(add, inv, peer):
    try:
        return add(inv, peer)
    except BadInput as e:
        return ("refused", e.field, e.message)


def test_add_peer_decides_as_the_whole_check_does(monkeypatch):
    """The O(n) check of the new peer against the others accepts and refuses what `check` of the
    whole mesh does, with the same message; and it is what decides most additions."""
    import random

    real_fits = invmod.fits
    decided = 0

    def counting_fits(before, after, name):
        nonlocal decided
        ok = real_fits(before, after, name)
        decided += ok
        return ok

    def reference(inv, peer):
        with monkeypatch.context() as m:
            m.setattr(invmod, "fits", lambda *a: False)
            return invmod.add_peer(inv, peer)

    monkeypatch.setattr(invmod, "fits", counting_fits)
    rnd = random.Random(1313)
    names = ["a", "b", "c", "d", "e", "f", "g", "h", "site1", " b", "B"]
    trials = 0
    for _ in range(60):
        inv = invmod.new_inventory("t")
        for i in range(rnd.randrange(1, 9)):
            got = _outcome(reference, inv, _random_peer(rnd, rnd.choice([f"p{i}", f"p{i}", *names])))
            if not isinstance(got, tuple):
                inv = got
        if rnd.random() < 0.3:  # an HA site among them
            with contextlib.suppress(BadInput):
                inv = invmod.merge_terraform(inv, invmod.peers_from_outputs(_ha_outputs()))
        for _ in range(25):
            peer = _random_peer(rnd, rnd.choice(names))
            assert _outcome(invmod.add_peer, inv, peer) == _outcome(reference, inv, peer), peer
            trials += 1
    assert decided > trials // 10  # the fast path is taken, not only the whole check


def _ha_outputs():
    from tests.conftest import lab_outputs

    outs = lab_outputs(2)
    a = dict(outs["site1"], site="site1", route_table={"kind": "vip", "address": "10.10.1.1/24", "interface": "eth1"})
    b = dict(a, endpoint="198.18.1.19", ssh_host="198.18.1.19", private_address="10.10.1.2")
    return {"site1a": a, "site1b": b}


def test_a_peer_read_with_empty_values_is_the_peer_without_them():
    full = {"source": "manual", "address": "10.200.0.9", "endpoint": None, "listen_port": 51820, "subnets": [],
            "private_address": None, "keepalive": None, "egress_interface": "detect", "ssh": None,
            "ssh_host_keys": [], "region": "", "cloud": "", "instances": [], "site": "", "address6": "",
            "private_address6": "", "mtu": None, "route_table": None}
    bare = {"address": "10.200.0.9"}
    p = invmod.peer_from_dict("x", full)
    assert p == invmod.peer_from_dict("x", bare) == Peer(name="x", address=ipaddress.ip_address("10.200.0.9"))
    assert invmod.peer_to_dict(p) == {k: v for k, v in full.items()
                                     if k not in ("site", "address6", "private_address6", "mtu", "route_table")}
    assert invmod.peer_from_dict("x", {**bare, "egress_interface": ""}).egress_interface == "detect"


@pytest.mark.parametrize("field,value,message", [
    ("subnets", ["10.1.0.5/24"], "peers.x.subnets: '10.1.0.5/24': host bits are set"),
    ("subnets", 7, None),  # not a list: refused before, by a TypeError, and still so
    ("region", "a b", "peers.x.region: 'a b': up to 64 characters"),
    ("keepalive", 70000, "peers.x.keepalive: 70000: seconds from 1 to 65535"),
    ("ssh_host_keys", ["nope"], "peers.x.ssh_host_keys: 'nope': expected an OpenSSH public key line"),
    ("instances", [{"name": "vm", "address": "10.9.9.9"}], "peers.x.instances.vm.address"),
    ("site", "Bad", "peers.x.site: 'Bad': must be 1-63"),
    ("route_table", "x", "peers.x.route_table: 'x': must be an object"),
])
def test_a_refusal_names_the_field_as_the_document_does(field, value, message):
    d = {"address": "10.200.0.9", "subnets": ["10.1.0.0/24"], field: value}
    if message is None:
        with pytest.raises(TypeError):
            invmod.peer_from_dict("x", d)
        return
    with pytest.raises(BadInput) as e:
        invmod.check(invmod.Inventory(name="t", mesh=invmod.new_inventory("t").mesh,
                                      peers=(invmod.peer_from_dict("x", d),)))
    assert e.value.message.startswith(message), e.value.message
