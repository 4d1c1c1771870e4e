"""The inventory's lanes, levels and sheets, and the completion tracker against a small live state,
as an operator runs them: `tradeops inventory [--levels] [--json]`, `inventory show NAME`,
`migrate log-hours` (signed like a move) and `report` (Markdown and JSON)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import redis

from backend.errors import TradeopsError
from backend.migration.state import MoveRefused, board, log_hours
from gates import decisions, model
from tests.conftest import TRADEOPS
from tests.keys import Keys

GATES = """
[[gate]]
id = "phase1"
title = "Phase 1 validation (test)"
guards = "P1"
approvals = 1
checks = [{ id = "ok", title = "attested", kind = "manual" }]

[[gate]]
id = "task02"
title = "Task 02 gate (test)"
guards = "P2"
approvals = 1
checks = [{ id = "ok", title = "attested", kind = "manual" }]
"""


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRADEOPS, *args], capture_output=True, text=True, env=env, timeout=120)


def test_inventory_lanes_levels_and_a_sheet(tradeops_env) -> None:
    out = run(["inventory"], tradeops_env)
    assert out.returncode == 0
    assert (
        "CPGS lanes over 26 entries (18 services + 8 core infrastructure): frontend 9, lowlatency 10, "
        "backend 13; 6 on several lanes" in out.stdout
    )
    assert "5 dependency levels" in out.stdout and "MIGRATE AFTER" in out.stdout
    lv = json.loads(run(["inventory", "--levels", "--json"], tradeops_env).stdout)
    assert sorted(lv["levels"]) == ["1", "2", "3", "4", "5"] and "gateway" in lv["levels"]["1"]
    assert lv["needed_by"]["risk"] == ["oms"] and lv["needs"]["normalizer"] == ["gateway", "refdata"]
    assert lv["migrate_after"]["gateway"] == ["normalizer"] and "gateway" in lv["migrate_before"]["normalizer"]
    full = json.loads(run(["inventory", "--json"], tradeops_env).stdout)
    assert full["lanes"] == {"frontend": 9, "lowlatency": 10, "backend": 13, "multi": 6, "entries": 26}
    oms = next(s for s in full["services"] if s["name"] == "oms")
    assert oms["level"] == 4 and sorted(oms["needed_by"]) == ["marketplace", "ptrc"] and oms["testing"]
    out = run(["inventory", "show", "oms"], tradeops_env)
    assert out.returncode == 0
    for part in (
        "consumes risk.decisions in group oms from risk",
        "writes exec.orders to live-gateway (group live-gateway)",
        "Configuration [services.oms]",
        "risk_timeout_s: float = 5.0",
        "redis/oms (TRADEOPS_REDIS_PASSWORD",
        "Testing requirements",
        "Known issues",
    ):
        assert part in out.stdout, part
    out = run(["inventory", "show", "nope"], tradeops_env)
    assert out.returncode == 1 and "unknown service 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_report_speaks_the_plans_figures_from_the_live_state(
    r: redis.Redis, team: Keys, tradeops_env, tmp_path: Path
) -> None:
    gates_file = tmp_path / "gates.toml"
    gates_file.write_text(GATES)
    env = dict(tradeops_env, TRADEOPS_GATES_FILE=str(gates_file), TRADEOPS_SIGNING_KEY=str(team.path("ann")))
    phase1 = model.load(gates_file)["phase1"]
    decisions.attest(r, phase1, "ok", team("ann"), "Phase 1 validated")
    decisions.approve(r, phase1, team("bob"), "seen")
    decisions.decide(r, phase1, "proceed", team("ann"), "Task 01 done")

    out = run(["migrate", "start", "normalizer", "--reason", "P1 first"], env)
    assert out.returncode == 0, out.stderr
    out = run(["migrate", "log-hours", "normalizer", "2.5", "--reason", "image, config, first deploy"], env)
    assert out.returncode == 0 and out.stdout.startswith("normalizer: 2.5 h logged (ann, SHA256:"), out.stderr
    res = run(["migrate", "log-hours", "normalizer", "250", "--reason", "typo"], env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "hours must be more than 0 and at most 24, not 250" in res.stderr
    with pytest.raises(MoveRefused, match="hours must be more than 0 and at most 24, not 0"):
        log_hours(r, "normalizer", 0, "ann", "x")
    with pytest.raises(TradeopsError, match="unknown service 'nope'"):
        log_hours(r, "nope", 1, "ann", "x")

    rep = json.loads(run(["report", "--json"], env).stdout)
    fig = rep["tracker"]
    assert fig["overall_pct"] == 13.9 and fig["phases"]["complete"] == 1 and fig["phase2"]["complete"] == 1
    assert fig["time"]["invested"] == 8.5 + 2 + 2.5
    assert fig["time"]["remaining_mvp"] == 46 - 2.5 and fig["time"]["remaining_full"] == 68 - 2.5
    t2 = next(t for t in fig["tasks"] if t["id"] == "Task 02")
    assert (t2["status"], t2["hours_spent"], t2["spent_from"]) == ("in progress", 2.5, "logged")
    assert fig["services"]["in_progress"] == 1 and sorted(fig["services"]["ready_names"]) == ["sink-alt", "sink-ticks"]
    assert fig["fleet"]["legacy_healthy"] == 0 and fig["fleet"]["surveyed_healthy"] == 16  # nothing runs here
    assert rep["overall"]["hours_spent"] == 2.5 and rep["priorities"][0]["hours_spent"] == 2.5
    # the logged hours moved nothing
    assert board(r)["normalizer"].state == "deploying"

    md = run(["report"], env).stdout
    assert "**Overall progress**: 13.9% (1 of 8 phases complete, 12.5%; Phase 2: 1 of 6 tasks, 16.7%" in md
    assert "| MVP | P1-P4 | 13 | 0 | 46 | 2.5 | 43.5 |" in md and "| full | P1-P5 | 18 | 0 | 68 | 2.5 | 65.5 |" in md
    assert "Time invested: 13 h (Phase 1 8.5 h, Phase 2 4.5 h)" in md
    assert "| Task 02 | Migrate Priority 1 services | task02 | in progress | 0/3 migrated | 8 | 2.5 | logged |" in md

    # the gate decision ends the task: its effort is what was logged for it
    task02 = model.load(gates_file)["task02"]
    decisions.attest(r, task02, "ok", team("ann"), "P1 validated")
    decisions.approve(r, task02, team("bob"), "seen")
    decisions.decide(r, task02, "proceed", team("ann"), "Task 02 done")
    fig = json.loads(run(["report", "--json"], env).stdout)["tracker"]
    assert fig["phase2"]["complete"] == 2 and fig["overall_pct"] == 15.3 and fig["time"]["remaining_mvp"] == 38
    out = run(["audit", "verify"], env)
    assert out.returncode == 0 and "migration moves and kill switch toggles: 2 signed and valid" in out.stdout
