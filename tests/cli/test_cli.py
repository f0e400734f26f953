"""CLI contract: options, exit codes, --json shapes, and "bad input changes nothing"."""

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wgmesh import __version__
from wgmesh.cli import app
from wgmesh.workspace import RunLock, Workspace, default_stacks_dir

runner = CliRunner()


def run(tmp_path, *args, env=None):
    e = {"WGMESH_DIR": str(tmp_path), "COLUMNS": "200"}
    e.update(env or {})
    return runner.invoke(app, list(args), env=e)


def snapshot(root: Path) -> dict:
    snap = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        snap[str(p.relative_to(root))] = (stat.S_IMODE(st.st_mode), data)
    return snap


@pytest.fixture
def mesh(tmp_path):
    assert run(tmp_path, "addpeer", "a", "--endpoint", "203.0.113.1", "--allowedips", "10.1.0.0/24").exit_code == 0
    assert run(tmp_path, "addpeer", "b", "--endpoint", "203.0.113.2:51000", "--allowedips", "10.2.0.0/24",
               "--keepalive", "25").exit_code == 0
    return tmp_path


def test_version(tmp_path):
    r = run(tmp_path, "--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"wgmesh {__version__}"


def test_addpeer_shows_its_row_as_plain_text(mesh):
    r = run(mesh, "addpeer", "c", "--endpoint", "203.0.113.3", "--allowedips", "10.3.0.0/24",
            "--ssh", "ops@203.0.113.3")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "inventory lab: 3 peers, pool 10.200.0.0/16",
        "peer  address     endpoint           subnets      ssh              region  source",
        "c     10.200.0.3  203.0.113.3:51820  10.3.0.0/24  ops@203.0.113.3  -       manual",
    ]
    assert r.stderr == "added c (10.200.0.3); run 'wgmesh -i lab push' to apply it\n"


def test_python_dash_m(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "wgmesh", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and __version__ in r.stdout


BAD = [
    (["addpeer", "c", "--allowedips", "10.0.0.0/33"], "--allowedips", "10.0.0.0/33"),
    (["addpeer", "c", "--allowedips", "10.0.0.300/24"], "--allowedips", "10.0.0.300/24"),
    (["addpeer", "c", "--allowedips", "abc"], "--allowedips", "abc"),
    (["addpeer", "c", "--allowedips", ""], "--allowedips", "''"),
    (["addpeer", "c", "--allowedips", "10.8.0.5/24"], "--allowedips", "did you mean 10.8.0.0/24"),
    (["addpeer", "c", "--allowedips", "10.1.0.0/25"], "allowed_ips", "10.1.0.0/25"),
    (["addpeer", "c", "--allowedips", "0.0.0.0/0"], "subnets", "0.0.0.0/0"),
    (["addpeer", "c", "--allowedips", "203.0.113.0/24"], "allowed_ips", "endpoint 203.0.113.1"),
    (["addpeer", "A"], "name", "already exists"),
    (["addpeer", " a "], "name", "already exists"),
    (["addpeer", "../evil"], "name", "../evil"),
    (["addpeer", "x\ny"], "name", "x\\ny"),
    (["addpeer", ""], "name", "''"),
    (["addpeer", "c", "--endpoint", "1.2.3.4:0"], "--endpoint", "1.2.3.4:0"),
    (["addpeer", "c", "--endpoint", "h:65536"], "--endpoint", "h:65536"),
    (["addpeer", "c", "--endpoint", "2001:db8::1:51820"], "--endpoint", "bracketed"),
    (["addpeer", "c", "--endpoint", "1.2.3.4:5:6"], "--endpoint", "more than once"),
    (["addpeer", "c", "--egress-interface", "eth0;reboot"], "--egress-interface", "eth0;reboot"),
    (["addpeer", "c", "--egress-interface", "a-very-long-interface"], "--egress-interface", "1-15"),
    (["addpeer", "c", "--address", "10.200.0.1"], "address", "already used"),
    (["addpeer", "c", "--ssh", "nohost"], "--ssh", "USER@HOST"),
    (["addpeer", "c", "--ssh", "root@h", "--ssh-key", "/nonexistent"], "--ssh-key", "/nonexistent"),
    (["addpeer", "c", "--keepalive", "70000"], "--keepalive", "70000"),
    (["addpeer", "c", "--allowedips", "10.9.0.0/24", "--private-address", "10.8.0.1"], "--private-address",
     "'10.8.0.1': is not inside any subnet of the peer"),
    (["addpeer", "c", "--private-address", "10.9.0.1"], "--private-address", "not inside any subnet"),
    (["setpeer", "a", "--private-address", "10.9.0.1"], "--private-address", "10.9.0.1"),
    (["setpeer", "a", "--allowedips", "10.9.0.0/24", "--private-address", "10.1.0.5"], "--private-address",
     "10.1.0.5"),
    (["up", "--stack", "nosuch"], "--stack", "nosuch"),
    (["up", "--var", "nosuchvar=1"], "--var", "nosuchvar"),
    (["up", "--var", "novalue"], "--var", "KEY=VALUE"),
    (["up", "--pool", "10.1.0.0/16"], "--pool", "already have addresses in 10.200.0.0/16"),
    (["up", "--pool", "10.1.0.0/33"], "--pool", "10.1.0.0/33"),
    (["-i", "../x", "showpeers"], "--inventory", "../x"),
    (["-i", "nosuch", "push"], "--inventory", "nosuch"),
]


@pytest.mark.parametrize("args,field,value", BAD, ids=[" ".join(a[0]) for a in BAD])
def test_bad_input_exit_2_and_nothing_changed(mesh, args, field, value):
    before = snapshot(mesh)
    r = run(mesh, *args)
    assert r.exit_code == 2, r.output
    msg = r.stderr
    assert field in msg and value in msg, msg
    assert snapshot(mesh) == before


def test_showpeers_json_public_only(mesh):
    r = run(mesh, "showpeers", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert list(doc["peers"]) == ["a", "b"]
    assert doc["peers"]["b"]["endpoint"] == "203.0.113.2:51000"
    assert doc["peers"]["b"]["keepalive"] == 25
    assert doc["mesh"]["pool"] == "10.200.0.0/16"
    keys = json.loads((mesh / ".wgmesh/lab/keys/keystore.json").read_text())
    for kp in keys["peers"].values():
        assert kp["private_key"] not in r.stdout


def test_genconfig_writes_0600_and_removes_stale(mesh):
    r = run(mesh, "genconfig", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["written"] == ["a", "b"]
    out = mesh / "output/lab"
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert "PrivateKey" not in r.stdout
    # unchanged on a second run, and a removed peer's file goes away
    assert json.loads(run(mesh, "genconfig", "--json").stdout)["unchanged"] == ["a", "b"]
    inv = json.loads((mesh / "inventories/lab.json").read_text())
    del inv["peers"]["b"]
    (mesh / "inventories/lab.json").write_text(json.dumps(inv))
    doc = json.loads(run(mesh, "genconfig", "--json").stdout)
    assert doc["removed"] == ["b"] and not (out / "b.conf").exists()


def test_keys_made_once(mesh):
    store = mesh / ".wgmesh/lab/keys/keystore.json"
    before = json.loads(store.read_text())["peers"]
    assert run(mesh, "genconfig").exit_code == 0
    assert run(mesh, "addpeer", "c").exit_code == 0
    after = json.loads(store.read_text())["peers"]
    assert {k: after[k] for k in before} == before and "c" in after


def test_lock_held_exit_3(mesh):
    ws = Workspace(root=mesh, name="lab", stacks_dir=default_stacks_dir())
    with RunLock(ws, "test holder"):
        r = run(mesh, "addpeer", "c")
    assert r.exit_code == 3
    assert f"pid {os.getpid()}" in r.stderr and "test holder" in r.stderr
    assert run(mesh, "addpeer", "c").exit_code == 0  # released


def test_push_unreachable_host_exit_4(mesh):
    # A closed port on loopback: connection refused, reported per host.
    assert run(mesh, "addpeer", "c", "--ssh", "root@127.0.0.1:1").exit_code == 0
    r = run(mesh, "push", "--json")
    assert r.exit_code == 4, r.output
    doc = json.loads(r.stdout)
    assert doc["failed"] == ["c"] and "unreachable" in doc["hosts"]["c"]["detail"]
    assert doc["hosts"]["a"]["action"] == "skipped"  # no SSH access: config stays in output/


def test_terraform_failure_exit_5(tmp_path):
    stacks = tmp_path / "stacks"
    (stacks / "broken").mkdir(parents=True)
    (stacks / "broken" / "main.tf").write_text(
        'resource "terraform_data" "x" {\n  provisioner "local-exec" {\n'
        '    command = "echo boom-from-stack >&2; exit 3"\n  }\n}\n'
        'output "peers" {\n  value = {}\n}\n'
    )
    proj = tmp_path / "proj"
    proj.mkdir()
    r = run(proj, "up", "--stack", "broken", env={"WGMESH_STACKS": str(stacks)})
    assert r.exit_code == 5, r.output
    assert "terraform apply failed" in r.stderr and "boom-from-stack" in r.stderr


def _keyfile(tmp_path, text, name="k"):
    f = tmp_path / name
    f.write_text(text + "\n")
    f.chmod(0o600)
    return str(f)


def test_import_private_key(mesh, tmp_path_factory):
    from wgmesh import keys as keymod

    kp = keymod.generate_keypair()
    d = tmp_path_factory.mktemp("keys")
    r = run(mesh, "addpeer", "c", "--private-key-file", _keyfile(d, kp.private), "--public-key", kp.public)
    assert r.exit_code == 0, r.output
    store = json.loads((mesh / ".wgmesh/lab/keys/keystore.json").read_text())
    assert store["peers"]["c"] == {"private_key": kp.private, "public_key": kp.public}
    assert kp.private not in r.output


@pytest.mark.parametrize("case", ["short", "noncanonical", "garbage", "mismatch", "pub-only", "duplicate"])
def test_bad_keys_exit_2_nothing_changed(mesh, tmp_path_factory, case):
    import base64

    from wgmesh import keys as keymod

    d = tmp_path_factory.mktemp("keys")
    kp, other = keymod.generate_keypair(), keymod.generate_keypair()
    raw = base64.b64decode(kp.private)
    noncanon = kp.private[:-2] + chr(ord(kp.private[-2]) ^ 1) + "="  # padding bits set: not canonical
    args = {
        "short": ["--private-key-file", _keyfile(d, base64.b64encode(raw[:31]).decode())],
        "noncanonical": ["--private-key-file", _keyfile(d, noncanon)],
        "garbage": ["--private-key-file", _keyfile(d, "not a key at all")],
        "mismatch": ["--private-key-file", _keyfile(d, kp.private), "--public-key", other.public],
        "pub-only": ["--public-key", kp.public],
        "duplicate": ["--private-key-file", _keyfile(d, json.loads(
            (mesh / ".wgmesh/lab/keys/keystore.json").read_text())["peers"]["a"]["private_key"])],
    }[case]
    before = snapshot(mesh)
    r = run(mesh, "addpeer", "c", *args)
    assert r.exit_code == 2, r.output
    assert "--private-key-file" in r.stderr or "--public-key" in r.stderr
    assert kp.private not in r.output and kp.private[:20] not in r.stderr
    assert snapshot(mesh) == before


def test_loose_keystore_refused_exit_2(mesh):
    (mesh / ".wgmesh/lab/keys/keystore.json").chmod(0o644)
    before = snapshot(mesh)
    r = run(mesh, "genconfig")
    assert r.exit_code == 2 and "refusing" in r.stderr and "chmod 0600" in r.stderr
    assert snapshot(mesh) == before


def test_pool_too_small_refused_before_terraform_applies(tmp_path):
    """A /29 holds 6 peers: 7 planned lab sites are refused after `terraform plan`, before anything exists."""
    r = run(tmp_path, "-i", "cap", "up", "--pool", "10.9.0.0/29", "--var", "name=cap",
            "--var", "underlay=198.19.0.0/16", "--var", "sites=7")
    assert r.exit_code == 2, r.output
    assert "mesh.pool" in r.stderr and "10.9.0.0/29" in r.stderr and "too small" in r.stderr
    import subprocess

    assert "wgm-cap" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not (tmp_path / "inventories/cap.json").exists()
    state = tmp_path / ".wgmesh/cap/terraform/terraform.tfstate"
    assert not state.exists() or not json.loads(state.read_text()).get("resources")


INJECTIONS = ["10.9.0.0/24\n[Peer]", "eth0$(reboot)", "a;b", "x\nPostUp = rm -rf /", "`id`", "10.9.0.0/24 #",
              "fd00::%$(reboot)/64", "fe80::1%x\n[Interface]\nPreUp = reboot", "[fe80::1%eth0]:51820"]
OPTIONS = ["--allowedips", "--endpoint", "--egress-interface", "--ssh", "--private-address", "--host-key",
           "--address"]


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("payload", INJECTIONS)
def test_no_raw_text_reaches_the_config(mesh, option, payload):
    """Shell metacharacters and newlines are refused in every value that could reach PostUp or the INI."""
    before = snapshot(mesh)
    r = run(mesh, "addpeer", "c", option, payload)
    assert r.exit_code == 2, (option, payload, r.output)
    assert snapshot(mesh) == before


def test_import_terraform_outputs_document(tmp_path):
    from tests.conftest import lab_outputs

    doc = tmp_path / "out.json"
    doc.write_text(json.dumps({"peers": {"sensitive": False, "type": "x", "value": lab_outputs(3)}}))
    proj = tmp_path / "p"
    proj.mkdir()
    r = run(proj, "import", str(doc), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"peers": 3, "new_keys": 3}
    peers = json.loads(run(proj, "showpeers", "--json").stdout)["peers"]
    assert sorted(peers) == ["site1", "site2", "site3"] and peers["site1"]["source"] == "terraform"
    assert json.loads(run(proj, "import", str(doc), "--json").stdout)["new_keys"] == 0  # re-run: no new keys
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    before = snapshot(proj)
    r = run(proj, "import", str(bad))
    assert r.exit_code == 2 and "not JSON" in r.stderr and snapshot(proj) == before


@pytest.mark.parametrize("args", [
    ["addpeer", "../evil"], ["addpeer", "a", "--allowedips", "10.0.0.5/24"], ["addpeer", "a", "--endpoint", "h:0"],
    ["import", "/nonexistent.json"], ["destroy"], ["push"], ["genconfig"], ["up", "--stack", "nosuch"],
])
def test_bad_input_in_a_new_project_creates_nothing(tmp_path, args):
    r = run(tmp_path, *args)
    assert r.exit_code == 2, r.output
    assert list(tmp_path.iterdir()) == []  # not even .wgmesh/ or a lock file


def test_up_refuses_a_pool_that_overlaps_planned_subnets(tmp_path):
    """The lab's sites are 10.10.N.0/24: a pool of 10.10.0.0/16 is refused on the plan, before apply."""
    import subprocess

    r = run(tmp_path, "-i", "ovl", "up", "--pool", "10.10.0.0/16", "--var", "name=ovl",
            "--var", "underlay=198.19.0.0/16")
    assert r.exit_code == 2, r.output
    assert "overlaps the mesh pool 10.10.0.0/16" in r.stderr
    assert "wgm-ovl" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    state = tmp_path / ".wgmesh/ovl/terraform/terraform.tfstate"
    assert not state.exists() or not json.loads(state.read_text()).get("resources")


def test_addpeer_refuses_an_endpoint_that_does_not_resolve(mesh):
    before = snapshot(mesh)
    r = run(mesh, "addpeer", "ghost", "--endpoint", "no-such-host.invalid:51820")
    assert r.exit_code == 2 and "--endpoint" in r.stderr and "no-such-host.invalid" in r.stderr
    assert "does not resolve" in r.stderr and "--allow-unresolved" in r.stderr
    assert snapshot(mesh) == before
    r = run(mesh, "addpeer", "ghost", "--endpoint", "no-such-host.invalid:51820", "--allow-unresolved")
    assert r.exit_code == 0, r.stderr


def test_help_shows_defaults_and_no_types_on_flags(tmp_path):
    """Help is plain text: "[default: ...]" in a help string is shown, not eaten as markup, and
    flags show no value type ("<bool>") as if they took one."""
    up = run(tmp_path, "up", "--help")
    top = run(tmp_path, "--help")
    assert up.exit_code == 0 and top.exit_code == 0
    text = " ".join(up.stdout.split())
    assert "Terraform stack in terraform/ [default: the inventory's, else lab]." in text, text
    assert "[default: 10.200.0.0/16]" in text, text
    assert "<bool>" not in up.stdout + top.stdout
    assert "--no-verify Skip" in text and "--json Print" in text
    assert "[default: .]" in " ".join(top.stdout.split())


def test_default_stacks_dir_of_an_installed_wheel(tmp_path, monkeypatch):
    """Without a checkout beside the package, the stacks come from <prefix>/share/wgmesh/terraform."""
    from wgmesh import workspace

    installed = tmp_path / "venv" / "share" / "wgmesh" / "terraform"
    (installed / "lab").mkdir(parents=True)
    (installed / "lab" / "main.tf").write_text("")
    monkeypatch.delenv("WGMESH_STACKS", raising=False)
    monkeypatch.setattr(workspace, "PACKAGE_DIR", tmp_path / "site-packages" / "wgmesh")
    monkeypatch.setattr(workspace.sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(workspace.sysconfig, "get_path", lambda name: str(tmp_path / "venv"))
    assert workspace.default_stacks_dir() == installed
    monkeypatch.setenv("WGMESH_STACKS", str(tmp_path / "mine"))
    assert workspace.default_stacks_dir() == tmp_path / "mine"


def test_a_wheel_carries_the_terraform_stacks(tmp_path):
    """`pip install .` of a wheel finds the stacks: built from a copy of the sources (the build
    writes build/ and *.egg-info beside them), installed without dependencies by the pip of a new
    venv (finding the stacks needs none; the test's own pip would touch the test's environment),
    and asked where they are."""
    import shutil
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parents[2]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo / name, src / name)
    junk = shutil.ignore_patterns("__pycache__", ".terraform*", "*.tfstate*", "lab-state", "*.tfplan")
    for name in ("wgmesh", "terraform"):
        shutil.copytree(repo / name, src / name, ignore=junk)
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = wheels.glob("wgmesh-*.whl")
    with zipfile.ZipFile(wheel) as z:
        modes = {i.filename.split(".data/data/", 1)[1]: i.external_attr >> 16 for i in z.infolist()
                 if ".data/data/" in i.filename}
    tracked = sorted(str(p.relative_to(repo)) for p in (repo / "terraform").glob("*/*")
                     if p.suffix in (".tf", ".json", ".md") or p.name == "labctl")
    assert sorted(modes) == [f"share/wgmesh/{t}" for t in tracked]
    assert modes["share/wgmesh/terraform/lab/labctl"] & 0o111  # still executable
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    probe = "from wgmesh.workspace import default_stacks_dir as d; from wgmesh.stacks import load_stack; " \
            "print(d()); print(load_stack(d(), 'lab').directory)"
    env = {k: v for k, v in os.environ.items() if k not in ("WGMESH_STACKS", "PYTHONPATH")}
    r = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(venv / "share/wgmesh/terraform"), str(venv / "share/wgmesh/terraform/lab")]


def test_dual_stack_from_the_command_line(tmp_path):
    """An IPv6 subnet makes the mesh dual stack (an IPv6 pool, an IPv6 tunnel address for every
    peer); --address6 must be IPv6; --pool6 must be an IPv6 network; both named when refused."""
    assert run(tmp_path, "addpeer", "a", "--endpoint", "198.51.100.1", "--allowedips", "10.1.0.0/24",
               "--allowedips", "fd00:1::/64", "--private-address6", "fd00:1::1").exit_code == 0
    doc = json.loads(run(tmp_path, "showpeers", "--json").stdout)
    pool6 = doc["mesh"]["pool6"]
    assert pool6.endswith("::/64") and doc["peers"]["a"]["address6"].startswith(pool6[:8])
    before = snapshot(tmp_path)
    r = run(tmp_path, "addpeer", "b", "--endpoint", "198.51.100.2", "--address6", "10.9.9.9")
    assert r.exit_code == 2 and "--address6" in r.stderr and "10.9.9.9" in r.stderr
    r = run(tmp_path, "up", "--pool6", "10.99.0.0/16")
    assert r.exit_code == 2 and "--pool6" in r.stderr and "10.99.0.0/16" in r.stderr
    assert snapshot(tmp_path) == before
