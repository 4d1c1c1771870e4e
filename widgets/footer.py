"""The key footer, rebuilt only when the keys it shows change.

Textual's Footer recomposes all its key widgets whenever its screen's bindings are updated, which
happens on every screen switch and focus change even when the keys are the same; on a slow
machine that was most of the cost of switching screens."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    _shown: tuple[tuple[object, ...], ...] | None = None

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
