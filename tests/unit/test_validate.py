import pytest

from wgmesh import validate as v
from wgmesh.errors import BadInput


@pytest.mark.parametrize("value", ["10.0.0.0/33", "10.0.0.300/24", "abc", "", "10.0.0.0", None, "::/129"])
def test_network_refuses_malformed(value):
    with pytest.raises(BadInput) as e:
        v.network("--allowedips", value)
    assert e.value.field == "--allowedips"
    assert repr(value) in str(e.value)


def test_network_host_bits_suggests_normal_form():
    with pytest.raises(BadInput) as e:
        v.network("--allowedips", "10.8.0.5/24")
    assert "host bits" in e.value.message
    assert e.value.hint == "did you mean 10.8.0.0/24?"


def test_network_normalises():
    assert str(v.network("f", "2001:DB8::/32")) == "2001:db8::/32"


@pytest.mark.parametrize("value", ["../evil", "a\nb", "", "A", "-a", "a-", "x" * 64, "a b", "a_b"])
def test_name_refuses(value):
    with pytest.raises(BadInput):
        v.name("name", value)


@pytest.mark.parametrize("value", ["a", "site-1", "x" * 63, "0"])
def test_name_accepts(value):
    assert v.name("name", value) == value


@pytest.mark.parametrize(
    "value,expected",
    [
        ("203.0.113.7", ("203.0.113.7", 51820)),
        ("203.0.113.7:4000", ("203.0.113.7", 4000)),
        ("[2001:db8::1]:51820", ("2001:db8::1", 51820)),
        ("[2001:db8::1]", ("2001:db8::1", 51820)),
        ("2001:db8::1", ("2001:db8::1", 51820)),
        ("vpn.example.com:1", ("vpn.example.com", 1)),
    ],
)
def test_host_port_accepts(value, expected):
    assert v.host_port("--endpoint", value, 51820) == expected


@pytest.mark.parametrize(
    "value", ["1.2.3.4:0", "h:65536", "2001:db8::1:51820", "1.2.3.4:5:6", "[1.2.3.4]:5", "[::1", "a b", "", " x"]
)
def test_host_port_refuses(value):
    with pytest.raises(BadInput) as e:
        v.host_port("--endpoint", value, 51820)
    assert repr(value) in str(e.value)


@pytest.mark.parametrize("value", ["eth0", "ens5", "wg_0", "a.b-c=d+e", "x" * 15])
def test_interface_accepts(value):
    assert v.interface_name("i", value) == value


@pytest.mark.parametrize("value", ["x" * 16, "eth0;reboot", "eth 0", "", "a\n", "$(id)", "`id`"])
def test_interface_refuses(value):
    with pytest.raises(BadInput):
        v.interface_name("--egress-interface", value)


def test_ssh_target():
    assert v.ssh_target("--ssh", "root@198.18.9.20") == ("root", "198.18.9.20", 22)
    assert v.ssh_target("--ssh", "ubuntu@[2001:db8::5]:2222") == ("ubuntu", "2001:db8::5", 2222)
    for bad in ("198.18.9.20", "r;oot@h", "root@", "root@h:0"):
        with pytest.raises(BadInput):
            v.ssh_target("--ssh", bad)


def test_keepalive():
    assert v.keepalive("k", 25) == 25
    assert v.keepalive("k", 0) is None
    for bad in (-1, 65536, "x"):
        with pytest.raises(BadInput):
            v.keepalive("k", bad)


def test_host_key_drops_comment_and_refuses_garbage():
    assert v.host_key("k", "ssh-ed25519 AAAAC3Nz root@x") == "ssh-ed25519 AAAAC3Nz"
    with pytest.raises(BadInput):
        v.host_key("k", "ssh-ed25519 AAAA\nssh-rsa BBBB")


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 51820.5])
def test_ports_and_keepalives_from_json_must_be_whole_numbers(value):
    """json.loads accepts Infinity and NaN: an inventory file can hold them."""
    with pytest.raises(BadInput, match="port must be a whole number"):
        v.port("mesh.listen_port", value)
    with pytest.raises(BadInput, match="seconds from 1 to 65535"):
        v.keepalive("peers.a.keepalive", value)
