"""The kill switch: one Redis key the risk engine reads (on: new orders are blocked, only
risk-reducing ones pass; the OMS cancels working orders), and every toggle audited as a
ControlCommand on ops.control. The key and the audit entry are written in one transaction, so the
log never says a state the key does not have. The CLI (`tradeops risk kill`) and the console both
call this module."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from backend.bus import streams
from backend.bus.durable import wait_durable
from backend.bus.entries import Skips, decode_entries
from backend.bus.publish import queue
from backend.errors import TradeopsError
from backend.messages import ControlCommand

KILL_KEY = "risk:kill_switch"
COMMAND = "kill_switch"  # ControlCommand.command of a toggle on ops.control
SCAN = 500  # newest ops.control entries searched for toggles


class KillSwitchRefused(TradeopsError):
    """A toggle without a reason: every change of the kill switch says why."""


@dataclass(frozen=True)
class KillSwitchStatus:
    on: bool
    history: list[ControlCommand]  # the newest toggles first


def set_kill_switch(r: Any, on: bool, operator: str, reason: str) -> ControlCommand:
    """Turn the kill switch on or off (a sync redis client); returns the audited toggle."""
    if not reason.strip():
        raise KillSwitchRefused("changing the kill switch needs a reason")
    cmd = ControlCommand(
        target="risk", command=COMMAND, args={"on": on}, operator=operator, reason=reason, ts_ns=time.time_ns()
    )
    pipe = r.pipeline(transaction=True)
    pipe.set(KILL_KEY, "1" if on else "0")
    queue(pipe, streams.OPS_CONTROL, cmd)
    pipe.execute()
    wait_durable(r)  # on disk before the operator is told: the switch survives a Redis crash
    return cmd


def kill_switch_on(r: Any) -> bool:
    return bool(r.get(KILL_KEY) == b"1")


def kill_switch_history(r: Any, count: int = 20, skips: Skips | None = None) -> list[ControlCommand]:
    """The newest `count` toggles (among the newest SCAN entries of ops.control), newest first;
    entries that do not decode are skipped (counted in `skips`)."""
    got, _ = decode_entries(
        r.xrevrange(streams.OPS_CONTROL, count=SCAN), ControlCommand, stream=streams.OPS_CONTROL, skips=skips
    )
    return [c for _, c in got if c.command == COMMAND][:count]


def kill_switch_status(r: Any, count: int = 20, skips: Skips | None = None) -> KillSwitchStatus:
    return KillSwitchStatus(kill_switch_on(r), kill_switch_history(r, count, skips))
