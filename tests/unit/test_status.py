import subprocess

import pytest

from tests.conftest import fixed_keys
from wgmesh import status as S
from wgmesh.remote.compiler import compile_program
from wgmesh.remote.plan import dump_program, ping_program

DUMP = (
    "(hidden)\tPUBA=\t51820\toff\n"
    "PUBB=\t(hidden)\t198.18.1.12:51820\t10.200.0.2/32,10.10.2.0/24\t1000\t1200\t3400\toff\n"
    "PUBC=\t(hidden)\t(none)\t10.200.0.3/32\t0\t0\t0\t25\n"
)


def test_parse_dump():
    d = S.parse_dump(DUMP)
    assert d.public_key == "PUBA=" and d.listen_port == 51820
    b, c = d.peers
    assert b.endpoint == "198.18.1.12:51820" and b.allowed_ips == ("10.200.0.2/32", "10.10.2.0/24")
    assert (b.latest_handshake, b.rx, b.tx, b.keepalive) == (1000, 1200, 3400, None)
    assert c.endpoint is None and c.keepalive == 25 and c.latest_handshake == 0


@pytest.mark.parametrize("bad", ["", "a\tb\n", "x\ty\tz\tw\nshort\tline\n", "x\tPUB\tnotaport\toff\n"])
def test_parse_dump_refuses(bad):
    with pytest.raises(ValueError):
        S.parse_dump(bad)


def test_dump_script_blanks_secrets(tmp_path):
    """The awk part hides the private key and the PSKs before output leaves the host."""
    fake = tmp_path / "wg"
    fake.write_text(
        "#!/bin/sh\nprintf 'PRIV=\\tPUB=\\t51820\\toff\\nP2=\\tPSK=\\t(none)\\t10.0.0.2/32\\t0\\t0\\t0\\toff\\n'\n"
    )
    fake.chmod(0o755)
    out = subprocess.run(["sh", "-c", compile_program(dump_program("wg0"))], env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
                         capture_output=True, text=True, check=True).stdout
    assert "PRIV=" not in out and "PSK=" not in out
    assert S.parse_dump(out).peers[0].public_key == "P2="


def test_matrix(lab_inventory):
    keys = fixed_keys(lab_inventory.names)
    pubs = {n: keys.public(n) for n in lab_inventory.names}
    def line(k, hs):
        return f"{k}\t(hidden)\t(none)\t10.0.0.0/32\t{hs}\t1\t2\toff"

    dumps = {
        "site1": S.parse_dump("\n".join(["x\ty\t1\toff", line(pubs["site2"], 990), line(pubs["site3"], 0)])),
        "site2": S.parse_dump("\n".join(["x\ty\t1\toff", line(pubs["site1"], 500)])),
        "site3": None,
    }
    links = {(lk.src, lk.dst): lk for lk in S.matrix(lab_inventory, pubs, dumps, now=1000)}
    assert links[("site1", "site2")].state == S.FRESH and links[("site1", "site2")].age == 10
    assert links[("site1", "site3")].state == S.NEVER
    assert links[("site2", "site1")].state == S.STALE
    assert links[("site2", "site3")].state == S.MISSING
    assert links[("site3", "site1")].state == S.UNKNOWN
    assert len(links) == 6


def test_unknown_keys():
    d = S.parse_dump(DUMP)
    assert S.unknown_keys({"b": "PUBB="}, d) == ["PUBC="]


def _isolated_path(tmp_path, *tools):
    """A PATH holding only fakes and these real tools: the scripts under test can reach no real
    ping or fping (nothing may be sent to addresses this test does not own)."""
    import shutil

    for tool in tools:
        (tmp_path / tool).symlink_to(shutil.which(tool))
    return str(tmp_path)


def test_ping_script_and_parse(tmp_path):
    fake = tmp_path / "ping"
    fake.write_text(
        "#!/bin/sh\nfor a; do t=$a; done\n"
        'case "$t" in 10.0.0.1) echo "64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.123 ms";; *) exit 1;; esac\n'
    )
    fake.chmod(0o755)
    script = compile_program(ping_program(["10.0.0.1", "10.0.0.2"], "wg0", attempts=2, wait=1))
    out = subprocess.run(["/bin/sh", "-c", script],
                         env={"PATH": _isolated_path(tmp_path, "sed", "awk")}, capture_output=True, text=True).stdout
    assert S.parse_pings(out) == {"10.0.0.1": 0.123, "10.0.0.2": None}


def test_matrix_marks_a_host_with_its_interface_down(lab_inventory):
    keys = fixed_keys(lab_inventory.names)
    pubs = {n: keys.public(n) for n in lab_inventory.names}
    links = S.matrix(lab_inventory, pubs, {"site1": None, "site2": None, "site3": None}, 0, down={"site1"})
    states = {(lk.src, lk.dst): lk.state for lk in links}
    assert states[("site1", "site2")] == S.DOWN and states[("site2", "site1")] == S.UNKNOWN


def test_graph_edge_health():
    from wgmesh.graph import edge_health

    def L(st):
        return S.Link("a", "b", st, 1, None, 0, 0)

    assert edge_health(L(S.FRESH), L(S.FRESH)) == "up"
    assert edge_health(L(S.FRESH), L(S.DOWN)) == "down"
    assert edge_health(L(S.FRESH), L(S.STALE)) == "stale"
    assert edge_health(L(S.UNKNOWN), None) == "unknown"
    assert edge_health(L(S.FRESH), L(S.UNKNOWN)) == "up"


def test_ping_script_with_fping(tmp_path):
    fake = tmp_path / "fping"
    fake.write_text(
        "#!/bin/sh\necho \"$*\" > " + str(tmp_path / "args") + "\n"
        "echo '10.0.0.1 is alive (0.123 ms)'\necho '10.0.0.2 is unreachable'\nexit 1\n"
    )
    fake.chmod(0o755)
    out = subprocess.run(["/bin/sh", "-c", compile_program(ping_program(["10.0.0.1", "10.0.0.2"], "wg0"))],
                         env={"PATH": _isolated_path(tmp_path, "awk")}, capture_output=True, text=True).stdout
    assert S.parse_pings(out) == {"10.0.0.1": 0.123, "10.0.0.2": None}
    assert (tmp_path / "args").read_text().split()[-2:] == ["10.0.0.1", "10.0.0.2"]
