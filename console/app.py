"""tradeops: the operator console. Nine screens on number keys, a command palette, help, filter,
pause that keeps collecting, read-only mode, a keymap from config. A worker reads the data source
and posts snapshots; screens post the changes an operator asks for (ActionRequest), which run in
action workers and report back as notifications."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ScreenStackError
from textual.binding import Binding, BindingType
from textual.command import Hit, Hits, Provider
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Input
from textual.worker import Worker, WorkerState

from console.actions import ConsoleActions
from console.data.snapshot import Snapshot
from console.data.source import ConsoleSource
from console.messages import ActionRequest, SnapshotReady
from console.modals import HelpScreen
from console.screens.audit import AuditScreen
from console.screens.base import BaseScreen, asks_change
from console.screens.gates import GatesScreen
from console.screens.market import MarketScreen
from console.screens.migration import MigrationScreen
from console.screens.orders import OrdersScreen
from console.screens.overview import OverviewScreen
from console.screens.risk import RiskScreen
from console.screens.services import TABS as SERVICE_TABS
from console.screens.services import ServicesScreen
from console.screens.trends import TrendsScreen

SCREENS = ["overview", "market", "orders", "risk", "migration", "gates", "audit", "trends", "services"]
READ_ONLY = "read-only mode: nothing can be changed"
RECORDED = "recorded data: nothing can be changed (read-only)"
SCREEN_CLASSES: dict[str, type[BaseScreen]] = {
    "overview": OverviewScreen,
    "market": MarketScreen,
    "orders": OrdersScreen,
    "risk": RiskScreen,
    "migration": MigrationScreen,
    "gates": GatesScreen,
    "audit": AuditScreen,
    "trends": TrendsScreen,
    "services": ServicesScreen,
}


class TradeopsCommands(Provider):
    """ctrl+p reaches every screen, service and gate."""

    async def search(self, query: str) -> Hits:
        from backend.migration import inventory

        app = self.app
        assert isinstance(app, TradeopsApp)
        matcher = self.matcher(query)
        items: list[tuple[str, Any, str]] = [
            (f"screen: {s}", lambda s=s: app.switch_mode(s), f"go to {s}") for s in SCREENS
        ]
        items += [
            (f"services: {tab}", lambda t=tab: app.go_to("services", t), what) for tab, what in SERVICE_TABS.items()
        ]
        for svc in inventory.load().services:
            items.append(
                (f"service: {svc.name} (P{svc.priority})", lambda n=svc.name: app.go_to("migration", n), svc.purpose)
            )
        for g in app.snapshot.gates if app.snapshot else []:
            items.append((f"gate: {g.id} ({g.status})", lambda n=g.id: app.go_to("gates", n), g.title))
        for text, cb, help_ in items:
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), cb, help=help_)


class TradeopsApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "tradeops"
    # classes on the screen, used in app.tcss (Textual declares it an instance attribute, so no ClassVar)
    # -tiny: under 100 columns (80x24, most terminals' default); -narrow: 120; -wide: 140 and more
    HORIZONTAL_BREAKPOINTS = [(0, "-tiny"), (100, "-narrow"), (140, "-wide")]  # noqa: RUF012
    AUTO_FOCUS = None
    COMMANDS = App.COMMANDS | {TradeopsCommands}
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = {**SCREEN_CLASSES}
    BINDINGS: ClassVar[list[BindingType]] = [
        # shown in the tab line under the status bar, not in the footer (which keeps the screen's own keys)
        *[
            Binding(str(i + 1), f"switch_mode('{s}')", s.capitalize(), show=False, id=f"screen.{s}")
            for i, s in enumerate(SCREENS)
        ],
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("slash", "filter", "Filter", id="app.filter"),
        Binding("p", "pause", "Pause", id="app.pause"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(
        self,
        source: ConsoleSource,
        actions: ConsoleActions,
        *,
        read_only: bool | None = None,
        keymap: dict[str, str] | None = None,
        poll_s: float = 0.5,
        live: bool = True,
        theme: str | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.actions = actions
        # a recording (ReplayActions) changes nothing: read-only unless told otherwise, so its
        # screens hide the keys that ask for a change instead of refusing after the confirmation
        self.recorded = bool(getattr(actions, "recorded", False))
        self.read_only = self.recorded if read_only is None else read_only
        self.plot_window = 300.0  # seconds the plots show ("w" cycles console/data/series.py's WINDOWS_S)
        self.keymap_config = keymap or {}
        self.poll_s = poll_s
        self.live = live
        self.snapshot: Snapshot | None = None
        self.paused = False
        self.filter_text = ""
        self.started = time.monotonic()
        self.first_frame_s: float | None = None
        self.running: dict[Worker[str], str] = {}  # actions in flight, shown in the status bar
        if theme:
            self.theme = theme

    def on_mount(self) -> None:
        if self.keymap_config:
            self.set_keymap(self.keymap_config)
        if self.live:
            self.poll_loop()
        else:
            self.snapshot = self.source.poll()
        self.switch_mode("overview")

    # -- data ------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="poll", exit_on_error=False, description="read the bus")
    def poll_loop(self) -> None:
        from textual.worker import get_current_worker

        worker = get_current_worker()
        while not worker.is_cancelled:
            t0 = time.monotonic()
            self.post_message(SnapshotReady(self.source.poll()))
            time.sleep(max(0.05, self.poll_s - (time.monotonic() - t0)))

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        self.snapshot = message.snapshot  # collected even while paused
        if not self.paused:
            self.refresh_screen()
        if self.first_frame_s is None:
            self.first_frame_s = time.monotonic() - self.started

    def refresh_screen(self) -> None:
        try:
            screen = self.screen
        except ScreenStackError:  # shutting down: a late snapshot has nowhere to go
            return
        # a screen still being built shows the newest snapshot when it is mounted
        if isinstance(screen, BaseScreen) and screen.ready and self.snapshot is not None:
            try:
                screen.show(self.snapshot)
            except NoMatches:  # a screen being taken down (the app closing) has lost its widgets
                if screen.is_running:
                    raise

    # -- actions ---------------------------------------------------------------------------------
    def refusal(self) -> str | None:
        """The one read-only guard: why no change may be made here, or None. It hides the keys that
        ask for a change (BaseScreen.check_action, the help screen) and refuses every request."""
        if not self.read_only:
            return None
        return RECORDED if self.recorded else READ_ONLY

    @on(ActionRequest)
    def change(self, request: ActionRequest) -> None:
        """Every change an operator asks for: refused in read-only mode, else applied in an action
        worker; its label shows in the status bar until it is done (a gate's benchmarks or a
        cutover take a while)."""
        refusal = self.refusal()
        if refusal:
            self.notify(refusal, severity="warning")
            return
        self.running[self.apply_change(request)] = request.label
        self.refresh_screen()

    @work(thread=True, group="actions", exit_on_error=False, description="change something")
    def apply_change(self, request: ActionRequest) -> str:
        return request.apply(self.actions)

    @on(Worker.StateChanged)
    def report_worker(self, event: Worker.StateChanged) -> None:
        """A finished action as a notification, its answer or why it was refused (every refusal or
        failure is shown, never a crash); a poll worker that failed, too."""
        worker = event.worker
        if worker.group == "actions" and worker.is_finished:
            self.running.pop(worker, None)
            if event.state == WorkerState.SUCCESS:
                self.notify(str(worker.result), title="done", timeout=8)
            elif event.state == WorkerState.ERROR:
                self.notify(str(worker.error), title="refused", severity="error", timeout=8)
            self.refresh_screen()
        elif worker.group == "poll" and event.state == WorkerState.ERROR:
            self.notify(f"reading the data stopped: {worker.error}", title="error", severity="error", timeout=30)

    def go_to(self, mode: str, item: str) -> None:
        """Switch to a screen and select a service or gate on it (the command palette)."""
        self.switch_mode(mode)
        self.call_after_refresh(self._select, item)

    def _select(self, item: str) -> None:
        if isinstance(self.screen, BaseScreen):
            self.screen.select(item)

    def action_help(self) -> None:
        rows = [("ctrl+p", "Command palette: any screen, service or gate", "everywhere", "")]
        groups: list[tuple[str, type, list[Any]]] = [
            ("everywhere", type(self), self.BINDINGS),
            ("everywhere", BaseScreen, BaseScreen.BINDINGS),
            *(
                (mode, cls, vars(cls).get("BINDINGS", []))  # its own, not inherited
                for mode, cls in SCREEN_CLASSES.items()
            ),
        ]
        for where, node, screen_bindings in groups:
            for b in screen_bindings:
                if isinstance(b, Binding) and b.id and not (asks_change(node, b.action) and self.refusal()):
                    key = self.keymap_config.get(b.id, b.key)
                    shown = ", ".join(self.get_key_display(Binding(k.strip(), "")) for k in key.split(","))
                    what = {"◀": "Previous column", "▶": "Next column"}.get(b.description, b.description or b.action)
                    rows.append((shown, what, where, b.id))
        self.push_screen(HelpScreen(rows))

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.notify("paused: still collecting, display frozen" if self.paused else "resumed")
        self.refresh_screen()

    def action_filter(self) -> None:
        if not isinstance(self.screen, BaseScreen):
            return  # a modal is open: its own keys
        box = self.screen.query_one("#filter", Input)
        self.screen.before_filter = self.screen.focused
        box.disabled = False
        box.display = True
        box.value = self.filter_text
        box.focus()

    @on(Input.Submitted, "#filter")
    def apply_filter(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        self.close_filter()
        self.refresh_screen()

    def close_filter(self) -> None:
        """Hide the filter line and give the focus back to what had it (the table, the board)."""
        screen = self.screen
        if not isinstance(screen, BaseScreen):
            return
        box = screen.query_one("#filter", Input)
        box.display = False
        box.disabled = True
        back = getattr(screen, "before_filter", None)
        if back is not None and back.is_attached and back.focusable:
            back.focus()
        elif isinstance(screen.AUTO_FOCUS, str):
            screen.query_one(screen.AUTO_FOCUS).focus()

    def on_unmount(self) -> None:
        self.workers.cancel_group(self, "poll")
