"""The AWS stack, applied for real by Terraform and the real AWS provider (from the local mirror)
against a local EC2 API emulator (moto), read into an inventory by wgmesh, and destroyed.

The emulator runs no machines, so nothing is pushed (up --no-push, destroy --no-stop): the push
path is proven by the lab. No traffic leaves loopback.
"""

from __future__ import annotations

import json
import time

from tests.aws.emulator import OPERATOR, REGIONS, up, wgmesh
from tests.aws.emulator import client as ec2


def test_aws_stack_against_the_emulator(moto, tmp_path):
    t0 = time.monotonic()
    r = up(moto, tmp_path, "test_instance=true")
    apply_s = time.monotonic() - t0
    doc = json.loads(r.stdout)
    names = [f"wgmesh-{r_}" for r_ in REGIONS]
    assert sorted(doc["peers"]) == sorted(names) and doc["push"] is None

    # The resources, as the EC2 API holds them.
    peers = json.loads(wgmesh(tmp_path, "showpeers", "--json").stdout)["peers"]
    vpc_cidr = {r: peers[f"wgmesh-{r}"]["subnets"][0] for r in REGIONS}
    assert sorted(vpc_cidr.values()) == ["10.100.0.0/16", "10.101.0.0/16"]
    for i, region in enumerate(REGIONS):
        c = ec2(moto, region)
        other = REGIONS[1 - i]
        other_ip = peers[f"wgmesh-{other}"]["endpoint"].rsplit(":", 1)[0]
        vpcs = [v for v in c.describe_vpcs()["Vpcs"] if v["CidrBlock"] == vpc_cidr[region]]
        assert len(vpcs) == 1
        vpc_id = vpcs[0]["VpcId"]
        in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
        subnets = {s["CidrBlock"] for s in c.describe_subnets(Filters=in_vpc)["Subnets"]}
        base = vpc_cidr[region].split(".0.0/")[0]
        assert subnets == {f"{base}.0.0/24", f"{base}.1.0/24"}
        assert c.describe_nat_gateways()["NatGateways"] == []
        gw = [i_ for res in c.describe_instances(Filters=in_vpc)["Reservations"]
              for i_ in res["Instances"] if i_["State"]["Name"] == "running"]
        gateway = [g for g in gw if g.get("PublicIpAddress") or any(
            t["Key"] == "Name" and t["Value"].endswith("gateway") for t in g.get("Tags", []))]
        assert len(gateway) == 1 and len(gw) == 2  # the gateway and the test instance
        eni = gateway[0]["NetworkInterfaces"][0]["NetworkInterfaceId"]
        sdc = c.describe_instance_attribute(InstanceId=gateway[0]["InstanceId"], Attribute="sourceDestCheck")
        assert sdc["SourceDestCheck"]["Value"] is False
        # Security group: UDP only from the other gateway, SSH only from the operator, nothing from anywhere.
        sg_ids = [g["GroupId"] for g in gateway[0]["SecurityGroups"]]
        rules = c.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": sg_ids}])["SecurityGroupRules"]
        ingress = [x for x in rules if not x["IsEgress"]]
        udp = {x.get("CidrIpv4") for x in ingress if x["IpProtocol"] == "udp"}
        assert udp == {f"{other_ip}/32"}
        assert {x.get("CidrIpv4") for x in ingress if x["IpProtocol"] == "tcp" and x["FromPort"] == 22} == {OPERATOR}
        assert not any(x.get("CidrIpv4") == "0.0.0.0/0" for x in ingress)
        # The private subnet's route table sends the other site's CIDR to the gateway's interface.
        rts = c.describe_route_tables(Filters=in_vpc)["RouteTables"]
        routes = [rt_ for t in rts for rt_ in t["Routes"] if rt_.get("DestinationCidrBlock") == vpc_cidr[other]]
        assert len(routes) == 1 and routes[0].get("NetworkInterfaceId") == eni

    # The inventory, an unmanaged peer, and the configs.
    inv = json.loads((tmp_path / "inventories" / "aws.json").read_text())
    assert inv["stack"] == "aws" and all(
        p["cloud"] == "aws" and p["ssh"]["user"] == "ubuntu" for p in inv["peers"].values()
    )
    # No host key comes from the stack (README, "Host keys"): every AWS host is trusted on first use
    # unless its keys are pinned from its console (terraform/aws/README.md), whose instance the
    # Name tag finds and whose console output the EC2 API serves (here: the emulator's fixed sample).
    assert all(p["ssh_host_keys"] == [] and all(i["ssh_host_keys"] == [] for i in p["instances"])
               for p in inv["peers"].values())
    for region in REGIONS:
        for role in ("gateway", "test"):
            named = [{"Name": "tag:Name", "Values": [f"wgmesh-{region}-{role}"]},
                     {"Name": "instance-state-name", "Values": ["running"]}]
            found = [i_["InstanceId"] for res in ec2(moto, region).describe_instances(Filters=named)["Reservations"]
                     for i_ in res["Instances"]]
            assert len(found) == 1, (region, role, found)
            assert ec2(moto, region).get_console_output(InstanceId=found[0])["InstanceId"] == found[0]
    wgmesh(tmp_path, "addpeer", "onprem", "--endpoint", "198.51.100.7", "--allowedips", "10.50.0.0/24",
           "--ssh", "root@198.51.100.7")
    wgmesh(tmp_path, "genconfig")
    for i, region in enumerate(REGIONS):
        text = (tmp_path / "output" / "aws" / f"wgmesh-{region}.conf").read_text()
        allowed = [line.split(" = ", 1)[1] for line in text.splitlines() if line.startswith("AllowedIPs")]
        assert any(vpc_cidr[REGIONS[1 - i]] in a for a in allowed), allowed
        assert any("10.50.0.0/24" in a for a in allowed)
    onprem = (tmp_path / "output" / "aws" / "onprem.conf").read_text()
    assert all(vpc_cidr[r] in onprem for r in REGIONS)

    # Pins of every host (as first contact would leave them): destroy forgets those of the hosts it
    # destroys and keeps the hand-added peer's.
    pins = tmp_path / ".wgmesh" / "aws" / "known_hosts"
    fake = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm1ZQ3ChQ+3fs9sYVUxHpS0XbYyNwqzFV5Gj0v8H0aZ"
    gone = [h for p in inv["peers"].values() for h in (p["ssh"]["host"], *(i["address"] for i in p["instances"]))]
    assert len(gone) == 4
    pins.write_text("".join(f"{h} {fake}\n" for h in sorted([*gone, "198.51.100.7"])))

    # Destroy: the emulator holds nothing of ours afterwards.
    t0 = time.monotonic()
    doc = json.loads(wgmesh(tmp_path, "destroy", "--no-stop", "--json").stdout)
    destroy_s = time.monotonic() - t0
    assert doc["terraform"] == "destroyed" and sorted(doc["removed_peers"]) == sorted(names)
    for region in REGIONS:
        c = ec2(moto, region)
        assert not [v for v in c.describe_vpcs()["Vpcs"] if v["CidrBlock"] in vpc_cidr.values()]
        live = [i_ for res in c.describe_instances()["Reservations"] for i_ in res["Instances"]
                if i_["State"]["Name"] not in ("terminated", "shutting-down")]
        assert live == []
        assert c.describe_addresses()["Addresses"] == []
        assert c.describe_key_pairs()["KeyPairs"] == []
    assert pins.read_text() == f"198.51.100.7 {fake}\n"
    print(f"\naws stack against the emulator: apply {apply_s:.1f} s, destroy {destroy_s:.1f} s")
