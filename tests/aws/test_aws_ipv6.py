"""terraform/aws with ipv6 = true (dual stack), built by `wgmesh up --stack aws --no-push --var
ipv6=true` with the real AWS provider (from the local mirror) against the local EC2 API emulator:
an Amazon-provided IPv6 /56 per VPC, a /64 of it per subnet, the other region's /56 routed to the
gateway's interface, IPv6 egress through an egress-only internet gateway, the security groups for
both families, the IPv6 addresses of the gateways and test instances in the outputs, read by
wgmesh into a dual-stack mesh whose configs carry both families, the failover agent's switch of
an IPv6 route that a later plan leaves alone. Then ipv6 with ha = true (plan only) and a value of
ipv6 that is no bool.

The emulator runs no machines: nothing is pushed, no traffic leaves loopback.
"""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from tests.aws.emulator import OPERATOR, REGIONS, Root, amis, terraform, up, wgmesh
from tests.aws.emulator import client as ec2
from tests.aws.test_aws_ha import _vars, resource_plan
from wgmesh import inventory as invmod
from wgmesh import store
from wgmesh.adapters.terraform import TerraformRunner
from wgmesh.agent import ec2 as agent_ec2
from wgmesh.errors import TerraformFailed
from wgmesh.workspace import Workspace, default_stacks_dir

net = ipaddress.ip_network
addr = ipaddress.ip_address


@pytest.fixture(scope="module")
def dual(moto, tmp_path_factory):
    """`wgmesh up --var ipv6=true` with a test instance per region: (its directory, the
    Terraform workdir, the `peers` output); destroyed afterwards, and nothing of it is left."""
    root = tmp_path_factory.mktemp("ipv6")
    t0 = time.monotonic()
    r = up(moto, root, "test_instance=true", "ipv6=true")
    print(f"\nup --var ipv6=true against the emulator: {time.monotonic() - t0:.1f} s")
    assert sorted(json.loads(r.stdout)["peers"]) == sorted(f"wgmesh-{x}" for x in REGIONS)
    workdir = root / ".wgmesh" / "aws" / "terraform"
    outputs = TerraformRunner(workdir).outputs()["peers"]
    try:
        yield root, workdir, outputs
    finally:
        wgmesh(root, "destroy", "--no-stop")
        for region in REGIONS:
            c = ec2(moto, region)
            assert [v for v in c.describe_vpcs()["Vpcs"] if v.get("Ipv6CidrBlockAssociationSet")] == []
            assert c.describe_egress_only_internet_gateways()["EgressOnlyInternetGateways"] == []
            assert [i["InstanceId"] for res in c.describe_instances()["Reservations"] for i in res["Instances"]
                    if i["State"]["Name"] not in ("terminated", "shutting-down")] == []


def _cidrs(outputs: dict) -> dict[str, tuple[str, str]]:
    """Region → (IPv4, IPv6) VPC CIDR, as the peers' `subnets` give them."""
    out = {}
    for region in REGIONS:
        v4, v6 = outputs[f"wgmesh-{region}"]["subnets"]
        assert net(v4).version == 4 and net(v6).version == 6 and net(v6).prefixlen == 56, (v4, v6)
        out[region] = (v4, v6)
    return out


def _named(c, kind: str, name: str) -> dict:
    """The one resource of `kind` (instances, route tables, security groups) tagged Name=name."""
    f = [{"Name": "tag:Name", "Values": [name]}]
    if kind == "instance":
        f.append({"Name": "instance-state-name", "Values": ["running"]})
        (found,) = [i for r in c.describe_instances(Filters=f)["Reservations"] for i in r["Instances"]]
    elif kind == "route_table":
        (found,) = c.describe_route_tables(Filters=f)["RouteTables"]
    else:
        (found,) = c.describe_security_groups(Filters=f)["SecurityGroups"]
    return found


def test_each_vpc_has_an_ipv6_cidr_and_every_subnet_a_64_of_it(moto, dual):
    _, _, outputs = dual
    for region, (v4, v6) in _cidrs(outputs).items():
        c = ec2(moto, region)
        (vpc,) = [v for v in c.describe_vpcs()["Vpcs"] if v["CidrBlock"] == v4]
        assert [(net(a["Ipv6CidrBlock"]), a["Ipv6CidrBlockState"]["State"])
                for a in vpc["Ipv6CidrBlockAssociationSet"]] == [(net(v6), "associated")]
        sixty_fours = list(net(v6).subnets(new_prefix=64))
        subnets = {next(t["Value"] for t in s["Tags"] if t["Key"] == "Name"): s
                   for s in c.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]}
        assert sorted(subnets) == [f"wgmesh-{region}-private", f"wgmesh-{region}-public"]
        for role, n in (("public", 0), ("private", 1)):
            s = subnets[f"wgmesh-{region}-{role}"]
            assert s["CidrBlock"] == str(list(net(v4).subnets(new_prefix=24))[n])
            assert [net(a["Ipv6CidrBlock"]) for a in s["Ipv6CidrBlockAssociationSet"]] == [sixty_fours[n]]
            assert s["AssignIpv6AddressOnCreation"] is True and s["MapPublicIpOnLaunch"] is False


def test_the_other_regions_ipv6_cidr_goes_to_the_gateway_and_the_rest_to_the_internet(moto, dual):
    _, _, outputs = dual
    cidrs = _cidrs(outputs)
    for i, region in enumerate(REGIONS):
        c = ec2(moto, region)
        other = cidrs[REGIONS[1 - i]]
        eni = _named(c, "instance", f"wgmesh-{region}-gateway")["NetworkInterfaces"][0]["NetworkInterfaceId"]
        (vpc_id,) = {_named(c, "route_table", f"wgmesh-{region}-{t}")["VpcId"] for t in ("public", "private")}
        (eigw,) = c.describe_egress_only_internet_gateways()["EgressOnlyInternetGateways"]
        assert [a["VpcId"] for a in eigw["Attachments"]] == [vpc_id]
        routes = {net(r.get("DestinationCidrBlock") or r["DestinationIpv6CidrBlock"]): r
                  for r in _named(c, "route_table", f"wgmesh-{region}-private")["Routes"]}
        # Both families of the other site to the gateway's interface (routed, no NAT) ...
        assert routes[net(other[0])].get("NetworkInterfaceId") == eni
        assert routes[net(other[1])].get("NetworkInterfaceId") == eni
        # ... the rest of IPv6 out through the egress-only internet gateway; no IPv4 default (no NAT gateway).
        assert routes[net("::/0")].get("EgressOnlyInternetGatewayId") == eigw["EgressOnlyInternetGatewayId"]
        assert net("0.0.0.0/0") not in routes
        public = {r.get("DestinationCidrBlock") or r["DestinationIpv6CidrBlock"]: r.get("GatewayId")
                  for r in _named(c, "route_table", f"wgmesh-{region}-public")["Routes"]}
        assert public["0.0.0.0/0"].startswith("igw-") and public["::/0"] == public["0.0.0.0/0"]


def _rules(c, group_id: str) -> tuple[set, set]:
    """(ingress, egress) rules of a security group as (protocol, from port, CIDR) triples (no
    port for all protocols; -1 for ICMPv6 is every type)."""
    rules = c.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]
    triple = [(x["IsEgress"], (x["IpProtocol"], None if x["IpProtocol"] == "-1" else x["FromPort"],
                               x.get("CidrIpv4") or x.get("CidrIpv6")))
              for x in rules]
    return {t for e, t in triple if not e}, {t for e, t in triple if e}


def test_the_security_groups_admit_both_families(moto, dual):
    _, _, outputs = dual
    cidrs = _cidrs(outputs)
    for i, region in enumerate(REGIONS):
        c = ec2(moto, region)
        own, other = cidrs[region], cidrs[REGIONS[1 - i]]
        other_eip = outputs[f"wgmesh-{REGIONS[1 - i]}"]["endpoint"]
        ingress, egress = _rules(c, _named(c, "security_group", f"wgmesh-{region}-gateway")["GroupId"])
        # The gateway: WireGuard (IPv4 underlay) from the other gateway, SSH from the operator only,
        # everything from the own VPC in both families (replies of its workloads), ICMPv6 from
        # anywhere (IPv6 needs it: Packet Too Big); nothing else from anywhere.
        assert ingress == {("udp", 51820, f"{other_eip}/32"), ("tcp", 22, OPERATOR), ("-1", None, own[0]),
                           ("-1", None, own[1]), ("icmpv6", -1, "::/0")}, ingress
        assert egress == {("-1", None, "0.0.0.0/0"), ("-1", None, "::/0")}
        # The test instance: everything from the own VPC and the other site, in both families.
        ingress, egress = _rules(c, _named(c, "security_group", f"wgmesh-{region}-test")["GroupId"])
        assert ingress == {("-1", None, own[0]), ("-1", None, other[0]), ("-1", None, own[1]),
                           ("-1", None, other[1]), ("icmpv6", -1, "::/0")}, ingress
        assert egress == {("-1", None, "0.0.0.0/0"), ("-1", None, "::/0")}


def test_the_gateways_and_test_instances_have_ipv6_addresses_and_the_outputs_say_them(moto, dual):
    _, _, outputs = dual
    for region, (_, v6) in _cidrs(outputs).items():
        c = ec2(moto, region)
        peer = outputs[f"wgmesh-{region}"]
        public, private = list(net(v6).subnets(new_prefix=64))[:2]
        for role, got, subnet in (("gateway", peer["private_address6"], public),
                                  ("test", peer["instances"][0]["address6"], private)):
            inst = _named(c, "instance", f"wgmesh-{region}-{role}")
            have = [a["Ipv6Address"] for a in inst["NetworkInterfaces"][0]["Ipv6Addresses"]]
            assert have == [got] and addr(got) in subnet, (role, have, got, subnet)
        assert peer["instances"][0]["address"] == _named(c, "instance", f"wgmesh-{region}-test")["PrivateIpAddress"]
        # The WireGuard underlay stays IPv4: the endpoint is the Elastic IP.
        assert addr(peer["endpoint"]).version == 4


def test_wgmesh_reads_the_outputs_into_a_dual_stack_mesh(dual):
    root, _, outputs = dual
    inv = invmod.merge_terraform(invmod.new_inventory("aws", stack="aws"), invmod.peers_from_outputs(outputs))
    pool6 = inv.mesh.pool6
    assert pool6 is not None and pool6.version == 6
    for p in inv.peers:
        d = outputs[p.name]
        assert list(p.subnets) == [net(s) for s in d["subnets"]]
        assert p.address6 in pool6 and p.private_address6 == addr(d["private_address6"])
        assert [i.address6 for i in p.instances] == [addr(i["address6"]) for i in d["instances"]]
    # What `up` saved is that mesh.
    saved = store.load(Workspace(root, "aws", default_stacks_dir()))
    assert saved.mesh.pool6 == pool6 and {p.name: p.subnets for p in saved.peers} == {
        p.name: p.subnets for p in inv.peers}
    assert all(p.address6 in pool6 and p.private_address6 is not None for p in saved.peers)


def test_the_configs_carry_both_families(dual):
    root, _, outputs = dual
    cidrs = _cidrs(outputs)
    wgmesh(root, "genconfig")
    inv = store.load(Workspace(root, "aws", default_stacks_dir()))
    for i, region in enumerate(REGIONS):
        me, other = inv.peer(f"wgmesh-{region}"), inv.peer(f"wgmesh-{REGIONS[1 - i]}")
        text = (root / "output" / "aws" / f"wgmesh-{region}.conf").read_text()
        assert f"Address = {me.address}/32, {me.address6}/128" in text.splitlines()
        assert f"AllowedIPs = {other.address}/32, {other.address6}/128, {', '.join(cidrs[REGIONS[1 - i]])}" \
            in text.splitlines(), text


def test_the_failover_agents_switch_moves_the_ipv6_routes_too(moto, dual, monkeypatch):
    """The call the failover agent of an HA site makes (wgmesh/agent/ec2.py) on the IPv6 route to
    the other region: here towards the test instance's interface, standing in for gateway b's."""
    _, _, outputs = dual
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_EC2", raising=False)
    cidrs = _cidrs(outputs)
    region, other = REGIONS[0], cidrs[REGIONS[1]][1]
    c = ec2(moto, region)
    rtb = _named(c, "route_table", f"wgmesh-{region}-private")["RouteTableId"]
    eni = _named(c, "instance", f"wgmesh-{region}-test")["NetworkInterfaces"][0]["NetworkInterfaceId"]
    switch = {"region": region, "route_table_ids": [rtb], "destinations": [other], "network_interface_id": eni,
              "endpoint": moto, "creds": agent_ec2.Credentials("testing", "testing")}
    assert agent_ec2.replace_routes(**switch) == [f"{rtb}:{other}"]
    assert agent_ec2.replace_routes(**switch) == []
    (route,) = [r for r in _named(c, "route_table", f"wgmesh-{region}-private")["Routes"]
                if r.get("DestinationIpv6CidrBlock") and net(r["DestinationIpv6CidrBlock"]) == net(other)]
    assert route["NetworkInterfaceId"] == eni


def test_a_later_plan_changes_nothing(dual):
    """Nothing of the dual stack drifts (the addresses, the associations, the routes), and the
    IPv6 route the agent switched above stays where it put it (as the IPv4 ones do with ha)."""
    _, workdir, _ = dual
    r = terraform(workdir, "plan", "-detailed-exitcode", "-input=false")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


# ---------------------------------------------------------------- ipv6 with ha, plan only


def test_ipv6_with_ha_plans_both_gateways_dual_stack(moto, tmp_path):
    """ha = true with ipv6 = true: gateway b's subnet gets its /64 (the third), gateway b an IPv6
    address, the IPv6 routes start on gateway a like the IPv4 ones; wgmesh's check of the
    planned peers passes. (Applied, ha is test_aws_ha.py's; this one only plans.)"""
    doc = Root(tmp_path / "tf", moto, _vars(amis=amis(moto), ha="true", ipv6="true")).plan_document()
    res = resource_plan(doc)["resources"]
    for region in REGIONS:
        m = f"module.{region.replace('-', '_')}"
        assert res[f"{m}.aws_vpc.this"]["after"]["assign_generated_ipv6_cidr_block"] is True
        for s in ("public", "private", "public_b[0]"):
            sub = res[f"{m}.aws_subnet.{s}"]
            assert sub["after"]["assign_ipv6_address_on_creation"] is True and sub["after_unknown"]["ipv6_cidr_block"]
        for g in ("gateway", "gateway_b[0]", "test[0]"):
            assert res[f"{m}.aws_instance.{g}"]["after"]["ipv6_address_count"] == 1
        assert [a for a in res if a.startswith(f"{m}.aws_route.to_site6")] == [f"{m}.aws_route.to_site6[0]"]
        assert res[f"{m}.aws_route.to_site6[0]"]["after_unknown"]["destination_ipv6_cidr_block"]
        assert f"{m}.aws_egress_only_internet_gateway.this[0]" in res
    planned = doc["output_changes"]["peers"]["after"]
    assert sorted(planned) == sorted(f"wgmesh-{r}-{g}" for r in REGIONS for g in "ab")
    invmod.merge_terraform(invmod.new_inventory("aws", stack="aws"),
                           invmod.peers_from_outputs(invmod.known_part(planned)))


# ---------------------------------------------------------------- bad input


def test_ipv6_must_be_a_bool(moto, tmp_path):
    root = Root(tmp_path / "tf", moto, _vars(amis=amis(moto), ipv6="maybe"))
    with pytest.raises(TerraformFailed) as err:
        root.runner.plan()
    text = " ".join(str(err.value).split())
    print(f"\nipv6=maybe: {text}")
    assert "ipv6" in text and "bool" in text, text
