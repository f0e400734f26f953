"""The emulator's own fixes (tests/aws/emulator.py fix_moto), on a moto server of this module."""

from __future__ import annotations

import uuid

from tests.aws.emulator import REGIONS
from tests.aws.emulator import client as ec2


def _same_operation(c, operation: str, action: str = "AllocateAddress") -> None:
    """Every request of client `c` for `operation` carries `operation` as its invocation id, as
    every attempt of one operation does (the SDK's retry of a request whose answer was lost)."""
    def hook(request, **_):
        request.headers["amz-sdk-invocation-id"] = operation
    c.meta.events.register(f"before-send.ec2.{action}", hook)


def test_a_retried_operation_is_carried_out_once_and_answered_the_same(moto):
    c = ec2(moto, REGIONS[0])
    before = len(c.describe_addresses()["Addresses"])
    _same_operation(c, str(uuid.uuid4()))
    first, again = c.allocate_address(Domain="vpc"), c.allocate_address(Domain="vpc")
    assert again["AllocationId"] == first["AllocationId"] and again["PublicIp"] == first["PublicIp"]
    assert len(c.describe_addresses()["Addresses"]) == before + 1

    # Another operation (a new invocation id) is carried out: a second address.
    other = ec2(moto, REGIONS[0]).allocate_address(Domain="vpc")
    assert other["AllocationId"] != first["AllocationId"]
    assert len(c.describe_addresses()["Addresses"]) == before + 2


def test_a_retried_rule_is_added_once_and_a_real_duplicate_is_still_refused(moto):
    c = ec2(moto, REGIONS[0])
    vpc = c.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    group = c.create_security_group(GroupName="retry", Description="retry", VpcId=vpc)["GroupId"]
    rule = {"GroupId": group, "IpPermissions": [
        {"IpProtocol": "icmpv6", "FromPort": -1, "ToPort": -1, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]}
    _same_operation(c, str(uuid.uuid4()), "AuthorizeSecurityGroupIngress")
    first, again = (c.authorize_security_group_ingress(**rule) for _ in range(2))
    assert again["SecurityGroupRules"] == first["SecurityGroupRules"]
    rules = c.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
    assert [r["SecurityGroupRuleId"] for r in rules["SecurityGroupRules"] if not r["IsEgress"]] \
        == [first["SecurityGroupRules"][0]["SecurityGroupRuleId"]]

    # The same rule asked for by a new operation is a duplicate, as EC2 says.
    try:
        ec2(moto, REGIONS[0]).authorize_security_group_ingress(**rule)
    except c.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "InvalidPermission.Duplicate"
    else:
        raise AssertionError("the same rule was added twice")
