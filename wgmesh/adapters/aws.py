"""S3 and Secrets Manager through boto3: the only module that imports it (and only when an
inventory has a shared backend: boto3 costs ~0.2 s to import).

Endpoints, credentials and profiles come from boto3's standard sources (AWS_ENDPOINT_URL,
AWS_ENDPOINT_URL_S3, AWS_PROFILE, AWS_ACCESS_KEY_ID ...), as they do for Terraform's S3 backend.
Every failure becomes a wgmesh error that names the backend and what was refused; a secret's
value never reaches a message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from wgmesh.errors import BackendFailed, BadInput

CONFIG = botocore.config.Config(
    connect_timeout=5, read_timeout=30, retries={"max_attempts": 4, "mode": "standard"},
)
T = TypeVar("T")
STALE = ("PreconditionFailed", "ConditionalRequestConflict")
NOT_FOUND = ("NoSuchKey", "404", "NotFound", "ResourceNotFoundException")
DENIED = ("AccessDenied", "AccessDeniedException", "403", "Forbidden", "InvalidAccessKeyId",
          "SignatureDoesNotMatch", "UnrecognizedClientException", "ExpiredToken", "InvalidClientTokenId")


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session()


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _calling(what: str, where: str) -> Callable[[Callable[[], T]], T]:
    """Run one call; turn boto's failures into wgmesh's (not found and stale are the caller's)."""

    def call(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except botocore.exceptions.NoCredentialsError:
            raise BackendFailed(
                f"no AWS credentials to {what} {where}",
                hint="set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the standard AWS variables)",
            ) from None
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                botocore.exceptions.ReadTimeoutError) as exc:
            raise BackendFailed(f"cannot reach the backend to {what} {where}: {exc}",
                                hint="check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 and the network") from None
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            if code in DENIED:
                raise BackendFailed(f"access denied: {what} {where} ({code})",
                                    hint="the credentials in use need this permission on the bucket / secret") from None
            if code in STALE or code in NOT_FOUND or code in ("NoSuchBucket", "ResourceExistsException",
                                                             "InvalidRequestException"):
                raise
            raise BackendFailed(f"the backend refused to {what} {where}: {code}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise BackendFailed(f"cannot {what} {where}: {exc}") from None

    return call


class S3Objects:
    """One bucket's objects, written only on top of the version the writer saw."""

    def __init__(self, bucket: str, field: str, url: str) -> None:
        self.bucket = bucket
        self.field = field  # where the URL came from, named when the bucket does not exist
        self.url = url
        self._client: Any = None
        self._region: str | None = None

    def _no_bucket(self) -> BadInput:
        return BadInput(self.field, self.url, f"bucket {self.bucket!r} does not exist (or is not visible to "
                        "these credentials)", hint="create it first (versioning on is wise), or name another")

    @property
    def region(self) -> str:
        """The bucket's own region (where its state, lock and the keystore's secret live); asking
        also proves the bucket exists and the credentials reach it."""
        if self._region is None:
            asked = _session().region_name or "us-east-1"
            client = _session().client("s3", config=CONFIG, region_name=asked)
            try:
                loc = _calling("look up the bucket of", self.url)(
                    lambda: client.get_bucket_location(Bucket=self.bucket))
            except botocore.exceptions.ClientError as exc:
                if _code(exc) in ("NoSuchBucket", *NOT_FOUND):
                    raise self._no_bucket() from None
                raise BackendFailed(f"the backend refused to look up {self.url}: {_code(exc)}") from None
            self._region = loc.get("LocationConstraint") or "us-east-1"
            if self._region == asked:  # a client is ~30 ms: the one that asked serves the bucket
                self._client = client
        return self._region

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _session().client("s3", config=CONFIG, region_name=self.region)
        return self._client

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return _calling(what, f"s3://{self.bucket}/{key}")(fn)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) == "NoSuchBucket":
                raise self._no_bucket() from None
            raise

    def get(self, key: str) -> tuple[str | None, str | None]:
        """(text, etag), or (None, None) if there is no such object."""
        try:
            r = self._call("read", key, lambda: self.client.get_object(Bucket=self.bucket, Key=key))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in NOT_FOUND:
                return None, None
            raise BackendFailed(f"the backend refused to read s3://{self.bucket}/{key}: {_code(exc)}") from None
        return r["Body"].read().decode(), r["ETag"]

    def put(self, key: str, data: bytes, if_match: str | None) -> str | None:
        """Write on top of the version `if_match` (None: only if there is no object): the new
        ETag, or None if the object is not that version any more."""
        cond = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            r = self._call("write", key, lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                                                        **cond))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in STALE or (if_match and _code(exc) in NOT_FOUND):
                return None
            raise BackendFailed(f"the backend refused to write s3://{self.bucket}/{key}: {_code(exc)}") from None
        return str(r["ETag"])

    def delete(self, key: str, if_match: str | None) -> bool:
        """Delete the version `if_match` (None: there is none, nothing to do). False if the
        object is another version now."""
        if not if_match:
            return True
        try:
            self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=key, IfMatch=if_match))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in STALE:
                return False
            if _code(exc) in NOT_FOUND:
                return True
            raise BackendFailed(f"the backend refused to delete s3://{self.bucket}/{key}: {_code(exc)}") from None
        return True

    def delete_any(self, key: str) -> None:
        """Delete whatever version is there (migrating away, after the local copy was verified)."""
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in self._call("list", prefix, lambda: list(pages)):
            out.extend(o["Key"] for o in page.get("Contents", ()))
        return out


class Secret:
    """One Secrets Manager secret (encrypted by the service's KMS key); each write is a version."""

    def __init__(self, name: str, region: str) -> None:
        self.name = name
        self.client: Any = _session().client("secretsmanager", config=CONFIG, region_name=region)
        self.call = _calling("use the secret", name)

    def get(self) -> tuple[str | None, str | None]:
        """(value, version id), or (None, None) if there is no such secret."""
        try:
            r = self.call(lambda: self.client.get_secret_value(SecretId=self.name))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in NOT_FOUND:
                return None, None
            raise BackendFailed(f"the backend refused to read secret {self.name}: {_code(exc)}") from None
        return r.get("SecretString"), r["VersionId"]

    def current_version(self) -> str | None:
        try:
            r = self.call(lambda: self.client.describe_secret(SecretId=self.name))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) in NOT_FOUND:
                return None
            raise BackendFailed(f"the backend refused to describe secret {self.name}: {_code(exc)}") from None
        if r.get("DeletedDate"):
            raise BackendFailed(f"secret {self.name} is scheduled for deletion",
                                hint=f"restore it (aws secretsmanager restore-secret --secret-id {self.name}) or "
                                     "delete it for good first")
        return next((v for v, stages in (r.get("VersionIdsToStages") or {}).items() if "AWSCURRENT" in stages), None)

    def put(self, value: str, version: str | None) -> str | None:
        """A new version on top of `version` (None: create the secret): its id, or None if the
        current version is another one now. (Secrets Manager has no conditional write: the check
        and the write are two calls, made under wgmesh's run lock.)"""
        if self.current_version() != version:
            return None
        try:
            if version is None:
                r = self.call(lambda: self.client.create_secret(
                    Name=self.name, SecretString=value,
                    Description="wgmesh keystore: WireGuard private keys and the PSK secret of one inventory",
                    Tags=[{"Key": "wgmesh", "Value": "keystore"}]))
            else:
                r = self.call(lambda: self.client.put_secret_value(SecretId=self.name, SecretString=value))
        except botocore.exceptions.ClientError as exc:
            if _code(exc) == "ResourceExistsException":
                return None
            raise BackendFailed(f"the backend refused to write secret {self.name}: {_code(exc)}") from None
        return str(r["VersionId"])

    def delete(self) -> None:
        """Gone at once (migrating away, after the local copy was verified)."""
        self.call(lambda: self.client.delete_secret(SecretId=self.name, ForceDeleteWithoutRecovery=True))
