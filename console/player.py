"""`tradeops console --replay FILE`: the console on a recording (console/data/recording.py), with a
player: space plays or pauses, `,` and `.` step a frame, `[` and `]` change the speed, `g` seeks to
a time. A bar under every screen shows where the player is and the audit entries of that period
(what the operators did, with the data they saw). Read-only: a recording changes nothing."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from backend.errors import TradeopsError
from console.actions import ReplayActions
from console.app import TradeopsApp
from console.data.player import PlayerSource
from console.messages import SnapshotReady
from console.screens.base import BaseScreen


class PlayerBar(Static):
    """Where the player is, its keys, and the newest audit entries up to that frame."""

    DEFAULT_CSS = """
    PlayerBar { dock: bottom; height: auto; max-height: 6; background: $boost; padding: 0 1; margin-bottom: 1; }
    """


class SeekModal(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="seek.cancel")]
    DEFAULT_CSS = """
    SeekModal { align: center middle; }
    SeekModal > Vertical { width: 64; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
    """

    def __init__(self, player: PlayerSource) -> None:
        super().__init__()
        self.player = player

    def compose(self) -> ComposeResult:
        p = self.player
        with Vertical():
            yield Label(f"Seek to: HH:MM[:SS] UTC ({p.clock(0)} to {p.clock(len(p.rec) - 1)}), +30s / -2m, or 50%")
            yield Input(id="seek-to")
            yield Label("", id="seek-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            self.player.seek(event.value)
        except TradeopsError as exc:
            self.query_one("#seek-error", Label).update(str(exc))
            event.input.clear()  # typing again starts afresh, not after the rejected text
            return
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ReplayApp(TradeopsApp):
    BINDINGS: ClassVar[list[BindingType]] = [
        *TradeopsApp.BINDINGS,  # all of them, so the help screen lists them too
        Binding("space", "play", "Play/pause", id="replay.play"),
        Binding("full_stop", "step(1)", "Step", id="replay.step"),
        Binding("comma", "step(-1)", "Step back", id="replay.back"),
        Binding("right_square_bracket", "speed(1)", "Faster", show=False, id="replay.faster"),
        Binding("left_square_bracket", "speed(0)", "Slower", show=False, id="replay.slower"),
        Binding("g", "seek", "Seek", id="replay.seek"),
    ]

    def __init__(self, player: PlayerSource, **kw: Any) -> None:
        kw.setdefault("read_only", True)
        super().__init__(player, ReplayActions(player.current), live=True, **kw)
        self.player = player

    # the app polls the player as it polls the bus: playing advances it, paused it stays put
    def refresh_screen(self) -> None:
        screen = self._screen_or_none()
        if isinstance(screen, BaseScreen) and screen.ready:
            bars = screen.query(PlayerBar)
            bar = bars.first() if bars else None
            if bar is None:
                bar = PlayerBar(id="player-bar")
                screen.mount(bar)
            bar.update(self.bar_text())
        super().refresh_screen()

    def _screen_or_none(self) -> Any:
        try:
            return self.screen
        except Exception:  # noqa: BLE001 - no screen yet, or shutting down: nothing to draw on
            return None

    def bar_text(self) -> str:
        p = self.player
        state = "[b]▶ playing[/]" if p.playing else "[b]■ paused[/]"
        lines = [
            f"{state} x{p.speed:g} · {p.clock(p.i)} UTC · {_mmss(p.elapsed)}/{_mmss(p.length)} · "
            f"frame {p.i + 1}/{len(p.rec)} · [b]\\[ ][/] speed"
        ]
        entries = p.audit_until(4)
        if not entries:
            lines.append("[dim]no audit entries up to here[/]")
        for j, row in entries:
            when = "before the recording" if j == 0 else f"frame {j + 1}"
            what = " ".join(str(x) for x in row[1:6] if x)
            mark = "[b]●[/] " if j == p.i else "  "
            lines.append(f"{mark}audit {row[0]} {what} [dim]({when})[/]")
        if p.rec.truncated and p.i == len(p.rec) - 1:
            lines.append("[dim]the recording ends here: it was cut off (the console stopped without closing it)[/]")
        return "\n".join(lines)

    def action_pause(self) -> None:  # `p` too: the player's pause, not a frozen display
        self.action_play()

    def action_play(self) -> None:
        self.player.toggle()
        self._show_now()

    def action_step(self, n: int) -> None:
        self.player.step(n)
        self._show_now()

    def action_speed(self, up: int) -> None:
        self.player.faster(bool(up))
        self._show_now()

    def action_seek(self) -> None:
        self.push_screen(SeekModal(self.player), lambda _: self._show_now())

    def _show_now(self) -> None:
        self.post_message(SnapshotReady(self.player.current()))


def _mmss(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
