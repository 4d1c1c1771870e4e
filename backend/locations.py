"""Where tradeops keeps its files: XDG data and config dirs, overridable by env and flags."""

from __future__ import annotations

import os
from pathlib import Path


def xdg_data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def xdg_config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data dir: `--data-dir`, else TRADEOPS_DATA_DIR, else $XDG_DATA_HOME/tradeops."""
    raw = explicit or os.environ.get("TRADEOPS_DATA_DIR")
    return Path(raw).expanduser().resolve() if raw else xdg_data_home() / "tradeops"


def config_file(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file: `--config`, else TRADEOPS_CONFIG, else $XDG_CONFIG_HOME/tradeops/config.toml."""
    raw = explicit or os.environ.get("TRADEOPS_CONFIG")
    return Path(raw).expanduser() if raw else xdg_config_home() / "tradeops" / "config.toml"


def redis_dir(base: Path) -> Path:
    return base / "redis"


def logs_dir(base: Path) -> Path:
    return base / "logs"


def archive_dir(base: Path) -> Path:
    """Where the control-plane logs' archived entries live (backend/bus/archive.py)."""
    return base / "archive"
