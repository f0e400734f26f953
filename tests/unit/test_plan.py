import subprocess

import pytest

from tests.conftest import fixed_keys
from wgmesh import plan as P
from wgmesh.model import HostState
from wgmesh.render import fingerprints, render


@pytest.fixture
def text(lab_inventory):
    return render(lab_inventory, fixed_keys(lab_inventory.names))["site1"]


PEERS = frozenset({"k2", "k3"})


def state(text, up=True, same_file=True, same_iface=True, peers=PEERS):
    f, i = fingerprints(text)
    return HostState(
        reachable=True, interface_up=up, file_sha=f if same_file else "0" * 64,
        iface_sha=i if same_iface else "1" * 64, running_peers=peers,
    )


def test_first_start(text):
    p = P.decide(text, PEERS, HostState(reachable=True))
    assert (p.action, p.write) == (P.START, True)


def test_down_but_file_current_starts_without_writing(text):
    p = P.decide(text, PEERS, state(text, up=False))
    assert (p.action, p.write) == (P.START, False)


def test_nothing_changed(text):
    p = P.decide(text, PEERS, state(text))
    assert (p.action, p.write) == (P.UNCHANGED, False)


def test_only_peers_changed_is_syncconf(text):
    p = P.decide(text, PEERS, state(text, same_file=False))
    assert (p.action, p.write) == (P.SYNCCONF, True)


def test_interface_changed_is_restart(text):
    p = P.decide(text, PEERS, state(text, same_file=False, same_iface=False))
    assert (p.action, p.write) == (P.RESTART, True)


def test_running_drift_is_repaired_with_syncconf(text):
    p = P.decide(text, PEERS, state(text, peers=frozenset({"k2", "old"})))
    assert (p.action, p.write) == (P.SYNCCONF, False)


def test_remote_filter_matches_local_fingerprint(text, tmp_path):
    """The awk run on hosts must select exactly the lines render.fingerprints hashes."""
    f = tmp_path / "wg0.conf"
    f.write_text(text)
    out = subprocess.run(
        ["sh", "-c", f"{P.REMOTE_IFACE_FILTER} {f} | sha256sum | cut -d' ' -f1"], capture_output=True, text=True,
        check=True,
    ).stdout.strip()
    assert out == fingerprints(text)[1]


def test_parse_probe():
    s = P.parse_probe("file abc\niface def\nup\npeer K1=\npeer K2=\nsystemd\nend\n")
    assert s.interface_up and s.systemd and s.file_sha == "abc" and s.iface_sha == "def"
    assert s.running_peers == {"K1=", "K2="}
    s = P.parse_probe("file -\niface -\ndown\nend\n")
    assert not s.interface_up and s.file_sha is None
    with pytest.raises(ValueError, match="cut short"):
        P.parse_probe("file abc\n")
    with pytest.raises(ValueError, match="not installed"):
        P.parse_probe("wg missing\nfile -\niface -\ndown\nend\n")


def test_scripts_take_config_on_stdin_and_hold_no_key(text):
    for plan in (P.Plan(P.START, True, ""), P.Plan(P.RESTART, True, ""), P.Plan(P.SYNCCONF, True, "")):
        script = P.apply_script(plan, "wg0", False)
        assert 'cat > "$t"' in script  # the config comes on stdin
        assert "mv -f \"$t\" /etc/wireguard/wg0.conf" in script and "/tmp" not in script
    sync = P.apply_script(P.Plan(P.SYNCCONF, True, ""), "wg0", False)
    assert "st=$(wg-quick strip wg0) || exit 43" in sync and "ip -batch -" in sync and "|| exit 44" in sync
    start = P.apply_script(P.Plan(P.START, False, ""), "wg0", True)
    # a oneshot unit may be "active" with the interface gone: restart, never a no-op enable --now
    assert "systemctl enable wg-quick@wg0 && systemctl restart wg-quick@wg0" in start
    assert "systemctl disable wg-quick@wg0" in start  # a failed first start leaves no enabled unit
    assert P.wrap("true", "ubuntu").startswith("sudo -n sh -c ")
    assert P.wrap("true", "root") == "sh -c true"


def test_route_sync_script_runs(tmp_path):
    """Run the route part against fake `wg` and `ip`: routes for the running AllowedIPs are
    replaced in one batch, stale ones deleted, kernel routes left alone."""
    log = tmp_path / "log"
    (tmp_path / "wg").write_text(
        "#!/bin/sh\nprintf 'K/1=\\t10.200.0.2/32 10.10.2.0/24\\nK/2=\\tfd00:2::/64\\n'\n")
    (tmp_path / "ip").write_text(
        f"""#!/bin/sh
echo "$*" >> {log}
case "$*" in
  *batch*) sed 's/^/batch: /' >> {log};;
  *"-4 route show"*) printf '10.200.0.9 scope link\\n10.200.0.2 scope link\\n10.10.2.0/24 scope link\\n10.10.9.0/24 scope link\\n';;
  *"-6 route show"*) printf 'fe80::/64 proto kernel metric 256\\nfd00:2::/64 metric 1024\\n';;
esac
"""
    )
    for f in ("wg", "ip"):
        (tmp_path / f).chmod(0o755)
    script = "\n".join(P._route_sync("wg0"))
    subprocess.run(["sh", "-c", script], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, check=True)
    calls = log.read_text().splitlines()
    assert "batch: route replace 10.10.2.0/24 dev wg0" in calls and "batch: route replace fd00:2::/64 dev wg0" in calls
    assert "-4 route del 10.200.0.9 dev wg0" in calls and "-4 route del 10.10.9.0/24 dev wg0" in calls
    assert not any(("del 10.10.2.0/24" in c or "fe80" in c or "del 10.200.0.2 " in c or "del fd00" in c) for c in calls)


def test_sudo_password_prompt_is_a_clear_failure():
    from wgmesh.ops import _remote_reason

    msg = _remote_reason("probe", 1, "sudo: a password is required\n")
    assert "passwordless sudo" in msg and "sudo -n" in msg
    assert _remote_reason("apply", 42, "[#] ip link add wg0 type wireguard\nError: boom\n").endswith("Error: boom")


def test_probe_waits_for_cloud_init_only_when_asked():
    assert "cloud-init" not in P.probe_script("wg0")
    assert "timeout 300 cloud-init status --wait" in P.probe_script("wg0", 300)
