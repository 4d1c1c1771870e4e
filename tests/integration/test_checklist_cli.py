"""The migration checklist as an operator uses it: `tradeops migrate attest SERVICE STEP --reason`
(signed like a move, refused with the rule for a step the platform ticks itself), `tradeops
migrate checklist SERVICE [--json]`, the console's board showing the same steps."""

from __future__ import annotations

import json
import subprocess

import redis

from backend.migration.state import board
from tests.conftest import TRADEOPS
from tests.keys import Keys


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRADEOPS, *args], capture_output=True, text=True, env=env, timeout=120)


def test_attest_a_manual_step_and_see_the_checklist(r: redis.Redis, team: Keys, tradeops_env) -> None:
    env = dict(tradeops_env, TRADEOPS_SIGNING_KEY=str(team.path("ann")))
    out = run(["migrate", "attest", "oms", "source", "--reason", "copied in PR 12"], env)
    assert out.returncode == 0 and out.stdout.startswith("oms: step source attested (ann, SHA256:"), out.stderr
    bad = run(["migrate", "attest", "oms", "image", "--reason", "built it"], env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "'image' is not a step an operator attests (these are: source, config, component" in bad.stderr
    bad = run(["migrate", "attest", "oms", "config", "--reason", " "], env)
    assert bad.returncode == 1 and "a reason is required" in bad.stderr
    assert board(r)["oms"].state == "planned"  # an attestation moves nothing

    got = json.loads(run(["migrate", "checklist", "oms", "--json"], env).stdout)
    steps = {s["step"]: s for s in got["steps"]}
    assert steps["source"]["done"] and steps["source"]["how"] == "manual"
    assert "attested by ann" in steps["source"]["evidence"] and "copied in PR 12" in steps["source"]["evidence"]
    assert steps["compose"]["done"] and not steps["config"]["done"] and not steps["tracker"]["done"]
    assert (got["done"], got["of"], got["hours_estimated"], got["hours_logged"]) == (2, 8, 8.0, 0.0)
    table = run(["migrate", "checklist", "oms"], env).stdout
    assert "Copy the source" in table and "oms: 2 of 8 steps done; 0 of 8 estimated hours logged" in table

    # the console's board reads the same checklist from the live state
    from backend.settings import Settings
    from console.data.live import LiveSource

    src = LiveSource(tradeops_env["TRADEOPS_REDIS_URL"], Settings(data_dir=tradeops_env["TRADEOPS_DATA_DIR"]), "ann")
    try:
        snap = src.poll()
    finally:
        src.close()
    shown = {title: (how, done, evidence) for title, how, done, evidence in snap.checklists["oms"]}
    assert shown["Copy the source"][:2] == ("manual", True) and "copied in PR 12" in shown["Copy the source"][2]
    assert snap.hours["oms"] == (8.0, 0.0)

    out = run(["audit", "verify"], env)
    assert out.returncode == 0 and "migration moves and kill switch toggles: 1 signed and valid" in out.stdout
