"""A living mesh on the real lab: hitless addpeer / endpoint change / delpeer under a 5/s ping,
pending revocations, key rotation, an idempotent re-run, and a picture of the mesh."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.labkit import Ping

LAB_NAME = "lv"
SITES = ["site1", "site2", "site3"]
COUNTS: dict[str, tuple[int, int]] = {}


def _actions(doc):
    return {n: h["action"] for n, h in doc["hosts"].items()}


def _all_peer_keys(lab, hosts):
    return {h: set(lab.host(h, "wg", "show", "wg0", "peers").stdout.split()) for h in hosts}


def _addpeer_server(lab, name, srv):
    lab.wgmesh("addpeer", name, "--endpoint", srv["endpoint"], "--ssh", f"root@{srv['ssh_host']}",
               "--allowedips", srv["subnets"][0], "--private-address", srv["private_address"],
               "--host-key", srv["ssh_host_keys"][0])


def test_up(lab):
    doc = lab.json("up", *lab.up_vars(servers=2))
    assert doc["ok"] and doc["peers"] == SITES


def test_addpeer_is_hitless(lab):
    srv = lab.tf_output("servers")["srv1"]
    _addpeer_server(lab, "pub", srv)
    with Ping(lab, "site1-vm", lab.instance_address("site2")) as ping:
        doc = lab.json("push")
    COUNTS["addpeer + push"] = (ping.sent, ping.lost)
    assert doc["ok"] and _actions(doc) == {"pub": "start", **{h: "syncconf" for h in SITES}}
    assert ping.sent == Ping.COUNT and ping.lost == 0, (ping.sent, ping.lost)
    v = lab.json("verify")
    assert v["ok"], v["failures"]
    assert {p["from"] for p in v["probes"] if p["to"] == "pub" and p["ok"]} == set(SITES)


def test_endpoint_change_is_hitless(lab):
    lab.wgmesh("setpeer", "pub", "--listen-port", "51821")
    with Ping(lab, "site1-vm", lab.instance_address("site2")) as ping:
        doc = lab.json("push")
    COUNTS["endpoint change"] = (ping.sent, ping.lost)
    assert doc["ok"] and set(_actions(doc).values()) == {"syncconf"}
    assert ping.lost == 0, (ping.sent, ping.lost)
    assert "51821" in lab.host("srv1", "wg", "show", "wg0", "listen-port").stdout
    endpoints = lab.host("site3", "wg", "show", "wg0", "endpoints").stdout
    assert f"{lab.plan('srv1')['endpoint']}:51821" in endpoints
    v = lab.json("verify")
    assert v["ok"], v["failures"]


def test_delpeer_of_a_third_peer_is_hitless(lab):
    keys = json.loads((lab.root / ".wgmesh" / lab.name / "keys" / "keystore.json").read_text())["peers"]
    pub_key = keys["pub"]["public_key"]
    with Ping(lab, "site1-vm", lab.instance_address("site2")) as ping:
        doc = lab.json("delpeer", "pub")
    COUNTS["delpeer"] = (ping.sent, ping.lost)
    assert doc["stopped"] and doc["push"]["ok"]
    assert ping.lost == 0, (ping.sent, ping.lost)
    assert not any(pub_key in k for k in _all_peer_keys(lab, SITES).values())


def test_delpeer_with_a_host_down_is_pending_until_pushed(lab):
    srv = lab.tf_output("servers")["srv2"]
    _addpeer_server(lab, "pub2", srv)
    assert lab.json("push")["ok"]
    store = json.loads((lab.root / ".wgmesh" / lab.name / "keys" / "keystore.json").read_text())
    pub2_key = store["peers"]["pub2"]["public_key"]
    lab.sshd_stop("site3")
    try:
        doc = lab.json("delpeer", "pub2", check_rc=4)
        assert doc["push"]["failed"] == ["site3"]
        pending = doc["push"]["pending_revocations"]
        assert pending == [{"peer": "pub2", "public_key": pub2_key, "why": "removed", "hosts": ["site3"]}]
        st = lab.json("status", check_rc=4)
        assert st["pending_revocations"][0]["hosts"] == ["site3"] and st["unreachable"].keys() == {"site3"}
        text = lab.wgmesh("status", check_rc=4).stdout
        assert "pending revocation" in text and "still trusts pub2" in text
        assert pub2_key in _all_peer_keys(lab, ["site3"])["site3"]  # site3 still trusts it, as reported
        assert lab.wgmesh("push", check_rc=4).returncode == 4  # retried, still pending
    finally:
        lab.sshd_start("site3")
    doc = lab.json("push")
    assert doc["ok"] and doc["pending_revocations"] == []
    assert not any(pub2_key in k for k in _all_peer_keys(lab, SITES).values())
    assert lab.json("status")["pending_revocations"] == []


def test_rotate_all_keys(lab):
    old = json.loads((lab.root / ".wgmesh" / lab.name / "keys" / "keystore.json").read_text())["peers"]
    with Ping(lab, "site1-vm", lab.instance_address("site3")) as ping:
        doc = lab.json("rotate-keys", "--all")
    COUNTS["rotate-keys --all"] = (ping.sent, ping.lost)
    assert doc["rotated"] == SITES and doc["push"]["ok"]
    new = json.loads((lab.root / ".wgmesh" / lab.name / "keys" / "keystore.json").read_text())
    assert all(new["peers"][n]["public_key"] != old[n]["public_key"] for n in SITES)
    assert "retired" not in new  # every peer has the new keys: old pairs purged
    v = lab.json("verify")
    assert v["ok"], v["failures"]
    running = set().union(*_all_peer_keys(lab, SITES).values())
    for h in SITES:
        running.add(lab.host(h, "wg", "show", "wg0", "public-key").stdout.strip())
    assert not running & {old[n]["public_key"] for n in SITES}  # no old public key anywhere
    assert running == {new["peers"][n]["public_key"] for n in SITES}


def test_up_again_after_all_that_changes_nothing(lab):
    pids = {h: lab.wg_pids(h) for h in SITES}
    mtimes = {h: lab.host(h, "stat", "-c", "%Y.%i", "/etc/wireguard/wg0.conf").stdout for h in SITES}
    doc = lab.json("up")
    assert doc["ok"] and set(_actions(doc["push"]).values()) == {"unchanged"}
    assert {h: lab.wg_pids(h) for h in SITES} == pids
    assert {h: lab.host(h, "stat", "-c", "%Y.%i", "/etc/wireguard/wg0.conf").stdout for h in SITES} == mtimes


def test_status_watch_refreshes_until_ctrl_c(lab):
    import os
    import sys

    env = dict(os.environ, WGMESH_DIR=str(lab.root), COLUMNS="160")
    p = subprocess.Popen([sys.executable, "-m", "wgmesh", "-i", lab.name, "status", "--watch", "0.5"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert "handshakes: 6/6 fresh" in out and "site3" in out


def test_graph_is_a_real_picture_of_the_mesh(lab):
    doc = lab.json("graph")
    files = {f.rsplit(".", 1)[1]: f for f in doc["files"]}
    png = Path(files["png"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 200 and height > 150
    svg = Path(files["svg"]).read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    dot = Path(files["dot"]).read_text()
    for n in SITES:
        assert f'"{n}" [label="{n}' in dot
    edges = re.findall(r'"(\w+)" -- "(\w+)" \[color="([^"]+)"', dot)
    assert sorted((a, b) for a, b, _ in edges) == [("site1", "site2"), ("site1", "site3"), ("site2", "site3")]
    assert {c for _, _, c in edges} == {"#2e9d3a"}  # every tunnel up
    # One tunnel down shows as such.
    lab.host("site3", "wg-quick", "down", "wg0")
    try:
        drawn = lab.json("graph", check_rc=4)  # a host with its tunnel down: exit 4, like status
        assert drawn["unreachable"] == {"site3": "interface wg0 is not up"}
        dot = Path(drawn["files"][0]).read_text()
        assert re.search(r'"site1" -- "site3" \[color="#d62728"', dot)  # down: red
        assert re.search(r'"site2" -- "site3" \[color="#d62728"', dot)
        assert re.search(r'"site1" -- "site2" \[color="#2e9d3a"', dot)
    finally:
        assert lab.json("push")["ok"]
    print("\nping counts (sent, lost):", COUNTS)
