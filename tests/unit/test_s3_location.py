"""backend/s3.py: where the stores go on S3 comes from `infra.s3` / `infra.minio` and the bucket,
prefix and region beside it; the credentials only from the secrets provider (never a default);
a bad URL or a missing secret is one clear line; no secret in a repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend import s3, secrets
from backend.settings import Settings


def test_nothing_configured_is_no_s3(tmp_path: Path) -> None:
    assert s3.configured(Settings(data_dir=str(tmp_path))) is None


def test_location_from_infra_and_the_secrets_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEOPS_S3_ACCESS_KEY_ID", "key-id")
    key_file = tmp_path / "run-secrets-s3"
    key_file.write_text("the-secret\n")
    monkeypatch.setenv("TRADEOPS_S3_SECRET_ACCESS_KEY_FILE", str(key_file))
    infra = {"minio": "http://minio:9000/", "s3_bucket": "ticks", "s3_prefix": "/prod/"}
    loc = s3.configured(Settings(data_dir=str(tmp_path), infra=infra))
    assert loc is not None
    assert (loc.endpoint, loc.bucket, loc.region) == ("http://minio:9000", "ticks", "us-east-1")
    assert loc.uri("ticks-delta") == "s3://ticks/prod/ticks-delta"
    opts = loc.storage_options()
    assert opts["AWS_ACCESS_KEY_ID"] == "key-id" and opts["AWS_SECRET_ACCESS_KEY"] == "the-secret"
    assert opts["AWS_ENDPOINT_URL"] == "http://minio:9000" and opts["AWS_ALLOW_HTTP"] == "true"
    assert "the-secret" not in repr(loc) and "the-secret" not in loc.where("x")
    # infra.s3 wins over infra.minio
    loc = s3.configured(Settings(data_dir=str(tmp_path), infra={**infra, "s3": "https://s3.example:443"}))
    assert loc is not None and loc.endpoint == "https://s3.example:443"
    assert loc.storage_options()["AWS_ALLOW_HTTP"] == "false"


def test_missing_credentials_and_bad_urls_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("TRADEOPS_S3_ACCESS_KEY_ID", "TRADEOPS_S3_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(env, raising=False)
        monkeypatch.delenv(f"{env}_FILE", raising=False)
    with pytest.raises(secrets.SecretNotFound) as info:
        s3.configured(Settings(data_dir=str(tmp_path), infra={"minio": "http://minio:9000"}))
    assert str(info.value) == (
        "secret s3/access-key-id not found; looked in: $TRADEOPS_S3_ACCESS_KEY_ID, "
        f"$TRADEOPS_S3_ACCESS_KEY_ID_FILE, {tmp_path}/secrets/s3/access-key-id"
    )
    with pytest.raises(s3.S3Error, match="must be an http"):
        s3.configured(Settings(data_dir=str(tmp_path), infra={"minio": "minio:9000"}))
