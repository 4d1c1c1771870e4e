"""What every screen shares: the status bar, the footer, the filter line, the snapshot hook."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Static

from console.data.snapshot import Snapshot
from widgets.footer import KeysFooter

if TYPE_CHECKING:
    from console.app import TradeopsApp


# the app-wide keys a narrow footer leaves out first (they work everywhere; the help lists them)
FOOTER_OPTIONAL = ("app.pause", "app.filter", "app.quit", "app.help")
SHORT = {  # the other screens' names in the tab line when the full names do not fit
    "overview": "ovw",
    "market": "mkt",
    "orders": "ord",
    "risk": "risk",
    "migration": "migr",
    "gates": "gate",
    "audit": "audit",
    "trends": "trend",
    "services": "svc",
}

ActionMethod = TypeVar("ActionMethod", bound=Callable[..., None])


def changes(action: ActionMethod) -> ActionMethod:
    """Marks a screen's key action that asks for a change (it posts an ActionRequest): read-only
    mode hides and disables its key, by the app's one guard (TradeopsApp.refusal)."""
    action.changes = True  # type: ignore[attr-defined]  # a marker on the function object
    return action


def asks_change(node: type, action: str) -> bool:
    """Whether the key action `action` (as a binding names it: "decide('fix')") of the screen or
    app class `node` is marked @changes."""
    return bool(getattr(getattr(node, f"action_{action.split('(')[0]}", None), "changes", False))


class StatusBar(Static):
    pass


class BaseScreen(Screen):
    TITLE = ""
    AUTO_FOCUS: ClassVar[str | None] = None  # screens name their main widget; the hidden filter line never takes focus
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close_filter", "Close filter", show=False, id="screen.close_filter")
    ]
    before_filter: Widget | None = None  # what had the focus when the filter line opened

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Read-only mode removes every key that asks for a change (and hides it)."""
        return not (asks_change(type(self), action) and self.tapp.refusal())

    @property
    def tapp(self) -> TradeopsApp:
        """The app, typed: Textual types `self.app` as App[Any]; these screens run in TradeopsApp."""
        return cast("TradeopsApp", self.app)

    def compose_body(self) -> ComposeResult:
        yield from ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._texts: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Static(id="tabs")
        yield Static("", id="banner")
        yield from self.compose_body()
        box = Input(placeholder="filter (enter to apply, empty to clear)", id="filter")
        box.display = False
        box.disabled = True
        yield box
        yield KeysFooter(optional=FOOTER_OPTIONAL)

    ready = False  # its widgets are mounted: a snapshot can be shown

    def on_mount(self) -> None:
        self.ready = True
        self.set_text("#tabs", self.tabs())
        # The widgets just built live as long as the app: take them out of the collector's way
        # (a full collection walking every widget paused the UI for 100-160 ms on this machine).
        self.call_after_refresh(gc.freeze)
        snap = getattr(self.app, "snapshot", None)
        if snap is not None:
            self.show(snap)

    def on_screen_resume(self) -> None:
        """Back on this screen: show the newest snapshot at once, not at the next refresh."""
        snap = getattr(self.app, "snapshot", None)
        if self.ready:
            self.set_text("#tabs", self.tabs())  # the terminal may have changed size meanwhile
        if snap is not None and self.ready:
            self.show(snap)

    def show(self, snap: Snapshot) -> None:
        app = self.app
        flags = []
        if getattr(app, "paused", False):
            flags.append("[reverse] PAUSED [/]")
        if getattr(app, "read_only", False):
            flags.append("[reverse] READ-ONLY [/]")
        filter_text = getattr(app, "filter_text", "")
        if filter_text:
            flags.append(f"filter: {filter_text}")
        running = list(getattr(app, "running", {}).values())
        if running:
            flags.append(f"[reverse] running: {', '.join(running)} [/]")
        wide = self.app.size.width >= 100  # at 80 columns the tab line names the screen
        self.set_text(
            "#status",
            (f"[b]tradeops[/b] · {self.TITLE} · " if wide else "")
            + f"env [b]{snap.environment}[/b] · {snap.redis} · "
            + ("operator " if wide else "")
            + f"[b]{snap.operator}[/b]"
            + (f" key {snap.key}" if snap.key and wide else "")
            + f" · {snap.clock}  "
            + " ".join(flags),
        )
        banner = self.query_one("#banner", Static)
        if banner.display == snap.connected:
            banner.display = not snap.connected
        self.set_text("#banner", f"⚠ {snap.error}" if not snap.connected else "")
        self.render_snapshot(snap)
        self.shown_at = time.perf_counter()

    def render_snapshot(self, snap: Snapshot) -> None:
        pass

    def select(self, item: str) -> None:
        """Select a service or gate named in the command palette (the screens that list them)."""

    def tabs(self, width: int | None = None) -> str:
        """The screens and their keys (a remapped key as remapped), this one highlighted: the number
        keys live here rather than in the footer, which keeps room for this screen's own keys.
        When the full names do not fit `width`, the other screens' names are shortened."""
        app = self.app
        keymap = getattr(app, "keymap_config", {})
        width = width if width is not None else app.size.width
        names = list(getattr(app, "MODES", {}))
        keys = [keymap.get(f"screen.{name}", str(i + 1)) for i, name in enumerate(names)]
        full = sum(len(k) + len(n) + 3 for k, n in zip(keys, names, strict=True))
        out = []
        for key, name in zip(keys, names, strict=True):
            if name == self.TITLE:
                out.append(f"[reverse b] {key} {name} [/]")
            else:
                out.append(f" {key} {name if full <= width else SHORT.get(name, name[:4])} ")
        return "".join(out)

    def on_resize(self) -> None:
        if self.ready:
            self.set_text("#tabs", self.tabs())

    def action_close_filter(self) -> None:
        if self.query_one("#filter").display:
            self.tapp.close_filter()

    def set_text(self, selector: str, text: str) -> None:
        """Update a Static only when its text changed, with a layout pass only when its number of
        lines did: a snapshot that changes one figure repaints one widget, not the screen."""
        box = self.query_one(selector, Static)
        old = self._texts.get(selector)
        if old == text:
            return
        self._texts[selector] = text
        box.update(text, layout=old is None or old.count("\n") != text.count("\n"))

    def matches(self, *cells: object) -> bool:
        f = getattr(self.app, "filter_text", "").lower()
        return not f or any(f in str(c).lower() for c in cells)
