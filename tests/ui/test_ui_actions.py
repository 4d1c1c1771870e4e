"""The console's actions: each request a screen posts calls one typed ConsoleActions method (a typo
is no method at all, and an unknown request is refused by name); read-only mode hides every key that
asks for a change and refuses every request, through the one guard; the replay actions judge each
action by the live rules on the recorded data and answer each specifically."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from textual.binding import Binding
from textual.message import Message

from backend.errors import TradeopsError
from backend.messages import Side
from console.actions import ConsoleActions, Decision, LiveActions, ModelStageName, Move, ReplayActions
from console.app import TradeopsApp
from console.data.replay import ReplaySource
from console.messages import (
    ActionRequest,
    RequestAlertAck,
    RequestGateApprove,
    RequestGateAttest,
    RequestGateDecide,
    RequestGateRun,
    RequestKillSwitch,
    RequestMigrate,
    RequestModelPromote,
    RequestModelRollback,
    RequestOrderCancel,
    RequestOrderSubmit,
)
from console.screens.base import asks_change

SIZE = (150, 45)
ACTIONS = sorted(n for n, v in vars(ConsoleActions).items() if inspect.isfunction(v) and not n.startswith("_"))

# one of every request; a new kind of request fails these tests until it is added here
SAMPLES: list[ActionRequest] = [
    RequestMigrate("gateway", "start", "go"),
    RequestGateRun("task04", "health"),
    RequestGateRun("task04", None),
    RequestGateAttest("task04", "rollback-plan", "rehearsed"),
    RequestGateApprove("task04", "reviewed"),
    RequestGateDecide("task04", "proceed", "validated"),
    RequestOrderSubmit("BTCUSDT", "buy", 0.5, 64000.0),
    RequestOrderCancel("demo-1795499327-456"),
    RequestKillSwitch(True, "runaway algo"),
    RequestAlertAck("lag:normalizer"),
    RequestModelPromote("alpha", 3, "production", "better IC"),
    RequestModelRollback("alpha", "IC fell"),
]


class RecordingActions:
    """A ConsoleActions that records each call and changes nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def _did(self, name: str, *args: object) -> str:
        self.calls.append((name, args))
        return f"{name} done"

    def migrate(self, service: str, action: Move, reason: str) -> str:
        return self._did("migrate", service, action, reason)

    def gate_run(self, gate_id: str, check: str | None) -> str:
        return self._did("gate_run", gate_id, check)

    def gate_attest(self, gate_id: str, check: str, note: str) -> str:
        return self._did("gate_attest", gate_id, check, note)

    def gate_approve(self, gate_id: str, reason: str, evidence: str | None = None) -> str:
        return self._did("gate_approve", gate_id, reason, *([evidence] if evidence else []))

    def gate_decide(self, gate_id: str, decision: Decision, reason: str, evidence: str | None = None) -> str:
        return self._did("gate_decide", gate_id, decision, reason, *([evidence] if evidence else []))

    def order_submit(self, symbol: str, side: Side, qty: float, limit: float | None) -> str:
        return self._did("order_submit", symbol, side, qty, limit)

    def order_cancel(self, client_order_id: str) -> str:
        return self._did("order_cancel", client_order_id)

    def kill_switch(self, on: bool, reason: str) -> str:
        return self._did("kill_switch", on, reason)

    def alert_ack(self, key: str) -> str:
        return self._did("alert_ack", key)

    def model_promote(self, name: str, version: int, stage: ModelStageName, reason: str) -> str:
        return self._did("model_promote", name, version, stage, reason)

    def model_rollback(self, name: str, reason: str) -> str:
        return self._did("model_rollback", name, reason)


def recording_app(actions: ConsoleActions, **kw: Any) -> TradeopsApp:
    return TradeopsApp(ReplaySource(), actions, live=False, **kw)


def messages(app: TradeopsApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


def test_every_request_kind_has_a_sample_and_every_action_a_request() -> None:
    assert {type(m) for m in SAMPLES} == set(ActionRequest.__subclasses__())
    rec = RecordingActions()
    for m in SAMPLES:
        m.apply(rec)
    assert sorted({name for name, _ in rec.calls}) == ACTIONS
    assert rec.calls[0] == ("migrate", ("gateway", "start", "go"))
    assert rec.calls[2] == ("gate_run", ("task04", None))


@pytest.mark.parametrize("impl", [LiveActions, ReplayActions, RecordingActions])
def test_each_implementation_has_every_action_with_its_signature(impl: type) -> None:
    for name in ACTIONS:
        want = list(inspect.signature(getattr(ConsoleActions, name)).parameters)
        assert list(inspect.signature(getattr(impl, name)).parameters) == want, f"{impl.__name__}.{name}"


def test_a_typo_is_no_action_and_an_unknown_request_is_refused_by_name() -> None:
    replay = ReplayActions(ReplaySource().poll)
    assert not hasattr(replay, "gate_aprove")  # no catch-all answers a misspelt action
    with pytest.raises(AttributeError):
        replay.gate_aprove  # noqa: B018

    class RequestGateAprove(ActionRequest):
        pass

    with pytest.raises(TradeopsError, match="RequestGateAprove is not an action the console knows"):
        RequestGateAprove().apply(RecordingActions())


async def test_the_app_applies_a_request_in_a_worker_and_refuses_an_unknown_one() -> None:
    class RequestNothing(ActionRequest):
        pass

    rec = RecordingActions()
    app = recording_app(rec)
    async with app.run_test(size=SIZE) as pilot:
        app.post_message(RequestKillSwitch(True, "runaway algo"))
        app.post_message(RequestNothing())
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert rec.calls == [("kill_switch", (True, "runaway algo"))]
        assert "kill_switch done" in messages(app)
        assert "RequestNothing is not an action the console knows" in messages(app)
        assert app.running == {}


async def test_read_only_refuses_every_request_through_the_one_guard() -> None:
    rec = RecordingActions()
    app = recording_app(rec, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        for m in SAMPLES:
            app.screen.post_message(m)  # as a screen posts it
        await pilot.pause()
        await app.workers.wait_for_complete()
        assert rec.calls == []
        assert messages(app).count("read-only mode: nothing can be changed") == len(SAMPLES)
        assert not [w for w in app.workers if w.group == "actions"]


# the keys that change something, by binding id: each must be marked @changes
CHANGING = {
    "orders.new",
    "orders.cancel",
    "risk.kill",
    "migration.start",
    "migration.cutover",
    "migration.rollback",
    "gates.run",
    "gates.run_all",
    "gates.attest",
    "gates.approve",
    "gates.proceed",
    "gates.fix",
    "gates.stop",
    "services.ack",
    "services.promote",
    "services.rollback",
}
# the keys a screen shows on one of its tabs only (the services screen): looked for on each tab
TABS: dict[str, tuple[str, ...]] = {"services": ("positions", "alerts", "models")}


@pytest.mark.parametrize("mode", list(TradeopsApp.MODES))
async def test_read_only_hides_and_disables_every_key_that_asks_for_a_change(mode: str) -> None:
    """Every key of every screen pressed in read-only mode: none opens a form or posts a request."""
    cls = TradeopsApp.MODES[mode]
    own = [b for b in vars(cls).get("BINDINGS", []) if isinstance(b, Binding)]
    assert {b.id for b in own if asks_change(cls, b.action)} == {b.id for b in own if b.id in CHANGING}
    changing = {b.key for b in own if asks_change(cls, b.action)}
    for read_only in (False, True):
        posted: list[Message] = []
        app = recording_app(RecordingActions(), read_only=read_only)
        async with app.run_test(size=SIZE, message_hook=posted.append) as pilot:
            app.switch_mode(mode)
            await pilot.pause()
            active: set[str] = set()
            for tab in TABS.get(mode, ("",)):
                if tab:
                    app.screen.select(tab)
                    await pilot.pause()
                active |= {b.binding.key for b in app.screen.active_bindings.values() if b.enabled}
                if not read_only:
                    continue
                assert not changing & active
                if mode == "orders":  # an order that can still be canceled
                    await pilot.press("slash", *"7-456", "enter")
                    await pilot.pause()
                screen = app.screen
                for b in own:
                    await pilot.press(b.key)
                    await pilot.pause()
                    assert app.screen is screen, f"{b.key} ({b.action}) opened {app.screen} in read-only mode"
                assert not [m for m in posted if isinstance(m, ActionRequest)]
            if not read_only:  # the keys are there, so hiding them in read-only mode means something
                assert changing <= active


async def test_read_only_help_lists_no_key_that_asks_for_a_change() -> None:
    app = recording_app(RecordingActions(), read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        table = app.screen.query_one("#help-table")
        ids = {str(table.get_row_at(i)[3]) for i in range(table.row_count)}
    assert "risk.kill" not in ids and "gates.approve" not in ids and "orders.new" not in ids
    assert "app.help" in ids and "migration.left" in ids


REPLAY_ANSWERS = [
    (
        lambda a: a.migrate("gateway", "start", "go"),
        "cannot start gateway: gate task02 (before P2) has no proceed decision",
    ),
    (
        lambda a: a.migrate("sink-ticks", "cutover", "go"),
        "cannot cutover sink-ticks: it is planned; cutover is for a service that is deploying; "
        "next: `tradeops migrate start sink-ticks --reason ...`",
    ),
    (lambda a: a.migrate("sink-alt", "cutover", "go"), "replay data: sink-alt would go deploying -> migrated"),
    (lambda a: a.migrate("nope", "start", "go"), "no service 'nope' on the recorded board"),
    (lambda a: a.gate_run("nope", None), "no gate 'nope' in the recording"),
    (lambda a: a.gate_run("task04", "rollback-plan"), "task04/rollback-plan is a manual check"),
    (
        lambda a: a.gate_run("task04", "health"),
        "replay data: task04/health is not run on a recording (recorded: pending)",
    ),
    (lambda a: a.gate_run("phase1", None), "replay data: phase1's checks are not run on a recording; phase1: 24 of 24"),
    (lambda a: a.gate_attest("task04", "health", "x"), "task04/health is a health check: run it"),
    (
        lambda a: a.gate_attest("task04", "rollback-plan", "rehearsed"),
        "replay data: the attestation of task04/rollback-plan is not recorded",
    ),
    (lambda a: a.gate_approve("task04", "reviewed"), "replay data: the approval of task04 is not recorded"),
    (lambda a: a.gate_decide("task04", "proceed", "ok"), "proceed refused: required checks not passed"),
    (lambda a: a.gate_decide("task04", "stop", "ok"), "replay data: task04: STOP is not recorded"),
    (lambda a: a.order_submit("BTCUSDT", "buy", -1.0, None), "order refused: quantity must be a positive number"),
    (
        lambda a: a.order_submit("btcusdt", "buy", 0.5, 64000.0),
        "replay data: order not sent: buy 0.5 BTCUSDT limit 64000 (paper-1)",
    ),
    (lambda a: a.order_cancel("demo-1795499327-461"), "demo-1795499327-461 is FILLED: nothing left to cancel"),
    (lambda a: a.order_cancel("demo-1795499327-456"), "replay data: no cancel sent for demo-1795499327-456"),
    (lambda a: a.order_cancel("nope"), "no order nope in the recording"),
    (lambda a: a.kill_switch(True, "runaway"), "replay data: the kill switch is not turned ON; it stays off"),
    (lambda a: a.alert_ack("lag:normalizer"), "replay data: lag:normalizer is not acknowledged"),
    (lambda a: a.alert_ack("nope"), "no active alert with key 'nope' in the recording"),
    (lambda a: a.model_promote("alpha", 9, "production", "x"), "alpha has no version 9 (versions: 1, 2, 3)"),
    (lambda a: a.model_promote("alpha", 3, "production", " "), "a model promote needs a reason"),
    (lambda a: a.model_promote("alpha", 3, "production", "ic"), "replay data: alpha v3 is not promoted to production"),
    (lambda a: a.model_rollback("momentum", "x"), "momentum: nothing to roll back to"),
    (lambda a: a.model_rollback("alpha", "x"), "alpha production stays v2 (a rollback would put back v1)"),
    (lambda a: a.model_promote("nope", 1, "staging", "x"), "no model 'nope' in the recording"),
]


@pytest.mark.parametrize("call,answer", REPLAY_ANSWERS)
def test_replay_actions_judge_by_the_live_rules_and_change_nothing(
    call: Callable[[ReplayActions], str], answer: str
) -> None:
    src = ReplaySource()
    before = src.poll()
    with pytest.raises(TradeopsError) as err:
        call(ReplayActions(src.current))
    assert answer in str(err.value)
    assert src.current() is before
