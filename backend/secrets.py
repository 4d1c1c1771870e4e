"""Secrets: the exchange's API key and secret, the Redis passwords, any token the platform signs.
None of them has a default in the code; each is found by the secrets provider, in this order:

1. an environment variable (`TRADEOPS_EXCHANGE_API_KEY`, `TRADEOPS_REDIS_PASSWORD`,
   `TRADEOPS_S3_ACCESS_KEY_ID` ...);
2. the same variable with `_FILE`: the path of a file that holds it (what Docker and Kubernetes
   secrets mount; a trailing newline is dropped);
3. Vault, when `infra.vault` is configured (`infra.vault = "http://vault:8200"`): its KV v2 HTTP
   API, `GET <vault>/v1/<mount>/data/<prefix>/<group>` and the field `<field>` of a secret named
   `<group>/<field>` (mount `infra.vault_mount`, default `secret`; prefix `infra.vault_prefix`,
   default `tradeops`; the token from `VAULT_TOKEN` or the file `VAULT_TOKEN_FILE`);
4. the data dir's own store, `<data dir>/secrets/<group>/<field>`: a file readable only by its
   owner (0600, in 0700 directories), where tradeops keeps what it generates itself (the embedded
   Redis's passwords at `redis up`, the local exchange's key pair at its start).

A secret is never logged, printed, put on a command line, in a heartbeat or in an error: errors
name the secret and where it was looked for, never a value. `SecretNotFound` says all the places.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_urlsafe
from typing import Any

from backend.errors import TradeopsError

DIR = "secrets"
VAULT_MOUNT = "secret"
VAULT_PREFIX = "tradeops"
LOCAL = "the data dir's secrets"


class SecretNotFound(TradeopsError):
    """No source holds the secret; the message says which were looked at."""


class SecretsError(TradeopsError):
    """A source that should hold secrets cannot be read (a file, Vault); the message says which."""


@dataclass(frozen=True)
class Secret:
    """One secret: its name `<group>/<field>` (redis/oms, exchange/api-key) and the environment
    variable that may hold it (and, with `_FILE`, the path of a file that does)."""

    name: str
    env: str
    optional: bool = False
    """Needed only where its feature is configured (the S3 endpoint's credentials): a container or a
    deployment gets its file when the file is there, and goes without it otherwise."""

    @property
    def group(self) -> str:
        return self.name.rpartition("/")[0]

    @property
    def field(self) -> str:
        return self.name.rpartition("/")[2]


EXCHANGE_API_KEY = Secret("exchange/api-key", "TRADEOPS_EXCHANGE_API_KEY")
EXCHANGE_API_SECRET = Secret("exchange/api-secret", "TRADEOPS_EXCHANGE_API_SECRET")
S3_ACCESS_KEY_ID = Secret("s3/access-key-id", "TRADEOPS_S3_ACCESS_KEY_ID", optional=True)
S3_SECRET_ACCESS_KEY = Secret("s3/secret-access-key", "TRADEOPS_S3_SECRET_ACCESS_KEY", optional=True)


def redis_password(user: str) -> Secret:
    """The Redis password of `user` (TRADEOPS_REDIS_PASSWORD, or the file TRADEOPS_REDIS_PASSWORD_FILE
    names, holds the one of TRADEOPS_REDIS_USER only: the runtimes set both)."""
    return Secret(f"redis/{user}", "TRADEOPS_REDIS_PASSWORD")


@dataclass(frozen=True)
class Vault:
    url: str
    mount: str = VAULT_MOUNT
    prefix: str = VAULT_PREFIX

    def path(self, secret: Secret) -> str:
        return f"{self.mount}/data/{self.prefix}/{secret.group}".replace("//", "/")

    def where(self, secret: Secret) -> str:
        return f"vault {self.url.rstrip('/')}/v1/{self.path(secret)} field {secret.field!r}"


@dataclass
class Provider:
    """Where the secrets of one process are found (see the module doc)."""

    data_dir: Path | None
    vault: Vault | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    _vault_cache: dict[str, dict[str, Any] | None] = field(default_factory=dict, repr=False)

    def local_path(self, secret: Secret) -> Path | None:
        return None if self.data_dir is None else Path(self.data_dir) / DIR / secret.group / secret.field

    def places(self, secret: Secret) -> list[str]:
        """Where `secret` is looked for, in order, in words."""
        out = [f"${secret.env}", f"${secret.env}_FILE"]
        if self.vault is not None:
            out.append(self.vault.where(secret))
        local = self.local_path(secret)
        if local is not None:
            out.append(str(local))
        return out

    def find(self, secret: Secret) -> str | None:
        """The secret, or None when no source has it."""
        value = self.environ.get(secret.env)
        if value:
            return value
        path = self.environ.get(f"{secret.env}_FILE")
        if path:
            return _read(Path(path), f"${secret.env}_FILE")
        if self.vault is not None:
            value = self._from_vault(secret)
            if value is not None:
                return value
        local = self.local_path(secret)
        if local is not None and local.exists():
            return _read(local, LOCAL)
        return None

    def get(self, secret: Secret) -> str:
        """The secret, or SecretNotFound naming it and every place looked at."""
        value = self.find(secret)
        if value is None:
            raise SecretNotFound(f"secret {secret.name} not found; looked in: {', '.join(self.places(secret))}")
        return value

    def store(self, secret: Secret, value: str) -> Path:
        """Keep `value` in the data dir's store (0600, replaced in one rename)."""
        path = self.local_path(secret)
        if path is None:
            raise SecretsError(f"no data dir to keep secret {secret.name} in")
        write_private(path, value)
        return path

    def ensure(self, secret: Secret, nbytes: int = 24) -> str:
        """The secret from any source, else a new random one kept in the data dir's store."""
        value = self.find(secret)
        if value is None:
            value = generate(nbytes)
            self.store(secret, value)
        return value

    def _from_vault(self, secret: Secret) -> str | None:
        assert self.vault is not None
        path = self.vault.path(secret)
        if path not in self._vault_cache:
            self._vault_cache[path] = _vault_read(self.vault, path, self.environ)
        data = self._vault_cache[path]
        value = data.get(secret.field) if data else None
        return str(value) if value is not None else None


def generate(nbytes: int = 24) -> str:
    """A new random secret (URL-safe text)."""
    return token_urlsafe(nbytes)


def write_private(path: Path, value: str) -> None:
    """Write `value` to `path` readable only by its owner (directories 0700), in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    top = next((d for d in path.parents if d.name == DIR), path.parent)
    for d in [path.parent, *path.parent.parents]:
        os.chmod(d, 0o700)
        if d == top:
            break
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path, what: str) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise SecretsError(
            f"cannot read the secret file {path} ({what}): {exc.strerror or type(exc).__name__}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and what == LOCAL:
        raise SecretsError(
            f"the secret file {path} is readable by others (mode {stat.S_IMODE(mode):o}); it must be 0600"
        )
    return text.rstrip("\r\n")


def _vault_token(environ: Mapping[str, str]) -> str | None:
    token = environ.get("VAULT_TOKEN")
    if token:
        return token
    path = environ.get("VAULT_TOKEN_FILE")
    return _read(Path(path), "$VAULT_TOKEN_FILE") if path else None


def _vault_read(vault: Vault, path: str, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The data of the KV v2 secret at `path`, None when Vault has none there."""
    import httpx

    token = _vault_token(environ)
    if not token:
        raise SecretsError(f"infra.vault is {vault.url} but neither VAULT_TOKEN nor VAULT_TOKEN_FILE is set")
    url = f"{vault.url.rstrip('/')}/v1/{path}"
    try:
        resp = httpx.get(url, headers={"X-Vault-Token": token}, timeout=5.0)
    except httpx.HTTPError as exc:
        raise SecretsError(f"vault {url}: {type(exc).__name__}: {exc}") from None
    if resp.status_code == 404:
        return None
    if resp.status_code != 200:
        raise SecretsError(
            f"vault {url} answered {resp.status_code}"
            + (" (is the token allowed to read it?)" if resp.status_code == 403 else "")
        )
    try:
        data = resp.json()["data"]["data"]
    except (ValueError, KeyError, TypeError):
        raise SecretsError(f"vault {url}: not a KV v2 secret (no data.data)") from None
    return data if isinstance(data, dict) else None


def provider(
    settings: Any = None, *, data_dir: Path | None = None, environ: Mapping[str, str] | None = None
) -> Provider:
    """The provider of a process: its data dir and `infra.vault` from `settings` (or none)."""
    infra: dict[str, str] = dict(getattr(settings, "infra", {}) or {})
    if data_dir is None and settings is not None:
        data_dir = settings.resolved_data_dir()
    vault = None
    if infra.get("vault"):
        vault = Vault(infra["vault"], infra.get("vault_mount", VAULT_MOUNT), infra.get("vault_prefix", VAULT_PREFIX))
    return Provider(data_dir, vault, environ if environ is not None else os.environ)
