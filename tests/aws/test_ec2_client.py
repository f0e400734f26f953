"""wgmesh/agent/ec2.py, the route switch of an HA gateway, without the emulator: SigV4 against
AWS's published test vectors and against botocore's signer, the parsing of EC2's XML, which
routes it replaces, where its credentials come from (a local stand-in for the instance metadata
service), and that no failure ever shows a secret. Its run against the emulator's route tables
is in test_aws_ha.py."""

from __future__ import annotations

import ast
import datetime
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from wgmesh.agent import ec2

EC2_PY = Path(ec2.__file__)
# AWS's Signature Version 4 test suite (get-vanilla, get-vanilla-query-order-key-case).
SUITE = ec2.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SUITE_HEADERS = {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}
SECRET = "s3cr3t/KEY+never-shown"
TOKEN = "T0KEN-never-shown"


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_EC2", "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(ec2, "_cache", None)


# ---------------------------------------------------------------- SigV4


def test_get_vanilla_from_the_aws_test_suite():
    canonical = ec2.canonical_request("GET", "/", "", SUITE_HEADERS, b"")
    assert canonical == ("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n"
                         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
    assert ec2.string_to_sign("20150830T123600Z", "20150830/us-east-1/service/aws4_request", canonical) == (
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
    assert ec2.authorization(SUITE, "us-east-1", "service", "20150830T123600Z", canonical) == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")


def test_get_vanilla_query_order_key_case_from_the_aws_test_suite():
    query = ec2.canonical_query({"Param2": "value2", "Param1": "value1"})
    assert query == "Param1=value1&Param2=value2"
    canonical = ec2.canonical_request("GET", "/", query, SUITE_HEADERS, b"")
    assert ec2.authorization(SUITE, "us-east-1", "service", "20150830T123600Z", canonical).endswith(
        "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")


@pytest.mark.parametrize("token", [None, TOKEN])
@pytest.mark.parametrize("endpoint", ["https://ec2.cn-north-1.amazonaws.com.cn", "http://127.0.0.1:5000"])
def test_an_ec2_request_is_signed_as_botocore_signs_it(token, endpoint, monkeypatch):
    creds = ec2.Credentials("AKIDEXAMPLE", SECRET, token)
    params = {"Action": "ReplaceRoute", "Version": ec2.API_VERSION, "RouteTableId": "rtb-0a1b2c",
              "DestinationCidrBlock": "10.101.0.0/16", "NetworkInterfaceId": "eni-0d4e5f"}
    req = ec2.signed_request(endpoint, "cn-north-1", params, creds, "20240102T030405Z")
    ours = dict(req.header_items())
    assert req.data == ec2.canonical_query(params).encode() and req.get_method() == "POST"
    # botocore, given the same request, time and credentials, must compute the same signature.
    boto = AWSRequest(method="POST", url=req.full_url, data=req.data,
                      headers={"Content-Type": ec2.CONTENT_TYPE, "X-Amz-Date": "20240102T030405Z"})
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: datetime.datetime(2024, 1, 2, 3, 4, 5))
    SigV4Auth(BotoCredentials("AKIDEXAMPLE", SECRET, token), "ec2", "cn-north-1").add_auth(boto)
    assert ours["Authorization"] == boto.headers["Authorization"]
    assert ours["Host"] == endpoint.split("//")[1].removesuffix(":443")
    assert ours.get("X-amz-security-token") == token
    assert SECRET not in repr(creds) and TOKEN not in repr(ec2.Credentials("a", SECRET, TOKEN))


# ---------------------------------------------------------------- EC2's XML

DESCRIBE = b"""<?xml version="1.0" encoding="UTF-8"?>
<DescribeRouteTablesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>6f570b0b-9c18-4b07-bdec-73740dcf861a</requestId>
  <routeTableSet>
    <item>
      <routeTableId>rtb-0a1b</routeTableId>
      <vpcId>vpc-1</vpcId>
      <routeSet>
        <item><destinationCidrBlock>10.100.0.0/16</destinationCidrBlock><gatewayId>local</gatewayId>
              <state>active</state><origin>CreateRouteTable</origin></item>
        <item><destinationCidrBlock>10.101.0.0/16</destinationCidrBlock><instanceId>i-a</instanceId>
              <instanceOwnerId>123456789012</instanceOwnerId><networkInterfaceId>eni-a</networkInterfaceId>
              <state>active</state><origin>CreateRoute</origin></item>
        <item><destinationCidrBlock>10.102.0.0/16</destinationCidrBlock><networkInterfaceId>eni-dead</networkInterfaceId>
              <state>blackhole</state><origin>CreateRoute</origin></item>
        <item><destinationIpv6CidrBlock>2001:db8:1::/56</destinationIpv6CidrBlock>
              <networkInterfaceId>eni-a</networkInterfaceId><state>active</state></item>
        <item><destinationPrefixListId>pl-1</destinationPrefixListId><gatewayId>vpce-1</gatewayId></item>
      </routeSet>
      <associationSet><item><routeTableAssociationId>rtbassoc-1</routeTableAssociationId></item></associationSet>
    </item>
    <item><routeTableId>rtb-0c2d</routeTableId><routeSet>
        <item><destinationCidrBlock>10.101.0.0/16</destinationCidrBlock><networkInterfaceId>eni-b</networkInterfaceId>
              <state>active</state></item></routeSet></item>
  </routeTableSet>
</DescribeRouteTablesResponse>"""


def test_describe_route_tables_is_parsed():
    tables = ec2.parse_route_tables(DESCRIBE)
    assert tables == {
        "rtb-0a1b": [
            ec2.Route("10.100.0.0/16", False, None, "active", "local"),
            ec2.Route("10.101.0.0/16", False, "eni-a", "active"),
            ec2.Route("10.102.0.0/16", False, "eni-dead", "blackhole"),
            ec2.Route("2001:db8:1::/56", True, "eni-a", "active"),
        ],
        "rtb-0c2d": [ec2.Route("10.101.0.0/16", False, "eni-b", "active")],
    }


def test_which_routes_are_replaced():
    tables = ec2.parse_route_tables(DESCRIBE)
    pick = [(t, r.destination) for t, r in ec2.routes_to_replace(
        tables, ["10.100.0.0/16", "10.101.0.0/16", "10.102.0.0/16", "2001:db8:1:0::/56", "10.9.0.0/16"], "eni-b")]
    # Not the VPC's local route, not a route already on eni-b; a blackhole route (a dead gateway) yes.
    assert pick == [("rtb-0a1b", "10.101.0.0/16"), ("rtb-0a1b", "10.102.0.0/16"), ("rtb-0a1b", "2001:db8:1::/56")]
    assert ec2.routes_to_replace(tables, ["10.101.0.0/16", "2001:db8:1::/56"], "eni-a") == [
        ("rtb-0c2d", ec2.Route("10.101.0.0/16", False, "eni-b", "active"))]
    assert ec2.routes_to_replace(tables, [], "eni-a") == []


def test_an_error_document_is_parsed():
    body = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>InvalidRouteTableID.NotFound'
            b"</Code><Message>The routeTable ID 'rtb-9' does not exist</Message></Error></Errors>"
            b"<RequestID>r-1</RequestID></Response>")
    assert ec2.parse_error(body) == ("InvalidRouteTableID.NotFound", "The routeTable ID 'rtb-9' does not exist")
    assert ec2.parse_error(b"<html>502</html>") == ("", "")
    assert ec2.parse_error(b"not xml") == ("", "")


def test_the_endpoint(monkeypatch):
    assert ec2.endpoint_for("eu-west-1") == "https://ec2.eu-west-1.amazonaws.com"
    assert ec2.endpoint_for("cn-north-1") == "https://ec2.cn-north-1.amazonaws.com.cn"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert ec2.endpoint_for("eu-west-1") == "http://127.0.0.1:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:2")
    assert ec2.endpoint_for("eu-west-1") == "http://127.0.0.1:2"
    assert ec2.endpoint_for("eu-west-1", "http://127.0.0.1:3") == "http://127.0.0.1:3"


# ---------------------------------------------------------------- local stand-ins (loopback)


@contextmanager
def serve(handle) -> Iterator[tuple[str, list]]:
    """An HTTP server on loopback whose answers `handle(method, path, headers, body)` gives as
    (status, body, delay); yields its URL and the requests it saw."""
    seen: list = []

    class Handler(BaseHTTPRequestHandler):
        def _any(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path, dict(self.headers), body))
            status, out, delay = handle(self.command, self.path, self.headers, body)
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_PUT = do_POST = _any

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # a client that timed out and left (the point of some tests)

    server = Server(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def imds(role: str | None = "wgmesh-eu-west-1-gateway", expires_in: float = 3600, document: bytes | None = None):
    """A stand-in for the instance metadata service (IMDSv2: no token, no answer)."""
    expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + expires_in))

    def handle(method, path, headers, body):
        if method == "PUT" and path == "/latest/api/token":
            return (200, b"imds-token", 0) if headers.get("X-aws-ec2-metadata-token-ttl-seconds") else (400, b"", 0)
        if headers.get("X-aws-ec2-metadata-token") != "imds-token":
            return 401, b"", 0
        if path == "/latest/meta-data/iam/security-credentials/":
            return (200, role.encode(), 0) if role else (404, b"", 0)
        if role and path == f"/latest/meta-data/iam/security-credentials/{role}":
            return 200, document or json.dumps({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "ASIAROLE",
                                                "SecretAccessKey": SECRET, "Token": TOKEN,
                                                "Expiration": expiration}).encode(), 0
        return 404, b"", 0

    return handle


def test_credentials_from_the_environment_first(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")  # never asked
    assert ec2.credentials() == ec2.Credentials("AKIAENV", SECRET, None)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    assert ec2.credentials() == ec2.Credentials("AKIAENV", SECRET, TOKEN)


def test_credentials_of_the_instance_role_through_imdsv2_and_cached(monkeypatch):
    with serve(imds()) as (url, seen):
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)
        creds = ec2.credentials()
        assert creds == ec2.Credentials("ASIAROLE", SECRET, TOKEN)
        assert [(m, p) for m, p, _, _ in seen] == [
            ("PUT", "/latest/api/token"), ("GET", "/latest/meta-data/iam/security-credentials/"),
            ("GET", "/latest/meta-data/iam/security-credentials/wgmesh-eu-west-1-gateway")]
        assert ec2.credentials() is creds and len(seen) == 3  # cached: IMDS is not asked again
    assert SECRET not in repr(creds) and TOKEN not in repr(creds)


def test_credentials_about_to_expire_are_fetched_again(monkeypatch):
    with serve(imds(expires_in=ec2.REFRESH_BEFORE - 10)) as (url, seen):
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)
        ec2.credentials()
        ec2.credentials()
        assert len(seen) == 6


def test_credentials_failures_say_why_and_show_no_secret(monkeypatch):
    with serve(imds(role=None)) as (url, _):
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)
        with pytest.raises(ec2.Ec2Error, match="this instance has no IAM role"):
            ec2.credentials()
    with serve(imds(document=json.dumps({"AccessKeyId": "ASIAROLE", "SecretAccessKey": SECRET}).encode())) as (url, _):
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)
        with pytest.raises(ec2.Ec2Error, match="not the expected JSON document") as err:
            ec2.credentials()
        assert SECRET not in str(err.value)
    with serve(lambda *a: (200, b"late", 0.5)) as (url, _):
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)
        t0 = time.monotonic()
        with pytest.raises(ec2.Ec2Error, match=r"no answer from the instance metadata service .* within 0.2 s"):
            ec2.credentials(timeout=0.2)
        assert time.monotonic() - t0 < 1.5
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ec2.Ec2Error, match="AWS_EC2_METADATA_DISABLED"):
        ec2.credentials()


# ---------------------------------------------------------------- replace_routes against a stand-in


def test_replace_routes_calls_describe_then_replace_only_where_needed():
    def handle(method, path, headers, body):
        form = dict(p.split("=", 1) for p in body.decode().split("&"))
        if form["Action"] == "DescribeRouteTables":
            return 200, DESCRIBE, 0
        return 200, b"<ReplaceRouteResponse><return>true</return></ReplaceRouteResponse>", 0

    creds = ec2.Credentials("AKIDEXAMPLE", SECRET)
    with serve(handle) as (url, seen):
        changed = ec2.replace_routes(region="eu-west-1", route_table_ids=["rtb-0a1b", "rtb-0c2d"],
                                     destinations=["10.101.0.0/16"], network_interface_id="eni-b", endpoint=url,
                                     creds=creds)
    assert changed == ["rtb-0a1b:10.101.0.0/16"]
    bodies = [b.decode() for _, _, _, b in seen]
    assert bodies == [
        f"Action=DescribeRouteTables&RouteTableId.1=rtb-0a1b&RouteTableId.2=rtb-0c2d&Version={ec2.API_VERSION}",
        "Action=ReplaceRoute&DestinationCidrBlock=10.101.0.0%2F16&NetworkInterfaceId=eni-b&RouteTableId=rtb-0a1b"
        f"&Version={ec2.API_VERSION}",
    ]
    assert all(h["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") and
               "/eu-west-1/ec2/aws4_request" in h["Authorization"] for _, _, h, _ in seen)
    with pytest.raises(TypeError):
        ec2.replace_routes(region="eu-west-1", route_table_ids="rtb-0a1b", destinations=[], network_interface_id="e",
                           endpoint=url, creds=creds)


def test_an_aws_error_names_the_action_status_and_code_and_never_a_secret():
    echo = (b"<Response><Errors><Error><Code>AuthFailure</Code><Message>token " + TOKEN.encode() +
            b" refused</Message></Error></Errors></Response>")
    creds = ec2.Credentials("AKIDEXAMPLE", SECRET, TOKEN)
    with serve(lambda *a: (401, echo, 0)) as (url, _), pytest.raises(ec2.Ec2Error) as err:
        ec2.replace_routes(region="eu-west-1", route_table_ids=["rtb-0a1b"], destinations=["10.101.0.0/16"],
                           network_interface_id="eni-b", endpoint=url, creds=creds)
    assert str(err.value) == "DescribeRouteTables(rtb-0a1b): HTTP 401 AuthFailure: token *** refused"
    assert (err.value.action, err.value.status, err.value.code) == ("DescribeRouteTables", 401, "AuthFailure")
    with serve(lambda *a: (200, b"<x>late</x>", 1.0)) as (url, _):
        t0 = time.monotonic()
        with pytest.raises(ec2.Ec2Error, match=r"DescribeRouteTables\(rtb-0a1b\): no answer from .* within 0.3 s"):
            ec2.replace_routes(region="eu-west-1", route_table_ids=["rtb-0a1b"], destinations=["10.101.0.0/16"],
                               network_interface_id="eni-b", endpoint=url, creds=creds, timeout=0.3)
        assert time.monotonic() - t0 < 1.0


# ---------------------------------------------------------------- runs on a gateway


def test_it_runs_alone_with_python_3_9_syntax_and_the_standard_library():
    ast.parse(EC2_PY.read_text(), feature_version=(3, 9))
    # -I: no site-packages, no environment; only the file's own directory on the path.
    r = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(EC2_PY.parent)!r}); "
                        "import ec2; print(sorted(m for m in sys.modules if m.startswith('wgmesh')))"],
                       capture_output=True, text=True, cwd="/")
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
