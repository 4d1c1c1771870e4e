"""What every command shares: settings (config + env + flags), the data dir, the bus."""

from __future__ import annotations

import argparse
import json
import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from redis import Redis

from backend.bus import connection
from backend.bus.entries import Skips
from backend.settings import Settings, load_settings

if TYPE_CHECKING:
    from gates.signing import Signer


def add_common(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """Options every command accepts, before or after the command name."""
    default = None if top else argparse.SUPPRESS
    g = parser.add_argument_group("common options")
    g.add_argument(
        "--data-dir",
        default=default,
        metavar="DIR",
        help="data dir (env TRADEOPS_DATA_DIR; default $XDG_DATA_HOME/tradeops)",
    )
    g.add_argument(
        "--redis-url",
        default=default,
        metavar="URL",
        help="use this Redis instead of the embedded one (env TRADEOPS_REDIS_URL)",
    )
    g.add_argument(
        "--config",
        default=default,
        metavar="FILE",
        help="config file (env TRADEOPS_CONFIG; default $XDG_CONFIG_HOME/tradeops/config.toml)",
    )
    g.add_argument(
        "--operator",
        default=default,
        metavar="NAME",
        help="a label for who is acting (env TRADEOPS_OPERATOR); the signing key says who",
    )
    g.add_argument(
        "--key",
        default=default,
        metavar="FILE",
        help="the SSH key that signs (env TRADEOPS_SIGNING_KEY): a private key file, or a .pub "
        "file whose key is in ssh-agent; default: the agent's registered key",
    )


def command(sub: Any, name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
    """Add a sub-command that also accepts the common options."""
    p = sub.add_parser(name, help=help, description=help, **kw)
    add_common(p)
    return p


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.skips = Skips()
        """Undecodable entries the command skipped, per stream: one note each on stderr at the end."""

    @cached_property
    def settings(self) -> Settings:
        a = self.args
        return load_settings(
            getattr(a, "config", None),
            redis_url=getattr(a, "redis_url", None),
            data_dir=getattr(a, "data_dir", None),
            operator=getattr(a, "operator", None),
            gates_file=getattr(a, "gates_file", None),
            signing_key=getattr(a, "key", None),
        )

    @property
    def data_dir(self) -> Path:
        return self.settings.resolved_data_dir()

    @property
    def operator(self) -> str:
        return self.settings.resolved_operator()

    @property
    def label(self) -> str:
        """The --operator / TRADEOPS_OPERATOR name given, if any: only a label."""
        return self.settings.operator or ""

    @cached_property
    def signer(self) -> Signer:
        """The operator's signing key: --key, the config's signing_key, or the ssh-agent's key
        that the registry knows."""
        from gates import operators, signing

        return signing.signer_for(self.settings.signing_key, operators.load(self.redis).fingerprints())

    def redis_url(self) -> str:
        """The bus URL, or one clear line (exit 1) when there is none."""
        return connection.require_url(self.settings.redis_url, self.data_dir)

    @cached_property
    def redis(self) -> redis.Redis:
        """The bus, logged in as the operator (TRADEOPS_REDIS_USER, else `operator`)."""
        url = self.redis_url()
        return connection.connect(
            url,
            auth=connection.operator_login(self.settings, url),
            who=connection.looked_for(connection.user_of(connection.OPERATOR), self.settings),
        )

    @cached_property
    def admin(self) -> Redis:
        """The bus as `admin` (`tradeops redis`): the settings' admin URL, else the bus URL."""
        admin_url = self.settings.redis_admin_url
        url = admin_url or self.redis_url()
        return connection.connect(url, auth=connection.admin_login(self.settings, url=admin_url))

    @staticmethod
    def print_json(obj: Any) -> None:
        json.dump(obj, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
