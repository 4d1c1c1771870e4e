"""Keyboard flows with the pilot: gate decisions end to end (two approvers on the critical gate),
a refused migration move, submit and cancel an order, read-only mode, keymap remap; and the console
against real Redis with the services running."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from textual.pilot import Pilot

from backend.bench.harness import BenchStack
from backend.bench.risk import seed_prices
from backend.settings import Settings
from console.actions import LiveActions
from console.app import TradeopsApp
from console.data.live import LiveSource
from gates import audit, decisions, model
from gates.signing import Signer
from tests.keys import Keys
from tests.ui.conftest import replay_app

SIZE = (150, 45)


def live_app(url: str, operator: str, keys: Keys | None = None, data_dir: Path | None = None, **kw) -> TradeopsApp:
    # each signs with its own key; the audit anchors go to the test's own data dir, not the session's
    settings = Settings(
        signing_key=str(keys.path(operator)) if keys else None, data_dir=str(data_dir) if data_dir else None
    )
    return TradeopsApp(LiveSource(url, settings, operator), LiveActions(url, settings, operator), poll_s=0.1, **kw)


async def until(pilot: Pilot, pred: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {pred}")
        await pilot.pause(0.05)


async def answer_modal(pilot: Pilot, reason: str, confirm: str | None = None) -> None:
    await pilot.pause()
    await pilot.press(*reason)
    if confirm:
        await pilot.press("tab", *confirm)
    await pilot.press("enter")
    await pilot.pause()


def _record(r: redis.Redis, gate: str, check: str, outcome: str, who: Signer) -> None:
    from backend.messages import GateEvent

    audit.append(
        r,
        GateEvent(gate=gate, kind="check_run", operator="ann", ts_ns=0, check=check, outcome=outcome),
        seal=decisions._seal(who),
    )


@pytest.mark.timeout(90)
async def test_decide_the_critical_gate_with_two_approvers(
    redis_url: str, r: redis.Redis, team: Keys, tmp_path: Path
) -> None:
    g = model.load()["task04"]
    for c in g.checks:
        if c.kind == "manual":
            decisions.attest(r, g, c.id, team("ann"), "rollback rehearsed")
        else:
            _record(r, "task04", c.id, "passed", team("ann"))
    for operator, confirm_ok in (("ann", False), ("bob", True)):
        app = live_app(redis_url, operator, team, tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("6")
            await until(pilot, lambda app=app: app.snapshot is not None and app.snapshot.gates)
            await pilot.press("down", "down", "down")  # task04
            status = str(app.screen.query_one("#status").render())
            assert f"operator {operator} key {team(operator).fingerprint}" in status
            await pilot.press("a")
            await pilot.pause()
            digest = decisions.state(r, g).evidence_digest
            assert digest[:32] in str(app.screen.query_one("#dialog-detail").render())  # what the key signs
            await answer_modal(pilot, f"{operator} reviewed the evidence", "task04")
            await until(pilot, lambda operator=operator: operator in decisions.state(r, g).approvers)
            await pilot.press("d")
            await answer_modal(pilot, "trading validated", "task04")
            if not confirm_ok:  # one approver is not enough on the critical gate
                await until(
                    pilot, lambda app=app: any("needs 1 more approval" in str(n.message) for n in app._notifications)
                )
                assert decisions.state(r, g).decision is None
            else:
                await until(pilot, lambda: decisions.state(r, g).decision == "proceed")
    st = decisions.state(r, g)
    assert st.decision == "proceed" and st.decided_by == "bob"
    assert [e.operator for _, e in audit.events(r) if e.kind == "approve"] == ["ann", "bob"]
    assert [e.signer for _, e in audit.events(r) if e.kind == "approve"] == [
        team("ann").fingerprint,
        team("bob").fingerprint,
    ]
    assert st.decision_approvers == ["ann", "bob"]  # the approvals stay with the decision
    assert audit.verify(r).ok


async def test_a_wrong_confirmation_word_does_nothing(redis_url: str, r: redis.Redis) -> None:
    app = live_app(redis_url, "ann")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await until(pilot, lambda: app.snapshot is not None and app.snapshot.gates)
        await pilot.press("a")
        await answer_modal(pilot, "looks fine", "phase2")
        assert "type phase1 exactly" in str(app.screen.query_one("#dialog-error").render())
        await pilot.press("escape")
    assert decisions.state(r, model.load()["phase1"]).approvers == []


async def test_refused_move_shows_its_reason() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5", "right", "s")
        await pilot.pause()
        text = " ".join(str(n.message) for n in app._notifications)
        assert "cannot start gateway: gate task02 (before P2) has no proceed decision" in text


@pytest.mark.timeout(90)
async def test_submit_and_cancel_an_order(redis_url: str, r: redis.Redis) -> None:
    with BenchStack(redis_url=redis_url) as st:
        seed_prices(st.r)
        for name in ("risk", "live-gateway", "oms"):
            st.start(name)
        app = live_app(redis_url, "ann")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3", "n")
            await pilot.pause()
            await pilot.press(
                "tab", "tab", *"0.5", "tab", *"64000", "enter"
            )  # past symbol and side: a resting buy limit
            await until(pilot, lambda: app.snapshot and any(o.state == "ACCEPTED" for o in app.snapshot.orders))
            await pilot.press("x")
            await until(
                pilot,
                lambda: (
                    app.snapshot
                    and any(o.state == "CANCELED" and "canceled by ann" in o.reason for o in app.snapshot.orders)
                ),
            )
            o = app.snapshot.orders[0]
            assert (o.symbol, o.side, o.qty, o.price) == ("BTCUSDT", "buy", 0.5, "64000")


async def test_read_only_mode_blocks_actions() -> None:
    app = replay_app(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6", "a")
        await pilot.pause()
        assert not isinstance(app.screen, type(None)) and app.screen.__class__.__name__ == "GatesScreen"
        keys = {b.binding.key for b in app.screen.active_bindings.values()}
        assert "a" not in keys and "d" not in keys and "1" in keys
        await pilot.press("5", "s")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "MigrationScreen"


async def test_keymap_remaps_a_binding() -> None:
    app = replay_app(keymap={"screen.orders": "o", "app.pause": "space"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("o")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "OrdersScreen"
        await pilot.press("space")
        assert app.paused


@pytest.mark.timeout(120)
async def test_console_on_real_redis_sees_live_ticks_and_orders(redis_url: str) -> None:
    import subprocess

    from backend.runtime.commands import exchange_command
    from backend.runtime.paperflow import PaperFlow

    with BenchStack(redis_url=redis_url) as st:
        ex = subprocess.Popen(
            exchange_command(st.data_dir, 500), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        try:
            assert ex.stdout and ex.stdout.readline().startswith("exchange up")
            for name in ("normalizer", "gateway", "risk", "live-gateway", "oms"):
                st.start(name)
            flow = PaperFlow(redis_url, per_s=20)
            import threading

            t = threading.Thread(target=flow.run, daemon=True)
            t.start()
            app = live_app(redis_url, "ann")
            async with app.run_test(size=SIZE) as pilot:
                await pilot.press("2")
                await until(
                    pilot, lambda: app.snapshot and app.snapshot.total_tps > 0 and len(app.snapshot.market) == 10, 30
                )
                table = app.screen.query_one("#quotes")
                assert table.row_count == 10
                await pilot.press("3")
                await until(pilot, lambda: app.snapshot and any(o.state == "FILLED" for o in app.snapshot.orders), 30)
                assert app.screen.query_one("#blotter").row_count > 0
            flow.stop()
            t.join(5)
        finally:
            ex.terminate()
            ex.wait(10)
