"""What the migration rules need from the gates, read straight from ops.gates (backend does not
import the gates package): the latest decision per gate, and which gate guards a priority."""

from __future__ import annotations

from typing import Any

from backend.bus import codec, streams
from backend.messages import GateEvent

GATE_BEFORE_PRIORITY = {1: "phase1", 2: "task02", 3: "task03", 4: "task04", 5: "task05"}


def latest_decisions(r: Any) -> dict[str, str]:
    """gate id -> its latest decision (proceed / fix / stop)."""
    out: dict[str, str] = {}
    for _, f in r.xrange(streams.OPS_GATES):
        ev = codec.decode(codec.payload(f), GateEvent)
        if ev.kind == "decision" and ev.decision:
            out[ev.gate] = ev.decision
    return out


def blocking_gate(priority: int, decisions: dict[str, str]) -> str | None:
    """The gate that blocks services of `priority`, or None when its decision is proceed."""
    gate = GATE_BEFORE_PRIORITY[priority]
    return None if decisions.get(gate) == "proceed" else gate
