"""The route-table switch of an HA gateway on AWS: a small EC2 Query API client.

When a gateway becomes its site's active one, the failover agent (agent.py, beside this file
on the host) points the site's private route table(s) at the gateway's own network interface:

    replace_routes(region="eu-west-1", route_table_ids=["rtb-0a1b"], destinations=["10.101.0.0/16"],
                   network_interface_id="eni-0c2d")   # -> ["rtb-0a1b:10.101.0.0/16"], or [] if nothing to do

It runs on the gateway itself, with the gateway's own python3 (>= 3.9) and nothing else: the
standard library only (SigV4 with hmac/hashlib, urllib.request, xml.etree), no wgmesh import.
Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN], else the instance
role through IMDSv2 (the Terraform stack gives both gateways a role allowed only
ec2:ReplaceRoute on the site's private route tables and ec2:DescribeRouteTables).

Short timeouts and no retries here: the agent must switch within a second, and it retries
itself at its next tick. No secret ever appears in an exception or a log line: messages name
the action, the HTTP status and AWS's error code and message (with any secret scrubbed out).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

API_VERSION = "2016-11-15"
ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "ec2"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
IMDS = "http://169.254.169.254"
IMDS_TOKEN_TTL = 21600
REFRESH_BEFORE = 300.0  # seconds: instance-role credentials are fetched again this long before they expire


class Ec2Error(Exception):
    """An EC2 or IMDS call that failed: the message names the action, the HTTP status and AWS's
    error code and message. Never holds a secret."""

    def __init__(self, message: str, *, action: str = "", status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.action = action
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


# ---------------------------------------------------------------- credentials

_cache: tuple[Credentials, float] | None = None  # instance-role credentials and when they expire (epoch s)
_cache_lock = threading.Lock()


def credentials(timeout: float = 1.0) -> Credentials:
    """AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN if set, else the instance role's
    through IMDSv2 (cached until REFRESH_BEFORE seconds before they expire)."""
    global _cache  # noqa: PLW0603 - one cache per process, behind the lock
    access, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        return Credentials(access, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
    with _cache_lock:
        if _cache is not None and time.time() < _cache[1] - REFRESH_BEFORE:
            return _cache[0]
        creds, expires = _instance_role(timeout)
        _cache = (creds, expires)
        return creds


# Errors after which cached instance-role credentials are fetched again at the next call.
_STALE_CREDENTIALS = frozenset({"AuthFailure", "ExpiredToken", "InvalidClientTokenId", "UnrecognizedClientException"})


def _forget(creds: Credentials) -> None:
    global _cache  # noqa: PLW0603 - see credentials()
    with _cache_lock:
        if _cache is not None and _cache[0] == creds:
            _cache = None


def _imds_base() -> str:
    return (os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or IMDS).rstrip("/")


# IMDS is link-local: never through a proxy from the environment.
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _imds(method: str, path: str, headers: Mapping[str, str], timeout: float) -> str:
    url = _imds_base() + path
    req = urllib.request.Request(url, method=method, headers=dict(headers), data=b"" if method == "PUT" else None)
    try:
        with _no_proxy.open(req, timeout=timeout) as resp:
            return str(resp.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        raise Ec2Error(f"credentials: the instance metadata service answered HTTP {exc.code} to {method} {path}",
                       action="credentials", status=exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise Ec2Error(f"credentials: no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and no answer from the instance "
                       f"metadata service {_imds_base()} within {timeout:g} s ({_reason(exc)})",
                       action="credentials") from None


def _instance_role(timeout: float) -> tuple[Credentials, float]:
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        raise Ec2Error("credentials: no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and AWS_EC2_METADATA_DISABLED is set",
                       action="credentials")
    token = _imds("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL)}, timeout)
    auth = {"X-aws-ec2-metadata-token": token}
    base = "/latest/meta-data/iam/security-credentials/"
    try:
        roles = _imds("GET", base, auth, timeout).split()
    except Ec2Error as exc:
        if exc.status == 404:
            raise Ec2Error("credentials: this instance has no IAM role (instance profile)",
                           action="credentials", status=404) from None
        raise
    if not roles:
        raise Ec2Error("credentials: this instance has no IAM role (instance profile)", action="credentials")
    text = _imds("GET", base + urllib.parse.quote(roles[0]), auth, timeout)
    return parse_role_credentials(text, roles[0])


def parse_role_credentials(text: str, role: str = "") -> tuple[Credentials, float]:
    """IMDS's iam/security-credentials/<role> document → (credentials, expiry as epoch seconds)."""
    try:
        doc = json.loads(text)
        if doc.get("Code", "Success") != "Success":
            raise Ec2Error(f"credentials: the instance metadata service has no credentials for role {role!r}: "
                           f"{doc.get('Code')}", action="credentials")
        creds = Credentials(str(doc["AccessKeyId"]), str(doc["SecretAccessKey"]), doc.get("Token") or None)
        expires = calendar.timegm(time.strptime(str(doc["Expiration"]), "%Y-%m-%dT%H:%M:%SZ"))
    except (ValueError, KeyError, TypeError, AttributeError):
        # Never the document itself in the message: it holds the secret key.
        raise Ec2Error(f"credentials: the instance metadata service's credentials for role {role!r} are not "
                       "the expected JSON document", action="credentials") from None
    return creds, float(expires)


# ---------------------------------------------------------------- SigV4 (pure)


def _uri_encode(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(params.items()))


def canonical_request(method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> str:
    """The canonical request of SigV4; `headers` are the ones to sign, `query` already canonical."""
    items = sorted((k.lower().strip(), " ".join(str(v).split())) for k, v in headers.items())
    return "\n".join([
        method,
        path or "/",
        query,
        "".join(f"{k}:{v}\n" for k, v in items),
        ";".join(k for k, _ in items),
        hashlib.sha256(body).hexdigest(),
    ])


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def authorization(creds: Credentials, region: str, service: str, amz_date: str, canonical: str) -> str:
    """The Authorization header for a canonical request (whose headers include host and x-amz-date)."""
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    signature = hmac.new(signing_key(creds.secret_key, amz_date[:8], region, service),
                         string_to_sign(amz_date, scope, canonical).encode(), hashlib.sha256).hexdigest()
    signed = canonical.split("\n")[-2]
    return f"{ALGORITHM} Credential={creds.access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"


def signed_request(endpoint: str, region: str, params: Mapping[str, str], creds: Credentials,
                   amz_date: str) -> urllib.request.Request:
    """A signed EC2 Query API POST (the parameters in the form-encoded body)."""
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise Ec2Error(f"endpoint {endpoint!r} is not an http(s) URL", action=params.get("Action", ""))
    host = url.netloc.rsplit("@", 1)[-1]
    if url.port == {"http": 80, "https": 443}[url.scheme]:
        host = host.rsplit(":", 1)[0]  # a default port is not part of the Host header urllib sends
    body = canonical_query(params).encode()
    headers = {"Content-Type": CONTENT_TYPE, "Host": host, "X-Amz-Date": amz_date}
    if creds.token:
        headers["X-Amz-Security-Token"] = creds.token
    path = url.path or "/"
    canonical = canonical_request("POST", path, "", headers, body)
    headers["Authorization"] = authorization(creds, region, SERVICE, amz_date, canonical)
    return urllib.request.Request(urllib.parse.urlunsplit((url.scheme, url.netloc, path, "", "")), data=body,
                                  headers=headers, method="POST")


# ---------------------------------------------------------------- responses (pure)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in elem if _local(c.tag) == name), None)


def _text(elem: ET.Element, name: str) -> str | None:
    c = _child(elem, name)
    return c.text.strip() if c is not None and c.text and c.text.strip() else None


def _items(elem: ET.Element | None, set_name: str) -> list[ET.Element]:
    s = _child(elem, set_name) if elem is not None else None
    return [c for c in s if _local(c.tag) == "item"] if s is not None else []


@dataclass(frozen=True)
class Route:
    destination: str  # a CIDR, IPv4 or IPv6
    ipv6: bool
    network_interface_id: str | None  # the route's target when it is a network interface
    state: str | None = None  # active / blackhole
    gateway_id: str | None = None  # "local": the VPC's own route, never replaced here


def parse_route_tables(body: bytes) -> dict[str, list[Route]]:
    """A DescribeRouteTables response → {route table id: its routes to a CIDR} (prefix-list
    routes are left out)."""
    root = ET.fromstring(body)
    tables: dict[str, list[Route]] = {}
    for t in _items(root, "routeTableSet"):
        rtb = _text(t, "routeTableId")
        if rtb is None:
            continue
        routes = tables.setdefault(rtb, [])
        for r in _items(t, "routeSet"):
            v4, v6 = _text(r, "destinationCidrBlock"), _text(r, "destinationIpv6CidrBlock")
            dest = v4 or v6
            if dest is not None:
                routes.append(Route(dest, v4 is None, _text(r, "networkInterfaceId"), _text(r, "state"),
                                    _text(r, "gatewayId")))
    return tables


def parse_error(body: bytes) -> tuple[str, str]:
    """AWS's error code and message from an error response ("", "" when it holds none)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "", ""
    for e in root.iter():
        if _local(e.tag) == "Error":
            return _text(e, "Code") or "", _text(e, "Message") or ""
    return "", ""


def _network(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr, strict=False))


def routes_to_replace(tables: Mapping[str, Sequence[Route]], destinations: Sequence[str],
                      network_interface_id: str) -> list[tuple[str, Route]]:
    """(route table id, route) for every route to one of `destinations` that does not already
    point at `network_interface_id`, in table then route order; never the VPC's local route."""
    wanted = {_network(d) for d in destinations}
    return [(rtb, r) for rtb, routes in tables.items() for r in routes
            if _network(r.destination) in wanted and r.network_interface_id != network_interface_id
            and r.gateway_id != "local"]


# ---------------------------------------------------------------- the API


def endpoint_for(region: str, endpoint: str | None = None) -> str:
    """The argument, else $AWS_ENDPOINT_URL_EC2, else $AWS_ENDPOINT_URL, else the region's endpoint."""
    return (endpoint or os.environ.get("AWS_ENDPOINT_URL_EC2") or os.environ.get("AWS_ENDPOINT_URL")
            or (f"https://ec2.{region}.amazonaws.com.cn" if region.startswith("cn-") else
                f"https://ec2.{region}.amazonaws.com"))


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(reason) or type(reason).__name__


def _scrub(text: str, creds: Credentials) -> str:
    for secret in (creds.secret_key, creds.token):
        if secret:
            text = text.replace(secret, "***")
    return text


def call(action: str, params: Mapping[str, str], *, region: str, endpoint: str | None = None,
         creds: Credentials | None = None, timeout: float = 2.0, what: str = "") -> bytes:
    """One EC2 Query API call; the response body, or Ec2Error. `what` names the call's
    subject in messages (e.g. the route table ids)."""
    url = endpoint_for(region, endpoint)
    creds = creds or credentials(min(timeout, 1.0))
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    req = signed_request(url, region, {"Action": action, "Version": API_VERSION, **params}, creds, amz_date)
    label = f"{action}({what})" if what else action
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        code, message = parse_error(exc.read())
        if code in _STALE_CREDENTIALS:
            _forget(creds)
        detail = f"{code}: {message}" if code or message else (exc.reason or "no error document")
        raise Ec2Error(_scrub(f"{label}: HTTP {exc.code} {detail}", creds), action=action, status=exc.code,
                       code=code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise Ec2Error(_scrub(f"{label}: no answer from {url} within {timeout:g} s ({_reason(exc)})", creds),
                       action=action) from None


def replace_routes(*, region: str, route_table_ids: Sequence[str], destinations: Sequence[str],
                   network_interface_id: str, endpoint: str | None = None, creds: Credentials | None = None,
                   timeout: float = 2.0) -> list[str]:
    """Point every route of these route tables whose destination is one of `destinations` at
    `network_interface_id` (ReplaceRoute, only where it points elsewhere: a blackhole route
    included). Returns "rtb-…:cidr" for each route changed (empty: nothing to do). A
    destination that none of the tables routes is left alone (nothing is created)."""
    if isinstance(route_table_ids, str) or isinstance(destinations, str):
        raise TypeError("route_table_ids and destinations are sequences of strings, not one string")
    ids = list(route_table_ids)
    if not ids:
        return []
    creds = creds or credentials(min(timeout, 1.0))

    def ec2(action: str, params: Mapping[str, str], what: str) -> bytes:
        return call(action, params, region=region, endpoint=endpoint, creds=creds, timeout=timeout, what=what)

    what = ", ".join(ids)
    body = ec2("DescribeRouteTables", {f"RouteTableId.{i}": rtb for i, rtb in enumerate(ids, 1)}, what)
    try:
        tables = parse_route_tables(body)
    except ET.ParseError:
        raise Ec2Error(f"DescribeRouteTables({what}): the answer is not an XML document",
                       action="DescribeRouteTables") from None
    missing = [rtb for rtb in ids if rtb not in tables]
    if missing:
        raise Ec2Error(f"DescribeRouteTables({what}): no route table {', '.join(missing)} in {region}",
                       action="DescribeRouteTables", code="InvalidRouteTableID.NotFound")
    changed = []
    for rtb, route in routes_to_replace(tables, destinations, network_interface_id):
        key = "DestinationIpv6CidrBlock" if route.ipv6 else "DestinationCidrBlock"
        ec2("ReplaceRoute", {"RouteTableId": rtb, key: route.destination, "NetworkInterfaceId": network_interface_id},
            f"{rtb}, {route.destination}")
        changed.append(f"{rtb}:{route.destination}")
    return changed
