"""Dual stack on the real lab (`--var ipv6=true`): every site's LAN has an IPv6 /64 besides its
IPv4 /24, the mesh an IPv6 pool, every peer an IPv6 tunnel address. In order, on one lab name:
a plain 3-site lab first (the figures to compare with; destroyed), then the dual-stack one: up,
the inventory, every instance pings every other over both families from outside the tool, the
gateways' ip6tables chains, verify's IPv6 probes, a second up that changes nothing, ha refused,
destroy."""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
import time

from tests.labkit import lab_leftovers

LAB_NAME = "ds"
SITES = ["site1", "site2", "site3"]
FIGURES: dict[str, object] = {}
PAIRS = set(itertools.permutations(SITES, 2))


def _timed(lab, *args: str, check_rc: int | None = 0) -> tuple[dict, float]:
    t = time.monotonic()
    doc = lab.json(*args, check_rc=check_rc)
    return doc, round(time.monotonic() - t, 2)


def _inventory(lab) -> dict:
    return json.loads((lab.root / "inventories" / f"{lab.name}.json").read_text())


def _record(label: str, what: str, doc: dict, took: float) -> None:
    FIGURES[f"{label}: {what} (s)"] = took
    if what == "up":
        FIGURES[f"{label}: up's own timings (s)"] = doc["timings"]
    else:
        FIGURES[f"{label}: verify probes"] = len(doc["probes"])


def _fping(lab, src: str, targets: list[str], count: int) -> dict[str, tuple[int, int]]:
    """fping from a lab host (inside it, not through wgmesh): target → (sent, received)."""
    r = lab.host(src, "fping", "-q", "-c", str(count), "-p", "100", "-t", "1000", *targets, check=False)
    got = {m.group(1): (int(m.group(2)), int(m.group(3)))
           for m in re.finditer(r"^(\S+)\s+: xmt/rcv/%loss = (\d+)/(\d+)/", r.stderr, re.M)}
    assert set(got) == set(targets), r.stderr
    return got


def test_plain_lab_first_for_the_figures(lab):
    """Without ipv6 the lab is the IPv4 lab it was: one subnet per site, no IPv6 field, no pool6."""
    doc, took = _timed(lab, "up", *lab.up_vars(sites=3, servers=0))
    assert doc["ok"] and doc["peers"] == SITES, doc
    _record("IPv4 only", "up", doc, took)
    v, took = _timed(lab, "verify")
    assert v["ok"] and not v["failures"], v["failures"]
    _record("IPv4 only", "verify", v, took)
    assert not [p for p in v["probes"] if ":" in p["address"]]
    peers = lab.tf_output("peers")
    assert [len(p["subnets"]) for p in peers.values()] == [1, 1, 1]
    assert not [p for p in peers.values() if "private_address6" in p or "address6" in p["instances"][0]]
    assert "pool6" not in _inventory(lab)["mesh"]
    assert lab.json("destroy")["terraform"] == "destroyed"
    assert lab_leftovers(lab.name) == []


def test_up_dual_stack_builds_a_verified_mesh(lab):
    doc, took = _timed(lab, "up", *lab.up_vars(sites=3, ipv6="true", servers=0))
    assert doc["ok"] and doc["peers"] == SITES, doc
    assert {h["action"] for h in doc["push"]["hosts"].values()} == {"start"}
    assert doc["verify"]["ok"], doc["verify"]["failures"]
    _record("dual stack", "up", doc, took)
    # The outputs: [v4 LAN, v6 /64]; the gateway host 1 of the /64, the instance host 10.
    for site, p in lab.tf_output("peers").items():
        v4, v6 = (ipaddress.ip_network(s) for s in p["subnets"])
        assert (v4.version, v6.version, v6.prefixlen) == (4, 6, 64), p["subnets"]
        assert ipaddress.ip_address(p["private_address6"]) == v6[1], site
        assert ipaddress.ip_address(p["instances"][0]["address6"]) == v6[10], site
    # The instance has it as a global address (nodad: not tentative), its default route via the gateway.
    addrs = lab.host("site2-vm", "ip", "-o", "-6", "addr", "show", "dev", "eth0", "scope", "global").stdout
    assert f"inet6 {lab.instance_address6('site2')}/64 scope global" in addrs and "tentative" not in addrs, addrs
    gateway6 = lab.plan("site2")["private_address6"]
    assert f"default via {gateway6} dev eth0" in lab.host("site2-vm", "ip", "-6", "route").stdout


def test_inventory_is_dual_stack(lab):
    inv = _inventory(lab)
    pool6 = ipaddress.ip_network(inv["mesh"]["pool6"])
    assert pool6.version == 6 and pool6.prefixlen == 64 and pool6.subnet_of(ipaddress.ip_network("fc00::/7"))
    peers = inv["peers"]
    assert sorted(peers) == SITES
    addresses6 = {n: ipaddress.ip_address(p["address6"]) for n, p in peers.items()}
    assert all(a in pool6 for a in addresses6.values()) and len(set(addresses6.values())) == 3, addresses6
    outputs = lab.tf_output("peers")
    for n, p in peers.items():
        assert p["subnets"] == outputs[n]["subnets"]
        assert p["private_address6"] == outputs[n]["private_address6"]
        assert p["instances"][0]["address6"] == outputs[n]["instances"][0]["address6"]


def test_every_instance_pings_every_other_over_both_families(lab):
    """From outside the tool: inside each private instance, fping every other site's instance at
    its IPv4 and IPv6 address. One direction per pair first (two ends starting a handshake with
    each other at once is what the README warns about), then every pair both ways."""
    outputs = lab.tf_output("peers")
    inst = {s: [outputs[s]["instances"][0]["address"], outputs[s]["instances"][0]["address6"]] for s in SITES}
    # Through the mesh: the gateway routes the other sites' LANs of both families into wg0 (the
    # underlay is IPv4 and knows no LAN: there is no other way).
    for a, b in PAIRS:
        for addr in inst[b]:
            assert " dev wg0 " in lab.host(a, "ip", "route", "get", addr).stdout, (a, addr)
    for a, b in itertools.combinations(SITES, 2):
        _fping(lab, f"{a}-vm", inst[b], count=1)
    lost = {}
    for a in SITES:
        got = _fping(lab, f"{a}-vm", [x for b in SITES if b != a for x in inst[b]], count=3)
        lost.update({(a, t): sent - rcvd for t, (sent, rcvd) in got.items() if sent != rcvd})
    assert not lost, lost
    FIGURES["instance pings (3 per target, both families, 6 pairs): lost"] = len(lost)


def test_gateways_have_ip6tables_chains_and_masquerade_the_ula(lab):
    outputs = lab.tf_output("peers")
    for s in SITES:
        lan6 = outputs[s]["subnets"][1]
        rules = lab.host(s, "ip6tables", "-w", "-S").stdout
        assert rules.count("-A FORWARD -j WGM-wg0-FWD") == 1, rules
        assert f"-A WGM-wg0-FWD -d {lan6} -i wg0 -j ACCEPT" in rules, rules
        assert f"-A WGM-wg0-FWD -s {lan6} -o wg0 -j ACCEPT" in rules, rules
        assert "-A WGM-wg0-FWD -i wg0 -j DROP" in rules, rules
        nat = lab.host(s, "ip6tables", "-w", "-t", "nat", "-S").stdout
        assert "-A POSTROUTING -j WGM-wg0-NAT" in nat, nat
        assert [line for line in nat.splitlines() if line.startswith("-A WGM-wg0-NAT")] == [
            f"-A WGM-wg0-NAT -s {lan6} -o eth0 -j MASQUERADE"], nat
        mangle = lab.host(s, "ip6tables", "-w", "-t", "mangle", "-S", "WGM-wg0-MSS").stdout
        assert "-j TCPMSS --clamp-mss-to-pmtu" in mangle, mangle
        sysctl = lab.host(s, "sysctl", "-n", "net.ipv6.conf.all.forwarding", "net.ipv6.conf.eth0.accept_ra").stdout
        assert sysctl.split() == ["1", "2"], sysctl


def test_verify_probes_ipv6_tunnel_private_and_instance_addresses(lab):
    v, took = _timed(lab, "verify")
    assert v["ok"] and not v["failures"], v["failures"]
    _record("dual stack", "verify", v, took)
    assert all(p["ok"] for p in v["probes"]), [p for p in v["probes"] if not p["ok"]]
    peers = _inventory(lab)["peers"]
    six = {(p["path"], p["from"], p["to"], p["address"]) for p in v["probes"] if ":" in p["address"]}
    tunnel = {("tunnel", a, b, peers[b]["address6"]) for a, b in PAIRS}
    private = {("private", a, b, peers[b]["private_address6"]) for a, b in PAIRS}
    instance = {("instance", f"{a}/{a}-vm", f"{b}/{b}-vm", peers[b]["instances"][0]["address6"]) for a, b in PAIRS}
    full_size = {("full-size", a, b, peers[b]["address6"]) for a, b in PAIRS}
    assert six == tunnel | private | instance | full_size
    four = {(p["path"], p["from"], p["to"]) for p in v["probes"] if ":" not in p["address"]}
    assert {(path, a.split("/")[0], b.split("/")[0]) for path, a, b in four} == {
        (path, a, b) for path in ("tunnel", "private", "instance", "full-size") for a, b in PAIRS}
    assert len(v["handshakes"]) == 6 and {h["state"] for h in v["handshakes"]} == {"fresh"}


def test_second_up_changes_nothing(lab):
    pids = {s: lab.wg_pids(s) for s in SITES}
    doc, took = _timed(lab, "up")
    assert doc["ok"], doc
    assert {n: h["action"] for n, h in doc["push"]["hosts"].items()} == dict.fromkeys(SITES, "unchanged")
    assert {s: lab.wg_pids(s) for s in SITES} == pids
    FIGURES["dual stack: second up, nothing to do (s)"] = took


def test_ha_with_ipv6_is_refused_at_plan_and_changes_nothing(lab):
    before = _inventory(lab)
    r = lab.wgmesh("up", "--var", "ha=true", check_rc=5)
    assert "ha = true and ipv6 = true cannot be combined" in r.stdout + r.stderr, r.stderr[-3000:]
    assert _inventory(lab) == before
    assert sorted(lab.tf_output("peers")) == SITES
    assert lab.json("push", "--dry-run")["ok"]  # exit 0: nothing would change on any host


def test_destroy_leaves_nothing(lab):
    doc = lab.json("destroy")
    assert doc["terraform"] == "destroyed" and sorted(doc["removed_peers"]) == SITES
    assert lab_leftovers(lab.name) == []
    assert not lab.state_dir.exists()


def test_figures():
    print()
    for k, val in FIGURES.items():
        print(f"  {k}: {val}")
    assert any(k.startswith("IPv4 only") for k in FIGURES) and any(k.startswith("dual stack") for k in FIGURES), FIGURES
