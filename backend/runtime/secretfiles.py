"""What a service's container gets of the secrets: its Redis user, its own password and the secrets
its class declares (`Service.secrets`: the venue's API key and secret for the gateways), each as a
file under /run/secrets, and the environment naming their paths (TRADEOPS_REDIS_USER,
TRADEOPS_REDIS_PASSWORD_FILE, TRADEOPS_EXCHANGE_API_KEY_FILE ...): never a value in an environment
variable, a label or a command line. The docker runtime bind-mounts them from the data dir's
secrets (and hides the rest of that directory); the compose file names them as Docker secrets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backend import secrets

CONTAINER_DIR = "/run/secrets"
SECRETS_DIR = secrets.DIR


@dataclass(frozen=True)
class SecretFile:
    name: str
    """The Docker secret's name: `redis-<user>`, `exchange-api-key` ..."""
    host: Path
    """Where it is on the host (the data dir's secrets, or the compose secrets dir)."""
    env: str
    """The variable that names its path in the container."""

    @property
    def container(self) -> str:
        return f"{CONTAINER_DIR}/{self.name}"


def declared(service: str) -> tuple[secrets.Secret, ...]:
    """The secrets `service` declares beside its Redis password."""
    from backend.services import service_class

    return service_class(service).secrets


def service_files(service: str, secrets_dir: Path) -> list[SecretFile]:
    """The secret files of `service`'s container: its Redis password, then what it declares (an
    optional secret, e.g. the S3 credentials, only when its file is there: S3 is configured)."""
    files = [SecretFile(f"redis-{service}", Path(secrets_dir) / "redis" / service, "TRADEOPS_REDIS_PASSWORD_FILE")]
    for s in declared(service):
        path = Path(secrets_dir) / s.group / s.field
        if s.optional and not path.exists():
            continue
        files.append(SecretFile(f"{s.group}-{s.field}", path, f"{s.env}_FILE"))
    return files


def service_env(service: str, files: list[SecretFile]) -> dict[str, str]:
    """The container's login and the paths of its secret files."""
    return {"TRADEOPS_REDIS_USER": service, **{f.env: f.container for f in files}}
