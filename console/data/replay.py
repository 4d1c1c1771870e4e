"""The replay source: recorded snapshots (JSON) served with a frozen clock, so the screens render
the same every time (snapshot tests, demos without a stack)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from console.data.snapshot import Snapshot

FIXTURE = "replay.json"


def recorded_tracker(snap: Snapshot) -> dict[str, Any]:
    """The tracker's figures from what a recorded frame holds: each service's state on the board
    (one move to it), the gates' statuses, the instances its health rows count (a recording has no
    timestamps: the hours are the logged ones only, of which a recording has none)."""
    from backend.messages import MigrationEvent
    from backend.migration import tracker

    evs = [
        MigrationEvent(service=name, from_state="planned", to_state=state, operator="", reason="", ts_ns=0)  # type: ignore[arg-type]
        for cards in snap.board.values()
        for name, state, _ in cards
        if state != "planned"
    ]
    decided = {g.id: (g.status, 0) for g in snap.gates if g.status in ("proceed", "fix", "stop")}
    live = [
        (h.service, env, "running" if h.state == "ok" else h.state)
        for h in snap.health
        for env, n in (("legacy", h.legacy), ("target", h.target))
        if n
    ]
    return tracker.figures(evs, decided, live)


def recorded_checklists(snap: Snapshot) -> None:
    """The checklists from a recorded frame: its board's states, its gates, its health rows (a
    recording holds no attestation and no logged hours: those steps show as not attested)."""
    from types import SimpleNamespace

    from backend.messages import MigrationEvent
    from backend.migration import checklist, inventory

    evs = [
        MigrationEvent(service=name, from_state="planned", to_state=state, operator="", reason="", ts_ns=0)  # type: ignore[arg-type]
        for cards in snap.board.values()
        for name, state, _ in cards
        if state != "planned"
    ]
    gates = {g.id: (g.status, g.status if g.status in checklist.DECISIONS else "") for g in snap.gates}
    beats = [
        SimpleNamespace(service=h.service, instance=f"{h.service}-{env}", environment=env, state="running")
        for h in snap.health
        for env, n in (("legacy", h.legacy), ("target", h.target))
        if n and h.state == "ok"
    ]
    checklist.checklists(snap, evs, gates, beats, "process", inventory.load())


class ReplaySource:
    def __init__(self, path: Path | None = None) -> None:
        from backend.migration import inventory
        from backend.migration.sheet import all_sections

        text = Path(path).read_text() if path else resources.files("console.data").joinpath(FIXTURE).read_text()
        frames = json.loads(text)
        self.frames = [_audit_columns(msgspec.convert(f, Snapshot, strict=False)) for f in frames]
        sheets, levels = all_sections(), inventory.load().levels()  # what the code declares, not recorded
        for snap in self.frames:
            snap.sheets, snap.levels = sheets, levels
            snap.tracker = snap.tracker or recorded_tracker(snap)
            if not snap.checklists:
                recorded_checklists(snap)
        self.i = 0
        self.url = "replay://recording"

    def poll(self) -> Snapshot:
        snap = self.frames[min(self.i, len(self.frames) - 1)]
        self.i += 1
        return snap

    def current(self) -> Snapshot:
        return self.frames[min(max(self.i - 1, 0), len(self.frames) - 1)]

    def close(self) -> None:
        pass


NOT_CHAINED_KINDS = ("migration", "kill switch")


def _audit_columns(snap: Snapshot) -> Snapshot:
    """Recorded audit rows (time, gate/service, kind, what, operator, reason) with the columns the
    live source adds: `signed` (a recording carries no signature: unsigned) and `chain` (the gate
    events' numbers in the hash chain, in order; a move or toggle is not chained: —)."""
    n = 0
    rows: list[tuple[str, ...]] = []
    for row in snap.audit:
        if len(row) >= 8:
            rows.append(tuple(row))
            continue
        chain = "—"
        if row[2] not in NOT_CHAINED_KINDS:
            n += 1
            chain = f"#{n}"
        rows.append((*row[:6], *[""] * (6 - len(row)), *(row[6:7] or ("unsigned",)), chain))
    snap.audit = rows
    return snap
