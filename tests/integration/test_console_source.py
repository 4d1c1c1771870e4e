"""The console's live data source on real Redis: what the audit screen lists."""

from __future__ import annotations

import redis

from backend.settings import Settings
from backend.trading.killswitch import set_kill_switch
from console.data.live import LiveSource


def test_kill_switch_toggles_are_in_the_audit_log(r: redis.Redis, redis_url: str) -> None:
    set_kill_switch(r, True, "alice", "runaway algo")
    set_kill_switch(r, False, "bob", "fixed")
    src = LiveSource(redis_url, Settings(), "alice")
    try:
        snap = src.poll()
    finally:
        src.close()
    rows = [row for row in snap.audit if row[2] == "kill switch"]
    assert [(row[3], row[4], row[5]) for row in rows] == [("ON", "alice", "runaway algo"), ("off", "bob", "fixed")]
    assert snap.kill_switch is False
