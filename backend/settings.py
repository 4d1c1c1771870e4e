"""One typed settings object: config file (TOML) + environment (TRADEOPS_*) + command-line flags.

A typo in the config file is an error naming the key, never silently ignored.
Per-service sections (`[services.<name>]`) are validated by each service's own Config struct.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from backend import locations
from backend.bus import partitions as _partitions
from backend.bus.partitions import FOLLOWS, MAX_PARTITIONS, OUTPUTS, PARTITIONABLE
from backend.bus.streams import memory_bytes
from backend.errors import ConfigError

MIN_MAXMEMORY = 64 * 2**20


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    redis_url: str | None = None
    """Redis to use instead of the embedded one (env TRADEOPS_REDIS_URL, flag --redis-url)."""
    redis_admin_url: str | None = None
    """An external Redis's admin login, e.g. `redis://admin@redis:6379/0` (its password from the
    secrets provider, never in the URL): `tradeops redis acl apply` sets the generated users
    through it, `acl check` reads them back (env TRADEOPS_REDIS_ADMIN_URL)."""
    redis_urls: dict[str, str] = {}
    """Per Redis user, the URL it connects with (`oms = "redis://oms@redis:6379/0"`): a deployment
    whose users exist already; each password from the secrets provider."""
    data_dir: str | None = None
    """Where the embedded Redis, logs and stores live (env TRADEOPS_DATA_DIR, flag --data-dir)."""
    redis_maxmemory: str = "1gb"
    """The embedded Redis's `maxmemory` (e.g. 1gb, 2gb; env TRADEOPS_REDIS_MAXMEMORY), with the
    noeviction policy: at the limit, writes fail rather than evicting stream data. The streams'
    budgets (backend/bus/streams.py) fit the default with room to spare."""
    operator: str | None = None
    """A label for who is at the keyboard (env TRADEOPS_OPERATOR). Gate, migration and kill switch
    actions are signed: who acted is the operator registry's name for the signing key."""
    signing_key: str | None = None
    """The SSH key that signs operator actions (env TRADEOPS_SIGNING_KEY, flag --key): a private
    key file, or a .pub file whose key is in the ssh-agent; unset: the ssh-agent's registered key."""
    anchor_to: list[str] = []
    """Further places for the audit log's signed checkpoints, besides the data dir: directories
    (a git work tree gets each checkpoint committed)."""
    environment: str = "legacy"
    """Default environment for `tradeops service run`: legacy or target (env TRADEOPS_ENVIRONMENT)."""
    services: dict[str, dict[str, Any]] = {}
    """Per-service settings, `[services.<name>]`, checked by that service's Config."""
    infra: dict[str, str] = {}
    """Endpoints of real core infrastructure (`questdb = "http://..."`); unset means the embedded stand-in."""
    metrics_host: str = "127.0.0.1"
    """The address the services' Prometheus /metrics endpoints bind (0.0.0.0 to be scraped from
    another host or container network); each one's port is `[services.<name>] metrics_port`."""
    keymap: dict[str, str] = {}
    """Console key remaps: binding id -> keys (e.g. `"screen.orders" = "o"`)."""
    theme: str = "textual-dark"
    """Console theme."""
    read_only: bool = False
    """Console read-only mode: no action that changes anything."""
    partitions: dict[str, int] = {}
    """Streams split into partitions (`[partitions]`, e.g. `"md.ticks.raw" = 4`): each partition a
    stream of its own with one owner among the consuming service's instances (backend/bus/
    partitions.py, leases.py). Unset or 1: the single stream, as always."""
    replicas: dict[str, int] = {}
    """Instances per service in each environment (`[replicas]`, e.g. `normalizer = 2`): the local
    supervisor runs that many; they share the service's consumer groups (and partitions)."""
    gates_file: str | None = None
    """A TOML file adding or replacing gates, for the console and the CLI alike (env
    TRADEOPS_GATES_FILE, flag --gates-file); relative to the config file when set there."""

    def gates_path(self) -> Path | None:
        """The user's gates file, if any (what the migration rules read the guards from too)."""
        return Path(self.gates_file).expanduser() if self.gates_file else None

    def resolved_data_dir(self) -> Path:
        return locations.data_dir(self.data_dir)

    def resolved_operator(self) -> str:
        if self.operator:
            return self.operator
        try:
            return getpass.getuser()
        except Exception:  # noqa: BLE001  # pragma: no cover - no user database in some containers
            return "operator"

    def partition_count(self, stream: str) -> int:
        """How many partitions `stream` is split into (1: not split); a stream of the order path
        is split as orders.new is."""
        return _partitions.count(stream, self.partitions)

    def service_section(self, name: str) -> dict[str, Any]:
        return dict(self.services.get(name, {}))


_ENV = {
    "TRADEOPS_REDIS_URL": "redis_url",
    "TRADEOPS_DATA_DIR": "data_dir",
    "TRADEOPS_OPERATOR": "operator",
    "TRADEOPS_ENVIRONMENT": "environment",
    "TRADEOPS_GATES_FILE": "gates_file",
    "TRADEOPS_SIGNING_KEY": "signing_key",
    "TRADEOPS_REDIS_MAXMEMORY": "redis_maxmemory",
    "TRADEOPS_REDIS_ADMIN_URL": "redis_admin_url",
    "TRADEOPS_METRICS_HOST": "metrics_host",
}


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load settings: file, then env, then explicit overrides (None values are ignored)."""
    path = locations.config_file(config)
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path}: not valid TOML: {exc}") from None
        for key in ("gates_file", "signing_key"):  # a path in the config is relative to it
            if isinstance(raw.get(key), str):
                raw[key] = str(path.parent / Path(raw[key]).expanduser())
        if isinstance(raw.get("anchor_to"), list):
            raw["anchor_to"] = [
                str(path.parent / Path(p).expanduser()) if isinstance(p, str) else p for p in raw["anchor_to"]
            ]
        if "roles" in raw:
            raise ConfigError(
                f"config {path}: `roles` is no longer read: roles come from the signed operator "
                f"registry (`tradeops operators list`); remove it"
            )
    elif config is not None:
        raise ConfigError(f"config {path}: no such file")
    for env, key in _ENV.items():
        if os.environ.get(env):
            raw[key] = os.environ[env]
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(raw, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    try:
        maxmemory = memory_bytes(settings.redis_maxmemory)
    except ValueError as exc:
        raise ConfigError(f"config {path}: redis_maxmemory: {exc}") from None
    if maxmemory < MIN_MAXMEMORY:
        raise ConfigError(
            f"config {path}: redis_maxmemory {settings.redis_maxmemory!r} is below "
            f"{MIN_MAXMEMORY // 2**20} MB, too little for the streams' budgets to mean anything"
        )
    if settings.environment not in ("legacy", "target"):
        raise ConfigError(f"config {path}: environment must be legacy or target, not {settings.environment!r}")
    for stream, n in settings.partitions.items():
        if stream not in PARTITIONABLE:
            raise ConfigError(
                f"config {path}: [partitions] {stream!r} is not a stream that can be partitioned "
                f"(these can: {', '.join(PARTITIONABLE)})"
            )
        if isinstance(n, bool) or not 1 <= n <= MAX_PARTITIONS:
            raise ConfigError(f"config {path}: [partitions] {stream} = {n!r}: a count from 1 to {MAX_PARTITIONS}")
        if stream in FOLLOWS:
            raise ConfigError(
                f"config {path}: [partitions] {stream!r} is split as {FOLLOWS[stream]} is: set "
                f'"{FOLLOWS[stream]}" = N (the whole order path follows it, by account)'
            )
    for service, n in settings.replicas.items():
        if isinstance(n, bool) or not 1 <= n <= 64:
            raise ConfigError(f"config {path}: [replicas] {service} = {n!r}: a count from 1 to 64")
    for source, outputs in OUTPUTS.items():
        n = settings.partition_count(source)
        for out in outputs:
            if settings.partition_count(out) not in (1, n):
                raise ConfigError(
                    f"config {path}: [partitions] {out} = {settings.partition_count(out)}: split as {source} is "
                    f"({n}) or not at all (1): each of {source}'s partitions writes the same partition of it"
                )
    _partitions.use(settings.partitions)  # this process routes and reads as the settings say
    return settings


def convert_section(name: str, raw: dict[str, Any], type_: type[msgspec.Struct]) -> Any:
    """Validate one `[services.<name>]` section against a service Config struct."""
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"[services.{name}]: {exc}") from None
