import ipaddress
import json
from dataclasses import replace

import pytest

from tests.conftest import lab_outputs
from wgmesh import inventory as invmod
from wgmesh.errors import BadInput
from wgmesh.model import Peer, SshTarget


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
