"""`tradeops bench NAME`: each module in backend/bench that defines NAME, HELP,
`add_arguments(parser)` and `run(args) -> dict` is a benchmark. Every benchmark takes `--json`
(one JSON object on stdout) and `--seconds`, starts what it needs and stops it after. One that
defines `Grant` moves services through the migration in its private Redis: it gets
`run(args, grant=...)`, which records proceed decisions for the gates it needs (backend/ does not
import gates). The gates' benchmark (gates/bench.py) times the console's poll: it gets
`run(args, live_source=...)` (gates/ does not import the console)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import backend.bench
from console.cli.context import Context, command

ORDER = 90


def _benchmarks() -> list[Any]:
    mods = []
    for info in pkgutil.iter_modules(backend.bench.__path__):
        mod = importlib.import_module(f"backend.bench.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    from console import bench_ui  # the console's own benchmark lives beside the console
    from gates import bench as gates_bench  # the gates' beside the gates

    mods += [bench_ui, gates_bench]
    return sorted(mods, key=lambda m: m.NAME)


def register(sub: Any) -> None:
    p = command(sub, "bench", "benchmarks: each starts what it needs and prints its figures")
    bsub = p.add_subparsers(dest="bench_cmd", metavar="BENCHMARK", required=True)
    for mod in _benchmarks():
        q = command(bsub, mod.NAME, mod.HELP)
        q.add_argument("--json", action="store_true", help="one JSON object on stdout")
        q.add_argument(
            "--seconds", type=float, default=getattr(mod, "DEFAULT_SECONDS", 10.0), help="how long to measure"
        )
        mod.add_arguments(q)
        q.set_defaults(func=_runner(mod))


def _runner(mod: Any) -> Callable[[Context, argparse.Namespace], int]:
    def run(ctx: Context, args: argparse.Namespace) -> int:
        if args.seconds <= 0:
            from backend.errors import TradeopsError

            raise TradeopsError("--seconds must be positive")
        if hasattr(mod, "Grant"):  # it moves services through the migration: the gates it needs
            from gates.bench import proceed_for_benchmark

            result = mod.run(args, grant=proceed_for_benchmark)
        elif mod.NAME == "gates":  # it times the console's poll: the console's live source
            result = mod.run(args, live_source=_live_source)
        else:
            result = mod.run(args)
        if args.json:
            ctx.print_json(result)
        else:
            width = max(len(k) for k in result) if result else 0
            print(f"bench {mod.NAME}")
            for k, v in result.items():
                print(f"  {k.ljust(width)}  {_fmt(v)}")
        return 0

    return run


def _live_source(url: str) -> Any:
    """The console's live source, reading the board, gates and audit on every poll."""
    from backend.settings import Settings
    from console.data.live import LiveSource

    return LiveSource(url, Settings(), "bench", slow_every=1)


def _fmt(v: Any) -> str:
    if isinstance(v, list) and v:  # one item a line (a dict as key=value pairs)
        return "".join(
            "\n    " + (" ".join(f"{k}={_fmt(x)}" for k, x in i.items()) if isinstance(i, dict) else _fmt(i)) for i in v
        )
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
