"""The completion tracker speaks the plan's figures, computed from plain values of a live state:
the migration events, the gate decisions with their times, the live instances."""

from __future__ import annotations

from backend.messages import MigrationEvent
from backend.migration import inventory
from backend.migration.state import LOG_HOURS
from backend.migration.tracker import figures, headline

H = 3_600_000_000_000  # ns per hour
P1 = ["normalizer", "sink-ticks", "sink-alt"]


def ev(service: str, to: str, ts_ns: int, action: str = "", **detail: float) -> MigrationEvent:
    return MigrationEvent(
        service=service,
        from_state="planned",
        to_state=to,  # type: ignore[arg-type]
        operator="ann",
        reason="r",
        ts_ns=ts_ns,
        action=action,
        detail=dict(detail),
    )


def task(fig: dict, tid: str) -> dict:
    return next(t for t in fig["tasks"] if t["id"] == tid)


def test_after_task_01_the_figures_are_the_plans() -> None:
    """Phase 1 complete and the survey's gate passed: 13.9% overall, 1/8 phases, 1/6 tasks, 10.5 h
    invested, 46 h left for the MVP (P1-P4, 13 services) and 68 h for the full migration (18)."""
    fig = figures([], {"phase1": ("proceed", 1)}, [])
    assert fig["overall_pct"] == 13.9
    assert fig["phases"] == {"total": 8, "complete": 1, "pct": 12.5}
    assert (fig["phase2"]["complete"], fig["phase2"]["tasks"], fig["phase2"]["pct"]) == (1, 6, 16.7)
    assert fig["phase2"]["optional"] == ["Task 06"]
    assert (fig["mvp"]["services"], fig["mvp"]["hours_estimated"]) == (13, 46)
    assert (fig["full"]["services"], fig["full"]["hours_estimated"]) == (18, 68)
    assert fig["time"] == {"phase1": 8.5, "phase2": 2.0, "invested": 10.5, "remaining_mvp": 46, "remaining_full": 68}
    sv = fig["services"]
    assert (sv["core_infrastructure"], sv["documented"], sv["migrated"]) == (8, 18, 0)
    assert (sv["ready"], sv["pending"], sorted(sv["ready_names"])) == (3, 15, sorted(P1))
    assert headline(fig)[0] == "overall 13.9% · phases 1/8 (12.5%) · Phase 2 tasks 1/6 (16.7%)"
    before = figures([], {}, [])  # the survey's gate not passed yet
    assert before["overall_pct"] == 12.5 and before["phase2"]["complete"] == 0 and before["services"]["ready"] == 0


def test_a_tasks_effort_runs_from_its_start_to_its_gate_decision() -> None:
    """Task 02 started at 10 h, its gate decided proceed at 17.5 h: 7.5 h spent, whatever the
    seconds between a service's start and its cutover; an open task counts only logged hours."""
    evs = [ev("normalizer", "deploying", 10 * H), ev("normalizer", "migrated", 10 * H + 1_000_000)]
    evs += [ev(s, "deploying", 12 * H) for s in P1[1:]] + [ev(s, "migrated", 12 * H + 5) for s in P1[1:]]
    open_ = figures(evs, {"phase1": ("proceed", 1)}, [])
    t2 = task(open_, "Task 02")
    assert (t2["status"], t2["hours_spent"], t2["spent_from"], t2["migrated"]) == ("in progress", 0.0, "none", 3)
    done = figures(evs, {"phase1": ("proceed", 1), "task02": ("proceed", int(17.5 * H))}, [])
    t2 = task(done, "Task 02")
    assert (t2["status"], t2["hours_spent"], t2["spent_from"]) == ("complete", 7.5, "measured")
    assert done["time"]["invested"] == 8.5 + 2 + 7.5
    assert done["time"]["remaining_mvp"] == 46 - 8 and done["time"]["remaining_full"] == 68 - 8
    assert done["overall_pct"] == round(100 * (1 + 2 / 9) / 8, 1) == 15.3
    # task02's proceed opens P2, and both P2 services are migrated after the normalizer, migrated
    assert sorted(done["services"]["ready_names"]) == ["gateway", "live-gateway"]
    # a stop is no completion
    stopped = figures(evs, {"phase1": ("proceed", 1), "task02": ("stop", int(17.5 * H))}, [])
    assert task(stopped, "Task 02")["status"] == "in progress"


def test_logged_hours_are_the_effort_when_operators_log_them() -> None:
    evs = [ev("normalizer", "deploying", 10 * H), ev("normalizer", "deploying", 11 * H, LOG_HOURS, hours=2.5)]
    evs.append(ev("sink-alt", "planned", 11 * H, LOG_HOURS, hours=1.0))
    fig = figures(evs, {"phase1": ("proceed", 1), "task02": ("proceed", 40 * H)}, [])
    t2 = task(fig, "Task 02")
    assert (t2["hours_spent"], t2["spent_from"]) == (3.5, "logged")
    assert fig["mvp"]["hours_spent"] == 3.5 and fig["full"]["hours_spent"] == 3.5  # the migration tasks'
    assert fig["time"]["invested"] == 8.5 + 2 + 3.5
    # logging hours moves nothing: normalizer is still deploying, sink-alt planned
    assert fig["services"]["in_progress"] == 1
    partial = figures(evs, {"phase1": ("proceed", 1)}, [])  # open: the logged hours count already
    assert task(partial, "Task 02")["hours_spent"] == 3.5 and partial["time"]["remaining_mvp"] == 46 - 3.5


def test_the_mvp_complete_is_phase_2_complete_task_06_optional() -> None:
    inv = inventory.load()
    evs = [ev(s.name, "migrated", 1) for s in inv.services if s.priority <= 4]
    decided = {g: ("proceed", 2) for g in ("phase1", "task02", "task03", "task04", "task05")}
    fig = figures(evs, decided, [])
    # Task 06 (P5) is optional: the MVP done, Phase 2 is complete and counts as a whole phase
    assert fig["phases"] == {"total": 8, "complete": 2, "pct": 25.0} and fig["overall_pct"] == 25.0
    assert fig["phase2"]["complete"] == 5 and fig["time"]["remaining_mvp"] == 0
    assert fig["time"]["remaining_full"] == 22 and (fig["mvp"]["migrated"], fig["full"]["migrated"]) == (13, 13)
    decided["task06"] = ("proceed", 3)
    evs += [ev(s.name, "migrated", 1) for s in inv.services if s.priority == 5]
    fig = figures(evs, decided, [])
    assert fig["phases"] == {"total": 8, "complete": 2, "pct": 25.0} and fig["overall_pct"] == 25.0
    assert fig["time"]["remaining_mvp"] == 0 and fig["time"]["remaining_full"] == 0
    assert (fig["mvp"]["migrated"], fig["full"]["migrated"]) == (13, 18)


def test_the_legacy_fleet_is_counted_from_live_instances() -> None:
    inv = inventory.load()
    live = [(s.name, "legacy", "running") for s in inv.services[:16]]
    live += [(inv.services[16].name, "legacy", "degraded"), (inv.services[0].name, "target", "running")]
    fl = figures([], {}, live)["fleet"]
    assert (fl["legacy_healthy"], fl["services"], fl["legacy_healthy_pct"], fl["surveyed_healthy"]) == (
        16,
        18,
        88.9,
        16,
    )
    assert fl["operational"] == 16 and fl["down"] == sorted(s.name for s in inv.services[16:])
