"""UI test helpers: the app on the recorded replay data (frozen clock), or on real Redis."""

from __future__ import annotations

import pytest

from console.actions import ReplayActions
from console.app import TradeopsApp
from console.data.replay import ReplaySource


def replay_app(**kw) -> TradeopsApp:
    src = ReplaySource()
    return TradeopsApp(src, ReplayActions(src.current), live=False, **kw)


@pytest.fixture
def app_factory():
    return replay_app
