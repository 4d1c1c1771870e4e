"""What the migration rules need from the gates, without importing the gates package: the latest
decision per gate (read straight from ops.gates), and which gate guards a priority (the `guards`
field of the gate definitions, read here from their TOML).

A gate definition says what it guards (`guards = "P2"`: no service of Priority 2 may start before
the gate has a proceed decision); each priority is guarded by at most one gate, and one no gate
guards is not held back. The definitions are the shipped `gates/definitions.toml`, then an optional
user gates file that adds or replaces gates by id (what gates.model.load reads too)."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from backend.bus import archive, streams
from backend.bus.entries import Skips, decode_entries
from backend.errors import TradeopsError
from backend.messages import GateEvent
from backend.migration import inventory

SHIPPED = "gates/definitions.toml"
_PRIORITY = re.compile(r"P([0-9]+)")


def latest_decisions(r: Any, skips: Skips | None = None) -> dict[str, str]:
    """gate id -> its latest decision (proceed / fix / stop), over the whole log, archive and all; an
    entry that is not a GateEvent is skipped (counted in `skips`; `audit verify` reports it as a
    break in the chain)."""
    out: dict[str, str] = {}
    events, _ = decode_entries(archive.history(r, streams.OPS_GATES), GateEvent, stream=streams.OPS_GATES, skips=skips)
    for _, ev in events:
        if ev.kind == "decision" and ev.decision:
            out[ev.gate] = ev.decision
    return out


def blocking_gate(priority: int, decisions: dict[str, str], gates_file: Path | None = None) -> str | None:
    """The gate that blocks services of `priority`, or None when its decision is proceed (or no
    gate guards the priority)."""
    gate = gate_guards(gates_file).get(priority)
    return None if gate is None or decisions.get(gate) == "proceed" else gate


def guarded_priority(value: Any, source: str, gate: str) -> int:
    """The priority a `guards` value names ("P2" -> 2), or an error naming the file and the gate."""
    priorities = sorted(inventory.load().by_priority())
    m = _PRIORITY.fullmatch(value) if isinstance(value, str) else None
    if m is None or int(m.group(1)) not in priorities:
        raise TradeopsError(
            f"{source}: gate {gate}: guards must name a priority "
            f"({', '.join(f'P{p}' for p in priorities)}), not {value!r}"
        )
    return int(m.group(1))


def guard_map(gates: Iterable[tuple[str, Any, str]]) -> dict[int, str]:
    """priority -> the gate guarding it, from (gate id, its `guards` value or None, the file it is
    defined in) of the gates in effect; an error naming the file and the gate for a bad value or
    a priority guarded twice."""
    out: dict[int, str] = {}
    for gate, value, source in gates:
        if value is None:
            continue
        priority = guarded_priority(value, source, gate)
        if priority in out:
            raise TradeopsError(
                f"{source}: gate {gate}: P{priority} is already guarded by gate "
                f"{out[priority]} (a priority is guarded by at most one gate)"
            )
        out[priority] = gate
    return out


def shipped_file() -> Path:
    """The shipped gate definitions, found beside the gates package without importing it."""
    spec = importlib.util.find_spec("gates")
    if spec is None or not spec.submodule_search_locations:
        raise TradeopsError(f"{SHIPPED} not found: the gates package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "definitions.toml"


def gate_guards(gates_file: Path | None = None) -> dict[int, str]:
    """priority -> the id of the gate that guards it, from the shipped definitions and, when given
    and present, the user gates file `gates_file` (its gates add to or replace the shipped ones)."""
    guards: dict[str, tuple[Any, str]] = {}  # gate id -> (guards, source)
    files = [(shipped_file(), SHIPPED)]
    if gates_file is not None and Path(gates_file).exists():
        files.append((Path(gates_file), str(gates_file)))
    for path, source in files:
        st = path.stat()
        for gate, value in _guards_in(str(path), source, st.st_mtime_ns, st.st_size):
            guards[gate] = (value, source)
    return guard_map((gate, value, source) for gate, (value, source) in guards.items())


@lru_cache(maxsize=16)
def _guards_in(path: str, source: str, mtime_ns: int, size: int) -> tuple[tuple[str, Any], ...]:
    """(gate id, its `guards` value or None) of each gate of a definitions file (read again when
    the file changes: its mtime and size are in the key)."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise TradeopsError(f"{source}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TradeopsError(f"{source}: not valid TOML: {exc}") from None
    gates = raw.get("gate", [])
    if not isinstance(gates, list) or not all(isinstance(g, dict) and isinstance(g.get("id"), str) for g in gates):
        raise TradeopsError(f"{source}: every [[gate]] needs an id")
    return tuple((g["id"], g.get("guards")) for g in gates)
