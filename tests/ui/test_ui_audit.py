"""The audit screen marks each row signed-valid (who) / invalid (why) / unsigned and says which rows
are entries of the hash chain: a recording with one row of each."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from textual.pilot import Pilot

from console.actions import ReplayActions
from console.app import TradeopsApp
from console.data.replay import ReplaySource

ROWS = [
    ["05:48:24", "phase1", "check_run", "infra-redis", "bob", "", "✓ bob", "#1"],
    ["05:48:25", "phase1", "attest", "secrets", "ann", "vault holds the keys", "✓ ann", "#2"],
    ["05:48:26", "normalizer", "migration", "planned -> deploying", "ann", "go", "✓ ann", "—"],
    ["05:48:27", "task02", "approve", "", "mallory", "me too", "unsigned", "#3"],
    [
        "05:48:28",
        "normalizer",
        "migration",
        "planned -> deploying",
        "ann",
        "edited",
        "✗ the signature does not verify",
        "—",
    ],
    ["05:48:29", "risk", "kill switch", "ON", "bob", "runaway", "unsigned", "—"],
]


def test_audit_marks(snap_compare, tmp_path: Path) -> None:
    frames = json.loads(resources.files("console.data").joinpath("replay.json").read_text())
    for f in frames:
        f["audit"] = ROWS
        f["audit_verdict"] = "chain OK (3 entries)"
    path = tmp_path / "replay.json"
    path.write_text(json.dumps(frames))
    src = ReplaySource(path)
    assert [tuple(r) for r in src.current().audit] == [tuple(r) for r in ROWS]

    async def go(pilot: Pilot) -> None:
        await pilot.press("7")
        await pilot.pause()

    assert snap_compare(
        TradeopsApp(src, ReplayActions(src.current), live=False), terminal_size=(120, 30), run_before=go
    )
