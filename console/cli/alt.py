"""`tradeops alt search "query"`: full-text search over stored alt-data items."""

from __future__ import annotations

import argparse
import time
from typing import Any

from console.cli._table import show
from console.cli.context import Context, command

ORDER = 25


def register(sub: Any) -> None:
    p = command(sub, "alt", "alt data (news, sentiment)")
    asub = p.add_subparsers(dest="alt_cmd", metavar="ACTION", required=True)
    q = command(asub, "search", "full-text search over stored alt items (FTS5 / OpenSearch syntax)")
    q.add_argument("query")
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_search)


def cmd_search(ctx: Context, args: argparse.Namespace) -> int:
    from backend.alt.index import open_index

    section = ctx.settings.service_section("sink-alt")
    index = open_index(ctx.data_dir, section.get("opensearch") or ctx.settings.infra.get("opensearch"))
    try:
        hits = index.search(args.query, args.limit)
    finally:
        index.close()
    if args.json:
        ctx.print_json([h.__dict__ for h in hits])
        return 0
    if not hits:
        print(f"no matches for {args.query!r}")
        return 0
    show(
        ["TIME (UTC)", "SYMBOLS", "SENTIMENT", "HEADLINE", "ID"],
        [
            [
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(h.ts_ns / 1e9)),
                ",".join(h.symbols),
                f"{h.sentiment:+.2f}",
                h.headline,
                h.id[:12],
            ]
            for h in hits
        ],
    )
    return 0
