"""wgmesh on real systemd hosts (`--var init=systemd`): the systemd path of push for real, reboot
survival with no push, and drift repaired by state — in order, on one 3-site lab."""

from __future__ import annotations

import time

from tests.labkit import lab_leftovers, systemd_leftovers

LAB_NAME = "sy"
SITES = ["site1", "site2", "site3"]
FIGURES: dict[str, float] = {}


def _actions(doc):
    return {n: h["action"] for n, h in doc["hosts"].items()}


def _rules_once(lab, host):
    """Each wgmesh chain exists once, with one jump into it, whatever ran how often."""
    filt = lab.host(host, "iptables", "-w", "-S").stdout
    nat = lab.host(host, "iptables", "-w", "-t", "nat", "-S").stdout
    mangle = lab.host(host, "iptables", "-w", "-t", "mangle", "-S").stdout
    assert filt.count("-N WGM-wg0-FWD") == 1 and filt.count("-A FORWARD -j WGM-wg0-FWD") == 1, filt
    assert filt.count("-A WGM-wg0-FWD ") == 4, filt
    assert nat.count("-A POSTROUTING -j WGM-wg0-NAT") == 1 and nat.count("-A WGM-wg0-NAT ") == 1, nat
    assert mangle.count("-A FORWARD -j WGM-wg0-MSS") == 1, mangle


def _verified_within(lab, seconds):
    """verify until it passes (a host that just booted may still be starting wireguard-go)."""
    deadline = time.monotonic() + seconds
    while True:
        r = lab.wgmesh("verify", "--json", check_rc=None)
        if r.returncode == 0:
            return
        assert time.monotonic() < deadline, r.stdout[-3000:]
        time.sleep(0.5)


def test_up_on_systemd_hosts_starts_wireguard_through_the_unit(lab):
    t = time.monotonic()
    doc = lab.json("up", *lab.up_vars(init="systemd", sites=3, servers=0))
    FIGURES["up, 3 systemd sites (s)"] = round(time.monotonic() - t, 1)
    assert doc["ok"] and set(_actions(doc["push"]).values()) == {"start"}, doc
    assert doc["verify"]["ok"], doc["verify"]["failures"]
    for h in SITES:
        assert lab.host(h, "cat", "/proc/1/comm").stdout.strip() == "systemd"
        assert lab.host(h, "systemctl", "is-enabled", "wg-quick@wg0").stdout.strip() == "enabled"
        assert lab.host(h, "systemctl", "is-active", "wg-quick@wg0").stdout.strip() == "active"
        _rules_once(lab, h)
    assert lab.json("push", "--dry-run")["ok"]  # exit 0: nothing would change


def test_a_reboot_brings_the_mesh_back_with_no_push(lab):
    before = lab.host("site2", "cat", "/proc/sys/kernel/random/boot_id").stdout
    t = time.monotonic()
    FIGURES["reboot to sshd (s)"] = round(lab.reboot("site2"), 2)
    assert lab.host("site2", "cat", "/proc/1/comm").stdout.strip() == "systemd"
    _verified_within(lab, 60)
    FIGURES["reboot to verified (s)"] = round(time.monotonic() - t, 2)
    assert lab.host("site2", "systemctl", "is-active", "wg-quick@wg0").stdout.strip() == "active"
    _rules_once(lab, "site2")  # PostUp ran again at boot: nothing duplicated
    doc = lab.json("push")
    assert set(_actions(doc).values()) == {"unchanged"}, doc  # nothing for push to do after a reboot
    # the container's boot id: the reboot really happened
    assert lab.host("site2", "cat", "/proc/sys/kernel/random/boot_id").stdout != before


def test_nat_missing_at_boot_is_not_silent(lab):
    """Egress detection runs when the unit starts: a host that boots before its default route
    exists comes up with no MASQUERADE rule. While it has no default route that is right (there
    is nothing to masquerade out of); once the route is there, verify names the missing rule and
    push repairs it without a restart."""
    underlay = lab.underlay
    gw = lab.host("site3", "ip", "-4", "route", "show", "default").stdout.split()[2]
    lab.host("site3", "ip", "route", "add", underlay, "via", gw, "dev", "eth0", "onlink")  # keeps SSH
    lab.host("site3", "ip", "route", "del", "default")
    try:
        lab.reboot("site3")
        deadline = time.monotonic() + 30
        while lab.host("site3", "systemctl", "is-active", "wg-quick@wg0", check=False).stdout.strip() != "active":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert "WGM-wg0-NAT -s" not in lab.host("site3", "iptables", "-w", "-t", "nat", "-S").stdout
        v = lab.json("verify", check_rc=None)
        assert not any("WGM-wg0-NAT" in f for f in v["failures"]), v["failures"]  # no egress: no rule due
    finally:
        lab.host("site3", "ip", "route", "add", "default", "via", gw, "dev", "eth0", "onlink", check=False)
        lab.host("site3", "ip", "route", "del", underlay, "via", gw, "dev", "eth0", check=False)
    v = lab.json("verify", check_rc=4)
    assert "site3: drift: chain WGM-wg0-NAT (IPv4) has 0 rules, not 1" in v["failures"], v["failures"]
    pids = lab.host("site3", "pgrep", "-x", "wireguard-go").stdout
    doc = lab.json("push")
    assert doc["hosts"]["site3"]["detail"] == "repaired: firewall", doc
    assert lab.host("site3", "pgrep", "-x", "wireguard-go").stdout == pids  # no restart
    _rules_once(lab, "site3")
    _verified_within(lab, 30)


def test_drift_is_repaired_on_systemd_hosts(lab):
    site3_lan = lab.plan("site3")["subnets"][0]
    lab.host("site1", "ip", "route", "del", site3_lan, "dev", "wg0")
    lab.host("site2", "iptables", "-w", "-F", "WGM-wg0-FWD")
    lab.host("site3", "systemctl", "disable", "wg-quick@wg0")
    dry = lab.json("push", "--dry-run", check_rc=6)
    assert {h: dry["hosts"][h]["detail"] for h in SITES} == {
        "site1": "repaired: routes", "site2": "repaired: firewall", "site3": "repaired: unit"}
    verified = lab.json("verify", check_rc=4)
    assert f"site1: drift: route missing: {site3_lan}" in verified["failures"]
    assert "site3: drift: wg-quick@wg0 is disabled, not enabled" in verified["failures"]
    doc = lab.json("push")
    assert set(_actions(doc).values()) == {"repair"}, doc
    assert lab.host("site3", "systemctl", "is-enabled", "wg-quick@wg0").stdout.strip() == "enabled"
    _rules_once(lab, "site2")
    assert lab.json("push", "--dry-run")["ok"]
    assert lab.json("verify")["ok"]


def test_a_failing_start_on_systemd_carries_the_units_journal(lab):
    """The unit's own words, not "see journalctl": break wg-quick on site1 for one restart."""
    path = lab.root / "inventories" / f"{lab.name}.json"
    text = path.read_text()
    lab.host("site1", "sh", "-c", "mv /usr/bin/wg-quick /usr/bin/wg-quick.real && "
             "printf '#!/bin/sh\\necho injected failure >&2\\nexit 1\\n' > /usr/bin/wg-quick && "
             "chmod 755 /usr/bin/wg-quick")
    try:
        path.write_text(text.replace('"mtu": 1420', '"mtu": 1400'))
        doc = lab.json("push", check_rc=4)
        detail = doc["hosts"]["site1"]["detail"]
        assert detail.startswith("wg-quick up failed, previous config restored (exit 42)"), detail
        assert "injected failure" in detail, detail
    finally:
        lab.host("site1", "mv", "-f", "/usr/bin/wg-quick.real", "/usr/bin/wg-quick")
        path.write_text(text)
    doc = lab.json("push")
    assert _actions(doc)["site1"] in ("start", "unchanged", "restart"), doc
    assert lab.json("verify")["ok"]


def test_destroy_leaves_nothing(lab):
    lab.json("destroy")
    assert lab_leftovers(lab.name) == [] and systemd_leftovers(lab.name) == []
    print("\nsystemd lab figures:", FIGURES)
