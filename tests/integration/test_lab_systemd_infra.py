"""The lab's systemd hosts (`--var init=systemd`), checked from outside: every gateway is a Debian 12
system booted with systemd as PID 1 in its network namespace (its own root file system layer, sshd as
its ssh.service with the host key Terraform exports), its private instance stays a plain namespace
that cannot see the machine's systemd; `labctl reboot` boots it again on the same layer; destroy
leaves nothing of it (namespaces, nspawn and supervisor processes, cgroups, overlay mounts).

Built with `wgmesh up --no-push`: what wgmesh does on systemd hosts is tested elsewhere.
"""

from __future__ import annotations

import time

from tests.labkit import lab_leftovers, systemd_leftovers

LAB_NAME = "sd"
SITES = ["site1", "site2"]
FIGURES: dict[str, float] = {}


def test_up_boots_systemd_gateways(lab):
    t = time.monotonic()
    doc = lab.json("up", "--no-push", *lab.up_vars(init="systemd", sites=2, servers=0))
    FIGURES["up --no-push, 2 systemd sites (s)"] = round(time.monotonic() - t, 1)
    assert doc["peers"] == SITES
    assert lab.tf_output("lab")["init"] == {"site1": "systemd", "site1-vm": "plain",
                                            "site2": "systemd", "site2-vm": "plain"}
    for h in SITES:
        assert lab.host(h, "cat", "/proc/1/comm").stdout.strip() == "systemd"
        assert lab.host(h, "systemctl", "is-active", "ssh.service").stdout.strip() == "active"
        assert lab.host(h, "systemctl", "is-system-running", "--wait").stdout.strip() == "running"
        assert lab.host(h, "hostname").stdout.strip() == h


def test_gateways_keep_the_address_plan(lab):
    for h in SITES:
        plan = lab.plan(h)
        eth0 = lab.host(h, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
        lan0 = lab.host(h, "ip", "-4", "-o", "addr", "show", "dev", "lan0").stdout
        assert f" {plan['endpoint']}/32 " in eth0
        assert f" {plan['private_address']}/{plan['subnets'][0].split('/')[1]} " in lan0
        # the instance behind it answers on the LAN
        lab.host(h, "ping", "-n", "-c", "1", "-W", "2", lab.instance_address(h))


def test_sshd_is_the_systemd_unit_with_the_exported_host_key(lab):
    for h in SITES:
        # labkit's ssh pins the host key from Terraform's outputs: a different key fails here.
        r = lab.ssh(h, "cat /proc/1/comm; systemctl show -p MainPID --value ssh.service")
        comm, ssh_main = r.stdout.split()
        assert comm == "systemd" and int(ssh_main) > 1
        key = (lab.state_dir / "hosts" / h / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        assert " ".join(key) == lab.plan(h)["ssh_host_keys"][0]
        # root's shell start-up files are empty: nothing slows an SSH command down
        sizes = lab.host(h, "stat", "-c", "%s", "/root/.bashrc", "/root/.profile").stdout.split()
        assert sizes == ["0", "0"]


def test_hosts_have_their_own_system(lab):
    lab.host("site1", "sh", "-c", "echo site1 > /etc/wgmesh-lab-test")
    assert lab.host("site2", "test", "-e", "/etc/wgmesh-lab-test", check=False).returncode == 1
    ids = {h: lab.host(h, "cat", "/etc/machine-id").stdout.strip() for h in SITES}
    assert len(set(ids.values())) == 2 and all(len(i) == 32 for i in ids.values())
    for h in SITES:  # the container's own, not the machine's
        assert lab.host(h, "stat", "-c", "%a %U", "/etc/wireguard").stdout.split() == ["700", "root"]
        assert lab.host(h, "sh", "-c", "ls -A /etc/wireguard").stdout == ""
        # wireguard-go finds /dev/net/tun, and the host may forward (wgmesh turns it on)
        lab.host(h, "test", "-c", "/dev/net/tun")
        lab.host(h, "sh", "-c", "cat /proc/sys/net/ipv4/ip_forward > /proc/sys/net/ipv4/ip_forward")


def test_plain_instances_do_not_see_the_machines_systemd(lab):
    for h in SITES:
        r = lab.host(f"{h}-vm", "systemctl", "is-system-running", check=False)
        assert r.returncode != 0 and r.stdout.strip() == "offline", (r.stdout, r.stderr)
        assert lab.host(f"{h}-vm", "sh", "-c", "ls -A /run/systemd").stdout == ""


def test_memory_per_systemd_host(lab):
    for h in SITES:
        mem = lab.memory_kb(h)
        FIGURES[f"{h} memory PSS (MB)"] = round(mem["pss"] / 1024, 1)
        FIGURES[f"{h} memory USS (MB)"] = round(mem["uss"] / 1024, 1)
        assert 0 < mem["pss"] < 64 * 1024, mem


def test_reboot_boots_again_on_the_same_layer(lab):
    boot_id = lab.host("site1", "cat", "/proc/sys/kernel/random/boot_id").stdout
    other = lab.host("site2", "cat", "/proc/sys/kernel/random/boot_id").stdout
    FIGURES["reboot until sshd answers (s)"] = round(lab.reboot("site1"), 2)
    # sshd answers at once, with the same host key
    assert lab.ssh("site1", "cat", "/proc/1/comm").stdout.strip() == "systemd"
    assert lab.host("site1", "cat", "/proc/sys/kernel/random/boot_id").stdout != boot_id
    assert lab.host("site2", "cat", "/proc/sys/kernel/random/boot_id").stdout == other  # only site1
    assert lab.host("site1", "systemctl", "is-system-running", "--wait").stdout.strip() == "running"
    assert lab.host("site1", "cat", "/etc/wgmesh-lab-test").stdout.strip() == "site1"  # its layer kept
    eth0 = lab.host("site1", "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert f" {lab.plan('site1')['endpoint']}/32 " in eth0  # its links kept


def test_reboot_from_inside(lab):
    """`systemctl reboot` inside the host, as an operator (or wgmesh) would: the host comes back."""
    boot_id = lab.host("site2", "cat", "/proc/sys/kernel/random/boot_id").stdout
    lab.ssh("site2", "systemctl", "reboot", check=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = lab.ssh("site2", "cat", "/proc/sys/kernel/random/boot_id", check=False, timeout=15)
        if r.returncode == 0 and r.stdout != boot_id:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("site2 did not come back after systemctl reboot")


def test_destroy_removes_everything(lab):
    hosts_dir = lab.state_dir / "hosts"
    running = systemd_leftovers(lab.name, lab.state_dir)  # what the sweep check sees while the lab runs
    assert {w.split()[0] for w in running} == {"cgroup", "process", "mount"}, running
    # --no-stop: no WireGuard was pushed (and what wgmesh does on systemd hosts is not tested here)
    lab.wgmesh("destroy", "--no-stop")
    assert lab_leftovers(lab.name) == []
    assert systemd_leftovers(lab.name, lab.state_dir) == []
    assert not hosts_dir.exists() or not any(hosts_dir.iterdir())
    print("\nsystemd lab figures:", FIGURES)
