"""What an operator ran into in the demo, kept fixed: the filter really filters the blotter and
gives the focus back, the blotter's selection stays on its order while new ones arrive, a bad
order form value is a message, a move the state does not allow is refused before any typing,
the palette selects the gate or service it names, help shows keys as they are typed."""

from __future__ import annotations

from textual.app import App, ComposeResult

from tests.ui.conftest import replay_app
from widgets.blotter import BlotterTable

SIZE = (150, 45)


def _row(i: int) -> tuple[str, tuple[str, ...]]:
    key = f"o-{i:03d}"
    return key, (f"10:00:{i:02d}", "NEW", key, "paper-1", "BTCUSDT", "buy", "1", "mkt", "0", "")


class BlotterApp(App):
    def compose(self) -> ComposeResult:
        yield BlotterTable(id="blotter")


async def test_blotter_shows_exactly_its_rows_and_keeps_the_selected_order() -> None:
    app = BlotterApp()
    async with app.run_test(size=(120, 30)) as pilot:
        t = app.query_one(BlotterTable)
        t.set_rows([_row(i) for i in range(5, 0, -1)])  # newest first
        assert t.row_count == 5 and t.selected_key == "o-005" and t.follow
        t.focus()
        await pilot.press("down", "down")  # the operator picks o-003: follow stops
        assert t.selected_key == "o-003" and not t.follow
        t.set_rows([_row(i) for i in range(7, 0, -1)])  # two new orders on top
        assert t.selected_key == "o-003" and t.new_since_pause == 2 and not t.follow
        t.set_rows([_row(i) for i in (7, 3, 1)])  # a filter: only these
        assert t.row_count == 3 and t.selected_key == "o-003"
        await pilot.press("up", "up")  # back on top: following again
        assert t.follow and t.new_since_pause == 0


async def test_the_filter_filters_the_blotter_and_gives_the_focus_back() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await pilot.pause()
        blotter = app.screen.query_one("#blotter", BlotterTable)
        total = blotter.row_count
        await pilot.press("slash", *"7-462", "enter")
        await pilot.pause()
        assert blotter.row_count == 1 and blotter.selected_key == "demo-1795499327-462"
        assert app.focused is blotter
        await pilot.press("slash", "ctrl+u", "enter")
        await pilot.pause()
        assert blotter.row_count == total
        await pilot.press("slash", *"x", "escape")  # escape closes the line without applying
        await pilot.pause()
        assert app.filter_text == "" and not app.screen.query_one("#filter").display and app.focused is blotter


async def test_cancel_of_a_finished_order_is_refused_with_its_state() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "slash", *"7-461", "enter", "x")
        await pilot.pause()
        assert any(
            "demo-1795499327-461 is FILLED: nothing left to cancel" in str(n.message) for n in app._notifications
        )


async def test_a_bad_limit_price_is_a_message_not_a_traceback() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "n")
        await pilot.pause()
        await pilot.press("tab", "tab")  # the form starts in the symbol field: past side, to the quantity
        for limit, message in (("1e", "limit price must be a number"), ("-5", "limit price must be a positive")):
            await pilot.press("ctrl+u", "1", "tab", "ctrl+u", *limit, "enter")
            await pilot.pause()
            assert app.screen.__class__.__name__ == "OrderModal"
            assert message in str(app.screen.query_one("#dialog-error").render())
            await pilot.press("shift+tab")
        await pilot.press("escape")


async def test_a_move_the_state_does_not_allow_is_refused_before_the_modal() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5", "down", "c")  # P1 sink-ticks is planned: nothing to cut over
        await pilot.pause()
        assert app.screen.__class__.__name__ == "MigrationScreen"
        assert any("cannot cutover sink-ticks: it is planned" in str(n.message) for n in app._notifications)


async def test_the_palette_selects_what_it_names() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        app.go_to("gates", "task04")
        await pilot.pause()
        assert app.screen.gate_id() == "task04"
        app.go_to("migration", "oms")
        await pilot.pause()
        assert app.screen.selected() == "oms"
        assert "oms" in str(app.screen.query_one("#deps").render())


async def test_help_shows_keys_as_typed_and_where_they_work() -> None:
    app = replay_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        table = app.screen.query_one("#help-table")
        rows = [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]
        assert ("?", "Help", "everywhere", "app.help") in rows
        assert ("k", "Kill switch", "risk", "risk.kill") in rows
