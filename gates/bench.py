"""Proceed decisions for a benchmark's own private Redis: a benchmark that moves services through
the migration (`tradeops bench cutover`) needs the gates before their priorities passed. It never
runs the checks or asks for approvals: the decisions say, in their reason, that they were made
for a benchmark, and they are recorded on the audit log of a Redis the benchmark started and
throws away (backend/ never imports gates: the CLI and the tests hand this function in).

`tradeops bench gates` is here too: what the console's poll of the gates costs with an empty log
and with a long one (it must not grow with the log), and what a full `audit verify` costs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

from backend.bus import streams
from backend.bus.publish import queue
from backend.messages import GateEvent
from gates import audit

OPERATOR = "bench"


def proceed_for_benchmark(r: Any, gates: Iterable[str], reason: str) -> list[GateEvent]:
    """Record a proceed decision for each gate, on the hash-chained audit log (without waiting for
    the fsync: the benchmark's Redis is thrown away)."""
    return [
        audit.append(
            r,
            GateEvent(
                gate=g,
                kind="decision",
                operator=OPERATOR,
                ts_ns=time.time_ns(),
                decision="proceed",
                reason=f"benchmark: {reason}",
            ),
            durable=False,
        )
        for g in gates
    ]


# -- `tradeops bench gates` -------------------------------------------------------------------------
NAME = "gates"
HELP = "gates: the console's poll time with 0 and with --events gate events in the log, and a full audit verify"
DEFAULT_SECONDS = 10.0  # unused: the benchmark runs a fixed number of polls (--polls)
WRITE_BATCH = 2000


def add_arguments(p: Any) -> None:
    p.add_argument("--events", type=int, default=50_000, help="gate events written to the log (default 50000)")
    p.add_argument("--polls", type=int, default=50, help="polls timed at each size (default 50)")


def history(gates: dict[str, Any], n: int, start_ns: int) -> Iterator[GateEvent]:
    """`n` events as a busy log has them, round after round over the gates: every check run (now
    and then failed) or attested, an approval, a fix decision."""
    i = 0
    while i < n:
        for g in gates.values():
            for c in g.checks:
                if c.kind == "manual":
                    ev = GateEvent(
                        gate=g.id,
                        kind="attest",
                        operator="ann",
                        ts_ns=start_ns + i,
                        check=c.id,
                        outcome="passed",
                        evidence={"note": f"attested, round {i}"},
                    )
                else:
                    ev = GateEvent(
                        gate=g.id,
                        kind="check_run",
                        operator="ann",
                        ts_ns=start_ns + i,
                        check=c.id,
                        outcome="failed" if i % 7 == 0 else "passed",
                        evidence={"value": i % 97, "threshold": 50, "duration_s": 0.01},
                    )
                yield ev
                i += 1
                if i == n:
                    return
            for ev in (
                GateEvent(gate=g.id, kind="approve", operator="bob", ts_ns=start_ns + i, reason="reviewed"),
                GateEvent(
                    gate=g.id,
                    kind="decision",
                    operator="bob",
                    ts_ns=start_ns + i + 1,
                    decision="fix",
                    reason="another round",
                ),
            ):
                yield ev
                i += 1
                if i == n:
                    return


def write_history(r: Any, gates: dict[str, Any], n: int) -> None:
    """Append `n` chained events after the log's newest (written in batches, the head set with
    each batch: the same chain audit.append makes, without a round trip per event)."""
    prev = audit.head_hash(r)
    with r.pipeline(transaction=True) as pipe:
        for k, ev in enumerate(history(gates, n, time.time_ns() - n), 1):
            ev = msgspec.structs.replace(ev, prev_hash=prev)
            ev = msgspec.structs.replace(ev, hash=audit.digest(ev))
            prev = ev.hash
            queue(pipe, streams.OPS_GATES, ev)
            if k % WRITE_BATCH == 0 or k == n:
                pipe.set(audit.HEAD_KEY, prev)
                pipe.execute()


def _median_ms(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1000, 3)


def _measure(r: Any, poll: Callable[[], int], polls: int) -> tuple[list[float], int]:
    """`polls` timed polls, one new gate event appended before each (outside the timing): the
    seconds each took and the most entries one of them read."""
    times: list[float] = []
    most = 0
    for k in range(polls):
        audit.append(
            r,
            GateEvent(
                gate="phase1",
                kind="check_run",
                operator="bench",
                ts_ns=0,
                check="clock-sync",
                outcome="passed",
                evidence={"poll": k},
            ),
        )
        t0 = time.perf_counter()
        most = max(most, poll())
        times.append(time.perf_counter() - t0)
    return times, most


def run(args: Any, live_source: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """The console's poll of the gates on a log of 0 and of `--events` events: a GateFeed's poll
    (read the new entries, fold them, verify them: `gates_*`) and, when the CLI hands in
    `live_source(url)` (gates/ does not import the console), the console's whole LiveSource.poll
    with its gate part on every poll (`poll_*`). Each starts on a fresh log; its first poll folds
    the whole log (`*first_poll_ms_*`); then `--polls` polls are timed, each after one new event
    (median and fastest, `*read_per_poll_*` the most entries one of them read). Last, a full
    `audit verify` of the long log."""
    from backend.bench.harness import BenchStack
    from backend.errors import TradeopsError
    from gates import model
    from gates.feed import GateFeed

    if args.events < 0 or args.polls < 1:
        raise TradeopsError("--events must be 0 or more and --polls at least 1")
    gates = model.load()
    out: dict[str, Any] = {"events": args.events, "polls": args.polls}
    with BenchStack() as stack:
        r = stack.r
        assert r is not None

        def feed_poller() -> tuple[Callable[[], int], Callable[[], None]]:
            feed = GateFeed(r, gates)

            def poll() -> int:
                feed.poll()
                return feed.read_last

            return poll, lambda: None

        def live_poller() -> tuple[Callable[[], int], Callable[[], None]]:
            assert live_source is not None
            src = live_source(stack.url)

            def poll() -> int:
                snap = src.poll()
                if not snap.connected:
                    raise TradeopsError(f"bench gates: {snap.error}")
                return src.gate_feed.read_last

            return poll, src.close

        kinds = {"gates_": feed_poller} | ({"": live_poller} if live_source is not None else {})
        for prefix, make in kinds.items():
            for tag, size in (("0", 0), ("n", args.events)):
                r.flushdb()
                t0 = time.perf_counter()
                write_history(r, gates, size)
                if size and "write_s" not in out:
                    out["write_s"] = round(time.perf_counter() - t0, 3)  # writing the --events
                poll, close = make()
                try:
                    t0 = time.perf_counter()
                    first = poll()  # the one full fold of the log
                    out[f"{prefix}first_poll_ms_{tag}"] = round((time.perf_counter() - t0) * 1000, 3)
                    if first != size:
                        raise TradeopsError(f"bench gates: the first poll read {first} entries, not {size}")
                    times, most = _measure(r, poll, args.polls)
                finally:
                    close()
                out[f"{prefix}poll_ms_{tag}"] = _median_ms(times)
                out[f"{prefix}poll_min_ms_{tag}"] = round(min(times) * 1000, 3)  # steadiest on a busy machine
                out[f"{prefix}read_per_poll_{tag}"] = most
        t0 = time.perf_counter()
        v = audit.verify(r)
        out["verify_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        out["verify_ok"] = v.ok
        out["verify_entries"] = v.checked
    return out
