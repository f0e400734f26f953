"""Parse and check every value that comes from a user or from Terraform.

Each function takes the name of the field it checks (for the message) and
the raw value, and returns a normalised value or raises BadInput. Nothing
here touches the disk or the network.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from wgmesh.errors import BadInput
from wgmesh.model import RouteTable

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
IFACE_RE = re.compile(r"^[A-Za-z0-9_=+.-]{1,15}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
HOSTKEY_RE = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,3}$")


def name(field: str, value: object) -> str:
    """Peer and inventory names: [a-z0-9-], 1..63, no leading/trailing dash."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise BadInput(
            field,
            value,
            "must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
        )
    return value


_ADDR_CHARS = re.compile(r"[0-9A-Fa-f.:/]+")


def _plain(field: str, value: str, what: str) -> None:
    """Only the characters an address or CIDR is made of: ipaddress accepts IPv6 zone IDs
    ('fe80::1%anything', newlines and '$(...)' included) and keeps them in str()."""
    if not _ADDR_CHARS.fullmatch(value):
        raise BadInput(field, value, f"not a valid {what} (only digits, a-f, '.', ':' and '/'; no zone ID)")


def _dotted(text: str) -> int | None:
    """The integer of an IPv4 address written as ipaddress takes it, as four decimal octets
    (ASCII digits, 0-255, no leading zero): the form wgmesh writes, and most of what it reads.
    None for any other text. (An inventory holds thousands of addresses: this takes two thirds of
    ipaddress's time; `ip` and `network` hand every other text to ipaddress.)"""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    number = 0
    for part in parts:
        if not (0 < len(part) <= 3 and part.isascii() and part.isdigit()) or (part[0] == "0" and part != "0"):
            return None
        octet = int(part)
        if octet > 255:
            return None
        number = number << 8 | octet
    return number


_PREFIX_LENGTHS = frozenset(str(n) for n in range(33))  # an IPv4 prefix length as str() writes it


def ip(text: str) -> IPAddress:
    """ipaddress.ip_address(text) for a text (ValueError if it is no address)."""
    number = _dotted(text)
    return ipaddress.ip_address(text) if number is None else IPv4Address(number)


def _ip(text: str) -> IPAddress:
    """ipaddress.ip_address, but ValueError also for a zone ID (see _plain)."""
    if not _ADDR_CHARS.fullmatch(text):
        raise ValueError(text)
    return ip(text)


def address(field: str, value: object) -> IPAddress:
    if not isinstance(value, str) or not (text := value.strip()):
        raise BadInput(field, value, "an IP address is required")
    if (number := _dotted(text)) is not None:
        return IPv4Address(number)
    _plain(field, text, "IPv4 or IPv6 address")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise BadInput(field, value, "not a valid IPv4 or IPv6 address") from None


def network(field: str, value: object) -> IPNetwork:
    """A CIDR with no host bits set (10.8.0.0/24, not 10.8.0.5/24)."""
    if not isinstance(value, str) or not value.strip():
        raise BadInput(field, value, "a CIDR such as 10.8.0.0/24 is required")
    text = value.strip()
    head, _, length = text.partition("/")
    if length in _PREFIX_LENGTHS and (first := _dotted(head)) is not None and not first & (0xFFFFFFFF >> int(length)):
        return IPv4Network((first, int(length)))  # what ip_network(text, strict=True) makes of it (see _dotted)
    if "/" not in text:
        raise BadInput(field, value, "a prefix length is required, e.g. 10.8.0.0/24")
    _plain(field, text, "CIDR")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise BadInput(field, value, f"not a valid CIDR ({exc})") from None
        raise BadInput(field, value, "host bits are set", hint=f"did you mean {loose}?") from None


def _whole(value: object) -> int:
    """int(value) for what a user or a JSON document can hold; TypeError for anything else.
    A float counts only when it is whole (JSON allows 51820.5, Infinity and NaN)."""
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    if isinstance(value, str | int | float):
        return int(value)
    raise TypeError(type(value).__name__)


def port(field: str, value: object, allow_zero: bool = False) -> int:
    try:
        number = _whole(value) if not isinstance(value, bool) else -1
    except (TypeError, ValueError):
        raise BadInput(field, value, "a port must be a whole number from 1 to 65535") from None
    if isinstance(value, str) and not value.strip().isdigit():
        raise BadInput(field, value, "a port must be a whole number from 1 to 65535")
    low = 0 if allow_zero else 1
    if not low <= number <= 65535:
        raise BadInput(field, value, "a port must be a whole number from 1 to 65535")
    return number


def mtu(field: str, value: object) -> int:
    """An interface MTU: 1280 (the least IPv6 allows) to 9000 (jumbo frames)."""
    try:
        number = _whole(value) if not isinstance(value, bool) else -1
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, str) and not value.strip().isdigit():
        number = -1
    if not 1280 <= number <= 9000:
        raise BadInput(field, value, "an MTU is a whole number from 1280 to 9000")
    return number


def keepalive(field: str, value: object) -> int | None:
    if value in (None, "", 0, "0"):  # a tuple, not a set: value may be unhashable
        return None
    try:
        number = _whole(value)
    except (TypeError, ValueError):
        raise BadInput(field, value, "seconds from 1 to 65535 (0 or empty turns it off)") from None
    if not 1 <= number <= 65535:
        raise BadInput(field, value, "seconds from 1 to 65535 (0 or empty turns it off)")
    return number


def host(field: str, value: object) -> str:
    """An IP address or a DNS name (no port, no brackets)."""
    if not isinstance(value, str) or not value:
        raise BadInput(field, value, "a host name or IP address is required")
    if _dotted(value) is not None:
        return value  # an IPv4 address, written as str() of it writes it
    try:
        return str(_ip(value))
    except ValueError:
        pass
    if not HOSTNAME_RE.fullmatch(value) or value.replace(".", "").isdigit():
        raise BadInput(field, value, "not a valid host name or IP address")
    return value.lower()


def host_port(field: str, value: object, default_port: int | None) -> tuple[str, int | None]:
    """HOST, HOST:PORT, [V6]:PORT or a bare IPv6 address (no port).

    A bare IPv6 address followed by what looks like a port is refused: write [addr]:port.
    """
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise BadInput(field, value, "HOST[:PORT] is required, e.g. 203.0.113.7:51820 or [2001:db8::1]:51820")
    text = value
    if text.startswith("["):
        return _bracketed(field, text, default_port)
    if text.count(":") > 1:
        first = text.split(":", 1)[0]
        if any(c not in "0123456789abcdefABCDEF" for c in first):
            raise BadInput(field, value, "the port is given more than once")
        try:
            addr = _ip(text)
        except ValueError:
            raise BadInput(
                field, value, "an IPv6 endpoint with a port must be bracketed, e.g. [2001:db8::1]:51820"
            ) from None
        return str(addr), default_port
    if ":" in text:
        h, p = text.split(":", 1)
        return host(field, h), _port_of(field, value, p)
    return host(field, text), default_port


def _bracketed(field: str, value: str, default_port: int | None) -> tuple[str, int | None]:
    """[V6] or [V6]:PORT."""
    close = value.find("]")
    if close < 0:
        raise BadInput(field, value, "unclosed '[' around an IPv6 address")
    inner, rest = value[1:close], value[close + 1 :]
    try:
        addr = _ip(inner)
    except ValueError:
        raise BadInput(field, value, "only an IPv6 address may stand between [ and ]") from None
    if addr.version != 6:
        raise BadInput(field, value, "only an IPv6 address may stand between [ and ]")
    if rest == "":
        return str(addr), default_port
    if not rest.startswith(":") or ":" in rest[1:]:
        raise BadInput(field, value, "expected [IPv6]:PORT with one port")
    return str(addr), _port_of(field, value, rest[1:])


def _port_of(field: str, whole: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise BadInput(field, whole, "the port must be a whole number from 1 to 65535, given once")
    return int(text)


def interface_name(field: str, value: object) -> str:
    if not isinstance(value, str) or not IFACE_RE.fullmatch(value):
        raise BadInput(field, value, "an interface name is 1-15 characters of A-Z a-z 0-9 _ = + . -")
    return value


def egress(field: str, value: object) -> str:
    if value in (None, "", "detect"):
        return "detect"
    return interface_name(field, value)


def ssh_user(field: str, value: object) -> str:
    if not isinstance(value, str) or not USER_RE.fullmatch(value):
        raise BadInput(field, value, "not a valid user name")
    return value


def ssh_target(field: str, value: object) -> tuple[str, str, int]:
    """USER@HOST[:PORT] (HOST may be [IPv6])."""
    if not isinstance(value, str) or "@" not in value:
        raise BadInput(field, value, "expected USER@HOST[:PORT], e.g. root@203.0.113.7")
    user, rest = value.split("@", 1)
    h, p = host_port(field, rest, 22)
    return ssh_user(field, user), h, p or 22


def host_key(field: str, value: object) -> str:
    """An OpenSSH public host key, 'type base64' (a trailing comment is dropped)."""
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        raise BadInput(field, value, "expected one OpenSSH public key line")
    parts = value.strip().split()
    if len(parts) < 2 or not HOSTKEY_RE.fullmatch(f"{parts[0]} {parts[1]}"):
        raise BadInput(field, value, "expected an OpenSSH public key line such as 'ssh-ed25519 AAAA...'")
    return f"{parts[0]} {parts[1]}"


def text_label(field: str, value: object, limit: int = 64) -> str:
    """Free labels (region, cloud): shown to people only, never rendered into configs."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) > limit or not re.fullmatch(r"[A-Za-z0-9_.:/-]*", value):
        raise BadInput(field, value, f"up to {limit} characters of A-Z a-z 0-9 _ . : / -")
    return value


AWS_ID_RE = {
    "route_table_ids": re.compile(r"^rtb-[0-9a-f]{1,32}$"),
    "network_interface_id": re.compile(r"^eni-[0-9a-f]{1,32}$"),
}
REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")


def _aws_id(field: str, value: object, kind: str) -> str:
    if not isinstance(value, str) or not AWS_ID_RE[kind].fullmatch(value):
        example = "rtb-0abc…" if kind == "route_table_ids" else "eni-0abc…"
        raise BadInput(field, value, f"expected an AWS id such as {example}")
    return value


def route_table(field: str, value: object) -> RouteTable | None:
    """An HA gateway's route table: {kind: "vip", address: A.B.C.D/P, interface: IFACE} or
    {kind: "aws", region, route_table_ids: [rtb-…], network_interface_id: eni-…}; null: none."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadInput(field, value, "must be an object with a kind (\"vip\" or \"aws\")")
    kind = value.get("kind")
    if kind == "vip":
        addr = value.get("address")
        if not isinstance(addr, str) or "/" not in addr:
            raise BadInput(f"{field}.address", addr,
                           "expected the site's router address with its prefix length, e.g. 10.10.2.1/24")
        _plain(f"{field}.address", addr, "an address with its prefix length")
        try:
            iface = ipaddress.ip_interface(addr)
        except ValueError:
            raise BadInput(f"{field}.address", addr, "not an address with a prefix length") from None
        if iface.version != 4:
            raise BadInput(f"{field}.address", addr, "the virtual router address is IPv4 (gratuitous ARP)")
        lan = interface_name(f"{field}.interface", value.get("interface"))
        return RouteTable("vip", address=str(iface), interface=lan)
    if kind == "aws":
        region = value.get("region")
        if not isinstance(region, str) or not REGION_RE.fullmatch(region):
            raise BadInput(f"{field}.region", region, "expected an AWS region such as eu-west-1")
        ids = value.get("route_table_ids")
        if not isinstance(ids, list) or not ids:
            raise BadInput(f"{field}.route_table_ids", ids, "expected a list of route table ids")
        return RouteTable(
            "aws", region=region,
            route_table_ids=tuple(_aws_id(f"{field}.route_table_ids", i, "route_table_ids") for i in ids),
            network_interface_id=_aws_id(f"{field}.network_interface_id", value.get("network_interface_id"),
                                         "network_interface_id"),
        )
    raise BadInput(f"{field}.kind", kind, "must be \"vip\" or \"aws\"")
