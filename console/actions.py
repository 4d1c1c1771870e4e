"""What the console can change, behind one small interface: the live actions call the backend and
gates APIs; the replay actions apply the same rules to recorded data and change nothing."""

from __future__ import annotations

import time
import uuid
from typing import Any

from backend.errors import TradeopsError


class ReadOnly(TradeopsError):
    pass


class LiveActions:
    def __init__(self, url: str, settings: Any, operator: str) -> None:
        import redis

        self.r = redis.Redis.from_url(url)
        self.url = url
        self.settings = settings
        self.operator = operator

    def migrate(self, service: str, action: str, reason: str) -> str:
        from backend.migration.cutover import switch
        from backend.migration.state import move

        if action in ("cutover", "rollback"):  # waits for healthy / drained (an action worker thread)
            return switch(self.r, service, action, self.operator, reason).summary()
        ev = move(self.r, service, action, self.operator, reason)
        return f"{service}: {ev.from_state} -> {ev.to_state}"

    def blockers(self, service: str) -> list[str]:
        from backend.migration.state import blockers

        return blockers(self.r, service)

    def _gate(self, gate_id: str) -> Any:
        from gates import model

        return model.get(model.configured(self.settings), gate_id)  # the gates file of the settings, as the CLI

    def gate_run(self, gate_id: str, check: str | None = None) -> str:
        from gates import decisions
        from gates.checks import CheckContext

        evs = decisions.run(CheckContext(self.r, self.url, self.settings), self._gate(gate_id), self.operator, check)
        return run_summary(gate_id, [(e.check or "", e.outcome or "") for e in evs])

    def gate_attest(self, gate_id: str, check: str, note: str) -> str:
        from gates import decisions

        decisions.attest(self.r, self._gate(gate_id), check, self.operator, note)
        return f"{gate_id}/{check} attested"

    def gate_approve(self, gate_id: str, reason: str) -> str:
        from gates import decisions

        decisions.approve(self.r, self._gate(gate_id), self.operator, reason)
        return f"{gate_id} approved by {self.operator}"

    def gate_decide(self, gate_id: str, decision: str, reason: str) -> str:
        from gates import decisions

        decisions.decide(self.r, self.settings, self._gate(gate_id), decision, self.operator, reason)
        return f"{gate_id}: {decision.upper()}"

    def submit_order(self, symbol: str, side: str, qty: float, limit: float | None, account: str = "paper-1") -> str:
        from backend.bus import publish_sync, streams
        from backend.messages import Order
        from backend.trading.orders import invalid

        o = Order(client_order_id=f"ui-{uuid.uuid4().hex[:10]}", account=account, symbol=symbol.upper(),
                  side=side, type="limit" if limit else "market", quantity=qty, limit_price=limit,  # type: ignore[arg-type]
                  sent_ns=time.time_ns(), source=f"console:{self.operator}")
        why = invalid(o)
        if why:
            raise TradeopsError(f"order refused: {why}")
        publish_sync(self.r, streams.ORDERS_NEW, o)
        what = f"limit {limit:g}" if limit else "market"
        return f"order {o.client_order_id} sent: {side} {qty:g} {o.symbol} {what} ({account})"

    def cancel_order(self, coid: str) -> str:
        from backend.bus import publish_sync, streams
        from backend.messages import CancelRequest

        publish_sync(self.r, streams.ORDERS_NEW, CancelRequest(client_order_id=coid, reason=f"canceled by {self.operator}",
                                                               sent_ns=time.time_ns()))
        return f"cancel sent for {coid}"

    def kill_switch(self, on: bool, reason: str) -> str:
        from console.cli.risk import set_kill_switch

        set_kill_switch(self.r, on, self.operator, reason)
        return f"kill switch {'ON' if on else 'off'}"


def run_summary(gate_id: str, outcomes: list[tuple[str, str]]) -> str:
    """One line for a run of checks: a single check by name, many by count, the ones not passed by name."""
    if len(outcomes) == 1:
        check, outcome = outcomes[0]
        return f"{gate_id}/{check}: {outcome}"
    bad = [f"{c} {o}" for c, o in outcomes if o != "passed"]
    return (f"{gate_id}: {len(outcomes) - len(bad)} of {len(outcomes)} checks passed"
            + (f"; {', '.join(bad)}" if bad else ""))


def snapshot_blockers(snap: Any, service: str) -> list[str]:
    """What keeps `service` from starting, judged on a snapshot's board and gate decisions (plain
    values, no read of the bus: the screen calls it; the move itself is checked again on Redis)."""
    from backend.migration.state import blockers_of

    states = {name: state for cards in snap.board.values() for name, state, _ in cards}
    decisions = {g.id: g.status for g in snap.gates if g.status in ("proceed", "fix", "stop")}
    return blockers_of(service, states, decisions)


class ReplayActions:
    """Recorded data: moves are checked against the recorded board and gates; nothing changes."""

    def __init__(self, snapshot_fn: Any) -> None:
        self.snapshot_fn = snapshot_fn

    def blockers(self, service: str) -> list[str]:
        return snapshot_blockers(self.snapshot_fn(), service)

    def migrate(self, service: str, action: str, reason: str) -> str:
        why = self.blockers(service) if action == "start" else []
        if why:
            raise TradeopsError(f"cannot start {service}: " + "; ".join(why))
        raise ReadOnly("replay data: nothing to change")

    def __getattr__(self, name: str) -> Any:
        def refuse(*a: Any, **k: Any) -> str:
            raise ReadOnly("replay data: nothing to change")
        return refuse
