"""Migration moves and their refusals, state rebuilt from events, and the process runtime
(blue/green instances converge on the migration state; a crashed instance is restarted)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import redis

from backend.errors import TradeopsError
from backend.messages import GateEvent
from backend.migration.state import MoveRefused, blockers, board, desired_instances, move
from backend.runtime.process import ProcessSupervisor
from gates import audit
from tests.conftest import wait_for


def proceed(r: redis.Redis, gate: str) -> None:
    audit.append(r, GateEvent(gate=gate, kind="decision", operator="lee", ts_ns=0, decision="proceed", reason="ok"))


def test_refused_moves_name_what_blocks_them(r: redis.Redis) -> None:
    with pytest.raises(
        MoveRefused, match=r"cannot start normalizer: gate phase1 \(before P1\) has no proceed decision"
    ):
        move(r, "normalizer", "start", "ann", "go")
    proceed(r, "phase1")
    with pytest.raises(MoveRefused, match="cannot start gateway: normalizer must be migrated first: it is planned"):
        move(r, "gateway", "start", "ann", "go")
    with pytest.raises(TradeopsError, match="unknown service 'nosuch'"):
        move(r, "nosuch", "start", "ann", "go")
    with pytest.raises(
        MoveRefused,
        match=r"cannot cutover normalizer: it is planned; cutover is for a service that is deploying; "
        r"next: `tradeops migrate start normalizer --reason \.\.\.`$",
    ):
        move(r, "normalizer", "cutover", "ann", "go")
    with pytest.raises(MoveRefused, match="a reason is required"):
        move(r, "normalizer", "start", "ann", " ")
    move(r, "normalizer", "start", "ann", "P1 first")
    move(r, "normalizer", "cutover", "ann", "healthy")
    move(r, "sink-ticks", "start", "ann", "now it may")
    assert blockers(r, "gateway") == ["gate task02 (before P2) has no proceed decision"]


def test_state_is_rebuilt_from_events(r: redis.Redis, redis_url: str) -> None:
    proceed(r, "phase1")
    move(r, "normalizer", "start", "ann", "a")
    move(r, "normalizer", "cutover", "ann", "b")
    move(r, "normalizer", "rollback", "bob", "latency regression")
    b1 = board(r)
    b2 = board(redis.Redis.from_url(redis_url))  # another process's view: the same events, the same state
    assert b1["normalizer"].state == b2["normalizer"].state == "rolled_back"
    assert [e.to_state for e in b1["normalizer"].history] == ["deploying", "migrated", "rolled_back"]
    assert b1["normalizer"].history[-1].operator == "bob"
    want = desired_instances(b1)
    assert want["normalizer"] == {"legacy"} and want["gateway"] == {"legacy"}


@pytest.mark.timeout(120)
def test_supervisor_blue_green_and_restart(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    sup = ProcessSupervisor(redis_url, tmp_path, with_exchange=False)
    sup.services = ["risk"]  # one cheap service is enough to see the mechanism
    try:
        sup.reconcile()
        assert set(sup.instances) == {"risk-legacy"}
        wait_for(lambda: r.hget("health:risk:risk-legacy", "state") == b"running", 20)
        proceed(r, "phase1"), proceed(r, "task02"), proceed(r, "task03")
        for svc in ("normalizer", "live-gateway"):
            move(r, svc, "start", "ann", "dep"), move(r, svc, "cutover", "ann", "dep")
        move(r, "risk", "start", "ann", "blue/green")
        sup.reconcile()
        assert set(sup.instances) == {"risk-legacy", "risk-target"}
        wait_for(lambda: r.hget("health:risk:risk-target", "state") == b"running", 20)
        move(r, "risk", "cutover", "ann", "target healthy")
        sup.reconcile()
        assert set(sup.instances) == {"risk-target"}
        # a crash is restarted, with backoff
        pid = sup.instances["risk-target"].pid
        os.kill(pid, signal.SIGKILL)

        def restarted() -> bool:
            sup.check_children()
            return sup.instances["risk-target"].pid != pid

        wait_for(restarted, 20)
        assert sup.instances["risk-target"].restarts == 1
    finally:
        sup.shutdown()
    assert not sup.instances
