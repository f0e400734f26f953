import os
import shutil
from dataclasses import replace
from pathlib import Path
import ipaddress
import subprocess

import pytest
from wgconfig import WGConfig

from tests.conftest import fixed_keys
from wgmesh import inventory as invmod
from wgmesh.model import Peer
from wgmesh.render import fingerprints, interface_fingerprint_lines, render

GOLDEN = Path(__file__).parent / "golden"


def _mesh(lab_inventory):
    inv = invmod.add_peer(
        lab_inventory,
        Peer(
            name="pub",
            address=ipaddress.ip_address("0.0.0.0"),
            endpoint_host="2001:db8::9",
            endpoint_port=51000,
            subnets=(ipaddress.ip_network("10.77.1.0/24"), ipaddress.ip_network("fd00:77::/64")),
            keepalive=25,
            egress_interface="ens5",
        ),
        None,
    )
    return inv, fixed_keys(inv.names)


def test_golden(lab_inventory):
    inv, keys = _mesh(lab_inventory)
    out = render(inv, keys)
    assert sorted(out) == ["pub", "site1", "site2", "site3"]
    if os.environ.get("WGMESH_REGEN_GOLDEN"):
        for name, text in out.items():
            (GOLDEN / f"{name}.conf").write_text(text)
    for name, text in out.items():
        assert text == (GOLDEN / f"{name}.conf").read_text(), name


def test_rerender_is_byte_identical(lab_inventory):
    inv, keys = _mesh(lab_inventory)
    assert render(inv, keys) == render(inv, keys)


def test_parses_back_with_wgconfig(lab_inventory, tmp_path):
    inv, keys = _mesh(lab_inventory)
    text = render(inv, keys)["site1"]
    f = tmp_path / "wg0.conf"
    f.write_text(text)
    cfg = WGConfig(str(f))
    cfg.read_file()
    iface = cfg.get_interface()
    assert iface["Address"] == "10.200.0.1/32" and iface["MTU"] == 1420 and iface["ListenPort"] == 51820
    peers = cfg.get_peers(keys_only=False)
    assert set(peers) == {keys.public(n) for n in ("site2", "site3", "pub")}
    pub = peers[keys.public("pub")]
    assert pub["Endpoint"] == "[2001:db8::9]:51000"
    assert pub["AllowedIPs"] == ["10.200.0.4/32", "10.77.1.0/24", "fd00:77::/64"]
    assert pub["PresharedKey"] == keys.psk("site1", "pub")
    assert "PersistentKeepalive" not in pub  # keepalive is set for pub's own side only
    pub_text = render(inv, keys)["pub"]
    assert pub_text.count("PersistentKeepalive = 25") == 3


def test_psk_off(lab_inventory):
    inv, keys = _mesh(lab_inventory)
    inv = replace(inv, mesh=replace(inv.mesh, psk=False))
    assert "PresharedKey" not in "".join(render(inv, keys).values())


def test_hooks_are_generated_from_parsed_values(lab_inventory):
    inv, keys = _mesh(lab_inventory)
    out = render(inv, keys)
    pub = out["pub"]
    assert "-o \"$e\"" in pub and 'e="ens5"' in pub  # explicit egress
    assert "ip6tables -w" in pub and "net.ipv6.conf.all.forwarding=1" in pub  # v6 subnet → v6 rules
    assert "ip6tables" not in out["site1"]
    for text in out.values():
        for line in text.splitlines():
            if line.startswith(("PostUp", "PostDown")):
                assert "#" not in line  # wg-quick cuts lines at '#'
                assert "iptables" not in line or " -w " in line


def test_hooks_are_idempotent_in_a_shell(lab_inventory, tmp_path):
    """Run the PostUp lines twice with a fake iptables that records calls: no rule is appended twice."""
    inv, keys = _mesh(lab_inventory)
    text = render(inv, keys)["site1"]
    ups = [l.split(" = ", 1)[1] for l in text.splitlines() if l.startswith("PostUp = ")]
    state = tmp_path / "rules"
    fake = tmp_path / "bin"
    fake.mkdir()
    # A tiny iptables model: -N fails if the chain exists, -C fails if the rule is absent.
    (fake / "iptables").write_text(
        """#!/bin/sh
f=%s; touch "$f"; a="$*"; a="${a#-w }"
case "$a" in
  *"-N "*) c=$(echo "$a" | sed 's/.*-N //'); grep -qx "chain $c" "$f" && exit 1; echo "chain $c" >> "$f";;
  *"-F "*) c=$(echo "$a" | sed 's/.*-F //'); grep -v "^rule .*-A $c " "$f" > "$f.t"; mv "$f.t" "$f";;
  *"-C "*) r=$(echo "$a" | sed 's/-C /-A /'); grep -qxF "rule $r" "$f" || exit 1;;
  *) r=$(echo "$a" | sed 's/-I /-A /'); echo "rule $r" >> "$f";;
esac
""" % state
    )
    (fake / "iptables").chmod(0o755)
    (fake / "sysctl").write_text("#!/bin/sh\nexit 0\n")
    (fake / "sysctl").chmod(0o755)
    (fake / "ip").write_text("#!/bin/sh\necho 'default via 198.18.0.2 dev eth0 onlink'\n")
    (fake / "ip").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    for _ in range(2):
        for hook in ups:
            subprocess.run(["bash", "-c", hook], env=env, check=True)
    rules = [l for l in state.read_text().splitlines() if l.startswith("rule")]
    assert len(rules) == len(set(rules)), rules
    assert "rule -t nat -A WGM-wg0-NAT -s 10.10.1.0/24 -o eth0 -j MASQUERADE" in rules
    assert "rule -t nat -A WGM-wg0-NAT -s 10.200.0.0/16 -o eth0 -j MASQUERADE" in rules
    assert "rule -A FORWARD -j WGM-wg0-FWD" in rules


def test_interface_fingerprint_ignores_peers_and_syncable_keys(lab_inventory):
    inv, keys = _mesh(lab_inventory)
    a = render(inv, keys)["site1"]
    other = invmod.remove_peer(inv, "pub")
    b = render(other, keys)["site1"]
    assert fingerprints(a)[1] == fingerprints(b)[1] and fingerprints(a)[0] != fingerprints(b)[0]
    assert not any("PrivateKey" in l for l in interface_fingerprint_lines(a))
    mtu = replace(inv, mesh=replace(inv.mesh, mtu=1380))
    assert fingerprints(render(mtu, keys)["site1"])[1] != fingerprints(a)[1]
