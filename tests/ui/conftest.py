"""UI test helpers: the app on the recorded replay data (frozen clock), or on real Redis."""

from __future__ import annotations

import pytest

from console.actions import ReplayActions
from console.app import TradeopsApp
from console.data.replay import ReplaySource


def replay_app(**kw) -> TradeopsApp:
    """Not read-only unless asked: these tests drive the actions, which the replay actions judge
    by the live rules on the recording (a console opened on a recording is read-only by default)."""
    kw.setdefault("read_only", False)
    src = ReplaySource()
    return TradeopsApp(src, ReplayActions(src.current), live=False, **kw)


@pytest.fixture
def app_factory():
    return replay_app
