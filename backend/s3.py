"""The S3 endpoint the stores write to when one is configured: `infra.s3` (or `infra.minio`, the
inventory's name for it) is its URL (`http://minio:9000`); beside it `infra.s3_bucket` (default
`tradeops`), `infra.s3_prefix` (a folder inside the bucket, default none) and `infra.s3_region`
(default `us-east-1`). The credentials come from the secrets provider (backend/secrets.py):
`s3/access-key-id` and `s3/secret-access-key` (TRADEOPS_S3_ACCESS_KEY_ID / _SECRET_ACCESS_KEY, their
`_FILE`, Vault, or the data dir's secrets); there is no default in the code.

sink-ticks writes its Delta Lake table to `s3://<bucket>/<prefix>/ticks-delta`, sink-alt its items
to `s3://<bucket>/<prefix>/alt-items` (deltalake, natively: `storage_options`); the phase 1 gate's
minio probe writes, reads back and deletes an object there (`probe`). The bucket must exist: it is
the operator's, never created here. Delta Lake commits on S3 with conditional writes (deltalake 1.x
uses `If-None-Match` puts, which MinIO, SeaweedFS and AWS S3 honour), so no locking provider and no
unsafe rename are needed."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from backend import secrets
from backend.errors import TradeopsError

if TYPE_CHECKING:
    from pyarrow.fs import S3FileSystem

DEFAULT_BUCKET = "tradeops"
DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 60.0
RETRY_TIMEOUT_S = 10.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class S3Error(TradeopsError):
    """The S3 endpoint is misconfigured, unreachable or refuses us; the message says which."""


@dataclass(frozen=True)
class S3:
    """Where on S3, and as whom. `repr` and every message name the endpoint and bucket, never the
    secret key."""

    endpoint: str
    bucket: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    region: str = DEFAULT_REGION
    prefix: str = ""

    def uri(self, name: str) -> str:
        """`s3://bucket/prefix/name`: what deltalake opens."""
        return f"s3://{self.key(name)}"

    def key(self, name: str) -> str:
        """`bucket/prefix/name`: what pyarrow's S3 file system opens."""
        return "/".join(p for p in (self.bucket, self.prefix.strip("/"), name.strip("/")) if p)

    def storage_options(self) -> dict[str, str]:
        """deltalake's storage options for this endpoint."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true" if self.endpoint.startswith("http://") else "false",
            # an endpoint that is down fails a write in seconds (the sink then retries with backoff),
            # not after object_store's default of minutes of retries
            "connect_timeout": f"{CONNECT_TIMEOUT_S:g}s",
            "timeout": f"{WRITE_TIMEOUT_S:g}s",
            "max_retries": "3",
            "retry_timeout": f"{RETRY_TIMEOUT_S:g}s",
        }

    def filesystem(self) -> S3FileSystem:
        """pyarrow's S3 file system for this endpoint (one attempt per call: a failure is seen)."""
        from pyarrow import fs

        u = urlsplit(self.endpoint)
        return fs.S3FileSystem(
            access_key=self.access_key_id,
            secret_key=self.secret_access_key,
            endpoint_override=u.netloc,
            scheme=u.scheme,
            region=self.region,
            connect_timeout=CONNECT_TIMEOUT_S,
            request_timeout=REQUEST_TIMEOUT_S,
            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=1),
            allow_bucket_creation=False,
            allow_bucket_deletion=False,
        )

    def where(self, name: str = "") -> str:
        return f"{self.uri(name) if name else f's3://{self.bucket}'} at {self.endpoint}"


def endpoint_of(infra: dict[str, str]) -> str | None:
    """The configured S3 URL (`infra.s3`, else `infra.minio`), or None."""
    return infra.get("s3") or infra.get("minio") or None


def configured(settings: Any) -> S3 | None:
    """The S3 location of `settings` with its credentials, None when no S3 is configured.
    S3Error for a bad URL; SecretNotFound (naming every place looked at) for missing credentials."""
    infra: dict[str, str] = dict(getattr(settings, "infra", {}) or {})
    url = endpoint_of(infra)
    if not url:
        return None
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise S3Error(f"infra.s3 / infra.minio must be an http(s) URL such as http://minio:9000, not {url!r}")
    provider = secrets.provider(settings)
    return S3(
        endpoint=f"{u.scheme}://{u.netloc}",
        bucket=infra.get("s3_bucket") or DEFAULT_BUCKET,
        access_key_id=provider.get(secrets.S3_ACCESS_KEY_ID),
        secret_access_key=provider.get(secrets.S3_SECRET_ACCESS_KEY),
        region=infra.get("s3_region") or DEFAULT_REGION,
        prefix=infra.get("s3_prefix", ""),
    )


def reason(exc: BaseException) -> str:
    """One line on why an S3 call failed (pyarrow's and deltalake's messages are long)."""
    text = " ".join(ANSI.sub("", str(exc)).split())
    low = text.lower()
    if "could not connect" in low or "connection refused" in low or "failed to connect" in low:
        return "cannot connect (connection refused)"
    if "signature" in low and "match" in low:
        return "the endpoint refused the credentials (signature does not match the secret key)"
    if "invalidaccesskeyid" in low or ("access key" in low and "not exist" in low):
        return "the endpoint does not know the access key id"
    if any(w in low for w in ("access denied", "access_denied", "accessdenied", "403", "privileges")):
        return "access denied (are the credentials allowed to write the bucket?)"
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return "the bucket does not exist"
    return f"{type(exc).__name__}: {text[:300]}"


def probe(loc: S3) -> dict[str, Any]:
    """Write, read back and delete a small object under `<prefix>/.probe/`; the evidence
    (endpoint, bucket, object, ms). S3Error naming the endpoint and why, when any step fails."""
    from pyarrow.fs import FileType

    name = f".probe/{uuid.uuid4().hex}"
    path = loc.key(name)
    body = b"tradeops probe"
    t0 = time.perf_counter()
    step = "connect"
    try:
        s3 = loc.filesystem()
        step = "look up the bucket"
        if s3.get_file_info(loc.bucket).type == FileType.NotFound:
            raise S3Error(f"S3 {loc.where()}: the bucket {loc.bucket!r} does not exist")
        step = "write an object"
        with s3.open_output_stream(path) as f:
            f.write(body)
        step = "read it back"
        with s3.open_input_stream(path) as f:
            got = f.read()
        step = "delete it"
        s3.delete_file(path)
    except S3Error:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError and others: one clear line
        raise S3Error(f"S3 {loc.where()}: cannot {step}: {reason(exc)}") from None
    if got != body:
        raise S3Error(f"S3 {loc.where()}: the object read back differs from the one written")
    return {
        "probed": loc.endpoint,
        "bucket": loc.bucket,
        "object": f"s3://{path}",
        "round_trip": "written, read back, deleted",
        "ms": round((time.perf_counter() - t0) * 1000, 2),
    }
