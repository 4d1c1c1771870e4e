"""The key footer, rebuilt only when the keys it shows change, and fitted to its width.

Textual's Footer recomposes all its key widgets whenever its screen's bindings are updated, which
happens on every screen switch and focus change even when the keys are the same; on a slow
machine that was most of the cost of switching screens.

On a narrow terminal (80 columns) the keys that do not fit would be cut ("x St"): the footer goes
compact first, then leaves out the `optional` keys (binding ids, in the order given: keys that
also work everywhere and are listed in the help), so every key it shows is shown whole."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

PALETTE_WIDTH = 13  # "^p palette" docked on the right


class KeysFooter(Footer):
    _shown: tuple[tuple[object, ...], ...] | None = None

    def __init__(self, *, optional: Sequence[str] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.optional = tuple(optional)
        self._fitted_width = 0

    def bindings_changed(self, screen: Screen) -> None:
        if not (self.is_attached and screen is self.screen and screen.app.app_focus):
            super().bindings_changed(screen)
            return
        keys = tuple(
            (b.key, b.description, b.action, enabled, tooltip)
            for _, b, enabled, tooltip in screen.active_bindings.values()
            if b.show
        )
        if keys != self._shown:
            self._shown = keys
            super().bindings_changed(screen)

    def on_resize(self) -> None:
        if self._bindings_ready and self.size.width != self._fitted_width:
            self.call_later(self.recompose)

    def _need(self, keys: list[tuple[Binding, bool, str]], compact: bool) -> int:
        pad = 1 if compact else 3
        return sum(len(self.app.get_key_display(b)) + len(b.description) + pad for b, _, _ in keys)

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        keys: list[tuple[Binding, bool, str]] = []
        seen: set[str] = set()
        for _, b, enabled, tooltip in self.screen.active_bindings.values():
            if b.show and b.action not in seen:
                seen.add(b.action)
                keys.append((b, enabled, tooltip))
        width = (self.size.width or self.app.size.width) - (PALETTE_WIDTH if self.show_command_palette else 0)
        self._fitted_width = self.size.width
        compact = self._need(keys, False) > width
        for drop in self.optional:
            if self._need(keys, compact) <= width:
                break
            keys = [k for k in keys if k[0].id != drop]
        self.compact = compact
        self.styles.grid_size_columns = len(keys)
        for b, enabled, tooltip in keys:
            yield FooterKey(
                b.key, self.app.get_key_display(b), b.description, b.action, disabled=not enabled, tooltip=tooltip
            ).data_bind(compact=Footer.compact)
