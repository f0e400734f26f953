"""HA sites without hosts: the inventory's rules, AllowedIPs under a choice of active gateways,
the agent's config and bundle, and push / status / failover against the fake host pool."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from dataclasses import replace

import pytest

from tests.fakes import FakeHost, FakePool, parse_conf, public_keys
from wgmesh import ha, store
from wgmesh import inventory as invmod
from wgmesh.commands.failover import failover
from wgmesh.commands.import_outputs import import_outputs
from wgmesh.commands.push import push
from wgmesh.commands.status import status
from wgmesh.errors import BadInput
from wgmesh.keys import Keystore
from wgmesh.model import Action
from wgmesh.progress import Reporter
from wgmesh.remote.steps import Op
from wgmesh.render import render
from wgmesh.workspace import Workspace, default_stacks_dir


def gateway(n: int, private: str, **more) -> dict:
    return {"endpoint": f"198.51.100.{n}", "ssh_user": "root", "ssh_host": f"198.51.100.{n}",
            "private_address": private, **more}


def outputs() -> dict:
    vip = {"kind": "vip", "address": "10.2.0.1/24", "interface": "lan0"}
    return {
        "s1": gateway(1, "10.1.0.1", subnets=["10.1.0.0/24"]),
        "s2a": gateway(2, "10.2.0.2", subnets=["10.2.0.0/24"], site="s2", route_table=vip),
        "s2b": gateway(3, "10.2.0.3", subnets=["10.2.0.0/24"], site="s2", route_table=vip),
    }


@pytest.fixture
def ws(tmp_path):
    w = Workspace(tmp_path, "lab", default_stacks_dir())
    doc = tmp_path / "out.json"
    doc.write_text(json.dumps({"peers": outputs()}))
    import_outputs(w, str(doc))
    return w


def pool() -> FakePool:
    return FakePool({n: FakeHost() for n in ("s1", "s2a", "s2b")})


def allowed(text: str, key: str) -> str:
    return parse_conf(text)[1][key]["AllowedIPs"]


# ---------------------------------------------------------------- inventory


def test_an_ha_site_is_two_gateways_sharing_subnets(ws):
    inv = store.load(ws)
    assert list(ha.sites(inv)) == ["s2"] and ha.sites(inv)["s2"].names() == ("s2a", "s2b")
    assert inv.peer("s2b").route_table.address == "10.2.0.1/24"
    again = invmod.from_document(invmod.to_document(inv))
    assert again.peer("s2a") == inv.peer("s2a")


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda o: o["s1"].update(site="s2", route_table=o["s2a"]["route_table"]), "peers.s2b.site",
     "two gateways at most"),
    (lambda o: o["s2b"].update(subnets=["10.3.0.0/24"], private_address="10.3.0.3"), "peers.s2b.subnets",
     "same subnets"),
    (lambda o: o["s2b"].pop("route_table"), "peers.s2b.route_table", "needs a route table"),
    (lambda o: o["s2a"]["route_table"].update(address="10.9.0.1/24"), "peers.s2a.route_table.address", "not inside"),
    (lambda o: o["s2a"].update(site="s1"), "peers.s2a.site", "a peer has this name"),
    (lambda o: o["s1"].update(route_table={"kind": "vip", "address": "10.1.0.1/24", "interface": "lan0"}),
     "peers.s1.route_table", "only a gateway of a site"),
    (lambda o: o["s2a"].update(route_table={"kind": "gcp"}), "route_table.kind", "must be"),
    (lambda o: o["s2a"].update(route_table={"kind": "aws", "region": "eu-west-1", "route_table_ids": ["x"],
                                            "network_interface_id": "eni-1"}), "route_table_ids", "AWS id"),
])
def test_bad_ha_outputs_are_refused_naming_the_field(tmp_path, change, field, words):
    o = json.loads(json.dumps(outputs()))
    change(o)
    with pytest.raises(BadInput) as e:
        invmod.check(invmod.merge_terraform(invmod.new_inventory("lab"), invmod.peers_from_outputs(o)))
    assert field in e.value.message and words in e.value.message


# ---------------------------------------------------------------- render


def test_the_subnets_belong_to_the_active_gateway_and_never_to_the_partner(ws):
    inv, keys = store.load(ws), Keystore(ws.keys_dir).load()
    pubs = public_keys(ws)
    files = render(inv, keys)
    assert allowed(files["s1"], pubs["s2a"]) == f"{inv.peer('s2a').address}/32, 10.2.0.0/24"
    assert allowed(files["s1"], pubs["s2b"]) == f"{inv.peer('s2b').address}/32"
    assert allowed(files["s2a"], pubs["s2b"]) == f"{inv.peer('s2b').address}/32"  # own LAN: never via wg0
    assert allowed(files["s2b"], pubs["s2a"]) == f"{inv.peer('s2a').address}/32"
    assert allowed(files["s2a"], pubs["s1"]) == f"{inv.peer('s1').address}/32, 10.1.0.0/24"
    moved = render(inv, keys, {"s2": "s2b"})
    assert allowed(moved["s1"], pubs["s2a"]) == f"{inv.peer('s2a').address}/32"
    assert allowed(moved["s1"], pubs["s2b"]) == f"{inv.peer('s2b').address}/32, 10.2.0.0/24"
    nopsk = replace(inv, mesh=replace(inv.mesh, psk=False))  # the shared-section fast path
    plain = render(nopsk, keys, {"s2": "s2b"})
    assert allowed(plain["s1"], pubs["s2b"]) == f"{inv.peer('s2b').address}/32, 10.2.0.0/24"
    assert allowed(plain["s2a"], pubs["s2b"]) == f"{inv.peer('s2b').address}/32"


# ---------------------------------------------------------------- the agent's files


def test_agent_config_says_who_is_who_and_carries_no_secret(ws):
    inv, keys = store.load(ws), Keystore(ws.keys_dir).load()
    pubs = store.public_keys(keys, inv)
    gw = ha.agent_config(inv, pubs, inv.peer("s2b"))
    assert gw["site"] == "s2" and gw["route_table"] == {"kind": "vip", "address": "10.2.0.1/24", "interface": "lan0"}
    assert gw["sites"] == {"s2": {"gateways": ["s2a", "s2b"], "prefixes": ["10.2.0.0/24"]}}
    assert gw["destinations"] == ["10.1.0.0/24"] and set(gw["agents"]) == {"s1", "s2a", "s2b"}
    other = ha.agent_config(inv, pubs, inv.peer("s1"))
    assert other["site"] is None and other["route_table"] is None and other["keys"] == {
        "s2a": pubs["s2a"], "s2b": pubs["s2b"]}
    data = ha.bundle(gw)
    assert data == ha.bundle(gw)  # byte-identical: the sha256 says whether a host has it
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == [
            "agent.json", "agent.py", "ec2.py", "hostops.py", "rule.py", "wgmesh-agent.service"]
    for kp in keys.pairs.values():
        assert kp.private.encode() not in data
    assert keys.psk_secret not in data and base64.b64encode(keys.psk_secret) not in data


def test_active_from_the_agents_prefers_the_highest_claim(ws):
    from wgmesh.model import AgentState

    inv = store.load(ws)
    assert ha.active_from(inv, {}) == {"s2": "s2a"}  # nothing runs yet: the first gateway
    both = {"s2a": AgentState("x", True, "active", 3), "s2b": AgentState("x", True, "active", 4)}
    assert ha.active_from(inv, both) == {"s2": "s2b"}
    dead_claim = {
        "s2b": AgentState("x", False, "active", 9), "s1": AgentState("x", True, "observer", owners={"s2": "s2b"}),
    }
    assert ha.active_from(inv, dead_claim) == {"s2": "s2b"}  # the agent that runs routes it there


# ---------------------------------------------------------------- commands on fake hosts


def test_push_installs_and_starts_the_agent_everywhere_then_changes_nothing(ws):
    p = pool()
    res = push(ws, Reporter(), connect=p.connector())
    assert res.ok and {r.action for r in res.results.values()} == {Action.START}
    for name, h in p.hosts.items():
        assert [r.ops for r in h.programs("agent")] == [[Op.AGENT_INSTALL, Op.AGENT_START]], name
        assert h.agent_running and h.agent_config["name"] == name
    p.forget_runs()
    again = push(ws, Reporter(), connect=p.connector())
    assert {r.action for r in again.results.values()} == {Action.UNCHANGED}
    assert not any(h.programs("agent") for h in p.hosts.values())


def test_push_follows_the_agents_choice_and_restarts_a_stopped_agent(ws):
    p = pool()
    push(ws, Reporter(), connect=p.connector())
    p.active["s2"] = ("s2b", 2)  # the agents switched while the controller was away
    p.hosts["s1"].agent_running = False
    res = push(ws, Reporter(), connect=p.connector())
    assert res.results["s1"].action == Action.SYNCCONF and "agent was not running" in res.results["s1"].detail
    pubs = public_keys(ws)
    assert "10.2.0.0/24" in allowed(p.hosts["s1"].conf, pubs["s2b"])
    assert "10.2.0.0/24" not in allowed(p.hosts["s1"].conf, pubs["s2a"])
    assert p.hosts["s1"].agent_running


def test_status_json_names_active_and_standby(ws):
    p = pool()
    push(ws, Reporter(), connect=p.connector())
    doc = status(ws, connect=p.connector()).to_json()
    site = doc["ha"]["s2"]
    assert (site["active"], site["standby"], site["epoch"], site["problems"]) == ("s2a", "s2b", 1, [])
    assert site["gateways"]["s2b"]["role"] == "standby" and doc["drift"] == {}
    p.hosts["s2b"].agent_running = False
    assert status(ws, connect=p.connector()).to_json()["ha"]["s2"]["gateways"]["s2b"]["role"] == "agent down"


def test_a_route_table_not_where_the_active_gateway_is_is_a_problem(ws):
    """During a handover the new active gateway waits for the others before it takes the table,
    and the old one keeps it until then: status, verify and failover's wait name both until the
    table has changed hands."""
    p = pool()
    push(ws, Reporter(), connect=p.connector())
    p.hosts["s2a"].route_table = "handover"
    assert status(ws, connect=p.connector()).to_json()["ha"]["s2"]["problems"] == [
        "s2a: route table not taken yet (handover)"]
    p.hosts["s2a"].route_table = None
    assert status(ws, connect=p.connector()).to_json()["ha"]["s2"]["problems"] == []
    p.hosts["s2b"].route_table = "held"  # a standby that never let the site's address go
    assert status(ws, connect=p.connector()).to_json()["ha"]["s2"]["problems"] == [
        "s2b: standby still holds the route table"]


def test_failover_asks_the_standby_and_waits_for_everyone(ws):
    p = pool()
    push(ws, Reporter(), connect=p.connector())
    p.forget_runs()
    res = failover(ws, "s2", connect=p.connector())
    assert res.ok and (res.before, res.after, res.epoch) == ("s2a", "s2b", 2)
    assert [r.ops for r in p.hosts["s2b"].programs("failover")] == [[Op.AGENT_TAKEOVER]]
    assert not p.hosts["s2a"].programs("failover")
    assert failover(ws, "s2", to="s2b", connect=p.connector()).unchanged


@pytest.mark.parametrize(("site", "words"), [
    ("nosuch", "no such site"), ("s1", "has one gateway"), ("s2a", "is a gateway of site 's2'"),
])
def test_failover_of_what_is_no_ha_site_is_refused_before_any_host(ws, site, words):
    p = pool()
    with pytest.raises(BadInput) as e:
        failover(ws, site, connect=p.connector())
    assert words in e.value.message and site in e.value.message
    assert not any(h.ran for h in p.hosts.values())


def test_failover_to_a_gateway_whose_agent_is_down_changes_nothing(ws):
    from wgmesh.errors import HostsFailed

    p = pool()
    push(ws, Reporter(), connect=p.connector())
    p.hosts["s2b"].agent_running = False
    with pytest.raises(HostsFailed, match="agent down"):
        failover(ws, "s2", connect=p.connector())
    assert p.active["s2"] == ("s2a", 1)


def test_a_mesh_without_ha_sites_any_more_loses_its_agents(ws, tmp_path):
    p = pool()
    push(ws, Reporter(), connect=p.connector())
    o = outputs()
    for g in ("s2a", "s2b"):
        o[g].pop("site"), o[g].pop("route_table")
    o["s2b"].update(subnets=["10.3.0.0/24"], private_address="10.3.0.3")
    doc = tmp_path / "out2.json"
    doc.write_text(json.dumps({"peers": o}))
    import_outputs(ws, str(doc))
    res = push(ws, Reporter(), connect=p.connector())
    assert res.ok and all(not h.agent_running and h.agent_sha is None for h in p.hosts.values())
    assert "agent removed" in res.results["s1"].detail


def test_the_agent_rewrites_a_config_file_exactly_as_wgmesh_renders_the_new_choice(ws, tmp_path):
    """After a switch the agents make every host's file say where the site is: byte-identical to
    what wgmesh renders for that choice, so a reboot starts right and verify sees no drift."""
    from wgmesh.agent.hostops import rewrite_conf
    from wgmesh.agent.rule import parse_config

    inv, keys = store.load(ws), Keystore(ws.keys_dir).load()
    pubs = store.public_keys(keys, inv)
    before, after = render(inv, keys, {"s2": "s2a"}), render(inv, keys, {"s2": "s2b"})
    for host in ("s1", "s2a"):
        path = tmp_path / f"{host}.conf"
        path.write_text(before[host])
        cfg = parse_config(ha.agent_config(inv, pubs, inv.peer(host)))
        changed = rewrite_conf(cfg, {"s2": "s2b"}, str(path))
        assert path.read_text() == after[host]
        assert changed == (before[host] != after[host])
        assert (path.stat().st_mode & 0o777) == (0o600 if changed else path.stat().st_mode & 0o777)
        assert not rewrite_conf(cfg, {"s2": "s2b"}, str(path))  # nothing more to do


def test_delpeer_of_an_ha_gateway_is_refused_before_any_host(ws):
    from wgmesh.commands.delpeer import delpeer

    p = pool()
    with pytest.raises(BadInput) as e:
        delpeer(ws, "s2b", Reporter(), connect=p.connector())
    assert "s2b" in e.value.message and "HA site 's2'" in e.value.message
    assert not any(h.ran for h in p.hosts.values()) and "s2b" in store.load(ws).names


@pytest.mark.parametrize(("value", "words"), [("maybe", "ha is true or false")])
def test_ha_var_must_be_a_boolean(value, words):
    from wgmesh import stacks

    with pytest.raises(BadInput) as e:
        stacks.check_vars(stacks.load_stack(default_stacks_dir(), "lab"), {"ha": value})
    assert words in e.value.message and f"ha={value}" in e.value.message


def test_a_stack_without_ha_cannot_give_two_gateways(tmp_path):
    from wgmesh import stacks

    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "main.tf").write_text('variable "sites" {}\noutput "peers" { value = {} }\n')
    with pytest.raises(BadInput) as e:
        stacks.check_vars(stacks.load_stack(tmp_path, "single"), {"ha": "true"})
    assert "cannot provide two gateways" in e.value.message and "ha=true" in e.value.message


def test_a_plan_of_an_aws_ha_site_is_checked_before_its_ids_are_known():
    """Before apply, Terraform shows the route table's and the interface's ids as unknown: the
    plan check stands placeholders of the right form in for them (and checks the rest)."""
    rt = {"kind": "aws", "region": "eu-west-1", "route_table_ids": [None], "network_interface_id": None}
    o = {
        "x-a": gateway(2, "10.2.0.2", subnets=["10.2.0.0/16"], site="x", route_table=rt),
        "x-b": gateway(3, "10.2.1.2", subnets=["10.2.0.0/16"], site="x", route_table=rt),
    }
    peers = invmod.peers_from_outputs(invmod.known_part(o))
    assert [p.route_table.route_table_ids for p in peers] == [("rtb-0",), ("rtb-0",)]
    with pytest.raises(BadInput, match="route_table_ids"):
        invmod.peers_from_outputs(o)
