"""Proceed decisions for a benchmark's own private Redis: a benchmark that moves services through
the migration (`tradeops bench cutover`) needs the gates before their priorities passed. It never
runs the checks or asks for approvals: the decisions say, in their reason, that they were made
for a benchmark, and they are recorded on the audit log of a Redis the benchmark started and
throws away (backend/ never imports gates: the CLI and the tests hand this function in)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from backend.messages import GateEvent
from gates import audit

OPERATOR = "bench"


def proceed_for_benchmark(r: Any, gates: Iterable[str], reason: str) -> list[GateEvent]:
    """Record a proceed decision for each gate, on the hash-chained audit log (without waiting for
    the fsync: the benchmark's Redis is thrown away)."""
    return [audit.append(r, GateEvent(gate=g, kind="decision", operator=OPERATOR, ts_ns=time.time_ns(),
                                      decision="proceed", reason=f"benchmark: {reason}"), durable=False)
            for g in gates]
