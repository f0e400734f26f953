"""The lab's two gateways per site (`--var ha=true`), checked from outside, with no wgmesh on it: the
outputs name both gateways of every site with their site and route table; the site's LAN joins both
gateways and the private instance; the route table address (a VIP) reaches whichever gateway holds it,
once a gratuitous ARP says so; `labctl fail` kills a gateway as a dead instance and `labctl heal` boots
it again with its disk; `labctl cut` parts two gateways and nothing else; destroy leaves nothing.

Built with Terraform alone (Lab.tf_apply): what wgmesh does with an HA lab is tested elsewhere.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.labkit import Ping, lab_leftovers, systemd_leftovers

LAB_NAME = "hai"
SITES = {"site1": ["site1a", "site1b"], "site2": ["site2a", "site2b"]}

# A gratuitous ARP (request and reply: "VIP is at my MAC") from one interface, as a failover agent
# sends it when it takes the VIP. argv: interface, address.
GARP = """
import socket, struct, sys
iface, ip = sys.argv[1], socket.inet_aton(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
mac = s.getsockname()[4]
for op, target in ((1, bytes(6)), (2, b"\\xff" * 6)):
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, ip, target, ip)
    s.send(b"\\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp)
"""


@pytest.fixture(scope="module")
def outputs(lab):
    try:
        yield lab.tf_apply(sites=2, ha=True)
    finally:
        lab.tf_destroy()  # no-op once test_destroy_leaves_nothing ran


def _lan(peer: dict) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(peer["subnets"][0])


def _host(peer: dict, n: int) -> str:
    return str(_lan(peer).network_address + n)


def _vip(peer: dict) -> str:
    return peer["route_table"]["address"].split("/")[0]


def _reaches(lab, src: str, dst: str) -> bool:
    return lab.host(src, "ping", "-n", "-c", "1", "-W", "1", dst, check=False).returncode == 0


def _mac(lab, host: str, dev: str = "lan0") -> str:
    return json.loads(lab.host(host, "ip", "-j", "link", "show", "dev", dev).stdout)[0]["address"]


def _neighbour(lab, host: str, addr: str) -> str | None:
    """The MAC address `host` sends `addr`'s packets to (None: it has none)."""
    entries = json.loads(lab.host(host, "ip", "-j", "neigh", "show", addr).stdout)
    return entries[0].get("lladdr") if entries else None


def test_outputs_name_two_gateways_per_site(lab, outputs):
    peers, servers, info = outputs["peers"], outputs["servers"], outputs["lab"]
    assert lab.ha_sites == SITES == info["ha"]
    assert sorted(peers) == [g for gws in SITES.values() for g in gws]
    for site, (a, b) in SITES.items():
        pa, pb = peers[a], peers[b]
        for peer, n in ((pa, 2), (pb, 3)):
            assert peer["site"] == site
            assert peer["route_table"] == {"kind": "vip", "address": f"{_host(pa, 1)}/{_lan(pa).prefixlen}",
                                           "interface": "lan0"}
            assert peer["private_address"] == _host(pa, n)
            assert [i["name"] for i in peer["instances"]] == [f"{site}-vm"]
            assert peer["instances"][0]["address"] == _host(pa, 10)
            assert peer["ssh_host_keys"] and peer["instances"][0]["ssh_host_keys"]
            assert peer["ssh_host"] == peer["endpoint"]
        # one LAN, one instance (the same host key), one region; two public addresses, two host keys
        assert pa["subnets"] == pb["subnets"] and pa["instances"] == pb["instances"]
        assert pa["region"] == pb["region"]
        assert pa["endpoint"] != pb["endpoint"] and pa["ssh_host_keys"] != pb["ssh_host_keys"]
    assert len({str(_lan(peers[gws[0]])) for gws in SITES.values()}) == len(SITES)
    endpoints = [p["endpoint"] for p in (*peers.values(), *servers.values())]
    assert len(set(endpoints)) == len(endpoints)
    # servers keep one gateway and the plain shape
    assert sorted(servers) == ["srv1"]
    assert "site" not in servers["srv1"] and "route_table" not in servers["srv1"]
    assert servers["srv1"]["private_address"] == _host(servers["srv1"], 1)
    hosts = [*peers, *(f"{s}-vm" for s in SITES), "srv1", "srv1-vm"]
    assert info["init"] == {h: "plain" for h in hosts}
    namespaces = {f"wgm-{lab.name}-{h}" for h in hosts} | {f"wgm-{lab.name}-rt"}
    assert sorted(info["namespaces"]) == sorted(namespaces)
    assert set(lab.labctl("list", lab.name).stdout.split()) == namespaces


def test_instance_shares_a_lan_with_both_gateways(lab, outputs):
    peers = outputs["peers"]
    for site, gws in SITES.items():
        vm, vip = f"{site}-vm", _vip(peers[gws[0]])
        assert lab.host(vm, "ip", "-4", "route", "show", "default").stdout.split()[:5] == [
            "default", "via", vip, "dev", "br0"]
        assert lab.host(vm, "hostname").stdout.strip() == vm
        for gw in gws:
            assert lab.host(gw, "hostname").stdout.strip() == gw
            lan0 = lab.host(gw, "ip", "-4", "-o", "addr", "show", "dev", "lan0").stdout
            assert f" {peers[gw]['private_address']}/{_lan(peers[gw]).prefixlen} " in lan0
            assert f" {vip}/" not in lan0  # the agent adds it, not the lab
            eth0 = lab.host(gw, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
            assert f" {peers[gw]['endpoint']}/32 " in eth0
            assert _reaches(lab, vm, peers[gw]["private_address"]), f"{vm} cannot reach {gw}"
            assert _reaches(lab, gw, peers[gw]["instances"][0]["address"])
        assert not _reaches(lab, vm, vip)  # nobody holds the VIP yet
        # 5 pings a second, undisturbed: nothing lost, no gap longer than the interval
        ping = Ping.start(lab, vm, peers[gws[1]]["private_address"])
        time.sleep(1.2)
        sent, received, gap = ping.stop()
        assert sent == received >= 5 and gap < 2 * Ping.INTERVAL, (sent, received, gap)
        # the bridge's ports are named after the gateways
        ports = lab.host(vm, "ip", "-o", "link", "show", "master", "br0").stdout
        assert sorted(line.split(":")[1].strip().split("@")[0] for line in ports.splitlines()) == gws
    # every host has its own agent directories, not shared with another host or the machine
    lab.host("site1a", "sh", "-c", "echo site1a > /etc/wgmesh/who && echo a > /run/wgmesh/who")
    for other in ("site1b", "site1-vm", "site2a"):
        assert lab.host(other, "sh", "-c", "ls -A /etc/wgmesh /run/wgmesh").stdout.split() == [
            "/etc/wgmesh:", "/run/wgmesh:"]
    assert not Path("/etc/wgmesh/who").exists() and not Path("/run/wgmesh/who").exists()
    assert lab.host("site1a", "stat", "-c", "%a", "/etc/wgmesh", "/run/wgmesh").stdout.split() == ["700", "755"]
    lab.host("site1a", "rm", "/etc/wgmesh/who", "/run/wgmesh/who")


def test_vip_moves_to_the_gateway_that_announces_it(lab, outputs):
    a, b = SITES["site2"]
    vm, peer = "site2-vm", outputs["peers"][a]
    vip, vip_cidr = _vip(peer), peer["route_table"]["address"]
    ping = None
    try:
        # a takes the VIP as an agent does: the address, then the announcement (the instance may
        # still be asking for it, after the check that nobody held it)
        lab.host(a, "ip", "addr", "add", vip_cidr, "dev", "lan0")
        lab.host(a, "python3", "-c", GARP, "lan0", vip)
        assert _reaches(lab, vm, vip)
        assert _neighbour(lab, vm, vip) == _mac(lab, a)
        ping = Ping.start(lab, vm, vip)
        time.sleep(0.6)
        # a lets go, b takes it: until b says so, the instance still sends to a (a dead end)
        t = time.monotonic()
        lab.host(a, "ip", "addr", "del", vip_cidr, "dev", "lan0")
        lab.host(b, "ip", "addr", "add", vip_cidr, "dev", "lan0")
        assert not _reaches(lab, vm, vip)
        assert _neighbour(lab, vm, vip) == _mac(lab, a)
        lab.host(b, "python3", "-c", GARP, "lan0", vip)
        moved = time.monotonic() - t
        assert _neighbour(lab, vm, vip) == _mac(lab, b)
        assert _reaches(lab, vm, vip)
        time.sleep(0.6)
        sent, received, gap = ping.stop()
        # the background ping saw the move: a gap as long as it took (at least the 1 s probe)
        assert 1.0 <= gap <= moved + 2 * Ping.INTERVAL, (gap, moved)
        assert sent - received >= 4 and received >= 5, (sent, received)
        # and the instance's default route now leads through b: b's public address answers via .1
        route = lab.host(vm, "ip", "-4", "route", "get", outputs["peers"]["site1a"]["endpoint"]).stdout
        assert f"via {vip} dev br0" in route
    finally:
        if ping is not None:
            ping.kill()
        for gw in (a, b):
            lab.host(gw, "ip", "addr", "del", vip_cidr, "dev", "lan0", check=False)


def _net(lab, host: str) -> tuple[list[str], list[str]]:
    """A host's IPv4 addresses and main routing table, as text lines."""
    addrs = lab.host(host, "ip", "-4", "-o", "addr", "show").stdout.splitlines()
    routes = lab.host(host, "ip", "-4", "route", "show", "table", "main").stdout.splitlines()
    return [" ".join(a.split()[1:]) for a in addrs], routes


def _ssh_port_answers(addr: str) -> bool:
    try:
        with socket.create_connection((addr, 22), timeout=2) as s:
            s.settimeout(2)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def test_fail_kills_the_gateway_and_heal_boots_it_with_its_disk(lab, outputs):
    gw, other, vm = "site1a", "site1b", "site1-vm"
    peers = outputs["peers"]
    pub, lan_addr = peers[gw]["endpoint"], peers[gw]["private_address"]
    ns = f"wgm-{lab.name}-{gw}"
    built = _net(lab, gw)
    # what a running gateway has: a disk (WireGuard config, the agent), RAM (/run), kernel state
    lab.host(gw, "sh", "-c", 'umask 077; printf "[Interface]\\nPrivateKey = %s\\nListenPort = 51820\\n" '
             '"$(wg genkey)" > /etc/wireguard/wg0.conf && wg-quick up wg0 >/dev/null 2>&1')
    conf = lab.host(gw, "cat", "/etc/wireguard/wg0.conf").stdout
    key = lab.host(gw, "wg", "show", "wg0", "public-key").stdout.strip()
    lab.host(gw, "sh", "-c", "printf '%s\\n' 'import sys' "
             "'open(\"/run/wgmesh/started\", \"w\").write(\" \".join(sys.argv[1:]))' > /etc/wgmesh/agent.py")
    lab.host(gw, "sh", "-c", "touch /run/wgmesh/stale && sysctl -qw net.ipv4.ip_forward=1 && "
             f"iptables -A FORWARD -j ACCEPT && ip addr add {peers[gw]['route_table']['address']} dev lan0")
    assert lab.wg_pids(gw) and _ssh_port_answers(pub)
    try:
        lab.fail(gw)
        lab.fail(gw)  # idempotent
        # dead: no process but the holder (which keeps its disk mounted), no sshd, no link
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True).stdout.split()
        assert len(pids) == 1 and Path(f"/proc/{pids[0]}/cmdline").read_bytes().startswith(b"wgmesh-lab-holder")
        assert not _ssh_port_answers(pub)
        assert "linkdown" in lab.host("rt", "ip", "route", "show", f"{pub}/32").stdout
        assert "state disabled" in lab.host(vm, "bridge", "link", "show", "dev", gw).stdout
        assert not _reaches(lab, vm, lan_addr) and not _reaches(lab, other, pub)
        assert _reaches(lab, vm, peers[other]["private_address"])  # the other gateway lives on

        lab.heal(gw)
        # sshd with the same host key (labkit's ssh pins it), the disk kept, RAM emptied
        assert lab.ssh(gw, "cat", "/etc/wireguard/wg0.conf").stdout == conf
        assert lab.host(gw, "ls", "-A", "/run/wgmesh").stdout.split() == ["started"]
        # the boot services ran: WireGuard with the same key, then the agent's `start`
        assert lab.wg_pids(gw) and lab.host(gw, "wg", "show", "wg0", "public-key").stdout.strip() == key
        assert lab.host(gw, "cat", "/run/wgmesh/started").stdout == "start"
        # the network as built (no VIP), no firewall rule, no forwarding: what a boot starts from
        assert _net(lab, gw) == built
        assert "-A FORWARD" not in lab.host(gw, "iptables", "-S", "FORWARD").stdout
        assert lab.host(gw, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
        assert _reaches(lab, vm, lan_addr) and _reaches(lab, other, pub)
        assert "state forwarding" in lab.host(vm, "bridge", "link", "show", "dev", gw).stdout
        # heal of a live host changes nothing
        sshd = (lab.state_dir / "hosts" / gw / "sshd.pid").read_text()
        lab.heal(gw)
        assert (lab.state_dir / "hosts" / gw / "sshd.pid").read_text() == sshd
        assert lab.wg_pids(gw)
    finally:
        lab.heal(gw)
        lab.host(gw, "sh", "-c", "wg-quick down wg0 >/dev/null 2>&1; rm -f /etc/wireguard/wg0.conf "
                 "/etc/wgmesh/agent.py /run/wgmesh/*", check=False)


def test_cut_parts_two_gateways_and_nothing_else(lab, outputs):
    peers = outputs["peers"]
    a, b = SITES["site2"]
    other, vm = "site1a", "site2-vm"
    pub = {h: peers[h]["endpoint"] for h in (a, b, other)}
    lan = {h: peers[h]["private_address"] for h in (a, b)}
    assert _reaches(lab, a, pub[b]) and _reaches(lab, a, lan[b])
    try:
        lab.cut(a, b)
        lab.cut(a, b)  # idempotent: one rule each way
        rules = lab.host("rt", "iptables", "-S", "FORWARD").stdout
        assert rules.count("-j DROP") == 2, rules
        for x, y in ((a, b), (b, a)):
            assert not _reaches(lab, x, pub[y]), f"{x} still reaches {y}'s public address"
            assert not _reaches(lab, x, lan[y]), f"{x} still reaches {y} on the LAN"
            assert _reaches(lab, x, pub[other]) and _reaches(lab, other, pub[x])
            assert _reaches(lab, vm, lan[x]) and _reaches(lab, x, peers[x]["instances"][0]["address"])
    finally:
        lab.uncut(a, b)
    lab.uncut(a, b)  # idempotent
    assert "-j DROP" not in lab.host("rt", "iptables", "-S", "FORWARD").stdout
    assert _reaches(lab, a, pub[b]) and _reaches(lab, b, lan[a])


def test_destroy_leaves_nothing(lab, outputs):
    state = lab.state_dir
    hosts = [*outputs["peers"], *outputs["servers"]]
    assert state.is_dir() and lab_leftovers(lab.name)
    lab.tf_destroy()
    assert lab_leftovers(lab.name) == []
    assert systemd_leftovers(lab.name, state) == []
    assert not state.exists()
    # no veth of a host leaked into the root namespace, no process of the lab is left (sshd, holders
    # and boot services die with their namespaces)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert not {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()} & set(hosts)
    left = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(state).encode() in proc.joinpath("cmdline").read_bytes():
                left.append(proc.name)
        except OSError:
            continue
    assert left == [], f"processes of the destroyed lab: {left}"
