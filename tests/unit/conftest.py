"""Fixtures shared by the command tests on the fake host pool (tests/fakes.py)."""

import pytest

from tests.fakes import fake_mesh, pushed_mesh


@pytest.fixture
def mesh(tmp_path):
    """Three hand-added peers a, b, c with SSH access; nothing pushed yet."""
    return fake_mesh(tmp_path)


@pytest.fixture
def pushed(tmp_path):
    """The same mesh after a first push: every host runs its config."""
    return pushed_mesh(tmp_path)
