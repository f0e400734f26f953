"""The real lab: Terraform, network namespaces, sshd, wireguard-go, iptables.

Each test module gets its own lab name (LAB_NAME) and the tests' underlay (tests/labkit.py), so
it never meets a user's `lab`, and everything it made is removed even when a test fails.
"""

from __future__ import annotations

import os

import pytest

from tests.labkit import TEST_UNDERLAY, Lab, lab_leftovers


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces): run ./bootstrap.sh test as root")
    name = getattr(request.module, "LAB_NAME", "it")
    underlay = getattr(request.module, "LAB_UNDERLAY", TEST_UNDERLAY)
    assert not lab_leftovers(name), f"a lab named {name!r} already exists: {lab_leftovers(name)}"
    root = tmp_path_factory.mktemp(f"lab-{name}")
    lab = Lab(root, name, underlay)
    try:
        yield lab
    finally:
        # Whatever happened: wgmesh destroy first (the product's own way), then the lab's own sweep.
        lab.wgmesh("destroy", check_rc=None, timeout=300)
        lab.down_all()
        left = lab_leftovers(name)
        assert not left, f"lab left behind: {left}"
