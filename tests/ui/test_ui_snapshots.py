"""Every screen at a fixed size on the recorded replay data with its frozen clock, plus a refused
migration move and the approve modal. Update with `make snapshots`, then look at the SVGs."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot

from tests.ui.conftest import replay_app

SIZE = (150, 45)


@pytest.mark.parametrize(
    "key,name",
    [
        ("1", "overview"),
        ("2", "market"),
        ("3", "orders"),
        ("4", "risk"),
        ("5", "migration"),
        ("6", "gates"),
        ("7", "audit"),
        ("8", "trends"),
        ("9", "services"),
    ],
)
def test_screen(snap_compare, key: str, name: str) -> None:
    async def go(pilot: Pilot) -> None:
        await pilot.press(key)
        await pilot.pause()

    assert snap_compare(replay_app(), terminal_size=SIZE, run_before=go)


def test_refused_move(snap_compare) -> None:
    async def go(pilot: Pilot) -> None:
        await pilot.press("5")
        await pilot.pause()
        await pilot.press("right", "s")  # P2 gateway: task02 has no proceed decision
        await pilot.pause()

    assert snap_compare(replay_app(), terminal_size=SIZE, run_before=go)


def test_approve_modal(snap_compare) -> None:
    async def go(pilot: Pilot) -> None:
        await pilot.press("6", "down", "down", "down", "a")
        await pilot.pause()

    assert snap_compare(replay_app(), terminal_size=SIZE, run_before=go)


def test_help_and_read_only(snap_compare) -> None:
    async def go(pilot: Pilot) -> None:
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(replay_app(read_only=True), terminal_size=SIZE, run_before=go)


@pytest.mark.parametrize(
    "key,name", [("1", "overview"), ("3", "orders"), ("6", "gates"), ("8", "trends"), ("9", "services")]
)
def test_screen_at_120x40(snap_compare, key: str, name: str) -> None:
    """The narrow layout: three tiles a row on the overview, every key of the footer in view."""

    async def go(pilot: Pilot) -> None:
        await pilot.press(key)
        await pilot.pause()

    assert snap_compare(replay_app(), terminal_size=(120, 40), run_before=go)


@pytest.mark.parametrize("size", [(150, 45), (80, 24)])
def test_migration_sheet(snap_compare, size: tuple[int, int]) -> None:
    """The board with the selected service's sheet (P3 oms: its levels, dependencies both ways,
    the data flows its class declares), at the usual size and at 80x24."""

    async def go(pilot: Pilot) -> None:
        await pilot.press("5", "right", "right", "down")
        await pilot.pause()

    assert snap_compare(replay_app(), terminal_size=size, run_before=go)


@pytest.mark.parametrize("size", [(150, 45), (80, 24)])
def test_migration_checklist(snap_compare, size: tuple[int, int]) -> None:
    """`v` on the board: the selected service's migration checklist (the plan's eight steps, what
    ticked each or that it waits for an attestation) and its hours."""

    async def go(pilot: Pilot) -> None:
        await pilot.press("5", "right", "right", "down", "v")
        await pilot.pause()

    assert snap_compare(replay_app(), terminal_size=size, run_before=go)


@pytest.mark.parametrize("size", [(150, 45), (80, 24)])
def test_migration_graph(snap_compare, size: tuple[int, int]) -> None:
    """`v` twice: the selected service's place in the dependency graph, drawn (what it needs joined
    into it, what needs it fanned out), and what breaks if it moves."""

    async def go(pilot: Pilot) -> None:
        await pilot.press("5", "right", "right", "down", "v", "v")
        await pilot.pause()

    assert snap_compare(replay_app(), terminal_size=size, run_before=go)


@pytest.mark.parametrize(
    "key,name",
    [
        ("1", "overview"),
        ("2", "market"),
        ("3", "orders"),
        ("4", "risk"),
        ("5", "migration"),
        ("6", "gates"),
        ("7", "audit"),
        ("8", "trends"),
        ("9", "services"),
    ],
)
def test_screen_at_80x24(snap_compare, key: str, name: str) -> None:
    """Most terminals' default size: no service name, outcome or footer key cut."""

    async def go(pilot: Pilot) -> None:
        await pilot.press(key)
        await pilot.pause()

    assert snap_compare(replay_app(), terminal_size=(80, 24), run_before=go)


@pytest.mark.parametrize(
    "keys,name",
    [
        (("9", "right_square_bracket"), "alerts"),
        (("9", *["right_square_bracket"] * 2), "jobs"),
        (("9", *["right_square_bracket"] * 3), "models"),
        (("9", *["right_square_bracket"] * 4), "backtests"),
        (("9", *["right_square_bracket"] * 5), "catalog"),
        (("9", *["right_square_bracket"] * 6), "instruments"),
    ],
)
def test_services_tab(snap_compare, keys: tuple[str, ...], name: str) -> None:
    async def go(pilot: Pilot) -> None:
        await pilot.press(*keys)
        await pilot.pause()

    assert snap_compare(replay_app(), terminal_size=SIZE, run_before=go)


@pytest.mark.parametrize(
    "keys,name",
    [
        (("9", "right_square_bracket", "a"), "acknowledge"),
        (("9", *["right_square_bracket"] * 3, "P"), "promote"),
        (("9", *["right_square_bracket"] * 3, "B"), "rollback"),
        (("3", "n"), "new-order"),
        (("question_mark",), "help"),
    ],
)
def test_modal_at_80x24(snap_compare, keys: tuple[str, ...], name: str) -> None:
    async def go(pilot: Pilot) -> None:
        await pilot.press(*keys)
        await pilot.pause()

    assert snap_compare(replay_app(), terminal_size=(80, 24), run_before=go)
