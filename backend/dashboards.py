"""Grafana dashboards (JSON models) for the services' Prometheus metrics (backend/metrics.py):
`tradeops dashboards [--out DIR]` writes them (default `<data dir>/grafana/dashboards`, where
`tradeops up` also puts them), and `validate` checks that every panel's PromQL names only metrics
that exist: in the catalog of what the services export, or on live /metrics endpoints. The phase1
gate's grafana probe loads the written files and validates them that way.

Each dashboard takes its Prometheus data source from the `datasource` variable, so it imports into
any Grafana (or is provisioned from the directory as it is)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.fileio import write_text_atomic

SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
"""Series Prometheus makes for every target itself (not on any /metrics endpoint)."""
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless", "inf"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]
    """(PromQL, legend) per query."""
    unit: str = "short"
    kind: str = "timeseries"


def _p(title: str, *exprs: tuple[str, str], unit: str = "short", kind: str = "timeseries") -> Panel:
    return Panel(title, exprs, unit, kind)


def _quantiles(selector: str, legend: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            f"histogram_quantile({q}, sum by (le, name) (rate(tradeops_latency_seconds_bucket{{{selector}}}[1m])))",
            f"{legend} p{int(q * 100)}",
        )
        for q in (0.5, 0.99)
    )


DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "tradeops-services": (
        "tradeops: services",
        [
            _p(
                "Targets up",
                ('up{job="tradeops"}', "{{instance_id}}"),
                kind="stat",
            ),
            _p(
                "Processed per second",
                ("sum by (service, environment) (rate(tradeops_processed_total[1m]))", "{{service}} {{environment}}"),
                unit="ops",
            ),
            _p("Consumer group lag", ("sum by (service, stream) (tradeops_lag)", "{{service}} {{stream}}")),
            _p(
                "Pending (delivered, not acked)",
                ("sum by (service, stream) (tradeops_pending)", "{{service}} {{stream}}"),
            ),
            _p(
                "Dead-lettered per minute",
                ("sum by (service, stream) (rate(tradeops_dead_lettered_total[5m])) * 60", "{{service}} {{stream}}"),
            ),
            _p("Dead-letter streams", ("max by (stream) (tradeops_dlq_entries)", "{{stream}}")),
            _p(
                "Heartbeat age",
                ("max by (service, instance_id) (tradeops_heartbeat_age_seconds)", "{{instance_id}}"),
                unit="s",
            ),
            _p(
                "Instances not running",
                ('sum by (service, state) (tradeops_state{state!="running"} == 1)', "{{service}} {{state}}"),
            ),
            _p(
                "Undecodable entries skipped per minute",
                ("sum by (service) (rate(tradeops_skipped_undecodable_total[5m])) * 60", "{{service}}"),
            ),
        ],
    ),
    "tradeops-latency": (
        "tradeops: latency",
        [
            _p(
                "Risk round trip (OMS -> risk -> OMS)",
                *_quantiles('service="oms", name="risk_rt"', "risk rt"),
                unit="s",
            ),
            _p(
                "OMS stages",
                *_quantiles('service="oms", name=~"intake_to_routed|intake_to_accepted"', "{{name}}"),
                unit="s",
            ),
            _p("Risk check", *_quantiles('service="risk", name="check"', "check"), unit="s"),
            _p("Normalizer batch", *_quantiles('service="normalizer", name="batch"', "batch"), unit="s"),
            _p("Gateway feed delay", *_quantiles('service="gateway", name="feed_delay"', "feed delay"), unit="s"),
            _p(
                "Recorded per second, every recorder",
                ("sum by (service, name) (rate(tradeops_latency_seconds_count[1m]))", "{{service}} {{name}}"),
                unit="ops",
            ),
        ],
    ),
    "tradeops-flow": (
        "tradeops: market data and orders",
        [
            _p(
                "Ticks per second",
                ("sum(rate(tradeops_gateway_received_total[1m]))", "received (gateway)"),
                ("sum(rate(tradeops_normalizer_ticks_out_total[1m]))", "clean (normalizer)"),
                ("sum(rate(tradeops_sink_ticks_rows_written_total[1m]))", "stored (sink-ticks)"),
                unit="ops",
            ),
            _p(
                "Bad ticks per minute",
                ("sum(rate(tradeops_normalizer_rejected_total[5m])) * 60", "rejected"),
                ("sum(rate(tradeops_normalizer_repeats_total[5m])) * 60", "repeats"),
                ("sum(rate(tradeops_normalizer_late_ticks_total[5m])) * 60", "late"),
            ),
            _p(
                "Tick store",
                ("sum(tradeops_sink_ticks_buffered)", "buffered rows"),
                ("sum(increase(tradeops_sink_ticks_flush_failures_total[5m]))", "flush failures (5m)"),
            ),
            _p(
                "Orders in flight",
                ("sum(tradeops_oms_in_flight)", "in flight"),
                ("max(tradeops_oms_in_flight_limit)", "admission limit"),
            ),
            _p(
                "Orders refused per minute",
                ("sum by (signal) (rate(tradeops_oms_overloaded_total[5m])) * 60", "overloaded: {{signal}}"),
                ("sum by (rule) (rate(tradeops_risk_denials_total[5m])) * 60", "risk: {{rule}}"),
            ),
            _p(
                "Venue",
                ("sum(rate(tradeops_live_gateway_orders_total[1m]))", "orders/s"),
                ("sum(rate(tradeops_live_gateway_reports_total[1m]))", "reports/s"),
                ("sum(tradeops_live_gateway_working)", "working"),
            ),
            _p("Kill switch", ("max(tradeops_risk_kill_switch)", "on"), kind="stat"),
        ],
    ),
}


def default_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "grafana" / "dashboards"


def build(uid: str) -> dict[str, Any]:
    """The Grafana JSON model of dashboard `uid`."""
    title, panels = DASHBOARDS[uid]
    out = []
    for i, p in enumerate(panels):
        out.append(
            {
                "id": i + 1,
                "type": p.kind,
                "title": p.title,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                "targets": [
                    {
                        "refId": chr(ord("A") + j),
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                        "expr": expr,
                        "legendFormat": legend,
                    }
                    for j, (expr, legend) in enumerate(p.exprs)
                ],
            }
        )
    return {
        "uid": uid,
        "title": title,
        "tags": ["tradeops"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"}]
        },
        "panels": out,
    }


def write(out_dir: Path | str) -> list[Path]:
    """Write every dashboard as `<uid>.json` into `out_dir`; the paths written."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for uid in DASHBOARDS:
        path = d / f"{uid}.json"
        write_text_atomic(path, json.dumps(build(uid), indent=1) + "\n")
        paths.append(path)
    return paths


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, label names, keywords, durations
    and numbers left out)."""
    s = _STRING.sub('""', expr)
    s = _BRACES.sub(" ", s)
    s = _RANGE.sub(" ", s)
    s = _GROUPING.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        name = m.group(0)
        rest = s[m.end() :].lstrip()
        if name.lower() in KEYWORDS or rest.startswith("("):
            continue
        if m.start() > 0 and (s[m.start() - 1].isdigit() or s[m.start() - 1] == "."):
            continue  # the exponent or unit of a number (1e3)
        names.add(name)
    return names


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of a dashboard's panels."""
    return [(p.get("title", "?"), t.get("expr", "")) for p in dashboard.get("panels", []) for t in p.get("targets", [])]


def validate(dashboard: Any, known: Iterable[str]) -> list[str]:
    """What is wrong with a dashboard's JSON model: not a dashboard, a panel without a query, or a
    query that names no metric or one not in `known` (sample names: `x_total`, `x_bucket` ...)."""
    if not isinstance(dashboard, dict) or not isinstance(dashboard.get("panels"), list):
        return ["not a Grafana dashboard (no `panels` list)"]
    title = dashboard.get("title") or dashboard.get("uid") or "?"
    have = set(known) | SYNTHETIC
    problems = []
    for p in dashboard["panels"]:
        if not p.get("targets"):
            problems.append(f"{title}: panel {p.get('title', '?')!r} has no query")
    for panel, expr in queries(dashboard):
        names = metric_names(expr)
        if not names:
            problems.append(f"{title}: panel {panel!r}: query {expr!r} names no metric")
        for n in sorted(names - have):
            problems.append(f"{title}: panel {panel!r}: no metric {n!r} (query {expr!r})")
    return problems


def validate_dir(d: Path | str, known: Iterable[str]) -> tuple[list[Path], list[str]]:
    """The dashboards in `d` and what is wrong with them (a file that is not JSON is named)."""
    known = set(known)
    files = sorted(Path(d).glob("*.json"))
    problems = []
    for f in files:
        try:
            model = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{f.name}: not readable JSON ({exc})")
            continue
        problems += [f"{f.name}: {p}" for p in validate(model, known)]
    return files, problems
