"""The secrets provider (backend/secrets.py): an environment variable, a `_FILE` path (Docker and
Kubernetes secrets), Vault's KV v2 HTTP API when `infra.vault` is set, the data dir's own 0600
files; a secret that is nowhere is a clear error naming every place looked at, never a default."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from backend import secrets
from backend.exchange.keys import local_pair
from backend.settings import Settings

KEY = secrets.EXCHANGE_API_KEY


def test_environment_then_file_then_the_data_dir(tmp_path: Path) -> None:
    p = secrets.Provider(tmp_path, environ={})
    assert p.find(KEY) is None
    p.store(KEY, "from-the-data-dir")
    path = tmp_path / "secrets" / "exchange" / "api-key"
    assert path.read_text() == "from-the-data-dir"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "secrets" / "exchange").stat().st_mode & 0o777 == 0o700
    assert p.get(KEY) == "from-the-data-dir"
    mounted = tmp_path / "run-secrets-key"
    mounted.write_text("from-a-mounted-file\n")  # a trailing newline is not part of it
    assert (
        secrets.Provider(tmp_path, environ={"TRADEOPS_EXCHANGE_API_KEY_FILE": str(mounted)}).get(KEY)
        == "from-a-mounted-file"
    )
    env = {"TRADEOPS_EXCHANGE_API_KEY": "from-the-env", "TRADEOPS_EXCHANGE_API_KEY_FILE": str(mounted)}
    assert secrets.Provider(tmp_path, environ=env).get(KEY) == "from-the-env"


def test_a_missing_secret_names_every_place_looked_at(tmp_path: Path) -> None:
    p = secrets.Provider(tmp_path, secrets.Vault("http://vault.invalid:8200"), environ={})
    with pytest.raises(secrets.SecretNotFound) as info:
        secrets.Provider(tmp_path, environ={}).get(secrets.EXCHANGE_API_SECRET)
    msg = str(info.value)
    assert msg == (
        f"secret exchange/api-secret not found; looked in: $TRADEOPS_EXCHANGE_API_SECRET, "
        f"$TRADEOPS_EXCHANGE_API_SECRET_FILE, {tmp_path}/secrets/exchange/api-secret"
    )
    assert p.places(KEY)[2] == ("vault http://vault.invalid:8200/v1/secret/data/tradeops/exchange field 'api-key'")


def test_unreadable_or_open_files_are_errors_that_show_no_value(tmp_path: Path) -> None:
    with pytest.raises(secrets.SecretsError, match=r"cannot read the secret file /nonexistent/x \(\$TRADEOPS"):
        secrets.Provider(None, environ={"TRADEOPS_EXCHANGE_API_KEY_FILE": "/nonexistent/x"}).get(KEY)
    p = secrets.Provider(tmp_path, environ={})
    p.store(KEY, "too-open")
    path = p.local_path(KEY)
    assert path is not None
    os.chmod(path, 0o644)
    with pytest.raises(secrets.SecretsError, match="is readable by others") as info:
        p.get(KEY)
    assert "too-open" not in str(info.value)


def test_ensure_generates_once(tmp_path: Path) -> None:
    p = secrets.Provider(tmp_path, environ={})
    first = p.ensure(secrets.redis_password("oms"))
    assert len(first) >= 24 and p.ensure(secrets.redis_password("oms")) == first
    assert p.ensure(secrets.redis_password("risk")) != first


def test_the_local_exchange_generates_its_pair_and_keeps_it_for_the_paper_stack(tmp_path: Path) -> None:
    key, secret = local_pair(tmp_path)
    again, secret2 = local_pair(tmp_path)  # each start: a new pair
    assert (key, secret) != (again, secret2) and "local-key" not in (key, again)
    client = secrets.provider(Settings(data_dir=str(tmp_path)), environ={})
    assert (client.get(secrets.EXCHANGE_API_KEY), client.get(secrets.EXCHANGE_API_SECRET)) == (again, secret2)
    given = {"TRADEOPS_EXCHANGE_API_KEY": "k-from-env", "TRADEOPS_EXCHANGE_API_SECRET": "s-from-env"}
    old = {k: os.environ.get(k) for k in given}
    os.environ.update(given)
    try:
        assert local_pair(tmp_path) == ("k-from-env", "s-from-env")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Kv2(BaseHTTPRequestHandler):
    """What Vault's KV v2 answers to a read (a stand-in for the protocol; the real one below)."""

    data: ClassVar[dict[str, dict[str, str]]] = {
        "/v1/secret/data/tradeops/exchange": {"api-key": "k-in-vault", "api-secret": "s-in-vault"}
    }

    def do_GET(self) -> None:
        if self.headers.get("X-Vault-Token") != "t0ken":
            self.send_response(403)
            self.end_headers()
            self.wfile.write(b'{"errors":["permission denied"]}')
            return
        found = self.data.get(self.path)
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(
            json.dumps({"data": {"data": found, "metadata": {"version": 1}}} if found else {"errors": []}).encode()
        )

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kv2() -> Iterator[str]:
    srv = HTTPServer(("127.0.0.1", 0), _Kv2)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_vault_kv2_is_read_over_http(kv2: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), infra={"vault": kv2})
    p = secrets.provider(settings, environ={"VAULT_TOKEN": "t0ken"})
    assert p.get(KEY) == "k-in-vault" and p.get(secrets.EXCHANGE_API_SECRET) == "s-in-vault"
    assert p.find(secrets.redis_password("oms")) is None  # 404: not there, the next source is asked
    p.store(secrets.redis_password("oms"), "local")
    assert p.get(secrets.redis_password("oms")) == "local"
    with pytest.raises(secrets.SecretsError, match=r"answered 403 \(is the token allowed to read it\?\)") as info:
        secrets.provider(settings, environ={"VAULT_TOKEN": "wrong"}).get(KEY)
    assert "wrong" not in str(info.value)
    with pytest.raises(secrets.SecretsError, match="neither VAULT_TOKEN nor VAULT_TOKEN_FILE"):
        secrets.provider(settings, environ={}).get(KEY)


@pytest.mark.skipif(
    not os.environ.get("TRADEOPS_TEST_VAULT"),
    reason="no Vault: set TRADEOPS_TEST_VAULT=http://host:8200 and VAULT_TOKEN (a token that may "
    "write secret/data/tradeops-test/*) to test against a real one",
)
def test_a_real_vault(tmp_path: Path) -> None:
    url, token = os.environ["TRADEOPS_TEST_VAULT"].rstrip("/"), os.environ["VAULT_TOKEN"]
    resp = httpx.post(
        f"{url}/v1/secret/data/tradeops-test/exchange",
        headers={"X-Vault-Token": token},
        json={"data": {"api-key": "real-vault-key"}},
        timeout=10,
    )
    assert resp.status_code in (200, 204), resp.text
    settings = Settings(data_dir=str(tmp_path), infra={"vault": url, "vault_prefix": "tradeops-test"})
    p = secrets.provider(settings, environ={"VAULT_TOKEN": token})
    assert p.get(KEY) == "real-vault-key"
    assert p.find(secrets.EXCHANGE_API_SECRET) is None
