import ipaddress
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

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
    # a peer has an IPv6 subnet: the mesh is dual stack, every peer has a tunnel address of each family
    site1, pub6 = inv.peer("site1").address6, inv.peer("pub").address6
    assert inv.mesh.pool6 is not None and site1 in inv.mesh.pool6
    assert iface["Address"] == ["10.200.0.1/32", f"{site1}/128"] and iface["MTU"] == 1420
    assert iface["ListenPort"] == 51820
    peers = cfg.get_peers(keys_only=False)
    assert set(peers) == {keys.public(n) for n in ("site2", "site3", "pub")}
    pub = peers[keys.public("pub")]
    assert pub["Endpoint"] == "[2001:db8::9]:51000"
    assert pub["AllowedIPs"] == ["10.200.0.4/32", f"{pub6}/128", "10.77.1.0/24", "fd00:77::/64"]
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
    assert "-o %s -j MASQUERADE" in pub and 'e="ens5"' in pub  # explicit egress, passed as a value
    assert "ip6tables -w" in pub and "net.ipv6.conf.all.forwarding=1" in pub  # v6 subnet → v6 rules
    assert "accept_ra=2" in pub  # forwarding on: router advertisements still taken on the egress
    # site1 has an IPv6 tunnel address but no IPv6 subnet: it forwards no IPv6 (no v6 forwarding,
    # no chains, its router advertisements untouched)
    assert "fd88:" in out["site1"] and "ip6tables" not in out["site1"] and "ipv6" not in out["site1"]
    v4only = render(lab_inventory, fixed_keys(lab_inventory.names))
    assert "ip6tables" not in v4only["site1"] and "accept_ra" not in v4only["site1"]
    for text in out.values():
        for line in text.splitlines():
            if line.startswith(("PostUp", "PostDown")):
                assert "#" not in line  # wg-quick cuts lines at '#'
                assert "iptables" not in line or " -w " in line


FAKE_IPTABLES = r"""#!/bin/bash
# A small model of iptables / iptables-restore --noflush, recording rules in $STATE.
f="$STATE"; touch "$f"
if [ "$(basename "$0")" = iptables-restore ]; then
  t=filter
  while IFS= read -r l; do
    case "$l" in
      "*"*) t="${l#\*}";;
      :*) c="${l#:}"; c="${c%% *}"; grep -qx "chain $t $c" "$f" || echo "chain $t $c" >> "$f"
          grep -v "^rule $t -A $c " "$f" > "$f.t"; mv "$f.t" "$f";;
      -A*) echo "rule $t $l" >> "$f";;
    esac
  done
  exit 0
fi
a=("$@"); t=filter; rest=()
for ((i=0; i<${#a[@]}; i++)); do
  case "${a[i]}" in -w) ;; -t) i=$((i+1)); t="${a[i]}";; *) rest+=("${a[i]}");; esac
done
op="${rest[0]}"; spec="${rest[*]:1}"
case "$op" in
  -C) grep -qxF "rule $t -A $spec" "$f" || exit 1;;
  -I|-A) echo "rule $t -A $spec" >> "$f";;
esac
"""


def test_hooks_are_idempotent_in_a_shell(lab_inventory, tmp_path):
    """Run the PostUp lines twice against a model of iptables(-restore): no rule is added twice,
    and the routes come from the running interface in one `ip -batch`."""
    keys = fixed_keys(lab_inventory.names)
    text = render(lab_inventory, keys)["site1"]  # an IPv4 mesh (dual stack: test_dual_stack_hooks)
    ups = [ln.split(" = ", 1)[1] for ln in text.splitlines() if ln.startswith("PostUp = ")]
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("iptables", "iptables-restore"):
        (fake / name).write_text(FAKE_IPTABLES)
        (fake / name).chmod(0o755)
    scripts = {
        "sysctl": "exit 0",
        "ip": 'case "$*" in *"route show default"*) echo "default via 198.18.0.2 dev eth0 onlink";; '
              '*batch*) cat >> "$STATE.ip";; esac',
        "wg": 'case "$*" in *public-key*) echo "K2/3=";; '
              "*) printf 'KEY/a+b=\\t10.200.0.2/32 10.10.2.0/24\\nK2/2=\\t10.200.0.3/32\\n';; esac",
        # stand-ins: no packet leaves
        "fping": 'for a; do case "$a" in *.*|*:*) echo "$a" >> "$STATE.ping";; esac; done',
        "ping": 'for a; do t="$a"; done; echo "$t" >> "$STATE.ping"',
        "sleep": 'echo "$1" >> "$STATE.sleep"',
    }
    for name, body in scripts.items():
        (fake / name).write_text("#!/bin/sh\n" + body + "\n")
        (fake / name).chmod(0o755)
    state = tmp_path / "rules"
    env = {"PATH": f"{fake}:/usr/bin:/bin", "STATE": str(state)}
    for _ in range(2):
        for hook in ups:
            subprocess.run(["bash", "-c", hook], env=env, check=True)
    rules = [ln for ln in state.read_text().splitlines() if ln.startswith("rule")]
    assert len(rules) == len(set(rules)), rules
    assert "rule nat -A WGM-wg0-NAT -s 10.10.1.0/24 -o eth0 -j MASQUERADE" in rules
    # Least privilege: the mesh pool is never masqueraded (nobody's open NAT), and the gateway
    # forwards only between the tunnel and its own subnet; the rest in or out of wg0 is dropped.
    assert not any("10.200.0.0/16" in r for r in rules)
    assert "rule filter -A FORWARD -j WGM-wg0-FWD" in rules
    assert [r for r in rules if r.startswith("rule filter -A WGM-wg0-FWD")] == [
        "rule filter -A WGM-wg0-FWD -i wg0 -d 10.10.1.0/24 -j ACCEPT",
        "rule filter -A WGM-wg0-FWD -o wg0 -s 10.10.1.0/24 -j ACCEPT",
        "rule filter -A WGM-wg0-FWD -i wg0 -j DROP",
        "rule filter -A WGM-wg0-FWD -o wg0 -j DROP",
    ]
    clamp = "-A WGM-wg0-MSS -o wg0 -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"
    assert f"rule mangle {clamp}" in rules
    assert "rule mangle -A FORWARD -j WGM-wg0-MSS" in rules
    # The last PostUp pings every peer's tunnel address once, in the background (a host that just
    # started opens its sessions itself).
    pinged = tmp_path / "rules.ping"
    deadline = time.monotonic() + 5
    while len(pinged.read_text().split() if pinged.exists() else ()) < 4:  # 2 peers, the hooks ran twice
        assert time.monotonic() < deadline, "the nudge did not ping the peers"
        time.sleep(0.05)
    assert set(pinged.read_text().split()) == {"10.200.0.2", "10.200.0.3"}
    # One direction per pair first: "KEY/a+b=" sorts after this host's "K2/3=" (pinged at once),
    # "K2/2=" before it (pinged 2 s later, when a first start would have made the session).
    assert sorted((tmp_path / "rules.sleep").read_text().split()) == ["0", "0", "2", "2"]  # two runs
    batch = (tmp_path / "rules.ip").read_text().splitlines()
    assert batch[:3] == ["route replace 10.200.0.2/32 dev wg0", "route replace 10.10.2.0/24 dev wg0",
                         "route replace 10.200.0.3/32 dev wg0"]


def test_interface_fingerprint_ignores_peers_and_syncable_keys(lab_inventory):
    inv, keys = _mesh(lab_inventory)
    a = render(inv, keys)["site1"]
    other = invmod.remove_peer(inv, "pub")
    b = render(other, keys)["site1"]
    assert fingerprints(a)[1] == fingerprints(b)[1] and fingerprints(a)[0] != fingerprints(b)[0]
    assert not any("PrivateKey" in ln for ln in interface_fingerprint_lines(a))
    mtu = replace(inv, mesh=replace(inv.mesh, mtu=1380))
    assert fingerprints(render(mtu, keys)["site1"])[1] != fingerprints(a)[1]


def test_fast_path_without_psk_matches_the_full_render(lab_inventory):
    """Without PSKs a section is shared by every file (joined once, sliced per file): the result
    must be exactly the per-pair render minus its PresharedKey lines."""
    inv, keys = _mesh(lab_inventory)
    full = render(inv, keys)
    off = render(replace(inv, mesh=replace(inv.mesh, psk=False)), keys)
    for name, text in full.items():
        assert off[name] == "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("PresharedKey"))


def test_hooks_succeed_under_wg_quick_strict_mode_with_no_peers(lab_inventory, tmp_path):
    """wg-quick runs each hook with `set -e -o pipefail`: a mesh's first peer has no other peer
    yet, and its PostUp must still succeed."""
    inv = invmod.new_inventory("one")
    inv = invmod.add_peer(inv, Peer(name="only", address=ipaddress.ip_address("0.0.0.0"),
                                    subnets=(ipaddress.ip_network("10.5.0.0/24"),)))
    text = render(inv, fixed_keys(inv.names))["only"]
    assert "[Peer]" not in text
    ups = [ln.split(" = ", 1)[1] for ln in text.splitlines() if ln.startswith("PostUp = ")]
    fake = tmp_path / "bin"
    fake.mkdir()
    stand_ins = {
        "sysctl": "exit 0", "iptables": "exit 0", "iptables-restore": "cat >/dev/null", "wg": "exit 0",
        "ping": "exit 0", "fping": "exit 0",
        "ip": 'case "$*" in *batch*) cat > /dev/null;; *) echo "default via 1.2.3.4 dev eth0";; esac',
    }
    for name, body in stand_ins.items():
        (fake / name).write_text("#!/bin/sh\n" + body + "\n")
        (fake / name).chmod(0o755)
    for hook in ups:
        r = subprocess.run(["bash", "-c", f"set -e -o pipefail; ({hook})"], env={"PATH": f"{fake}:/usr/bin:/bin"})
        assert r.returncode == 0, hook


def test_zone_ids_never_reach_a_config():
    from wgmesh import validate as v
    from wgmesh.errors import BadInput

    for bad in ("fd00::%$(reboot)/64", "fe80::1%x/128"):
        with pytest.raises(BadInput):
            v.network("--allowedips", bad)
    for bad in ("fe80::1%$(reboot)", "fe80::1%eth0"):
        with pytest.raises(BadInput):
            v.address("--private-address", bad)
    for bad in ("fe80::1%x\n[Interface]\nPreUp = reboot", "[fe80::1%eth0]:51820"):
        with pytest.raises(BadInput):
            v.host_port("--endpoint", bad, 51820)
