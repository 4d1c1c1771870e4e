"""The services screen's flows with the pilot: acknowledge an alert and promote / roll back a model
with the typed confirmation, on real Redis (alerting's active alerts, modelops in-process); a
recording opens read-only with the changing keys hidden; the console's friction fixes (the order
form's focus and its bad fields, the confirmation field, every evidence field of a failed check,
the help's legend); the plots' window."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import redis
from textual.widgets import DataTable, Input, Label, Static

from backend.bus import codec, streams
from backend.messages import Alert, ModelRegister, ModelStage
from backend.models import registry as reg
from backend.models.linear import LinearModel
from backend.services.alerting import ACTIVE
from backend.services.modelops import ModelopsService
from console.actions import ReplayActions
from console.app import TradeopsApp
from console.data.replay import ReplaySource
from console.screens.services import ServicesScreen
from tests.conftest import await_for
from tests.ui.conftest import replay_app
from tests.ui.test_ui_flows import SIZE, live_app, until
from widgets.keyedtable import KeyedTable
from widgets.timeplot import TimePlot


def _text(app: TradeopsApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def _tab(pilot, app: TradeopsApp, tab: str) -> None:
    await pilot.press("9")
    await pilot.pause()
    assert isinstance(app.screen, ServicesScreen)
    app.screen.select(tab)
    await pilot.pause()


async def test_acknowledge_an_alert_with_the_typed_confirmation(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    alert = Alert(
        id="a1", ts_ns=1, severity="warning", source="alerting", kind="lag", message="oms lag [5]", key="lag:oms"
    )
    r.hset(ACTIVE, "lag:oms", codec.encode(alert))
    app = live_app(redis_url, "ann", data_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await _tab(pilot, app, "alerts")
        table = app.screen.query_one("#svc-table", KeyedTable)
        await until(pilot, lambda: table.row_count == 1)
        assert "oms lag [5]" in str(table.get_row_at(0)[3])  # brackets shown as they are, not markup
        await pilot.press("a")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "ReasonModal"
        assert app.screen.query_one("#confirm", Input).placeholder == ""  # never the word itself
        assert "type ACK to confirm" in str(app.screen.query_one("#confirm-label", Label).render())
        await pilot.press(*"ack", "enter")  # the wrong word: nothing happens, the word is selected
        await pilot.pause()
        assert "type ACK exactly" in str(app.screen.query_one("#dialog-error", Label).render())
        assert app.screen.query_one("#confirm", Input).selected_text == "ack"
        await pilot.press(*"ACK", "enter")  # typing replaces the selected word
        await until(pilot, lambda: r.hget(ACTIVE, "lag:oms") is None)
        acked = r.xrange(streams.OPS_ALERTS_ACKED)
        assert len(acked) == 1 and codec.decode(codec.payload(acked[0][1]), Alert).acked_by == "ann"
        await until(pilot, lambda: table.row_count == 0)
        assert any("acknowledged lag:oms (ann)" in str(n.message) for n in app._notifications)
        # live, the plots are drawn in a worker thread as the figures come: Redis's memory here
        await pilot.press("8")
        plot = app.screen.query_one("#p-redis", TimePlot)
        await until(pilot, lambda: plot._text is not None and "used" in plot._text.plain)
        first = plot._text
        await until(pilot, lambda: plot._text is not first and plot._text is not None and "used" in plot._text.plain)


def _register(version_ic: float) -> ModelRegister:
    model = LinearModel(features=["lead"], mean=[0.0], std=[1.0], coef=[1.0], intercept=0.0, pred_std=1.0)
    return ModelRegister(
        name="alpha",
        kind=model.kind,
        artifact=model.to_bytes(),
        features=["lead"],
        label="ret_5s",
        metrics={"ic": version_ic},
        data_start_ns=1,
        data_end_ns=2,
        rows=10,
    )


async def test_promote_and_roll_back_a_model_with_typed_confirmations(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    mo = ModelopsService(redis_url=redis_url, instance="mo-1")
    task = asyncio.create_task(mo.run())
    try:
        await await_for(lambda: mo.state == "running" or task.done(), 10)
        for ic in (0.1, 0.2):
            r.xadd(streams.MODELS_REQUESTS, codec.fields(_register(ic)))
        r.xadd(
            streams.MODELS_REQUESTS,
            codec.fields(ModelStage(name="alpha", action="promote", version=1, reason="first", operator="ann")),
        )
        await await_for(lambda: reg.stages(r, "alpha").get("production") == 1, 10)
        app = live_app(redis_url, "ann", data_dir=tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await _tab(pilot, app, "models")
            await until(
                pilot, lambda: app.snapshot and app.snapshot.models and app.snapshot.models[0].versions == [1, 2]
            )
            await pilot.press("P")  # the newest version, production: a reason, then the model's name
            await pilot.pause()
            assert app.screen.__class__.__name__ == "PromoteModal"
            await pilot.press("tab", "tab", *"ic 0.2 on holdout", "enter", *"alpha", "enter")
            await until(pilot, lambda: reg.stages(r, "alpha").get("production") == 2)
            await until(pilot, lambda: any("alpha: promoted to v2" in str(n.message) for n in app._notifications))
            await until(  # the snapshot that shows both: v2 in production, v1 to roll back to
                pilot, lambda: (app.snapshot.models[0].production, app.snapshot.models[0].previous) == (2, 1)
            )
            await pilot.press("B")
            await pilot.pause()
            assert "from v2 back to v1" in str(app.screen.query_one("#dialog-detail", Label).render())
            await pilot.press(*"v2 drifts", "enter", *"alpha", "enter")
            await until(pilot, lambda: reg.stages(r, "alpha").get("production") == 1)
            await until(pilot, lambda: any("alpha: rolled back to v1" in str(n.message) for n in app._notifications))
        evs = reg.events(r, "alpha")
        assert [(e.kind, e.operator, e.reason) for e in evs[-2:]] == [
            ("promoted", "ann", "ic 0.2 on holdout"),
            ("rolled_back", "ann", "v2 drifts"),
        ]
    finally:
        mo.request_stop()
        await task


async def test_a_recording_opens_read_only_with_the_changing_keys_hidden() -> None:
    src = ReplaySource()
    app = TradeopsApp(src, ReplayActions(src.current), live=False)  # as `tradeops console --replay`
    async with app.run_test(size=SIZE) as pilot:
        assert app.read_only and app.refusal() == "recorded data: nothing can be changed (read-only)"
        assert "READ-ONLY" in _text(app, "#status")
        for screen, tab, hidden in (("6", None, {"a", "d", "r"}), ("9", "alerts", {"a"}), ("9", "models", {"P", "B"})):
            await pilot.press(screen)
            await pilot.pause()
            if tab:
                app.screen.select(tab)
                await pilot.pause()
            keys = {b.binding.key for b in app.screen.active_bindings.values() if b.enabled}
            assert not hidden & keys
            before = app.screen
            await pilot.press(*hidden)
            await pilot.pause()
            assert app.screen is before  # no confirmation asked, then refused: nothing opens
        assert not any("replay data" in str(n.message) for n in app._notifications)


async def test_the_keys_of_a_tab_show_on_that_tab_and_the_palette_opens_it() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("9")
        await pilot.pause()
        keys = {b.binding.key for b in app.screen.active_bindings.values() if b.enabled}
        assert not {"a", "P", "B"} & keys  # positions: nothing to acknowledge or promote
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert app.screen.query_one("Tabs").active == "alerts"
        assert "a" in {b.binding.key for b in app.screen.active_bindings.values() if b.enabled}
        await pilot.press("1")
        app.go_to("services", "instruments")  # what the palette's "services: instruments" does
        await pilot.pause()
        await pilot.pause()
        assert app.screen.query_one("Tabs").active == "instruments"
        assert app.screen.query_one("#svc-table", DataTable).row_count == 10


async def test_the_rollback_with_nothing_to_go_back_to_is_refused_before_the_modal() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await _tab(pilot, app, "models")
        await pilot.press("down", "B")  # momentum: one version has been in production
        await pilot.pause()
        assert isinstance(app.screen, ServicesScreen)
        assert any("momentum: nothing to roll back to" in str(n.message) for n in app._notifications)


async def test_the_order_form_starts_in_the_symbol_and_a_bad_field_is_typed_over() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "n")
        await pilot.pause()
        assert app.screen.focused is not None and app.screen.focused.id == "symbol"
        await pilot.press("tab", "tab", "minus", "5", "enter")
        await pilot.pause()
        qty = app.screen.query_one("#qty", Input)
        assert "quantity must be a positive number" in str(app.screen.query_one("#dialog-error").render())
        assert app.screen.focused is qty and qty.selected_text == "-5"
        await pilot.press("2")
        assert qty.value == "2"  # replaced, not "-52"


async def test_a_failed_check_shows_every_field_of_its_evidence() -> None:
    src = ReplaySource()
    gate = next(g for g in src.frames[0].gates if g.id == "task04")
    check = gate.checks[0][0]
    gate.checks[0] = (check, "perf", True, "failed", "value=2.31")
    gate.details[check] = ["value=2.31", "median_ms=2.31", "limit_ms=1.5", "samples=200", "window_s=30"]
    app = TradeopsApp(src, ReplayActions(src.current), live=False, read_only=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6", "down", "down", "down")
        await pilot.pause()
        detail = _text(app, "#check-detail")
        assert f"{check} (perf, required): failed" in detail
        for field in gate.details[check]:
            assert field in detail


async def test_help_says_how_to_close_it_and_what_the_abbreviations_mean() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert "esc, ? or q closes this" in str(app.screen.query_one("#dialog-title", Label).render())
        legend = str(app.screen.query_one("#legend", Static).render())
        for term in ("L1 T0", "★", "lag", "pend", "dlq"):
            assert term in legend
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "OverviewScreen"


async def test_the_plots_window_is_chosen_with_w() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8")
        await pilot.pause()
        plot = app.screen.query_one("#p-risk", TimePlot)
        assert plot.window == 300 and set(plot._series) == {"P50", "P99"}
        await pilot.press("w")
        await pilot.pause()
        assert app.plot_window == 900 and plot.window == 900
        await pilot.press("4")  # the risk screen's plot follows the same window
        await pilot.pause()
        assert app.screen.query_one("#series", TimePlot).window == 900
        await pilot.press("w", "w")
        assert app.plot_window == 300


def test_the_recording_decodes_its_series() -> None:
    snap = ReplaySource().poll()
    assert snap.now and snap.series["risk_rt_p99"][-1] == (snap.now, 8.091)
    assert msgspec.to_builtins(snap.models[0])["previous"] == 1
