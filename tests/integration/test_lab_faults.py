"""Faults stay local and repairable; secrets stay secret — on the real lab."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

LAB_NAME = "ft"
SITES = ["site1", "site2", "site3"]


def _secrets(lab) -> list[str]:
    """Every private key and every PSK of the inventory."""
    from wgmesh import keys as keymod

    store = keymod.Keystore(lab.root / ".wgmesh" / lab.name / "keys").load()
    names = sorted(store.pairs)
    out = [kp.private for kp in store.pairs.values()]
    out += [store.psk(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    return out


class ArgvWatcher:
    """Samples every process's argv on the machine (the lab hosts' included) while a run goes on."""

    def __init__(self):
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    with contextlib.suppress(OSError):
                        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
                        self.seen.add(argv.replace(b"\0", b" ").decode(errors="replace"))
            time.sleep(0.005)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _spawn(lab, *args):
    env = dict(os.environ, WGMESH_DIR=str(lab.root), COLUMNS="200")
    return subprocess.Popen([sys.executable, "-m", "wgmesh", "-i", lab.name, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _files_parse(lab):
    from wgmesh import inventory as invmod
    from wgmesh import keys as keymod

    invmod.from_document((lab.root / "inventories" / f"{lab.name}.json").read_text())
    keymod.Keystore(lab.root / ".wgmesh" / lab.name / "keys").load()
    assert not list((lab.root / "inventories").glob(".*.tmp"))  # no temporary file left behind


def test_up_and_no_secret_in_any_argv_output_or_state(lab):
    with ArgvWatcher() as watch:
        r = lab.wgmesh("up", *lab.up_vars(), "--json")
        r2 = lab.wgmesh("status", "--json")
        r3 = lab.wgmesh("push", "--json")
    secrets = _secrets(lab)
    assert len(secrets) == 3 + 3  # 3 private keys, 3 pair PSKs
    assert any("wg-quick" in a or "sh -c" in a for a in watch.seen)  # the watcher did see the remote side
    for s in secrets:
        assert not any(s in argv for argv in watch.seen), "a key appeared in a process's argv"
        for text in (r.stdout, r.stderr, r2.stdout, r3.stdout, r3.stderr):
            assert s not in text
        assert s not in (lab.tf_dir / "terraform.tfstate").read_text()
        assert s not in (lab.root / "inventories" / f"{lab.name}.json").read_text()


def test_wg_quick_failure_restores_previous_config_and_state(lab, tmp_path):
    real = tmp_path / "wg-quick.real"
    real.write_bytes(Path("/usr/bin/wg-quick").read_bytes())
    real.chmod(0o755)
    wrapper = tmp_path / "wg-quick"
    # Fails the way a broken PostUp does: after the interface and some rules are up.
    wrapper.write_text(
        f'#!/bin/bash\nif [ "$1" = up ] && grep -q "^MTU = 1300" "/etc/wireguard/$2.conf"; then\n'
        f'  {real} "$@"; echo "injected failure" >&2; exit 1\nfi\nexec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    before_conf = lab.host("site2", "sha256sum", "/etc/wireguard/wg0.conf").stdout
    before_rules = lab.host("site2", "iptables-save").stdout
    lab.host("site2", "mount", "--bind", str(wrapper), "/usr/bin/wg-quick")
    inv_path = lab.root / "inventories" / f"{lab.name}.json"
    original = inv_path.read_text()
    doc = json.loads(original)
    doc["mesh"]["mtu"] = 1300
    inv_path.write_text(json.dumps(doc))
    try:
        r = lab.json("push", check_rc=4)
        assert r["failed"] == ["site2"]
        assert "previous config restored" in r["hosts"]["site2"]["detail"]
        assert "injected failure" in r["hosts"]["site2"]["detail"]
        assert {r["hosts"][h]["action"] for h in ("site1", "site3")} == {"restart"}
        # site2: its previous file, running again, with its rules once.
        assert lab.host("site2", "sha256sum", "/etc/wireguard/wg0.conf").stdout == before_conf
        assert "mtu 1420" in lab.host("site2", "ip", "link", "show", "wg0").stdout
        assert lab.host("site2", "iptables-save").stdout.count("-A FORWARD -j WGM-wg0-FWD") == 1
        assert lab.host("site2", "iptables-save").stdout.count("MASQUERADE") == before_rules.count("MASQUERADE")
    finally:
        lab.host("site2", "umount", "/usr/bin/wg-quick")
    r = lab.json("push")
    assert r["hosts"]["site2"]["action"] == "restart" and r["ok"]
    inv_path.write_text(original)
    assert lab.json("push")["ok"]
    assert lab.json("verify")["ok"]


def test_failed_first_start_leaves_no_config(lab, tmp_path):
    """A host whose very first wg-quick up fails is left as it was: no wg0.conf, no interface."""
    real = tmp_path / "wg-quick.real"
    real.write_bytes(Path("/usr/bin/wg-quick").read_bytes())
    real.chmod(0o755)
    wrapper = tmp_path / "wg-quick"
    wrapper.write_text(f'#!/bin/bash\nif [ "$1" = up ]; then {real} "$@"; echo "injected failure" >&2; exit 1; fi\n'
                       f'exec {real} "$@"\n')
    wrapper.chmod(0o755)
    srv = lab.tf_output("servers")["srv1"]
    lab.host("srv1", "mount", "--bind", str(wrapper), "/usr/bin/wg-quick")
    try:
        lab.wgmesh("addpeer", "first", "--endpoint", srv["endpoint"], "--ssh", f"root@{srv['ssh_host']}",
                   "--allowedips", srv["subnets"][0], "--host-key", srv["ssh_host_keys"][0])
        doc = lab.json("push", check_rc=4)
        assert doc["failed"] == ["first"] and "injected failure" in doc["hosts"]["first"]["detail"]
        assert lab.host("srv1", "test", "-e", "/etc/wireguard/wg0.conf", check=False).returncode == 1
        assert lab.host("srv1", "wg", "show", "wg0", check=False).returncode != 0
        assert lab.host("srv1", "iptables", "-w", "-S").stdout.count("WGM-wg0-FWD") == 0  # PostDown ran
    finally:
        lab.host("srv1", "umount", "/usr/bin/wg-quick")
    doc = lab.json("push")
    assert doc["hosts"]["first"]["action"] == "start"
    lab.wgmesh("delpeer", "first")


def test_unreachable_auth_refused_and_timeouts_stay_local(lab, tmp_path):
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    srv = lab.tf_output("servers")["srv1"]
    lab.wgmesh("addpeer", "stranger", "--endpoint", srv["endpoint"], "--ssh", f"root@{srv['ssh_host']}",
               "--ssh-key", str(key), "--allowedips", srv["subnets"][0], "--host-key", srv["ssh_host_keys"][0])
    doc = lab.json("push", check_rc=4)
    assert doc["failed"] == ["stranger"] and "authentication" in doc["hosts"]["stranger"]["detail"]
    assert {doc["hosts"][h]["action"] for h in SITES} == {"syncconf"}
    assert lab.wgmesh("delpeer", "stranger", check_rc=4).returncode == 4  # its host could not be reached
    assert "stranger" not in lab.json("showpeers")["peers"]

    # A command that hangs is cut at its timeout; the connection says so.
    from wgmesh.adapters import hostkeys, ssh

    site1 = lab.json("showpeers")["peers"]["site1"]
    pins = hostkeys.Pins(lab.root / ".wgmesh" / lab.name / "known_hosts")
    conn = ssh.connect(hostkeys.Target("root", site1["ssh"]["host"], 22, site1["ssh"]["key"]), pins)
    t0 = time.monotonic()
    with pytest.raises(hostkeys.SshError, match="timed out"):
        conn.run("sleep 30", timeout=1)
    assert time.monotonic() - t0 < 5
    conn.close()


def test_rotating_a_peer_whose_sshd_is_frozen_cuts_nobody_off(lab):
    """sshd stopped with SIGSTOP: TCP is accepted (by the kernel), no banner ever comes. Rotating
    that peer would switch the others to a key it cannot receive: it is not rotated."""
    before = lab.json("showpeers")  # public data only; keys come from the keystore below
    keys = json.loads((lab.root / ".wgmesh" / lab.name / "keys" / "keystore.json").read_text())["peers"]
    pid = int((lab.state_dir / "hosts" / "site3" / "sshd.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        doc = lab.json("rotate-keys", "site3", check_rc=4)
        assert time.monotonic() - t0 < 40
        assert doc["rotated"] == [] and "no SSH banner within" in doc["skipped"]["site3"], doc
    finally:
        os.kill(pid, signal.SIGCONT)
    after = json.loads((lab.root / ".wgmesh" / lab.name / "keys" / "keystore.json").read_text())["peers"]
    assert after["site3"]["public_key"] == keys["site3"]["public_key"]  # site3 keeps its key pair
    assert lab.json("showpeers") == before
    assert lab.json("verify")["ok"]  # nobody was cut off


def test_an_endpoint_that_does_not_resolve_never_stalls_a_push(lab):
    lab.wgmesh("addpeer", "ghost", "--endpoint", "no-such-host.invalid:51820", "--allowedips", "10.99.0.0/24",
               check_rc=2)
    lab.wgmesh("addpeer", "ghost", "--endpoint", "no-such-host.invalid:51820", "--allowedips", "10.99.0.0/24",
               "--allow-unresolved")
    t0 = time.monotonic()
    doc = lab.json("push")
    assert time.monotonic() - t0 < 15, "a push stalled on the name"
    assert doc["unresolved_endpoints"] == {"ghost": "no-such-host.invalid:51820"}
    assert {doc["hosts"][h]["action"] for h in SITES} == {"syncconf"}
    assert "no-such-host" not in lab.host("site1", "cat", "/etc/wireguard/wg0.conf").stdout
    lab.wgmesh("delpeer", "ghost")


def test_sigkill_mid_run_leaves_old_or_new_files_and_no_lock(lab):
    for i, delay in enumerate((0.05, 0.2, 0.35, 0.6)):
        lab.wgmesh("addpeer", f"k{i}", "--allowedips", f"10.66.{i}.0/24")
        p = _spawn(lab, "up")
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.communicate()
        _files_parse(lab)
        assert lab.wgmesh("showpeers", "--json").returncode == 0
    # Terraform may still be finishing on its own: give it its state lock back before the next run.
    deadline = time.monotonic() + 60
    while subprocess.run(["pgrep", "-f", "terraform apply.*"], check=False, capture_output=True).returncode == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for i in range(4):  # the lock did not outlive the killed runs
        lab.wgmesh("delpeer", f"k{i}")  # (peers with no host behind them: verify could not pass with them)
    doc = lab.json("up")
    assert doc["ok"], doc["verify"]["failures"]


def test_ctrl_c_exits_130_and_releases_the_lock(lab):
    p = _spawn(lab, "up", "--var", "sites=4")
    err = ""
    deadline = time.monotonic() + 60
    while "terraform apply" not in err and time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        err += line
    p.send_signal(signal.SIGINT)
    out, rest = p.communicate(timeout=120)
    assert p.returncode == 130, err + rest
    assert "interrupted" in (err + rest)
    _files_parse(lab)
    # Lock released, Terraform's state consistent; the interrupted run did not record sites=4.
    doc = lab.json("up", "--var", "sites=4")
    assert doc["ok"] and doc["peers"] == SITES + ["site4"]


def test_terraform_failure_exit_5_then_rerun_no_duplicates_no_new_keys(lab):
    keys_before = json.loads((lab.root / ".wgmesh" / lab.name / "keys" / "keystore.json").read_text())["peers"]
    inv_before = lab.json("showpeers")["peers"]
    blocker = lab.state_dir / "hosts" / "site5"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory: makes creating site5 fail\n")
    try:
        r = lab.wgmesh("up", "--var", "sites=5", check_rc=5)
        assert "terraform apply failed" in r.stderr
        peers = lab.json("showpeers")["peers"]
        assert sorted(peers) == sorted(inv_before)  # what Terraform holds; no half peer
        assert {n: peers[n]["address"] for n in peers} == {n: inv_before[n]["address"] for n in inv_before}
    finally:
        blocker.unlink(missing_ok=True)  # labctl removes what it half-built
    doc = lab.json("up")
    assert doc["ok"] and doc["peers"] == SITES + ["site4", "site5"]
    assert doc["new_keys"] == ["site5"]
    keys_after = json.loads((lab.root / ".wgmesh" / lab.name / "keys" / "keystore.json").read_text())["peers"]
    assert {n: keys_after[n] for n in keys_before} == keys_before
    addrs = [p["address"] for p in lab.json("showpeers")["peers"].values()]
    assert len(addrs) == len(set(addrs))
