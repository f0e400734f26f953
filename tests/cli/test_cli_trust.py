"""Host-key trust from the command line: trust on first use said on stderr, --strict-host-keys
(and WGMESH_STRICT_HOST_KEYS) refusing an unknown host with the exact `setpeer --host-key` to
use, and destroy forgetting only the pins of the hosts that go. The SSH host is a real sshd on
127.0.0.1 that runs /bin/true whatever it is asked (tests/unit/test_ssh_trust.py)."""

import json
import shlex

from tests.cli.test_cli import run
from tests.unit.test_ssh_trust import Sshd, keygen, needs_sshd
from wgmesh.adapters.hostkeys import fingerprint


def _no_agent(tmp_path):
    (tmp_path / "home").mkdir(exist_ok=True)
    return {"HOME": str(tmp_path / "home"), "SSH_AUTH_SOCK": None, "WGMESH_STRICT_HOST_KEYS": None}


def _add_srv(tmp_path, sshd, key):
    r = run(tmp_path, "addpeer", "srv", "--ssh", f"root@127.0.0.1:{sshd.port}", "--ssh-key", str(key),
            "--allowedips", "10.99.0.0/24")
    assert r.exit_code == 0, r.output


@needs_sshd
def test_first_use_is_said_on_stderr_and_pinned(tmp_path):
    env = _no_agent(tmp_path)
    key = keygen(tmp_path / "id")
    with Sshd(tmp_path, [key]) as sshd:
        _add_srv(tmp_path, sshd, key)
        r = run(tmp_path, "status", "--json", env=env)
        assert r.exit_code == 4  # the host runs no WireGuard (its sshd runs /bin/true): reached, not ok
        fp = fingerprint(sshd.host_key)
        assert f"srv: host key pinned on first use, not verified: {fp}" in r.stderr
        assert "host key" not in json.loads(r.stdout)["unreachable"]["srv"]
        pins = tmp_path / ".wgmesh" / "lab" / "known_hosts"
        assert pins.read_text() == f"{sshd.entry} {sshd.host_key}\n"

        r = run(tmp_path, "status", "--json", env=env)
        assert r.exit_code == 4 and "pinned on first use" not in r.stderr  # verified against the pin now


@needs_sshd
def test_strict_host_keys_refuses_an_unknown_host_with_the_setpeer_to_run(tmp_path):
    env = _no_agent(tmp_path)
    key = keygen(tmp_path / "id")
    pins = tmp_path / ".wgmesh" / "lab" / "known_hosts"
    with Sshd(tmp_path, [key]) as sshd:
        _add_srv(tmp_path, sshd, key)
        fp = fingerprint(sshd.host_key)
        for how in (["--strict-host-keys"], []):
            strict_env = env if how else {**env, "WGMESH_STRICT_HOST_KEYS": "1"}
            r = run(tmp_path, "status", *how, "--json", env=strict_env)
            assert r.exit_code == 4
            reason = json.loads(r.stdout)["unreachable"]["srv"]
            assert fp in reason and "--strict-host-keys refuses it" in reason, reason
            assert f"wgmesh -i lab setpeer srv --host-key '{sshd.host_key}'" in reason
            assert not pins.exists() and "pinned on first use" not in r.stderr

        # What the message says to run, run as it says.
        command = shlex.split(reason.split("trust it with: ", 1)[1].rstrip(")"))
        assert command[0] == "wgmesh"
        r = run(tmp_path, *command[1:], env=env)
        assert r.exit_code == 0, r.output
        r = run(tmp_path, "status", "--strict-host-keys", "--json", env=env)
        assert r.exit_code == 4
        assert "host key" not in json.loads(r.stdout)["unreachable"]["srv"]  # reached: verified, then wg show
        assert "pinned on first use" not in r.stderr
        assert pins.read_text() == f"{sshd.entry} {sshd.host_key}\n"


def test_setpeer_host_key_is_checked_and_recorded(tmp_path):
    assert run(tmp_path, "addpeer", "srv", "--ssh", "root@198.51.100.7", "--allowedips", "10.99.0.0/24").exit_code == 0
    r = run(tmp_path, "setpeer", "srv", "--host-key", "ssh-ed25519 not-base64!")
    assert r.exit_code == 2 and "--host-key: 'ssh-ed25519 not-base64!': expected an OpenSSH public key" in r.stderr
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC4Inp/S5OXjAhnK9VdbsPxvdVSF1ZCyVSmR6WqvRESK"
    r = run(tmp_path, "setpeer", "srv", "--host-key", key, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["peer"]["ssh_host_keys"] == [key]


def test_destroy_forgets_only_the_pins_of_the_hosts_that_go(tmp_path):
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"peers": {"value": {"gw": {
        "endpoint": "203.0.113.10", "subnets": ["10.60.0.0/16"], "ssh_user": "ubuntu", "ssh_host": "203.0.113.10",
        "instances": [{"name": "gw-vm", "address": "10.60.1.10", "ssh_user": "ubuntu"}],
    }}}}))
    assert run(tmp_path, "import", str(outputs)).exit_code == 0
    assert run(tmp_path, "addpeer", "srv", "--ssh", "root@198.51.100.7:2222", "--endpoint", "198.51.100.7",
               "--allowedips", "10.99.0.0/24").exit_code == 0
    pins = tmp_path / ".wgmesh" / "lab" / "known_hosts"
    kept = "[198.51.100.7]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKEPTKEPTKEPTKEPTKEPTKEPTKEPTKEPTKEPTKEPTKEP\n"
    pins.write_text(
        "10.60.1.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIINSTINSTINSTINSTINSTINSTINSTINSTINSTINSTINST\n"
        "198.51.100.99 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGONEGONEGONEGONEGONEGONEGONEGONEGONEGONEGONE\n"
        "203.0.113.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGATEGATEGATEGATEGATEGATEGATEGATEGATEGATEGATE\n"
        + kept
    )
    r = run(tmp_path, "destroy", "--no-stop", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["removed_peers"] == ["gw"]
    assert pins.read_text() == kept  # the hand-added peer that stays keeps its pin
