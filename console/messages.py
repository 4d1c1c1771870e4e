"""App-wide messages."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from console.data.snapshot import Snapshot


@dataclass
class SnapshotReady(Message):
    """A fresh snapshot from the data source. A newer one replaces a queued older one."""

    snapshot: Snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


@dataclass
class ActionDone(Message):
    """An action finished (or was refused): shown as a notification."""

    text: str
    error: bool = False
    seq: int = 0  # which run_action_worker call
