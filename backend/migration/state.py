"""Migration state per service, rebuilt from the events on ops.migration (so every process agrees
and a restart loses nothing).

planned -> deploying -> validating -> migrated, plus failed and rolled_back. A service starts only
when the services it is migrated after (its inventory `migrate_after`, not what it needs at run
time) are migrated and the gate guarding its priority (its `guards` field in the gate
definitions) has a proceed decision; a refusal names the blocking service or gate.

Hours the operators log against a service (`log_hours`: the effort the completion tracker
counts) ride the same signed log as events that move nothing (action `log_hours`, from and to
the service's state, `detail.hours`); the board skips them.

A rollback from migrated may keep the target running (`keep_target=True`, what
backend/migration/cutover.py does): the legacy instance comes back beside it, and only once it is
healthy does `retire` (rolled_back -> rolled_back) let the target drain: make before break, the
reverse of a cutover.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.bus import archive, streams
from backend.bus.durable import wait_durable
from backend.bus.entries import Skips, decode_entries
from backend.bus.publish import publish_sync
from backend.errors import TradeopsError
from backend.messages import MigrationEvent
from backend.migration import inventory
from backend.migration.gate_status import blocking_gate, latest_decisions

ALLOWED: dict[str, dict[str, str]] = {
    # action -> {from state: to state}
    "start": {"planned": "deploying", "rolled_back": "deploying", "failed": "deploying"},
    "validate": {"deploying": "validating"},
    "cutover": {"validating": "migrated", "deploying": "migrated"},
    "fail": {"deploying": "failed", "validating": "failed"},
    "rollback": {
        "migrated": "rolled_back",
        "validating": "rolled_back",
        "deploying": "rolled_back",
        "failed": "rolled_back",
    },
    "retire": {"rolled_back": "rolled_back"},  # the kept target drains (see the module doc)
}


LOG_HOURS = "log_hours"
ATTEST_STEP = "attest_step"
NOTES = (LOG_HOURS, ATTEST_STEP)
"""Events on ops.migration that move nothing: hours logged, a checklist step attested."""
MAX_LOGGED_HOURS = 24.0
"""The most hours one log entry may add (one day's work: a typo of 250 for 2.5 is refused)."""

OFFERED = ("start", "cutover", "rollback")
"""The moves an operator makes (`tradeops migrate ACTION SERVICE`, the console's migration board)."""
SEEN = {"planned"} | {to for a in (*OFFERED, "retire") for to in ALLOWED[a].values()}
"""The states a service can be in through those moves (no flow moves one to `validating`)."""


def refusal(service: str, action: str, cur: str) -> str:
    """Why `action` is refused from `cur`, which states it is for, and what can be done now."""
    froms = [s for s in ALLOWED.get(action, {}) if s in SEEN]
    line = f"cannot {action} {service}: it is {cur}"
    if froms:
        line += f"; {action} is for a service that is {' or '.join(froms)}"
    nxt = [a for a in OFFERED if a != action and cur in ALLOWED[a]]
    if nxt:
        line += "; next: " + " or ".join(f"`tradeops migrate {a} {service} --reason ...`" for a in nxt)
    elif cur == "migrated" and action == "cutover":
        line += ": nothing to do"
    return line


def dependents_moved(states: dict[str, ServiceState], service: str) -> list[str]:
    """Services that need `service` at run time (directly or through others) and are on their target
    (deploying, validating or migrated): a rollback of `service` leaves them on a target whose
    dependency is back on legacy."""
    inv = inventory.load()
    out: list[str] = []
    todo = list(inv.needed_by(service))
    while todo:
        name = todo.pop(0)
        if name in out:
            continue
        out.append(name)
        todo.extend(inv.needed_by(name))
    return [n for n in out if n in states and states[n].state in ("deploying", "validating", "migrated")]


class MoveRefused(TradeopsError):
    """A migration move the rules refuse; the message names what blocks it."""


@dataclass
class ServiceState:
    name: str
    priority: int
    state: str = "planned"
    history: list[MigrationEvent] = field(default_factory=list)

    @property
    def target_kept(self) -> bool:
        """Rolled back with the target kept running until the legacy instance is healthy."""
        last = self.history[-1] if self.history else None
        return (
            self.state == "rolled_back"
            and last is not None
            and last.action == "rollback"
            and bool(last.detail.get("keep_target"))
        )


def events(r: Any, skips: Skips | None = None) -> list[MigrationEvent]:
    """Every event on ops.migration, archived moves first; an entry that is not a MigrationEvent
    is skipped (counted in `skips`): it moves nothing."""
    got, _ = decode_entries(
        archive.history(r, streams.OPS_MIGRATION),
        MigrationEvent,
        stream=streams.OPS_MIGRATION,
        skips=skips,
    )
    return [ev for _, ev in got]


def fold(evs: list[MigrationEvent]) -> dict[str, ServiceState]:
    """Each service's state from its moves (logged hours and attested steps move nothing)."""
    inv = inventory.load()
    out = {s.name: ServiceState(s.name, s.priority) for s in inv.services}
    for ev in evs:
        if ev.service in out and ev.action not in NOTES:
            out[ev.service].state = ev.to_state
            out[ev.service].history.append(ev)
    return out


def board(r: Any, skips: Skips | None = None) -> dict[str, ServiceState]:
    """Each service's state from every event on ops.migration (see `events`)."""
    return fold(events(r, skips))


def blockers(
    r: Any,
    service: str,
    states: dict[str, ServiceState] | None = None,
    *,
    gates_file: Path | None = None,
    decisions: dict[str, str] | None = None,
) -> list[str]:
    """What keeps `service` from starting, in words (empty: it may start). `gates_file`: the user
    gates file, whose gates may guard priorities too (gate_status.gate_guards). `decisions`: the
    gate decisions to count (the control plane passes the signed ones its fold verified); by
    default the latest decision of each gate as recorded."""
    states = states or board(r)
    return blockers_of(
        service,
        {k: v.state for k, v in states.items()},
        latest_decisions(r) if decisions is None else decisions,
        gates_file=gates_file,
    )


def blockers_of(
    service: str, states: dict[str, str], decisions: dict[str, str], *, gates_file: Path | None = None
) -> list[str]:
    """The same rule on plain values: the services it is migrated after that are not migrated
    yet, the gate guarding the priority."""
    spec = inventory.load().service(service)
    out = [
        f"{d} must be migrated first: it is {states.get(d, 'planned')}"
        for d in spec.migrate_after
        if states.get(d) != "migrated"
    ]
    gate = blocking_gate(spec.priority, decisions, gates_file)
    if gate:
        out.append(f"gate {gate} (before P{spec.priority}) has no proceed decision")
    return out


def check(
    r: Any,
    service: str,
    action: str,
    reason: str,
    *,
    gates_file: Path | None = None,
    decisions: dict[str, str] | None = None,
) -> tuple[ServiceState, str]:
    """The rules for one move, without recording it: (the service's state, the state it would
    move to), or MoveRefused naming what blocks it."""
    inv = inventory.load()
    inv.service(service)  # unknown service: a clear error
    if action not in ALLOWED:
        raise MoveRefused(f"unknown action {action!r}")
    if not reason.strip():
        raise MoveRefused(f"{action} {service}: a reason is required")
    states = board(r)
    cur = states[service].state
    to = ALLOWED[action].get(cur)
    if to is None:
        raise MoveRefused(refusal(service, action, cur))
    if action == "start":
        why = blockers(r, service, states, gates_file=gates_file, decisions=decisions)
        if why:
            raise MoveRefused(f"cannot start {service}: " + "; ".join(why))
    if action == "retire" and not states[service].target_kept:
        raise MoveRefused(f"cannot retire {service}'s target: the rollback did not keep it running")
    return states[service], to


def move(
    r: Any,
    service: str,
    action: str,
    operator: str,
    reason: str,
    *,
    gates_file: Path | None = None,
    seal: Callable[[MigrationEvent], MigrationEvent] | None = None,
    decisions: dict[str, str] | None = None,
    **detail: Any,
) -> MigrationEvent:
    """Check the rules and record the move as an event on ops.migration; return once it is on disk
    (`backend.bus.durable`), so a move the operator was told is recorded survives a Redis crash.
    `seal` signs it (the control plane passes the operator's SSH signature, gates/sealed.py);
    `decisions`: the gate decisions to count (see `blockers`)."""
    st, to = check(r, service, action, reason, gates_file=gates_file, decisions=decisions)
    return _record(r, service, st.state, to, action, detail, operator, reason, seal)


def log_hours(
    r: Any,
    service: str,
    hours: float,
    operator: str,
    reason: str,
    *,
    seal: Callable[[MigrationEvent], MigrationEvent] | None = None,
) -> MigrationEvent:
    """Record `hours` of effort on `service`'s migration (what the completion tracker counts as
    spent on its task), signed by `seal` like a move, on ops.migration; it moves nothing."""
    inventory.load().service(service)  # unknown service: a clear error
    if not hours > 0 or hours > MAX_LOGGED_HOURS:
        raise MoveRefused(
            f"log hours {service}: hours must be more than 0 and at most {MAX_LOGGED_HOURS:g}, not {hours:g}"
        )
    if not reason.strip():
        raise MoveRefused(f"log hours {service}: a reason is required")
    return _note(r, service, LOG_HOURS, {"hours": hours}, operator, reason, seal)


def attest_step(
    r: Any,
    service: str,
    step: str,
    operator: str,
    reason: str,
    *,
    seal: Callable[[MigrationEvent], MigrationEvent] | None = None,
) -> MigrationEvent:
    """Attest that a manual step of `service`'s migration checklist (backend/migration/checklist.py)
    is done, signed by `seal` like a move, on ops.migration; it moves nothing."""
    from backend.migration.checklist import MANUAL

    inventory.load().service(service)  # unknown service: a clear error
    if step not in MANUAL:
        raise MoveRefused(
            f"attest {service}: {step!r} is not a step an operator attests (these are: {', '.join(MANUAL)}; "
            "the others tick themselves from what the platform observes)"
        )
    if not reason.strip():
        raise MoveRefused(f"attest {service} {step}: a reason is required (what was done, where it is recorded)")
    return _note(r, service, ATTEST_STEP, {"step": step}, operator, reason, seal)


def _note(
    r: Any,
    service: str,
    action: str,
    detail: dict[str, Any],
    operator: str,
    reason: str,
    seal: Callable[[MigrationEvent], MigrationEvent] | None,
) -> MigrationEvent:
    """An event on ops.migration that moves nothing (NOTES), signed by `seal` like a move."""
    cur = board(r)[service].state
    return _record(r, service, cur, cur, action, detail, operator, reason, seal)


def _record(
    r: Any,
    service: str,
    from_state: str,
    to_state: str,
    action: str,
    detail: dict[str, Any],
    operator: str,
    reason: str,
    seal: Callable[[MigrationEvent], MigrationEvent] | None,
) -> MigrationEvent:
    """The one writer of ops.migration: the event, signed by `seal`, on disk before it returns
    (`backend.bus.durable`), so what the operator was told is recorded survives a Redis crash."""
    ev = MigrationEvent(
        service=service,
        from_state=from_state,  # type: ignore[arg-type]  # a board state
        to_state=to_state,  # type: ignore[arg-type]
        operator=operator,
        reason=reason,
        ts_ns=time.time_ns(),
        action=action,
        detail=detail,
    )
    if seal is not None:
        ev = seal(ev)
    publish_sync(r, streams.OPS_MIGRATION, ev)
    wait_durable(r)
    return ev


def desired_instances(states: dict[str, ServiceState]) -> dict[str, set[str]]:
    """Which environments each service should run in: legacy until cut over, target from start
    (and after a rollback that kept it, until it is retired)."""
    out: dict[str, set[str]] = {}
    for name, st in states.items():
        envs = set()
        if st.state != "migrated":
            envs.add("legacy")
        if st.state in ("deploying", "validating", "migrated") or st.target_kept:
            envs.add("target")
        out[name] = envs
    return out
