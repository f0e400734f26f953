"""End to end on the real lab, in order: up → verify → up again (no-op) → addpeer + push (hitless)
→ restart path → faults (sshd down, changed host key) → delpeer → destroy (nothing left)."""

from __future__ import annotations

import itertools
import json
import subprocess

from tests.labkit import lab_leftovers

LAB_NAME = "it"
SITES = ["site1", "site2", "site3"]
STATE = {}


def _live_processes(lab):
    ps = subprocess.run(["ps", "-eo", "pid,stat,args"], check=False, capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in ps.splitlines()[1:]]
    return {r[0]: r[2] for r in rows if len(r) == 3 and not r[1].startswith("Z")
            and ("wireguard-go" in r[2] or str(lab.root) in r[2])}


def _remote_state(lab, hosts):
    """(wireguard-go pid, wg0.conf mtime+inode) per host: a restart or a rewrite changes them."""
    return {h: (lab.wg_pids(h), lab.host(h, "stat", "-c", "%Y.%i", "/etc/wireguard/wg0.conf").stdout) for h in hosts}


def _actions(doc):
    return {n: h["action"] for n, h in doc["hosts"].items()}


def _peer_keys(lab, host):
    return set(lab.host(host, "wg", "show", "wg0", "peers").stdout.split())


def test_up_builds_a_verified_mesh(lab):
    STATE["procs"] = _live_processes(lab)
    doc = lab.json("up", *lab.up_vars(sites=3))
    assert doc["ok"] is True and doc["peers"] == SITES
    assert set(_actions(doc["push"]).values()) == {"start"}
    v = doc["verify"]
    assert v["ok"] and not v["failures"]
    inst = {(p["from"], p["to"]) for p in v["probes"] if p["path"] == "instance" and p["ok"]}
    assert inst == {(f"{a}/{a}-vm", f"{b}/{b}-vm") for a, b in itertools.permutations(SITES, 2)}
    for path in ("tunnel", "private"):
        assert {(p["from"], p["to"]) for p in v["probes"] if p["path"] == path and p["ok"]} == set(
            itertools.permutations(SITES, 2)
        )
    assert len(v["handshakes"]) == 6 and all(h["state"] == "fresh" for h in v["handshakes"])
    for h in SITES:  # secrets on the hosts
        assert lab.host(h, "stat", "-c", "%a %U", "/etc/wireguard").stdout.split() == ["700", "root"]
        assert lab.host(h, "stat", "-c", "%a %U", "/etc/wireguard/wg0.conf").stdout.split() == ["600", "root"]
    rules = lab.host("site1", "iptables", "-w", "-S").stdout
    assert rules.count("-A FORWARD -j WGM-wg0-FWD") == 1
    nat = lab.host("site1", "iptables", "-w", "-t", "nat", "-S").stdout
    site1_lan = lab.plan("site1")["subnets"][0]
    assert f"-A WGM-wg0-NAT -s {site1_lan} -o eth0 -j MASQUERADE" in nat  # egress detected on the host
    # The inventory holds public data only; the keystore is private.
    inv_text = (lab.root / "inventories" / f"{lab.name}.json").read_text()
    store = json.loads((lab.root / ".wgmesh" / lab.name / "keys" / "keystore.json").read_text())
    assert not any(kp["private_key"] in inv_text for kp in store["peers"].values())
    tfstate = (lab.tf_dir / "terraform.tfstate").read_text()
    assert not any(kp["private_key"] in tfstate for kp in store["peers"].values())


def test_up_again_writes_nothing_restarts_nothing(lab):
    before = _remote_state(lab, SITES)
    rules = lab.host("site1", "iptables", "-w", "-S").stdout
    doc = lab.json("up")
    assert doc["ok"] and set(_actions(doc["push"]).values()) == {"unchanged"}
    assert _remote_state(lab, SITES) == before
    assert lab.host("site1", "iptables", "-w", "-S").stdout == rules


def test_status_every_pair_fresh(lab):
    st = lab.json("status")
    assert len(st["links"]) == 6 and {link["state"] for link in st["links"]} == {"fresh"}
    assert all(link["rx_bytes"] > 0 and link["tx_bytes"] > 0 for link in st["links"])
    assert st["unreachable"] == {} and st["unknown_keys"] == {}


def test_drift_on_the_hosts_is_named_and_repaired_by_push(lab):
    """Convergence by state: a route deleted, a chain flushed and a jump removed by hand are seen
    (push --dry-run, verify) and repaired by push with the least disruptive step."""
    assert lab.json("push", "--dry-run")["dry_run"] is True  # exit 0: nothing would change
    site2_lan = lab.plan("site2")["subnets"][0]
    pids = {h: lab.wg_pids(h) for h in SITES}
    lab.host("site1", "ip", "route", "del", site2_lan, "dev", "wg0")
    lab.host("site2", "iptables", "-w", "-F", "WGM-wg0-FWD")
    lab.host("site3", "iptables", "-w", "-t", "nat", "-D", "POSTROUTING", "-j", "WGM-wg0-NAT")
    dry = lab.json("push", "--dry-run", check_rc=6)
    assert _actions(dry) == {h: "repair" for h in SITES}
    v = lab.json("verify", check_rc=4)
    assert f"site1: drift: route missing: {site2_lan}" in v["failures"]
    assert "site2: drift: chain WGM-wg0-FWD (IPv4) has 0 rules, not 4" in v["failures"]
    assert "site3: drift: no jump into WGM-wg0-NAT (IPv4)" in v["failures"]
    assert lab.json("status", check_rc=0)["drift"]["site1"] == [f"route missing: {site2_lan}"]
    doc = lab.json("push")
    assert {h: doc["hosts"][h]["detail"] for h in SITES} == {
        "site1": "repaired: routes", "site2": "repaired: firewall", "site3": "repaired: firewall"}
    assert {h: lab.wg_pids(h) for h in SITES} == pids  # repaired without a restart
    assert site2_lan in lab.host("site1", "ip", "-4", "route", "show", "dev", "wg0").stdout
    assert lab.host("site2", "iptables", "-w", "-S", "WGM-wg0-FWD").stdout.count("-A WGM-wg0-FWD") == 4
    nat = lab.host("site3", "iptables", "-w", "-t", "nat", "-S", "POSTROUTING").stdout
    assert nat.count("-j WGM-wg0-NAT") == 1
    assert lab.json("push", "--dry-run")["ok"]  # exit 0 again
    assert lab.json("verify")["ok"]


def test_a_gateway_is_nobodys_open_forwarder(lab):
    """A compromised site2 routes a foreign destination (srv1's public address: a lab host that
    is not in the mesh) through site1 by adding it to site1's AllowedIPs on its own side. site1
    must drop it, not forward and masquerade it out of its egress."""
    srv1 = lab.plan("srv1")["endpoint"].split(":")[0]
    site1_key = lab.host("site1", "wg", "show", "wg0", "public-key").stdout.strip()
    allowed = lab.host("site2", "wg", "show", "wg0", "allowed-ips").stdout
    site1_ips = next(line.split("\t")[1].split() for line in allowed.splitlines() if line.startswith(site1_key))
    assert "-A WGM-wg0-FWD -i wg0 -j DROP" in lab.host("site1", "iptables", "-w", "-S", "WGM-wg0-FWD").stdout
    lab.host("site1", "iptables", "-w", "-Z", "WGM-wg0-FWD")  # counters from zero
    lab.host("site2", "wg", "set", "wg0", "peer", site1_key, "allowed-ips", ",".join([*site1_ips, f"{srv1}/32"]))
    lab.host("site2", "ip", "route", "add", f"{srv1}/32", "dev", "wg0")
    try:
        r = lab.host("site2", "ping", "-n", "-c", "2", "-W", "1", srv1, check=False)
        assert r.returncode != 0, r.stdout  # no reply: site1 did not forward it
        counted = lab.host("site1", "iptables", "-w", "-v", "-x", "-n", "-L", "WGM-wg0-FWD").stdout
        rows = [line.split() for line in counted.splitlines()[2:]]  # pkts bytes target prot opt in out ...
        drop_in = next(r for r in rows if r[2] == "DROP" and r[5] == "wg0")
        assert int(drop_in[0]) >= 2, counted  # the packets died in site1's DROP rule
        nat = lab.host("site1", "iptables", "-w", "-t", "nat", "-S", "WGM-wg0-NAT").stdout
        assert "10.200.0.0/16" not in nat  # the mesh pool is never masqueraded
        mangle = lab.host("site1", "iptables", "-w", "-t", "mangle", "-S", "WGM-wg0-MSS").stdout
        assert "-j TCPMSS --clamp-mss-to-pmtu" in mangle
    finally:
        lab.host("site2", "ip", "route", "del", f"{srv1}/32", "dev", "wg0", check=False)
    lab.json("push")  # the drifted peer on site2 is synced back
    assert lab.json("verify")["ok"]


def test_addpeer_unmanaged_server_is_pushed_hitlessly(lab):
    srv = lab.tf_output("servers")["srv1"]
    STATE["srv"] = srv
    lab.wgmesh(
        "addpeer", "pub", "--endpoint", srv["endpoint"], "--ssh", f"root@{srv['ssh_host']}",
        "--ssh-key", srv["ssh_key"], "--allowedips", srv["subnets"][0],
        "--private-address", srv["private_address"], "--host-key", srv["ssh_host_keys"][0],
    )
    pids = {h: lab.wg_pids(h) for h in SITES}
    assert all(len(p) == 1 for p in pids.values()), pids
    doc = lab.json("push")
    assert doc["ok"] and _actions(doc) == {"pub": "start", **{h: "syncconf" for h in SITES}}
    assert {h: lab.wg_pids(h) for h in SITES} == pids  # no restart on the existing peers
    assert srv["subnets"][0] in lab.host("site1", "ip", "-4", "route", "show", "dev", "wg0").stdout
    v = lab.json("verify")
    assert v["ok"], v["failures"]
    assert {p["from"] for p in v["probes"] if p["to"] == "pub" and p["ok"]} == set(SITES)
    assert {p["path"] for p in v["probes"] if p["from"] == "pub" and p["ok"]} == {"tunnel", "private", "full-size"}


def test_interface_change_restarts(lab):
    path = lab.root / "inventories" / f"{lab.name}.json"
    doc = json.loads(path.read_text())
    doc["mesh"]["mtu"] = 1380
    path.write_text(json.dumps(doc))
    res = lab.json("push")
    assert res["ok"] and set(_actions(res).values()) == {"restart"}
    assert "mtu 1380" in lab.host("site2", "ip", "link", "show", "wg0").stdout
    assert lab.host("site1", "iptables", "-w", "-S").stdout.count("-A FORWARD -j WGM-wg0-FWD") == 1
    assert lab.json("verify")["ok"]


def test_unreachable_host_others_converge_then_repaired(lab):
    lab.wgmesh("addpeer", "roamer", "--allowedips", "10.88.0.0/24", "--keepalive", "25")
    lab.sshd_stop("site3")
    try:
        doc = lab.json("push", check_rc=4)
        assert doc["failed"] == ["site3"] and "unreachable" in doc["hosts"]["site3"]["detail"]
        assert _actions(doc)["site1"] == "syncconf" and _actions(doc)["roamer"] == "skipped"
    finally:
        lab.sshd_start("site3")
    doc = lab.json("push")
    assert _actions(doc)["site3"] == "syncconf" and _actions(doc)["site1"] == "unchanged"


def test_changed_host_key_is_refused(lab):
    pins = lab.root / ".wgmesh" / lab.name / "known_hosts"
    original = pins.read_text()
    other = STATE["srv"]["instances"][0]["ssh_host_keys"][0]  # a real key that is not site2's
    site2 = lab.plan("site2")["ssh_host"]
    pins.write_text("".join(
        f"{site2} {other}\n" if line.startswith(f"{site2} ") else line + "\n" for line in original.splitlines()
    ))
    try:
        r = lab.wgmesh("push", "--json", check_rc=4)
        doc = json.loads(r.stdout)
        assert doc["failed"] == ["site2"]
        assert "host key" in doc["hosts"]["site2"]["detail"] and "SHA256:" in doc["hosts"]["site2"]["detail"]
        assert "ssh-keygen -R" in doc["hosts"]["site2"]["detail"]
    finally:
        pins.write_text(original)


def test_delpeer_removes_it_everywhere(lab):
    store = json.loads((lab.root / ".wgmesh" / lab.name / "keys" / "keystore.json").read_text())
    pub_key = store["peers"]["pub"]["public_key"]
    assert all(pub_key in _peer_keys(lab, h) for h in SITES)
    pids = {h: lab.wg_pids(h) for h in SITES}
    r = lab.wgmesh("delpeer", "pub", "--json")
    doc = json.loads(r.stdout)
    assert doc["stopped"] is True
    assert {h: _actions(doc["push"])[h] for h in SITES} == {h: "syncconf" for h in SITES}
    assert not any(pub_key in _peer_keys(lab, h) for h in SITES)
    assert {h: lab.wg_pids(h) for h in SITES} == pids
    assert lab.wg_pids("srv1") == []  # WireGuard stopped on the removed host
    keys_dir = lab.root / ".wgmesh" / lab.name / "keys"
    assert not any(store["peers"]["pub"]["private_key"] in f.read_text() for f in keys_dir.iterdir())
    lab.wgmesh("delpeer", "roamer")


def test_destroy_leaves_nothing(lab):
    doc = lab.json("destroy")
    assert doc["terraform"] == "destroyed" and sorted(doc["removed_peers"]) == SITES
    assert lab_leftovers(lab.name) == []
    assert _live_processes(lab) == STATE["procs"]  # no sshd, holder or wireguard-go of this lab left
    assert not (lab.root / "output" / lab.name).exists()
    assert not (lab.root / ".wgmesh" / lab.name / "known_hosts").exists()
    assert not lab.state_dir.exists()
    assert json.loads((lab.root / "inventories" / f"{lab.name}.json").read_text())["peers"] == {}
