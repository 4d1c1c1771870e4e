"""The kill switch (backend/trading/killswitch.py) on real Redis: the key and its audited toggle
are written together, a toggle without a reason is refused, the status lists the newest first."""

from __future__ import annotations

import pytest
import redis

from backend.bus import streams
from backend.trading.killswitch import KILL_KEY, KillSwitchRefused, kill_switch_on, kill_switch_status, set_kill_switch


def test_toggles_set_the_key_and_are_audited_newest_first(r: redis.Redis) -> None:
    assert kill_switch_status(r).on is False and kill_switch_status(r).history == []
    ev = set_kill_switch(r, True, "alice", "runaway algo")
    assert (ev.target, ev.command, ev.args, ev.operator, ev.reason) == (
        "risk",
        "kill_switch",
        {"on": True},
        "alice",
        "runaway algo",
    )
    assert r.get(KILL_KEY) == b"1" and kill_switch_on(r)
    set_kill_switch(r, False, "bob", "fixed")
    st = kill_switch_status(r)
    assert st.on is False
    assert [(c.args["on"], c.operator, c.reason) for c in st.history] == [
        (False, "bob", "fixed"),
        (True, "alice", "runaway algo"),
    ]
    assert [c.reason for c in kill_switch_status(r, count=1).history] == ["fixed"]


def test_a_toggle_without_a_reason_changes_nothing(r: redis.Redis) -> None:
    before = r.xlen(streams.OPS_CONTROL)
    with pytest.raises(KillSwitchRefused, match="needs a reason"):
        set_kill_switch(r, True, "alice", "  ")
    assert r.get(KILL_KEY) is None and r.xlen(streams.OPS_CONTROL) == before
