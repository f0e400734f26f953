"""`wgmesh up --stack aws --var ha=true` end to end against the EC2 API emulator (no machines: no
push): the inventory gets two gateways per region as one HA site each, the configs route each
region's CIDR to its first gateway only, and the agent's own route-table code (agent.RouteTable,
as the surviving gateway runs it, with the config wgmesh renders for it) points the private route
table at the other gateway."""

from __future__ import annotations

import json

from tests.aws.emulator import ACCESS, REGIONS, up, wgmesh
from tests.aws.emulator import client as ec2
from wgmesh import ha, store
from wgmesh.agent.agent import RouteTable, parse_config
from wgmesh.keys import Keystore
from wgmesh.workspace import Workspace, default_stacks_dir


def test_up_with_ha_then_the_agent_switches_the_route_table(moto, tmp_path, monkeypatch):
    doc = json.loads(up(moto, tmp_path, "ha=true").stdout)
    sites = {f"wgmesh-{x}": [f"wgmesh-{x}-a", f"wgmesh-{x}-b"] for x in REGIONS}
    assert sorted(doc["peers"]) == sorted(g for gws in sites.values() for g in gws)

    ws = Workspace(tmp_path, "aws", default_stacks_dir())
    inv = store.load(ws)
    assert {s.name: list(s.names()) for s in ha.sites(inv).values()} == sites
    pubs = store.public_keys(Keystore(ws.keys_dir).load(), inv)

    wgmesh(tmp_path, "genconfig")
    first, other = REGIONS
    a, b = inv.peer(f"wgmesh-{other}-a"), inv.peer(f"wgmesh-{other}-b")
    cidr = str(a.subnets[0])
    text = (tmp_path / "output" / "aws" / f"wgmesh-{first}-a.conf").read_text()
    allowed = [line for line in text.splitlines() if line.startswith("AllowedIPs")]
    assert sum(cidr in line for line in allowed) == 1 and f"{a.address}/32, {cidr}" in text
    assert f"AllowedIPs = {b.address}/32" in allowed  # the standby: its tunnel address only

    # The standby gateway of the first region takes its site: the route to the other region's
    # CIDR now goes to its interface (the code path the agent runs, against the emulator).
    gw_b = inv.peer(f"wgmesh-{first}-b")
    cfg = parse_config(ha.agent_config(inv, pubs, gw_b))
    assert cfg.route_table is not None and cfg.route_table["kind"] == "aws" and cidr in cfg.destinations
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", moto)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ACCESS["aws_secret_access_key"])
    table = RouteTable(cfg)
    table.acquire(0.0)
    assert table.status == "held", table.status
    c = ec2(moto, first)
    rtb = cfg.route_table["route_table_ids"][0]
    routes = [x for t in c.describe_route_tables(RouteTableIds=[rtb])["RouteTables"] for x in t["Routes"]
              if x.get("DestinationCidrBlock") == cidr]
    assert [x.get("NetworkInterfaceId") for x in routes] == [cfg.route_table["network_interface_id"]]

    wgmesh(tmp_path, "destroy", "--no-stop")
