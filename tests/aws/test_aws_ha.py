"""terraform/aws with ha = true, applied for real by Terraform and the real AWS provider (from the
local mirror) against the local EC2 API emulator, through the root module wgmesh writes; then the
route switch the failover agent runs on a gateway (wgmesh/agent/ec2.py) against the same emulator.

The emulator runs no machines: the switch is called here as the agent calls it on gateway b, and
the route table is read back through the EC2 API. No traffic leaves loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.aws.emulator import OPERATOR, REGIONS, REPO, Root, amis, client
from wgmesh import inventory as invmod
from wgmesh.agent import ec2 as agent_ec2
from wgmesh.errors import TerraformFailed

GOLDEN = REPO / "tests" / "aws" / "golden" / "single_gateway_plan.json"
ACCOUNT = "123456789012"  # the emulator's account
# Fixed inputs for the plan compared with the golden file (a public key, and a path Terraform never reads).
SSH_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm1ZQ3ChQ+3fs9sYVUxHpS0XbYyNwqzFV5Gj0v8H0aZ test"
FIXED_AMIS = {r: "ami-0123456789abcdef0" for r in REGIONS}


def _vars(**extra: object) -> dict[str, str]:
    """--var values as wgmesh passes them (strings; JSON for lists and maps)."""
    base: dict[str, object] = {"regions": REGIONS, "operator_cidr": OPERATOR, "ssh_public_key": SSH_PUBLIC_KEY,
                               "ssh_private_key_file": "/keys/id_ed25519", "test_instance": True, **extra}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in base.items()}


def resource_plan(doc: dict) -> dict:
    """What a plan would do: every managed resource's actions and planned values (known and
    unknown), and the planned `peers` output."""
    return {
        "resources": {
            rc["address"]: {"actions": rc["change"]["actions"], "after": rc["change"]["after"],
                            "after_unknown": rc["change"]["after_unknown"]}
            for rc in doc.get("resource_changes", []) if rc["mode"] == "managed"
        },
        "peers": {k: doc["output_changes"]["peers"][k] for k in ("after", "after_unknown")},
    }


# ---------------------------------------------------------------- ha = false, ipv6 = false: nothing changes


@pytest.mark.parametrize("extra", [{}, {"availability_zones": {"cn-north-1": "cn-north-1a"}},
                                   {"ha": "false", "ipv6": "false"}],
                         ids=["ha and ipv6 unset", "a zone given as a string", "ha and ipv6 false"])
def test_without_ha_the_plan_is_the_single_gateway_plan(moto, tmp_path, extra):
    """The golden file is the plan of the stack as it was before ha and ipv6 existed (same
    inputs): with ha and ipv6 unset or false, the same resources with the same values, and the
    same `peers` output (the zone the emulator offers first in cn-north-1 is cn-north-1a, so
    giving it changes nothing)."""
    got = resource_plan(Root(tmp_path / "tf", moto, _vars(amis=FIXED_AMIS, **extra)).plan_document())
    assert got == json.loads(GOLDEN.read_text())
    assert not any("gateway_b" in a or "iam" in a or "egress_only" in a for a in got["resources"])


# ---------------------------------------------------------------- ha = true, applied


@pytest.fixture(scope="module")
def ha(moto, tmp_path_factory):
    """Both regions applied with ha = true; destroyed afterwards."""
    tmp = tmp_path_factory.mktemp("ha")
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    root = Root(tmp / "tf", moto, _vars(amis=amis(moto), ha="true", ssh_private_key_file=str(key),
                                        ssh_public_key=key.with_suffix(".pub").read_text().strip()))
    root.runner.plan()
    root.runner.apply()
    try:
        yield root, root.runner.outputs()
    finally:
        root.runner.destroy()
        for region in REGIONS:
            c = client(moto, region)
            assert [i["InstanceId"] for r in c.describe_instances()["Reservations"] for i in r["Instances"]
                    if i["State"]["Name"] not in ("terminated", "shutting-down")] == []
            assert c.describe_addresses()["Addresses"] == []
        assert client(moto, REGIONS[0], "iam").list_roles()["Roles"] == []


def _site(outputs: dict, region: str) -> tuple[dict, dict]:
    peers = outputs["peers"]
    return peers[f"wgmesh-{region}-a"], peers[f"wgmesh-{region}-b"]


def _instance(c, eni: str) -> dict:
    """The instance whose primary network interface `eni` is."""
    (nic,) = c.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]
    assert nic["Attachment"]["DeviceIndex"] == 0
    (found,) = [i for r in c.describe_instances(InstanceIds=[nic["Attachment"]["InstanceId"]])["Reservations"]
                for i in r["Instances"]]
    return found


def test_two_gateways_per_region_in_two_zones(moto, ha):
    _, outputs = ha
    assert sorted(outputs["peers"]) == sorted(f"wgmesh-{r}-{g}" for r in REGIONS for g in "ab")
    eips = {}
    for region in REGIONS:
        c = client(moto, region)
        gateways = [_instance(c, p["route_table"]["network_interface_id"]) for p in _site(outputs, region)]
        zones = [g["Placement"]["AvailabilityZone"] for g in gateways]
        assert len(set(zones)) == 2 and all(z.startswith(region) for z in zones), zones
        # Each with its own Elastic IP, attached to it, and the peer's endpoint.
        for g, p in zip(gateways, _site(outputs, region), strict=True):
            addr = c.describe_addresses(Filters=[{"Name": "instance-id", "Values": [g["InstanceId"]]}])["Addresses"]
            assert [a["PublicIp"] for a in addr] == [p["endpoint"]] == [g["PublicIpAddress"]]
            assert g["PrivateIpAddress"] == p["private_address"]
            sdc = c.describe_instance_attribute(InstanceId=g["InstanceId"], Attribute="sourceDestCheck")
            assert sdc["SourceDestCheck"]["Value"] is False
            assert g["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/wgmesh-{region}-gateway")
            assert [s["GroupName"] for s in g["SecurityGroups"]] == [f"wgmesh-{region}-gateway"]
        eips[region] = {p["endpoint"] for p in _site(outputs, region)}
        assert len(eips[region]) == 2
    # WireGuard: from both gateways of the other region, and from this site's own two (each is a
    # peer of the other); SSH only from the operator; nothing from anywhere.
    for i, region in enumerate(REGIONS):
        c = client(moto, region)
        sg = c.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"wgmesh-{region}-gateway"]}])
        sg_id = sg["SecurityGroups"][0]["GroupId"]
        rules = c.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [sg_id]}])["SecurityGroupRules"]
        ingress = [x for x in rules if not x["IsEgress"]]
        udp = sorted(x["CidrIpv4"] for x in ingress if x["IpProtocol"] == "udp")
        assert udp == sorted(f"{ip}/32" for ip in eips[REGIONS[1 - i]] | eips[region])
        assert {x.get("CidrIpv4") for x in ingress if x["IpProtocol"] == "tcp"} == {OPERATOR}
        assert not any(x.get("CidrIpv4") == "0.0.0.0/0" for x in ingress)


def test_the_role_may_only_switch_the_private_routes(moto, ha):
    _, outputs = ha
    iam = client(moto, REGIONS[0], "iam")
    for region in REGIONS:
        a, b = _site(outputs, region)
        (rtb,) = a["route_table"]["route_table_ids"]
        role = f"wgmesh-{region}-gateway"
        profile = iam.get_instance_profile(InstanceProfileName=role)["InstanceProfile"]
        assert [r["RoleName"] for r in profile["Roles"]] == [role]
        trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
        assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": trust["Statement"][0]["Principal"]
                                                                       ["Service"]}, "Action": "sts:AssumeRole"}]
        assert trust["Statement"][0]["Principal"]["Service"].startswith("ec2.amazonaws.com")
        assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
        assert iam.list_role_policies(RoleName=role)["PolicyNames"] == [f"wgmesh-{region}-route-switch"]
        doc = iam.get_role_policy(RoleName=role, PolicyName=f"wgmesh-{region}-route-switch")["PolicyDocument"]
        assert doc == {"Version": "2012-10-17", "Statement": [
            {"Sid": "SwitchThePrivateRoutes", "Effect": "Allow", "Action": "ec2:ReplaceRoute",
             "Resource": [f"arn:aws-cn:ec2:{region}:{ACCOUNT}:route-table/{rtb}"]},
            {"Sid": "ReadTheRouteTables", "Effect": "Allow", "Action": "ec2:DescribeRouteTables", "Resource": "*"},
        ]}


def test_the_peers_output_names_the_site_and_its_route_table(moto, ha):
    root, outputs = ha
    for region in REGIONS:
        a, b = _site(outputs, region)
        c = client(moto, region)
        private = c.describe_route_tables(Filters=[{"Name": "tag:Name", "Values": [f"wgmesh-{region}-private"]}])
        (rtb,) = [t["RouteTableId"] for t in private["RouteTables"]]
        for p, g in ((a, "a"), (b, "b")):
            assert p["site"] == f"wgmesh-{region}"
            assert p["route_table"] == {"kind": "aws", "region": region, "route_table_ids": [rtb],
                                        "network_interface_id": _instance(c, p["route_table"]["network_interface_id"])
                                        ["NetworkInterfaces"][0]["NetworkInterfaceId"]}
            assert p["ssh_host"] == p["endpoint"] and p["region"] == region and p["cloud"] == "aws", g
        assert a["route_table"]["network_interface_id"] != b["route_table"]["network_interface_id"]
        assert a["subnets"] == b["subnets"] and len(a["subnets"]) == 1
        assert a["instances"] == b["instances"] and [i["name"] for i in a["instances"]] == [f"wgmesh-{region}-test"]
    info = json.loads(root.terraform("output", "-json").stdout)
    assert set(info) == {"peers"}  # the root exports the merged peers only (info is the module's)
    # wgmesh reads them into an inventory: two gateways of one site per region, each with its table.
    inv = invmod.merge_terraform(invmod.new_inventory("aws", stack="aws"), invmod.peers_from_outputs(outputs["peers"]))
    assert {p.name: (p.site, p.route_table.kind, p.route_table.network_interface_id) for p in inv.peers} == {
        name: (p["site"], "aws", p["route_table"]["network_interface_id"]) for name, p in outputs["peers"].items()}


def _routes(c, rtb: str, cidr: str) -> list[dict]:
    table = c.describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]
    return [r for r in table["Routes"] if r.get("DestinationCidrBlock") == cidr]


def test_the_agent_switches_the_routes_and_a_later_apply_keeps_them(moto, ha, monkeypatch):
    root, outputs = ha
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_EC2", raising=False)
    creds = agent_ec2.Credentials("testing", "testing")
    cidr = {r: _site(outputs, r)[0]["subnets"][0] for r in REGIONS}
    for i, region in enumerate(REGIONS):
        c = client(moto, region)
        a, b = _site(outputs, region)
        (rtb,) = b["route_table"]["route_table_ids"]
        other = cidr[REGIONS[1 - i]]
        # Terraform pointed the routes to the other region at gateway a.
        assert [r["NetworkInterfaceId"] for r in _routes(c, rtb, other)] == [a["route_table"]["network_interface_id"]]
        # Gateway b becomes active: its agent switches them (the call the agent makes), once.
        switch = {"region": region, "route_table_ids": b["route_table"]["route_table_ids"],
                  "destinations": [other], "network_interface_id": b["route_table"]["network_interface_id"],
                  "endpoint": moto, "creds": creds}
        assert agent_ec2.replace_routes(**switch) == [f"{rtb}:{other}"]
        assert [r["NetworkInterfaceId"] for r in _routes(c, rtb, other)] == [b["route_table"]["network_interface_id"]]
        assert agent_ec2.replace_routes(**switch) == []  # nothing left to do
        # The own VPC's local route is never touched, even when asked.
        assert agent_ec2.replace_routes(**{**switch, "destinations": [cidr[region]]}) == []
        # An unknown route table: an Ec2Error that names it, and nothing changed.
        with pytest.raises(agent_ec2.Ec2Error, match="rtb-00000000deadbeef") as err:
            agent_ec2.replace_routes(**{**switch, "route_table_ids": [rtb, "rtb-00000000deadbeef"]})
        assert err.value.action == "DescribeRouteTables" and "testing" not in str(err.value)
        assert [r["NetworkInterfaceId"] for r in _routes(c, rtb, other)] == [b["route_table"]["network_interface_id"]]

    # A later apply leaves the agent's switch alone: the plan changes nothing at all.
    r = root.terraform("plan", "-detailed-exitcode", "-input=false", "-out", "again.tfplan")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    doc = json.loads(root.terraform("show", "-json", "again.tfplan").stdout)
    assert [rc["address"] for rc in doc.get("resource_changes", []) if rc["change"]["actions"] != ["no-op"]] == []
    for region in REGIONS:
        b = _site(outputs, region)[1]
        (rtb,) = b["route_table"]["route_table_ids"]
        other = cidr[REGIONS[1 - REGIONS.index(region)]]
        assert [r["NetworkInterfaceId"] for r in _routes(client(moto, region), rtb, other)] == [
            b["route_table"]["network_interface_id"]]
    # ... but a new gateway a (-replace) gets the routes again, as before ha existed.
    module = REGIONS[0].replace("-", "_")
    r = root.terraform("plan", "-input=false", f"-replace=module.{module}.aws_instance.gateway", "-out", "new-a.tfplan")
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads(root.terraform("show", "-json", "new-a.tfplan").stdout)
    replaced = {rc["address"] for rc in doc["resource_changes"] if rc["change"]["actions"] == ["delete", "create"]}
    assert {a for a in replaced if ".aws_route." in a} == {
        f'module.{module}.aws_route.to_site["{cidr[REGIONS[1]]}"]'}, replaced


def test_the_agents_own_route_table_code_switches_back_with_the_config_wgmesh_renders(moto, ha, monkeypatch):
    """After the switch to gateway b above: gateway a takes its site again through the agent's
    own code (agent.RouteTable, fed the agent config wgmesh renders for it from these outputs),
    as the surviving gateway would on its instance."""
    from wgmesh import ha as hamod
    from wgmesh.agent.hostops import RouteTable
    from wgmesh.agent.rule import parse_config

    _, outputs = ha
    inv = invmod.merge_terraform(invmod.new_inventory("aws", stack="aws"), invmod.peers_from_outputs(outputs["peers"]))
    assert {s.name: s.names() for s in hamod.sites(inv).values()} == {
        f"wgmesh-{r}": (f"wgmesh-{r}-a", f"wgmesh-{r}-b") for r in REGIONS}
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", moto)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    region = REGIONS[0]
    gw_a = inv.peer(f"wgmesh-{region}-a")
    cfg = parse_config(hamod.agent_config(inv, {p.name: f"key-{p.name}" for p in inv.peers}, gw_a))
    other = str(inv.peer(f"wgmesh-{REGIONS[1]}-a").subnets[0])
    assert cfg.route_table is not None and other in cfg.destinations
    table = RouteTable(cfg)
    table.acquire(0.0)
    assert table.status == "held", table.status
    (rtb,) = cfg.route_table["route_table_ids"]
    assert [r["NetworkInterfaceId"] for r in _routes(client(moto, region), rtb, other)] == [
        cfg.route_table["network_interface_id"]]


# ---------------------------------------------------------------- bad input


def test_ha_with_one_zone_is_refused_before_anything_exists(moto, tmp_path):
    """ha = true where a region has one availability zone (given explicitly): Terraform refuses
    at plan time, naming the region; nothing is created."""
    before = {r: {v["VpcId"] for v in client(moto, r).describe_vpcs()["Vpcs"]} for r in REGIONS}
    root = Root(tmp_path / "tf", moto, _vars(amis=amis(moto), ha="true", vpc_supernet="10.200.0.0/14",
                                             availability_zones={"cn-north-1": ["cn-north-1a"]}))
    with pytest.raises(TerraformFailed) as err:
        root.runner.plan()
    text = " ".join(str(err.value).split())
    print(f"\nha with one zone: {err.value}")
    assert "ha needs two different availability zones in region cn-north-1" in text, text
    assert text.count("Error:") == 1, text  # that one error, not another that follows from it
    assert 'got ["cn-north-1a"]' in text and "cn-northwest-1" not in text.split("availability zones in region")[1]
    assert {r: {v["VpcId"] for v in client(moto, r).describe_vpcs()["Vpcs"]} for r in REGIONS} == before
    # The same region with its zone as a string (the form before ha): refused the same way.
    shutil.rmtree(tmp_path / "tf")
    root = Root(tmp_path / "tf", moto, _vars(amis=amis(moto), ha="true", vpc_supernet="10.200.0.0/14",
                                             availability_zones={"cn-north-1": "cn-north-1a"}))
    with pytest.raises(TerraformFailed, match="availability zones in region cn-north-1"):
        root.runner.plan()
