"""What the console reads its snapshots from: the live bus (LiveSource) or a recording
(ReplaySource). The app knows only this."""

from __future__ import annotations

from typing import Protocol

from console.data.snapshot import Snapshot


class ConsoleSource(Protocol):
    def poll(self) -> Snapshot:
        """The newest snapshot (called from the poll worker, or once for a recording)."""
        ...

    def close(self) -> None: ...
