"""`tradeops bench console`: the console's start-to-first-frame time and key-press-to-screen-update
latency (P50/P99) while the market-data pipeline runs at `--rate` ticks/s (exchange, gateway,
normalizer and sink as processes, the app headless in this process)."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

import numpy as np

NAME = "console"
HELP = "console: start to first frame, key press to screen update P99, under md load"
DEFAULT_SECONDS = 20.0
PACE_S = 0.15  # between key presses


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=20_000, help="ticks per second on the pipeline (default 20000)")


async def _drive(url: str, seconds: float) -> dict[str, Any]:
    from textual import events

    from backend.settings import Settings
    from console.actions import LiveActions
    from console.app import SCREENS, TradeopsApp
    from console.data.live import LiveSource

    settings = Settings()
    t0 = time.monotonic()
    app = TradeopsApp(LiveSource(url, settings, "bench"), LiveActions(url, settings, "bench"), poll_s=0.5)
    lat: list[float] = []
    per: dict[str, list[float]] = {}
    async with app.run_test(size=(150, 45)) as pilot:
        while app.first_frame_s is None:
            await asyncio.sleep(0.005)
        first = time.monotonic() - t0
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            i += 1
            name = SCREENS[i % len(SCREENS)]
            k0 = time.perf_counter()
            app.post_message(events.Key(str(i % len(SCREENS) + 1), str(i % len(SCREENS) + 1)))
            # until the new screen is up, has taken the newest snapshot, has processed what that
            # queued, and its frame is rendered (what the next refresh tick would draw)
            while not (
                app.screen.__class__.__name__.lower() == f"{name}screen" and getattr(app.screen, "shown_at", 0) > k0
            ):
                await asyncio.sleep(0.001)
            await pilot._wait_for_screen()
            app.screen._on_timer_update()
            lat.append((time.perf_counter() - k0) * 1000)
            per.setdefault(name, []).append(lat[-1])
            await asyncio.sleep(PACE_S)  # an operator's pace, not a flood
        tps = app.snapshot.total_tps if app.snapshot else 0.0
    cold = np.array(lat[: len(SCREENS)])  # each screen's first visit mounts it
    arr = np.array(lat[len(SCREENS) :]) if len(lat) > len(SCREENS) else cold
    return {
        "first_frame_s": round(first, 3),
        "key_p50_ms": round(float(np.percentile(arr, 50)), 2),
        "key_p99_ms": round(float(np.percentile(arr, 99)), 2),
        "key_presses": len(arr),
        "first_visit_max_ms": round(float(cold.max()), 2),
        "ticks_per_s_seen": round(tps),
        "worst_ms_by_screen": {k: round(max(v[1:] or v), 1) for k, v in per.items()},
    }


def _first_frame_of_process(url: str, data_dir: Any, timeout: float = 30.0) -> float:
    """Seconds from starting `tradeops console` as its own process, in a pseudo-terminal, to its
    first frame on that terminal (the status bar naming the overview screen with live data):
    interpreter start, imports, connecting and the first snapshot, as an operator waits for them."""
    import os
    import pty
    import select

    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "150", "LINES": "45"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "console.cli", "--data-dir", str(data_dir), "--redis-url", url, "console"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    try:
        while time.monotonic() - t0 < timeout:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
                if b"overview" in seen and b"operator" in seen:
                    return round(time.monotonic() - t0, 3)
        raise RuntimeError(f"the console drew no first frame within {timeout:.0f}s")
    finally:
        os.write(master, b"q")
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(master)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from backend.bench.harness import BenchStack

    with BenchStack() as st:
        ex = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "console.cli",
                "--data-dir",
                str(st.data_dir),
                "exchange",
                "--rate",
                str(args.rate),
                "--news-every",
                "3600",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert ex.stdout is not None and ex.stdout.readline().startswith("exchange up")
            for name in ("normalizer", "sink-ticks", "gateway"):
                st.start(name)
            launch = _first_frame_of_process(st.url, st.data_dir)
            out = asyncio.run(_drive(st.url, args.seconds))
            out["first_frame_process_s"] = launch
        finally:
            ex.terminate()
            try:
                ex.wait(10)
            except subprocess.TimeoutExpired:  # a loaded machine: the figures stand, the exchange is killed
                ex.kill()
                ex.wait()
    return {"rate": args.rate, **out}
