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


# ---------------------------------------------------------------- the dotted-quad fast paths

OCTETS = ["0", "00", "01", "007", "1", "9", "10", "99", "100", "199", "200", "249", "250", "255", "256", "260",
          "300", "999", "1000", "", " 1", "1 ", "+1", "-1", "0x1", "1_0", "\u0661", "\u00b2", "a", "1e2"]
LENGTHS = ["0", "8", "08", "16", "24", "024", "30", "31", "32", "33", "", "-1", " 24", "1.5", "255.255.255.0"]


def _texts():
    import itertools
    import random

    rnd = random.Random(13)
    quads = [".".join(q) for q in itertools.product(OCTETS[:15], repeat=4) if rnd.random() < 0.02]
    odd = [".".join(rnd.choice(OCTETS) for _ in range(rnd.choice([3, 4, 4, 4, 5]))) for _ in range(3000)]
    return [*quads, *odd, "1.2.3.4", "255.255.255.255", "0.0.0.0", "::1", "fe80::1%eth0", "1.2.3.4%x", "1.2.3", "::"]


def test_ip_is_ipaddress():
    import ipaddress

    for text in _texts():
        try:
            want = ipaddress.ip_address(text)
        except ValueError:
            with pytest.raises(ValueError):
                v.ip(text)
            continue
        got = v.ip(text)
        assert got == want and type(got) is type(want) and str(got) == str(want), text


def test_address_host_and_network_decide_as_ipaddress_does():
    import ipaddress
    import itertools
    import random

    rnd = random.Random(7)
    for text in _texts():
        try:  # address(): ipaddress's verdict, after the zone-ID rule
            want = ipaddress.ip_address(text.strip()) if v._ADDR_CHARS.fullmatch(text.strip()) else None
        except ValueError:
            want = None
        if want is None or not text.strip():
            with pytest.raises(BadInput):
                v.address("f", text)
        else:
            assert v.address("f", text) == want
            if want.version == 4 and text == text.strip():
                assert v.host("f", text) == str(want)
        cidr = f"{text}/{rnd.choice(LENGTHS)}"
        try:
            net = ipaddress.ip_network(cidr.strip(), strict=True) if v._ADDR_CHARS.fullmatch(cidr.strip()) else None
        except ValueError:
            net = None
        if net is None:
            with pytest.raises(BadInput):
                v.network("f", cidr)
        else:
            got = v.network("f", cidr)
            assert got == net and type(got) is type(net) and str(got) == str(net), cidr
            assert list(itertools.islice(got.hosts(), 3)) == list(itertools.islice(net.hosts(), 3))


def test_network_of_every_prefix_length_is_ip_networks():
    import ipaddress

    for text in _texts():
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError:
            continue
        for length in range(33):
            net = ipaddress.ip_network(f"{addr}/{length}", strict=False)
            for cidr in (f"{net.network_address}/{length}", f" {net.network_address}/{length} "):
                got = v.network("f", cidr)
                assert got == net and str(got) == str(net) and got.prefixlen == length, cidr
                assert got.hostmask == net.hostmask and got.broadcast_address == net.broadcast_address


@pytest.mark.parametrize("cidr", ["10.8.0.5/24", "10.8.0.0/8", "255.255.255.255/31", "1.2.3.4/0"])
def test_network_with_host_bits_is_refused_as_before(cidr):
    with pytest.raises(BadInput) as e:
        v.network("--allowedips", cidr)
    assert "host bits are set" in e.value.message
    import ipaddress

    assert e.value.hint == f"did you mean {ipaddress.ip_network(cidr, strict=False)}?"
