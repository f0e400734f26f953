import base64

import pytest

from wgmesh import inventory as invmod
from wgmesh import keys as keymod
from wgmesh.model import KeyPair


def fixed_keys(names):
    """Deterministic key material for golden files (test fixtures only)."""
    pairs = {}
    for i, n in enumerate(sorted(names)):
        priv = base64.b64encode(bytes([i + 1]) * 32).decode()
        pairs[n] = KeyPair(private=priv, public=keymod.public_key(priv))
    return keymod.Keys(pairs=pairs, psk_secret=b"\x42" * 32)


def lab_outputs(n=3):
    return {
        f"site{i}": {
            "endpoint": f"198.18.1.{10 + i}",
            "listen_port": 51820,
            "private_address": f"10.10.{i}.1",
            "subnets": [f"10.10.{i}.0/24"],
            "ssh_user": "root",
            "ssh_host": f"198.18.1.{10 + i}",
            "ssh_port": 22,
            "ssh_key": "/lab/id_ed25519",
            "ssh_host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKtest" + str(i)],
            "egress_interface": "detect",
            "region": f"lab-{i}",
            "cloud": "lab",
            "instances": [
                {"name": f"site{i}-vm", "address": f"10.10.{i}.10", "ssh_user": "root", "ssh_port": 22,
                 "ssh_host_keys": []}
            ],
        }
        for i in range(1, n + 1)
    }


@pytest.fixture
def lab_inventory():
    inv = invmod.new_inventory("lab", stack="lab")
    return invmod.merge_terraform(inv, invmod.peers_from_outputs(lab_outputs()))
