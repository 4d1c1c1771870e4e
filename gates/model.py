"""Gate definitions as data: TOML in the package, plus an optional user file that adds or
replaces gates (by id). A gate says what it guards (`guards = "P2"`); the migration rules read
that field from the same files (backend.migration.gate_status, which checks it for both)."""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import msgspec

from backend.errors import TradeopsError
from backend.migration.gate_status import SHIPPED, guard_map

Kind = Literal["health", "flow", "perf", "target", "paper", "data", "probe", "manual"]


class Check(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    title: str
    kind: Kind
    required: bool = True
    params: dict[str, Any] = {}
    timeout_s: float = 120.0


class Gate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    title: str
    guards: str | None = None
    """The priority this gate guards ("P2"): its services start only after a proceed decision."""
    approvals: int = 1
    role: str = "operator"
    """The role (by the operator registry) each approver must hold: operator or lead."""
    critical: bool = False
    checks: list[Check] = []

    def check(self, check_id: str) -> Check:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise TradeopsError(
            f"gate {self.id} has no check {check_id!r}; its checks: {', '.join(c.id for c in self.checks)}"
        )


class _File(msgspec.Struct, forbid_unknown_fields=True):
    gate: list[Gate] = []


def parse(text: str, source: str) -> list[Gate]:
    try:
        raw = tomllib.loads(text)
        listed = raw.get("gate")
        for g in listed if isinstance(listed, list) else []:
            if isinstance(g, dict) and not isinstance(g.get("guards", ""), str):  # named with its gate
                guard_map([(str(g.get("id", "?")), g["guards"], source)])
        gates = msgspec.convert(raw, _File).gate
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise TradeopsError(f"{source}: {exc}") from None
    for g in gates:
        ids = [c.id for c in g.checks]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise TradeopsError(f"{source}: gate {g.id}: duplicate check id {sorted(dup)[0]!r}")
        if g.approvals < 1:
            raise TradeopsError(f"{source}: gate {g.id}: approvals must be at least 1")
        if g.role not in ("operator", "lead"):
            raise TradeopsError(f"{source}: gate {g.id}: role must be operator or lead, not {g.role!r}")
    guard_map((g.id, g.guards, source) for g in gates)  # each names a priority, none twice
    return gates


@cache
def _shipped() -> tuple[Gate, ...]:
    text = resources.files("gates").joinpath("definitions.toml").read_text()
    return tuple(parse(text, SHIPPED))


def load(user_file: Path | None = None) -> dict[str, Gate]:
    gates = {g.id: g for g in _shipped()}
    source = dict.fromkeys(gates, SHIPPED)
    if user_file is not None and Path(user_file).exists():
        for g in parse(Path(user_file).read_text(), str(user_file)):
            gates[g.id] = g
            source[g.id] = str(user_file)
        guard_map((g.id, g.guards, source[g.id]) for g in gates.values())  # still at most one per priority
    return gates


def configured(settings: Any) -> dict[str, Gate]:
    """The gates the console and the CLI both use: the shipped ones plus the user file of the
    settings (`gates_file`: config key, env TRADEOPS_GATES_FILE, or the CLI's --gates-file)."""
    f = getattr(settings, "gates_file", None)
    if f and not Path(f).is_file():
        raise TradeopsError(
            f"gates file {f}: no such file (set by --gates-file, TRADEOPS_GATES_FILE or gates_file in the config)"
        )
    return load(Path(f) if f else None)


def get(gates: dict[str, Gate], gate_id: str) -> Gate:
    if gate_id not in gates:
        raise TradeopsError(f"unknown gate {gate_id!r}; gates: {', '.join(gates)}")
    return gates[gate_id]
