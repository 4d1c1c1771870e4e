"""The migration checklist: the plan's eight steps per service, automatic ones ticked by what the
platform observes, manual ones by an attestation; a pure function of plain values."""

from __future__ import annotations

from backend.messages import MigrationEvent
from backend.migration import checklist
from widgets.depgraph import draw, draw_tall


def ev(service: str, to: str, action: str = "", **detail: object) -> MigrationEvent:
    return MigrationEvent(
        service=service,
        from_state="planned",
        to_state=to,  # type: ignore[arg-type]
        operator="ann",
        reason="done in PR 12",
        ts_ns=1,
        action=action,
        detail=dict(detail),
    )


def by_step(rows: list[checklist.Row]) -> dict[str, checklist.Row]:
    return {r.step: r for r in rows}


def test_the_plans_eight_steps_in_order_three_of_them_attested() -> None:
    assert [s.id for s in checklist.STEPS] == [
        "source",
        "config",
        "image",
        "compose",
        "component",
        "integration",
        "performance",
        "tracker",
    ]
    assert checklist.MANUAL == ("source", "config", "component")


def test_a_planned_service_waits_for_everything_but_its_compose_entry() -> None:
    rows = by_step(checklist.checklist("oms", [], {}, []))
    assert [s for s, r in rows.items() if r.done] == ["compose"]
    assert "tradeops migrate attest oms source --reason" in rows["source"].evidence
    assert rows["image"].evidence.startswith("process runtime: no image")
    assert rows["integration"].evidence == "no target instance"
    assert rows["performance"].evidence == "gate task04: not run (tradeops gate run task04)"
    assert rows["tracker"].evidence == "planned: counted when cut over"


def test_steps_tick_themselves_from_the_target_the_gate_and_the_cutover() -> None:
    evs = [
        ev("oms", "deploying"),
        ev("oms", "deploying", checklist.ATTEST_STEP, step="source"),
        ev("oms", "migrated"),
        ev("risk", "deploying", checklist.ATTEST_STEP, step="config"),  # another service's: not oms's
    ]
    live = [("oms-target", "target", "running"), ("oms-legacy", "legacy", "running")]
    rows = by_step(checklist.checklist("oms", evs, {"task04": ("proceed", "proceed")}, live, runtime="docker"))
    assert (
        rows["source"].done
        and rows["source"].evidence.startswith("attested by ann")
        and "done in PR 12" in rows["source"].evidence
    )
    assert not rows["config"].done  # risk's attestation is risk's
    assert rows["image"].done and rows["image"].evidence == "target runs from the image (oms-target)"
    assert rows["integration"].done and rows["integration"].evidence == "oms-target running on the bus"
    assert rows["performance"].done and rows["performance"].evidence == "gate task04: proceed"
    assert rows["tracker"].done
    # a gate whose required checks all passed, not yet decided, validates the performance too
    ready = by_step(checklist.checklist("oms", [], {"task04": ("ready", "")}, []))
    assert ready["performance"].done and ready["performance"].evidence == "gate task04: ready"
    # a degraded target is no integration
    deg = by_step(checklist.checklist("oms", [], {}, [("oms-target", "target", "degraded")]))
    assert not deg["integration"].done and deg["integration"].evidence == "target oms-target degraded"


def test_hours_estimated_against_logged() -> None:
    evs = [
        ev("oms", "planned", "log_hours", hours=1.5),
        ev("oms", "planned", "log_hours", hours=2),
        ev("risk", "planned", "log_hours", hours=9),
    ]
    assert checklist.hours("oms", evs) == (8.0, 3.5)


def test_the_graph_joins_what_it_needs_and_fans_out_what_needs_it() -> None:
    wide = draw("oms", "L4", ["risk", "live-gateway"], ["ptrc", "marketplace"])
    assert wide == [
        "risk         ─┬─▶ [ oms L4 ] ─┬─▶ ptrc",
        "live-gateway ─┘               └─▶ marketplace",
    ]
    assert draw("gateway", "L1", [], ["normalizer"]) == ["[ gateway L1 ] ───▶ normalizer"]
    tall = draw_tall("oms", "L4", ["risk", "live-gateway"], ["ptrc"])
    assert tall == [
        "risk         ─┐",
        "live-gateway ─┘",
        "              ▼",
        "            [ oms L4 ]",
        "              │",
        "              └─▶ ptrc",
    ]
