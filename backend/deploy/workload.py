"""What every orchestrator runs of one service, taken from the inventory and the code that the
docker runtime and the compose file already use, so the deployments cannot drift from them:

- the command: entrypoint `python -m backend.services`, arguments `SERVICE --environment ENV`
  (backend.runtime.commands); the instance id is not on the command line but in
  TRADEOPS_INSTANCE, which the orchestrator sets per replica (a swarm task's slot, a pod's name);
- the health check: `python -m backend.runtime.healthcheck SERVICE` (a fresh `running` heartbeat
  of the instance TRADEOPS_INSTANCE names; standard library only);
- the secrets: the service's Redis password and the secrets its class declares, as files under
  /run/secrets with the `*_FILE` variables naming them (backend.runtime.secretfiles,
  backend.secrets): never a value;
- the replicas (the inventory's `replicas`, 1 by default) and, on the migration board, which
  environments run: legacy until the cutover, target from `start` (backend.migration.state);
- the bus's Redis: the embedded server's settings (AOF, no RDB, `maxmemory` with `noeviction`),
  started with the generated users' ACL file (hashes only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from backend.bus import streams
from backend.bus.embedded import AOF_REWRITE_MIN_SIZE
from backend.migration import inventory
from backend.migration.inventory import Inventory, InventoryError, ServiceSpec
from backend.migration.state import ServiceState, desired_instances
from backend.runtime.commands import CONTAINER_PYTHON, service_entrypoint
from backend.runtime.secretfiles import CONTAINER_DIR, SecretFile, service_env, service_files

INSTANCE_ENV = "TRADEOPS_INSTANCE"
ENVIRONMENTS = ("legacy", "target")
REDIS_PORT = 6379
ACL_SECRET = "redis-acl"  # = backend.migration.compose.ACL_SECRET
ACL_FILE = "redis.acl"  # = backend.migration.compose.ACL_FILE: the ACL file in the secrets dir
REDIS_DATA = "/data"
HEALTH_MODULE = "backend.runtime.healthcheck"


@dataclass(frozen=True)
class Workload:
    """One service as an orchestrator runs it."""

    spec: ServiceSpec
    files: list[SecretFile]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def replicas(self) -> int:
        return self.spec.replicas

    def entrypoint(self, python: str = CONTAINER_PYTHON) -> list[str]:
        return service_entrypoint(python)

    def args(self, environment: str) -> list[str]:
        return [self.name, "--environment", environment]

    def health(self, python: str = CONTAINER_PYTHON) -> list[str]:
        """The health check's command: the heartbeat of the instance TRADEOPS_INSTANCE names."""
        return [python, "-m", HEALTH_MODULE, self.name]

    def env(self, redis_url: str, environment: str) -> dict[str, str]:
        """The environment (no secret in it: only the paths of the secret files)."""
        return {
            "TRADEOPS_REDIS_URL": redis_url,
            "TRADEOPS_ENVIRONMENT": environment,
            "PYTHONUNBUFFERED": "1",
            **service_env(self.name, self.files),
        }


def workloads(
    inv: Inventory | None = None,
    services: list[str] | None = None,
    secrets_dir: Path | str = "./secrets",
    replicas: dict[str, int] | None = None,
) -> list[Workload]:
    """The workloads of `services` (default: every service of the inventory), in migration order;
    `replicas`: per service, in place of the inventory's."""
    inv = inv or inventory.load()
    names = inv.order() if services is None else [inv.service(s).name for s in services]
    for name, n in (replicas or {}).items():
        inv.service(name)  # an unknown name is one clear line
        if n < 1:
            raise InventoryError(f"replicas of {name}: {n} is not at least 1")
    return [
        Workload(
            msgspec.structs.replace(inv.service(n), replicas=(replicas or {}).get(n, inv.service(n).replicas)),
            service_files(n, Path(secrets_dir)),
        )
        for n in names
    ]


def parse_replicas(items: list[str]) -> dict[str, int]:
    """`NAME=N` items (the CLI's --replicas) as a mapping; a bad one is one clear line."""
    out: dict[str, int] = {}
    for item in items:
        name, _, n = item.partition("=")
        if not name or not n.isdigit():
            raise InventoryError(f"--replicas {item!r}: expected SERVICE=N, N a whole number")
        out[name.strip()] = int(n)
    return out


def environment_replicas(w: Workload, states: dict[str, ServiceState] | None) -> dict[str, int]:
    """How many replicas of each environment the migration board wants (no board: legacy only,
    as before any move)."""
    envs = {"legacy"} if states is None or w.name not in states else desired_instances(states)[w.name]
    return {env: (w.replicas if env in envs else 0) for env in ENVIRONMENTS}


def redis_args(maxmemory: str | int = streams.DEFAULT_MAXMEMORY) -> list[str]:
    """The bus server's arguments (after the binary): the embedded server's settings, with the
    ACL file as a secret file and the data in REDIS_DATA."""
    return [
        "--port",
        str(REDIS_PORT),
        "--dir",
        REDIS_DATA,
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--auto-aof-rewrite-min-size",
        AOF_REWRITE_MIN_SIZE,
        "--save",
        "",
        "--maxmemory",
        str(streams.memory_bytes(maxmemory)),
        "--maxmemory-policy",
        streams.MAXMEMORY_POLICY,
        "--aclfile",
        f"{CONTAINER_DIR}/{ACL_SECRET}",
    ]


def dump_yaml(docs: list[dict[str, Any]]) -> str:
    """YAML documents, keys in the order they were built."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # a shared list written out again, not `&id001`
            return True

    def _str(dumper: yaml.SafeDumper, s: str) -> Any:  # multi-line strings as blocks, the rest plain
        return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)

    _Dumper.add_representer(str, _str)
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
