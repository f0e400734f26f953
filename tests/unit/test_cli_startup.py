"""What the CLI loads before a command's work: only what that command needs (the time it takes
is measured in bench/, case "startup"; here, only which modules are loaded)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import wgmesh.commands
from wgmesh.cli import output

PROBE = """
import sys
sys.argv = ["wgmesh", *sys.argv[1:]]
from wgmesh.__main__ import main
try:
    main()
except SystemExit:
    pass
loaded = sorted(sys.modules)
import json
sys.stderr.write("\\nMODULES " + json.dumps(loaded))
"""

# Never needed to show help or to render configs: each costs start-up time (Pydantic: ~0.09 s).
HEAVY = ("pydantic", "concurrent.futures", "paramiko", "python_terraform", "cryptography", "rich.table",
         "rich.progress", "wgmesh.commands.push", "wgmesh.commands.up", "wgmesh.hosts", "wgmesh.adapters")


def loaded_by(*args: str, env: dict[str, str] | None = None) -> set[str]:
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=60)
    return set(json.loads(r.stderr.rsplit("MODULES ", 1)[1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(HEAVY))


def test_help_loads_no_command_and_no_rich():
    mods = loaded_by("genconfig", "--help")
    assert not heavy(mods)
    assert not [m for m in mods if m.startswith(("rich", "wgmesh.commands", "wgmesh.model", "wgmesh.workspace"))]


def test_genconfig_loads_what_it_renders_with(tmp_path):
    import os

    env = dict(os.environ, WGMESH_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "wgmesh", "addpeer", "a", "--endpoint", "192.0.2.1",
                        "--allowedips", "10.1.0.0/24"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    mods = loaded_by("genconfig", env=env)
    assert "wgmesh.render" in mods
    assert not heavy(mods)
    assert not [m for m in mods if m.startswith("rich")]  # its one line needs no Rich
    assert "wgmesh.remote.compiler" not in mods  # the hooks quote with shlex itself


def test_addpeer_shows_its_row_without_rich(tmp_path):
    import os

    env = dict(os.environ, WGMESH_DIR=str(tmp_path))
    for name in ("a", "b"):
        r = subprocess.run([sys.executable, "-m", "wgmesh", "addpeer", name, "--endpoint", "192.0.2.1"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
    mods = loaded_by("addpeer", "c", "--endpoint", "192.0.2.3", env=env)
    assert "wgmesh.inventory" in mods and "cryptography" in {m.split(".")[0] for m in mods}
    assert not [m for m in mods if m.startswith("rich")]  # one row: plain text


def test_every_result_has_a_view_and_every_view_a_result():
    results = set()
    for info in pkgutil.iter_modules(wgmesh.commands.__path__):
        mod = importlib.import_module(f"wgmesh.commands.{info.name}")
        results |= {f"{cls.__module__}.{cls.__qualname__}" for cls in vars(mod).values()
                    if isinstance(cls, type) and cls.__module__ == mod.__name__ and cls.__name__.endswith("Result")}
    assert results == set(output.VIEWS)
