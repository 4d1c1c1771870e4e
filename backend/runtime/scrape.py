"""The Prometheus scrape config of a running stack, in `<data dir>/prometheus/`:

- `targets.json`: file_sd targets, one per live instance that serves /metrics, made from the
  heartbeats (each publishes where it serves, `Heartbeat.metrics_addr`: backend/metrics.py), so a
  port that fell back to a free one, or a target instance started beside its legacy one during a
  cutover, is scraped where it is. The supervisor rewrites it when the instances change;
  Prometheus re-reads it by itself.
- `prometheus.yml`: a scrape config whose one job (`tradeops`) reads those targets:
  `prometheus --config.file=<data dir>/prometheus/prometheus.yml`.

Each target carries the labels `service`, `environment` and `instance_id` (so `up` says which
instance is down); the samples carry the same ones (`honor_labels`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from backend.fileio import write_text_atomic
from backend.messages import Heartbeat

JOB = "tradeops"
TARGETS_FILE = "targets.json"
CONFIG_FILE = "prometheus.yml"
LIVE_STATES = ("starting", "running", "degraded", "draining")


def prometheus_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "prometheus"


def targets(beats: Iterable[Heartbeat], instances: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """file_sd target groups for the live instances that serve /metrics (only those of
    `instances`, the instance ids, when given), sorted by instance."""
    only = None if instances is None else set(instances)
    out = [
        {
            "targets": [b.metrics_addr],
            "labels": {"service": b.service, "environment": b.environment, "instance_id": b.instance},
        }
        for b in beats
        if b.metrics_addr and b.state in LIVE_STATES and (only is None or b.instance in only)
    ]
    return sorted(out, key=lambda t: t["labels"]["instance_id"])


def scraped(data_dir: Path | str) -> set[str]:
    """The instance ids in the data dir's targets file (empty when there is none)."""
    try:
        groups = json.loads((prometheus_dir(data_dir) / TARGETS_FILE).read_text())
    except (OSError, ValueError):
        return set()
    return {g.get("labels", {}).get("instance_id", "") for g in groups if isinstance(g, dict)}


def config_text(targets_file: Path | str, *, scrape_interval: str = "15s", job: str = JOB) -> str:
    """A Prometheus config (YAML) with one job reading `targets_file`."""
    return (
        "# written by tradeops (backend/runtime/scrape.py): the running instances' /metrics\n"
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  evaluation_interval: {scrape_interval}\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        "    honor_labels: true\n"
        "    file_sd_configs:\n"
        f"      - files: [{json.dumps(str(targets_file))}]\n"
        "        refresh_interval: 5s\n"
    )


class ScrapeConfig:
    """The files of one data dir; `update` rewrites the targets only when they changed."""

    def __init__(self, data_dir: Path | str, *, scrape_interval: str = "15s") -> None:
        self.dir = prometheus_dir(data_dir)
        self.targets_path = self.dir / TARGETS_FILE
        self.config_path = self.dir / CONFIG_FILE
        self.scrape_interval = scrape_interval
        self._last: str | None = None

    def write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.targets_path.exists():
            self.update([])
        write_text_atomic(self.config_path, config_text(self.targets_path, scrape_interval=self.scrape_interval))
        return self.config_path

    def update(self, groups: list[dict[str, Any]]) -> bool:
        """Write the target groups if they changed; whether they did."""
        text = json.dumps(groups, indent=1) + "\n"
        if text == self._last:
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.targets_path, text)
        self._last = text
        return True
