"""The local exchange's API key pair: no default in the code. At its start the exchange takes the
pair the secrets provider holds in its environment (TRADEOPS_EXCHANGE_API_KEY / _SECRET, or their
`_FILE`), else generates a new one, and keeps it in the data dir's secrets
(`<data dir>/secrets/exchange/api-key`, `api-secret`: 0600), where the paper stack's gateway and
live-gateway find it through the same provider (backend/secrets.py), as they would a real venue's
keys from the environment, a mounted file or Vault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend import secrets


def local_pair(data_dir: Path | None) -> tuple[str, str]:
    """The exchange's (key, secret) for this start, kept in `data_dir`'s secrets when given."""
    given = secrets.Provider(None)  # its environment only: a pair from an earlier start is not reused
    key = given.find(secrets.EXCHANGE_API_KEY) or secrets.generate(18)
    secret = given.find(secrets.EXCHANGE_API_SECRET) or secrets.generate(32)
    keep_pair(data_dir, key, secret)
    return key, secret


def keep_pair(data_dir: Path | None, key: str, secret: str) -> None:
    """Keep the exchange's pair in `data_dir`'s secrets (0600 files), when given."""
    if data_dir is not None:
        store = secrets.Provider(Path(data_dir), environ={})
        store.store(secrets.EXCHANGE_API_KEY, key)
        store.store(secrets.EXCHANGE_API_SECRET, secret)


def client_key(settings: Any) -> str:
    """The venue's API key, as a client (gateway, live-gateway) finds it; SecretNotFound naming
    where it was looked for."""
    return secrets.provider(settings).get(secrets.EXCHANGE_API_KEY)


def client_pair(settings: Any) -> tuple[str, str]:
    p = secrets.provider(settings)
    return p.get(secrets.EXCHANGE_API_KEY), p.get(secrets.EXCHANGE_API_SECRET)
