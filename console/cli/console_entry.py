"""`tradeops` with no command opens the console on the running stack; `tradeops demo` starts the
embedded stack with paper orders flowing and opens the console, stopping everything on quit."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from backend.errors import TradeopsError
from console import keymap
from console.cli.context import Context, command

ORDER = 5


def register(sub: Any) -> None:
    p = command(sub, "demo", "start the embedded stack (Redis, exchange, services, paper orders) and open the console")
    p.add_argument("--read-only", action="store_true", help="no action that changes anything")
    p.add_argument("--rate", type=float, default=2000.0, help="local exchange trades per second")
    p.add_argument("--orders-per-s", type=float, default=2.0, help="paper orders per second")
    p.set_defaults(func=cmd_demo)
    p = command(sub, "console", "open the console on the running stack (same as plain `tradeops`)")
    p.add_argument("--read-only", action="store_true")
    p.add_argument(
        "--replay",
        nargs="?",
        const="",
        default=None,
        metavar="FILE",
        help="play back a recording made with --record (play/pause, step, seek, with its audit entries); "
        "without FILE, the built-in demo data",
    )
    p.add_argument(
        "--record",
        default=None,
        metavar="FILE|DIR",
        help="record what the console shows (gzip) to FILE; to a DIR/: one file per session, the ones "
        "older than --keep-days deleted (for always-on recording)",
    )
    p.add_argument("--keep-days", type=float, default=14.0, help="with --record DIR/: days of recordings to keep (14)")
    p.set_defaults(func=cmd_console)


def cmd_console(ctx: Context, args: argparse.Namespace) -> int:
    if args.replay is not None and args.record:
        raise TradeopsError("--record and --replay do not go together: a replay records nothing new")
    if args.replay:
        return play(ctx, Path(args.replay))
    return open_console(ctx, args.read_only, args.replay is not None, record=args.record, keep_days=args.keep_days)


def play(ctx: Context, path: Path) -> int:
    from console.data import recording
    from console.data.player import PlayerSource
    from console.player import ReplayApp

    keymap.check(ctx.settings.keymap)
    rec = recording.read(path)
    ReplayApp(PlayerSource(rec), keymap=ctx.settings.keymap, theme=ctx.settings.theme).run()
    return 0


def _recorder(target: str, keep_days: float, source: str) -> Any:
    """The recorder for --record: FILE, or a new file per session in DIR (old ones pruned)."""
    from console.data import recording

    path = Path(target).expanduser()
    if target.endswith(("/", os.sep)) or path.is_dir():
        if keep_days <= 0:
            raise TradeopsError(f"--keep-days must be more than 0, not {keep_days:g}")
        path.mkdir(parents=True, exist_ok=True)
        for gone in recording.prune(path, keep_days):
            print(f"tradeops: deleted the recording {gone.name} (older than {keep_days:g} days)", file=sys.stderr)
        path = recording.session_file(path)
    return recording.Recorder(path, source=source)


def open_console(
    ctx: Context, read_only: bool = False, replay: bool = False, record: str | None = None, keep_days: float = 14.0
) -> int:
    from console.app import TradeopsApp

    keymap.check(ctx.settings.keymap)  # a misspelt id is an error now, not a key that does nothing
    if replay:
        from console.actions import ReplayActions
        from console.data.replay import ReplaySource

        replay_src = ReplaySource()
        TradeopsApp(  # None: a recording opens read-only (TradeopsApp), its changing keys hidden
            replay_src, ReplayActions(replay_src.current), read_only=None, live=False, keymap=ctx.settings.keymap
        ).run()
        return 0
    from backend.bus import connection

    url = connection.resolve_url(ctx.settings.redis_url, ctx.data_dir)
    if url is None:
        raise TradeopsError(
            f"no running stack for {ctx.data_dir}: start one with `tradeops up` "
            "(or `tradeops demo` for everything at once)"
        )
    connection.connect(url, auth=connection.operator_login(ctx.settings, url)).close()
    from console.actions import LiveActions
    from console.data.live import LiveSource

    src: Any = LiveSource(url, ctx.settings, ctx.operator)
    if record:
        from console.data.recording import RecordingSource

        src = RecordingSource(src, _recorder(record, keep_days, url))
    try:
        TradeopsApp(
            src,
            LiveActions(url, ctx.settings, ctx.operator),
            read_only=read_only or ctx.settings.read_only,
            keymap=ctx.settings.keymap,
            theme=ctx.settings.theme,
        ).run()
    finally:
        src.close()
    if record:
        print(f"recorded {src.recorder.frames} snapshots to {src.recorder.path}")
    return 0


def cmd_demo(ctx: Context, args: argparse.Namespace) -> int:
    from backend.runtime.paperflow import PaperFlow
    from backend.runtime.stack import Stack

    stack = Stack(ctx.settings, exchange_rate=args.rate)
    print(f"starting the demo stack in {ctx.data_dir} ...", flush=True)
    url = stack.up(detach=False)
    from backend.bus import connection

    flow = PaperFlow(url, args.orders_per_s, auth=connection.operator_login(ctx.settings))
    t = threading.Thread(target=flow.run, daemon=True)
    t.start()
    try:
        ctx.settings.redis_url = url
        open_console(ctx, args.read_only)
    finally:
        flow.stop()
        t.join(5)
        print("stopping the demo stack ...", flush=True)
        t0 = time.monotonic()
        stack.down()
        print(f"stopped in {time.monotonic() - t0:.1f}s")
    return 0
