"""Blue/green cutover on the bus: the orchestration (backend/migration/cutover.py), the proof
under load (the `tradeops bench cutover` run, small), and an instance SIGKILLed mid-cutover whose
pending entries the survivor takes over with nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any

import pytest
import redis

from backend.bench.cutover import CutoverStack, measure
from backend.bus import streams
from backend.migration import cutover as switch
from backend.migration.state import MoveRefused, board, desired_instances, move
from gates.bench import proceed_for_benchmark
from tests.conftest import TRADEOPS, wait_for


def beat(r: redis.Redis, service: str, environment: str, state: str = "running") -> None:
    """A heartbeat hash as a running instance writes it (no process needed for the state rules)."""
    r.hset(
        f"health:{service}:{service}-{environment}",
        mapping={
            "instance": f"{service}-{environment}",
            "environment": environment,
            "state": state,
            "ts_ns": time.time_ns(),
            "pid": 0,
        },
    )


def test_rollback_keeps_the_target_until_the_legacy_instance_is_healthy(r: redis.Redis) -> None:
    proceed_for_benchmark(r, ["phase1"], "test")
    move(r, "normalizer", "start", "ann", "go")
    res = switch.rollback(r, "normalizer", "ann", "not yet", timeout=5)  # from deploying: legacy still runs
    assert (res.to_state, res.incoming, res.drained) == ("rolled_back", [], [])
    with pytest.raises(MoveRefused, match="cannot retire normalizer's target: the rollback did not keep it"):
        move(r, "normalizer", "retire", "ann", "x")
    move(r, "normalizer", "start", "ann", "again")
    beat(r, "normalizer", "target")
    res = switch.cutover(r, "normalizer", "ann", "target healthy", timeout=5)
    assert (res.from_state, res.to_state, res.incoming) == ("deploying", "migrated", ["normalizer-target"])
    assert desired_instances(board(r))["normalizer"] == {"target"}
    with pytest.raises(
        switch.CutoverError,
        match=r"^normalizer is rolled back, but no healthy legacy instance of "
        r"normalizer within 0.2s \(no heartbeat at all\): the target "
        r"keeps serving until there is one",
    ):
        switch.rollback(r, "normalizer", "bob", "latency regression", timeout=0.2)
    assert desired_instances(board(r))["normalizer"] == {"legacy", "target"}  # make before break
    beat(r, "normalizer", "legacy")
    r.delete("health:normalizer:normalizer-target")  # as if the supervisor stopped it after the retire
    res = switch.rollback(r, "normalizer", "bob", "latency regression", timeout=5)  # finishes it
    assert (res.from_state, res.to_state, res.incoming) == ("migrated", "rolled_back", ["normalizer-legacy"])
    assert desired_instances(board(r))["normalizer"] == {"legacy"}
    assert [e.action for e in board(r)["normalizer"].history] == [
        "start",
        "rollback",
        "start",
        "cutover",
        "rollback",
        "retire",
    ]
    with pytest.raises(MoveRefused, match=r"cannot rollback normalizer: it is rolled_back"):
        switch.rollback(r, "normalizer", "bob", "again", timeout=1)


def test_cli_cutover_without_a_healthy_target_is_one_line(r: redis.Redis, tradeops_env: dict[str, str]) -> None:
    proceed_for_benchmark(r, ["phase1"], "test")
    move(r, "normalizer", "start", "ann", "go")
    out = subprocess.run(
        [*TRADEOPS, "migrate", "cutover", "normalizer", "--reason", "x", "--timeout", "0.2"],
        capture_output=True,
        text=True,
        env=tradeops_env,
    )
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "tradeops: error: cannot cut over normalizer: no healthy target instance of normalizer within 0.2s "
        "(no heartbeat at all); is the stack up (`tradeops up`)?"
    ]
    assert board(r)["normalizer"].state == "deploying"  # nothing recorded


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_cutover_and_rollback_under_load_lose_and_duplicate_nothing() -> None:
    res = measure(rate=1000, order_rate=50, seconds=2, grant=proceed_for_benchmark)
    assert res["ticks_sent"] > 0 and res["orders_sent"] > 0
    assert res["ticks_delivered"] == res["ticks_sent"]
    assert (res["ticks_lost"], res["ticks_duplicated"], res["ticks_dead_lettered"]) == (0, 0, 0)
    assert res["orders_final"] == res["orders_sent"]
    assert (res["orders_lost"], res["orders_duplicated"]) == (0, 0)
    assert res["recorded"] == [
        f"{svc} {action}"
        for svc in ("normalizer", "gateway", "live-gateway", "risk", "oms")
        for action in ("start: planned -> deploying", "cutover: deploying -> migrated")
    ] + [
        f"{svc} {action}"
        for svc in ("oms", "live-gateway", "gateway")
        for action in ("rollback: migrated -> rolled_back", "retire: rolled_back -> rolled_back")
    ]
    for m in res["moves"][:5]:  # every legacy instance drained (final heartbeat: stopped)
        assert (m["incoming"], m["drained"], m["vanished"]) == (
            [f"{m['service']}-target"],
            [f"{m['service']}-legacy"],
            [],
        )
    for m in res["moves"][5:]:  # rolled back: the legacy instance is back, the target drained
        assert (m["incoming"], m["drained"], m["vanished"]) == (
            [f"{m['service']}-legacy"],
            [f"{m['service']}-target"],
            [],
        )
    # the gateways' overlaps: second copies counted, not dead-lettered; the live-gateways': every
    # trade id once, every fill booked, positions as the OMS's orders make them
    assert res["ticks_repeated"] > 0
    assert res["fills"] > 0 and (res["trade_ids_reused"], res["fills_broken"]) == ([], 0)
    assert res["positions"] > 0 and res["positions_wrong"] == []
    assert res["alerts_active"] == []


def pending_to(r: redis.Redis, consumer: str) -> list[bytes]:
    rows = r.xpending_range(streams.MD_TICKS_RAW, "normalizer", min="-", max="+", count=100_000, consumername=consumer)
    return [row["message_id"] for row in rows]


def consumer_idle_ms(r: redis.Redis, consumer: str) -> int:
    return next(
        int(c["idle"]) for c in r.xinfo_consumers(streams.MD_TICKS_RAW, "normalizer") if c["name"] == consumer.encode()
    )


def freeze_holding_entries(r: redis.Redis, pid: int, other: int | None) -> list[bytes]:
    """SIGSTOP the legacy normalizer while it holds entries it has read and not acked: the other
    instance is paused meanwhile, so the legacy one is the only reader and, stopped in its blocking
    read or in its batch, it holds some; if it was stopped between the two, let it read again."""
    assert other is not None
    os.kill(other, signal.SIGSTOP)
    try:
        for _ in range(50):
            os.kill(pid, signal.SIGSTOP)
            try:
                return wait_for(lambda: pending_to(r, "normalizer-legacy"), 2, what="entries held")
            except pytest.fail.Exception:
                os.kill(pid, signal.SIGCONT)
                wait_for(lambda: consumer_idle_ms(r, "normalizer-legacy") < 50, 10, what="a read after SIGCONT")
        pytest.fail("the legacy normalizer never held a pending entry")
    finally:
        os.kill(other, signal.SIGCONT)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_instance_killed_mid_cutover_leaves_its_entries_to_the_survivor() -> None:
    # the idle-time backstop is an hour away: only the takeover of a gone consumer can save them
    config = "[services.normalizer]\nclaim_idle_ms = 3600000\n"
    with CutoverStack(
        2000, proceed_for_benchmark, services=["gateway", "normalizer"], moved=["normalizer"], config=config
    ) as stack:
        r = stack.r
        move(r, "normalizer", "start", "bench", "blue/green")
        switch.wait_healthy(r, "normalizer", "target", 60)
        pid = stack.pid("normalizer", "legacy")
        assert pid is not None
        held = freeze_holding_entries(r, pid, stack.pid("normalizer", "target"))
        results: list[Any] = []
        errors: list[BaseException] = []

        def cut() -> None:
            try:
                results.append(switch.cutover(r, "normalizer", "bench", "killed mid-cutover", timeout=60))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        t = threading.Thread(target=cut)
        t.start()
        assert stack.sup is not None
        wait_for(lambda: "normalizer-legacy" not in stack.sup.instances, 30, what="the supervisor to stop legacy")
        os.kill(pid, signal.SIGKILL)  # mid-cutover: recorded, the legacy instance asked to drain, killed
        t.join(90)
        assert not errors and results, errors
        assert (results[0].drained, results[0].vanished) == ([], ["normalizer-legacy"])
        wait_for(lambda: not set(held) & set(pending_to(r, "normalizer-legacy")), 60, what="entries taken over")
        stack.stop_market_data()
        ticks = stack.count_ticks()
        log = (stack.bench.data_dir / "logs" / "normalizer-target.log").read_text()
    assert "from normalizer-legacy, which is gone" in log
    assert ticks["ticks_sent"] > 0 and ticks["ticks_delivered"] == ticks["ticks_sent"]
    assert (ticks["ticks_lost"], ticks["ticks_duplicated"], ticks["ticks_dead_lettered"]) == (0, 0, 0)


def test_claim_idle_is_set_per_service_and_checked(redis_url: str) -> None:
    from backend.errors import ConfigError
    from backend.services.normalizer import NormalizerService

    assert NormalizerService(redis_url=redis_url, config={"claim_idle_ms": 2000}).claim_idle_ms == 2000
    with pytest.raises(
        ConfigError,
        match=r"\[services.normalizer\]: claim_idle_ms must be a positive integer "
        r"\(milliseconds\), not 'soon'",
    ):
        NormalizerService(redis_url=redis_url, config={"claim_idle_ms": "soon"})
