"""`tradeops dashboards`: the Grafana dashboards of the services' Prometheus metrics, as JSON
(backend/dashboards.py), checked against the metrics the services export before they are written."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from backend.errors import TradeopsError
from console.cli.context import Context, command

ORDER = 12


def register(sub: Any) -> None:
    p = command(sub, "dashboards", "write Grafana dashboards (JSON) for the services' Prometheus metrics")
    p.add_argument(
        "--out", metavar="DIR", default=None, help="where to write them (default <data dir>/grafana/dashboards)"
    )
    p.set_defaults(func=cmd_dashboards)


def cmd_dashboards(ctx: Context, args: argparse.Namespace) -> int:
    from backend import dashboards, metrics

    out = Path(args.out) if args.out else dashboards.default_dir(ctx.data_dir)
    if out.exists() and not out.is_dir():
        raise TradeopsError(f"--out {out}: not a directory")
    paths = dashboards.write(out)
    _, problems = dashboards.validate_dir(out, metrics.catalog())
    if problems:
        raise TradeopsError("the dashboards name metrics no service exports: " + "; ".join(problems))
    n = sum(len(dashboards.queries(dashboards.build(uid))) for uid in dashboards.DASHBOARDS)
    for p in paths:
        print(p)
    print(f"{len(paths)} dashboards, {n} queries, every metric they name exported by the services")
    return 0
