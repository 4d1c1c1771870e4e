"""What the console can change, behind one typed interface (ConsoleActions): the live actions call
the backend and gates APIs; the replay actions apply the same rules to recorded data and change
nothing. Every method returns the line shown to the operator, or raises a TradeopsError that says
why not. The screens never call these: they post an ActionRequest (console/messages.py) and the
app applies it in a worker, behind the one read-only guard."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

from backend.errors import TradeopsError
from backend.messages import FINAL_STATES, ModelEvent, Order, Side

if TYPE_CHECKING:
    from backend.settings import Settings
    from console.data.snapshot import GateRow, ModelRow, Snapshot
    from gates.model import Gate
    from gates.signing import Signer

Move = Literal["start", "cutover", "rollback"]  # the migration moves the console offers
Decision = Literal["proceed", "fix", "stop"]
ModelStageName = Literal["staging", "production"]
MODEL_TIMEOUT_S = 10.0  # how long a promotion or rollback waits for modelops' answer
ACCOUNT = "paper-1"  # the console's orders go to the paper account


class ReadOnly(TradeopsError):
    """Nothing may change here (read-only mode, or recorded data)."""


class ConsoleActions(Protocol):
    """Everything the console can change, one typed method per action."""

    def migrate(self, service: str, action: Move, reason: str) -> str: ...

    def gate_run(self, gate_id: str, check: str | None) -> str:
        """Run one check of a gate, or (check None) all of its checks that are not manual."""
        ...

    def gate_attest(self, gate_id: str, check: str, note: str) -> str: ...

    def gate_approve(self, gate_id: str, reason: str, evidence: str | None = None) -> str:
        """Approve, signing `evidence` (the digest of the check runs shown); refused if they changed."""
        ...

    def gate_decide(self, gate_id: str, decision: Decision, reason: str, evidence: str | None = None) -> str: ...

    def order_submit(self, symbol: str, side: Side, qty: float, limit: float | None) -> str:
        """A paper order: a limit order with `limit`, else a market order."""
        ...

    def order_cancel(self, client_order_id: str) -> str: ...

    def kill_switch(self, on: bool, reason: str) -> str: ...

    def alert_ack(self, key: str) -> str:
        """Acknowledge one of alerting's active alerts, by its key."""
        ...

    def model_promote(self, name: str, version: int, stage: ModelStageName, reason: str) -> str:
        """Ask modelops to put a version of a model in a stage; its answer, or its refusal."""
        ...

    def model_rollback(self, name: str, reason: str) -> str:
        """Ask modelops to put production back to the version before it."""
        ...


def new_order(symbol: str, side: Side, qty: float, limit: float | None, operator: str, account: str = ACCOUNT) -> Order:
    """The order the console sends, refused (TradeopsError) when it is invalid on its face."""
    from backend.trading.orders import invalid

    o = Order(
        client_order_id=f"ui-{uuid.uuid4().hex[:10]}",
        account=account,
        symbol=symbol.upper(),
        side=side,
        type="limit" if limit else "market",
        quantity=qty,
        limit_price=limit,
        sent_ns=time.time_ns(),
        source=f"console:{operator}",
    )
    why = invalid(o)
    if why:
        raise TradeopsError(f"order refused: {why}")
    return o


def describe(o: Order) -> str:
    what = f"limit {o.limit_price:g}" if o.limit_price else "market"
    return f"{o.side} {o.quantity:g} {o.symbol} {what} ({o.account})"


class LiveActions:
    """Changes on the running stack, signed by the operator's SSH key (the settings' signing_key,
    or the ssh-agent's registered key); `operator` is only a label."""

    def __init__(self, url: str, settings: Settings, operator: str) -> None:
        from backend.bus import connection

        self.r = connection.client(url, connection.operator_login(settings, url))
        self.url = url
        self.settings = settings
        self.operator = operator
        self._signer: Signer | None = None

    @property
    def signer(self) -> Signer:
        """The signing key, found once (SigningError says what to do without one)."""
        if self._signer is None:
            from gates import operators, signing

            self._signer = signing.signer_for(self.settings.signing_key, operators.load(self.r).fingerprints())
        return self._signer

    def migrate(self, service: str, action: Move, reason: str) -> str:
        from backend.migration.cutover import switch
        from backend.migration.state import move
        from gates import decisions, model, sealed

        who = sealed.actor(self.r, self.signer, f"{action} {service}", self.operator)
        seal = sealed.seal_move(self.signer)
        if action in ("cutover", "rollback"):  # waits for healthy / drained (an action worker thread)
            return switch(self.r, service, action, who, reason, seal=seal).summary() + self._anchor()
        ev = move(
            self.r,
            service,
            action,
            who,
            reason,
            gates_file=self.settings.gates_path(),
            seal=seal,
            decisions=decisions.verified_decisions(self.r, model.configured(self.settings)),
        )
        return f"{service}: {ev.from_state} -> {ev.to_state}{self._anchor()}"

    def _gate(self, gate_id: str) -> Gate:
        from gates import model

        return model.get(model.configured(self.settings), gate_id)  # the gates file of the settings, as the CLI

    def gate_run(self, gate_id: str, check: str | None) -> str:
        from gates import decisions
        from gates.checks import CheckContext

        evs = decisions.run(
            CheckContext(self.r, self.url, self.settings), self._gate(gate_id), self.signer, check, label=self.operator
        )
        return run_summary(gate_id, [(e.check or "", e.outcome or "") for e in evs]) + self._anchor()

    def gate_attest(self, gate_id: str, check: str, note: str) -> str:
        from gates import decisions

        ev = decisions.attest(self.r, self._gate(gate_id), check, self.signer, note, label=self.operator)
        return f"{gate_id}/{check} attested by {ev.operator}{self._anchor()}"

    def gate_approve(self, gate_id: str, reason: str, evidence: str | None = None) -> str:
        from gates import decisions

        ev = decisions.approve(self.r, self._gate(gate_id), self.signer, reason, label=self.operator, evidence=evidence)
        return f"{gate_id} approved by {ev.operator} (evidence {ev.evidence_digest[:16]}){self._anchor()}"

    def gate_decide(self, gate_id: str, decision: Decision, reason: str, evidence: str | None = None) -> str:
        from gates import decisions

        ev = decisions.decide(
            self.r, self._gate(gate_id), decision, self.signer, reason, label=self.operator, evidence=evidence
        )
        return f"{gate_id}: {decision.upper()} by {ev.operator}{self._anchor()}"

    def _anchor(self) -> str:
        """The audit log's signed checkpoint after an action (gates/anchor.py); a log that no
        longer extends the anchor is an alert in the returned line, the action itself stands."""
        from backend.bus.archive import ArchiveUnreadable
        from gates import anchor, proof

        try:
            logs = proof.from_redis(self.r)
            anchor.write(
                logs.chains(),
                proof.registry_of(logs),
                self.signer,
                anchor.places(self.settings.resolved_data_dir(), self.settings.anchor_to),
            )
        except (anchor.AnchorError, ArchiveUnreadable) as exc:
            return f" · ALERT: {exc}"
        return ""

    def order_submit(self, symbol: str, side: Side, qty: float, limit: float | None) -> str:
        from backend.bus import publish_sync, streams

        o = new_order(symbol, side, qty, limit, self.operator)
        publish_sync(self.r, streams.ORDERS_NEW, o)
        return f"order {o.client_order_id} sent: {describe(o)}"

    def order_cancel(self, client_order_id: str) -> str:
        from backend.bus import publish_sync, streams
        from backend.messages import CancelRequest
        from backend.trading.orders import find_record

        rec = find_record(self.r, client_order_id)  # its account routes the cancel to the order's partition
        publish_sync(
            self.r,
            streams.ORDERS_NEW,
            CancelRequest(
                client_order_id=client_order_id,
                account=rec.order.account if rec is not None else "",
                reason=f"canceled by {self.operator}",
                sent_ns=time.time_ns(),
            ),
        )
        return f"cancel sent for {client_order_id}"

    def kill_switch(self, on: bool, reason: str) -> str:
        from backend.trading.killswitch import set_kill_switch
        from gates import sealed

        who = sealed.actor(self.r, self.signer, f"kill switch {'on' if on else 'off'}", self.operator)
        set_kill_switch(self.r, on, who, reason, seal=sealed.seal_control(self.signer))
        return f"kill switch {'ON' if on else 'off'}{self._anchor()}"

    def alert_ack(self, key: str) -> str:
        from backend.services.alerting import ack

        if ack(self.r, key, self.operator) is None:
            raise TradeopsError(f"no active alert with key {key!r} (acknowledged or resolved meanwhile)")
        return f"acknowledged {key} ({self.operator})"

    def model_promote(self, name: str, version: int, stage: ModelStageName, reason: str) -> str:
        return self._model_stage(name, "promote", version, stage, reason)

    def model_rollback(self, name: str, reason: str) -> str:
        return self._model_stage(name, "rollback", 0, "production", reason)

    def _model_stage(
        self, name: str, action: Literal["promote", "rollback"], version: int, stage: ModelStageName, reason: str
    ) -> str:
        """A stage change is a request to modelops (the registry's only writer): sent, then its
        answer awaited on models.events (the reader starts first, so the answer cannot slip by)."""
        from backend.bus import publish_sync, streams
        from backend.bus.broadcast import BroadcastSync
        from backend.messages import ModelEvent, ModelStage

        if not reason.strip():
            raise TradeopsError(f"a model {action} needs a reason")
        rid = uuid.uuid4().hex[:12]
        events = BroadcastSync(self.r, {streams.MODELS_EVENTS: "$"}, count=100, block_ms=200, decode=ModelEvent)
        events.start()
        publish_sync(
            self.r,
            streams.MODELS_REQUESTS,
            ModelStage(
                name=name,
                action=action,
                version=version,
                stage=stage,
                reason=reason,
                operator=self.operator,
                request_id=rid,
                ts_ns=time.time_ns(),
            ),
        )
        deadline = time.monotonic() + MODEL_TIMEOUT_S
        while time.monotonic() < deadline:
            for _, _, ev in events.read():
                if ev.request_id == rid:
                    return model_answer(ev)
        raise TradeopsError(
            f"no answer from modelops within {MODEL_TIMEOUT_S:g}s (is it running?); the request stays queued"
        )


def model_answer(ev: ModelEvent) -> str:
    """modelops' answer to a stage change as the operator reads it (a refusal raises, with its reason)."""
    if ev.kind == "refused":
        raise TradeopsError(f"modelops refused: {ev.reason}")
    verb = "promoted" if ev.kind == "promoted" else "rolled back"
    return f"{ev.name}: {verb} to v{ev.version} in {ev.stage} (was v{ev.from_version or '-'}) by {ev.operator}"


def run_summary(gate_id: str, outcomes: list[tuple[str, str]]) -> str:
    """One line for a run of checks: a single check by name, many by count, the ones not passed by name."""
    if len(outcomes) == 1:
        check, outcome = outcomes[0]
        return f"{gate_id}/{check}: {outcome}"
    bad = [f"{c} {o}" for c, o in outcomes if o != "passed"]
    return f"{gate_id}: {len(outcomes) - len(bad)} of {len(outcomes)} checks passed" + (
        f"; {', '.join(bad)}" if bad else ""
    )


def snapshot_blockers(snap: Snapshot, service: str) -> list[str]:
    """What keeps `service` from starting, judged on a snapshot's board and gate decisions (plain
    values, no read of the bus: the screen calls it; the move itself is checked again on Redis)."""
    from backend.migration.state import blockers_of

    states = {name: state for cards in snap.board.values() for name, state, _ in cards}
    decisions = {g.id: g.status for g in snap.gates if g.status in ("proceed", "fix", "stop")}
    return blockers_of(service, states, decisions)


class ReplayActions:
    """Recorded data: each action is judged by the live rules on the recorded board, gates and
    orders, and answered with what stops it or with what it would have done; nothing changes."""

    recorded = True  # the app opens read-only on these unless told otherwise (TradeopsApp)

    def __init__(self, snapshot_fn: Callable[[], Snapshot]) -> None:
        self.snapshot_fn = snapshot_fn

    def migrate(self, service: str, action: Move, reason: str) -> str:
        from backend.migration.state import ALLOWED, MoveRefused, refusal

        snap = self.snapshot_fn()
        states = {name: state for cards in snap.board.values() for name, state, _ in cards}
        if service not in states:
            raise TradeopsError(f"no service {service!r} on the recorded board")
        if not reason.strip():
            raise MoveRefused(f"{action} {service}: a reason is required")
        cur = states[service]
        to = ALLOWED[action].get(cur)
        if to is None:
            raise MoveRefused(refusal(service, action, cur))
        why = snapshot_blockers(snap, service) if action == "start" else []
        if why:
            raise MoveRefused(f"cannot start {service}: " + "; ".join(why))
        raise ReadOnly(f"replay data: {service} would go {cur} -> {to}; nothing changed")

    def _gate(self, gate_id: str) -> GateRow:
        g = next((g for g in self.snapshot_fn().gates if g.id == gate_id), None)
        if g is None:
            raise TradeopsError(f"no gate {gate_id!r} in the recording")
        return g

    def _check(self, g: GateRow, check: str) -> tuple[str, str, bool, str, str]:
        c = next((c for c in g.checks if c[0] == check), None)
        if c is None:
            raise TradeopsError(f"gate {g.id} has no check {check!r}")
        return c

    def gate_run(self, gate_id: str, check: str | None) -> str:
        g = self._gate(gate_id)
        if check is None:
            raise replayed(
                f"{gate_id}'s checks are not run on a recording; "
                + run_summary(gate_id, [(c[0], c[3]) for c in g.checks if c[1] != "manual"])
            )
        _, kind, _, outcome, _ = self._check(g, check)
        if kind == "manual":
            raise TradeopsError(f"{gate_id}/{check} is a manual check: attest it with `tradeops gate attest`")
        raise replayed(f"{gate_id}/{check} is not run on a recording (recorded: {outcome})")

    def gate_attest(self, gate_id: str, check: str, note: str) -> str:
        g = self._gate(gate_id)
        kind = self._check(g, check)[1]
        if kind != "manual":
            raise TradeopsError(f"{gate_id}/{check} is a {kind} check: run it, attestation is for manual checks")
        if not note.strip():
            raise TradeopsError("an attestation needs a note saying what was checked")
        raise replayed(f"the attestation of {gate_id}/{check} is not recorded")

    def gate_approve(self, gate_id: str, reason: str, evidence: str | None = None) -> str:
        self._gate(gate_id)
        if not reason.strip():
            raise TradeopsError("an approval needs a reason")
        raise replayed(f"the approval of {gate_id} is not recorded")

    def gate_decide(self, gate_id: str, decision: Decision, reason: str, evidence: str | None = None) -> str:
        g = self._gate(gate_id)
        if not reason.strip():
            raise TradeopsError(f"a {decision} decision needs a reason")
        if decision == "proceed":
            red = [f"{c[0]} ({c[3]})" for c in g.checks if c[2] and c[3] != "passed"]
            if red:
                raise TradeopsError(
                    "proceed refused: required checks not passed in their latest run: " + ", ".join(red)
                )
            if g.needs:
                raise TradeopsError(f"proceed refused: {gate_id} needs {'; '.join(g.needs)}")
        raise replayed(f"{gate_id}: {decision.upper()} is not recorded")

    def order_submit(self, symbol: str, side: Side, qty: float, limit: float | None) -> str:
        o = new_order(symbol, side, qty, limit, self.snapshot_fn().operator)
        raise replayed(f"order not sent: {describe(o)}")

    def order_cancel(self, client_order_id: str) -> str:
        o = next((o for o in self.snapshot_fn().orders if o.client_order_id == client_order_id), None)
        if o is None:
            raise TradeopsError(f"no order {client_order_id} in the recording")
        if o.state in FINAL_STATES:
            raise TradeopsError(f"{client_order_id} is {o.state}: nothing left to cancel")
        raise replayed(f"no cancel sent for {client_order_id}")

    def kill_switch(self, on: bool, reason: str) -> str:
        if not reason.strip():
            raise TradeopsError("changing the kill switch needs a reason")
        now = "ON" if self.snapshot_fn().kill_switch else "off"
        raise replayed(f"the kill switch is not turned {'ON' if on else 'off'}; it stays {now}")

    def alert_ack(self, key: str) -> str:
        if not any(a.key == key for a in self.snapshot_fn().alert_rows):
            raise TradeopsError(f"no active alert with key {key!r} in the recording")
        raise replayed(f"{key} is not acknowledged")

    def model_promote(self, name: str, version: int, stage: ModelStageName, reason: str) -> str:
        m = self._model(name)
        if version not in m.versions:
            raise TradeopsError(f"{name} has no version {version} (versions: {', '.join(map(str, m.versions))})")
        if not reason.strip():
            raise TradeopsError("a model promote needs a reason")
        raise replayed(f"{name} v{version} is not promoted to {stage}")

    def model_rollback(self, name: str, reason: str) -> str:
        m = self._model(name)
        if m.previous is None:
            raise TradeopsError(f"{name}: nothing to roll back to (one version has been in production)")
        if not reason.strip():
            raise TradeopsError("a model rollback needs a reason")
        raise replayed(f"{name} production stays v{m.production} (a rollback would put back v{m.previous})")

    def _model(self, name: str) -> ModelRow:
        m = next((m for m in self.snapshot_fn().models if m.name == name), None)
        if m is None:
            raise TradeopsError(f"no model {name!r} in the recording")
        return m


def replayed(what: str) -> ReadOnly:
    """The answer of a replay action that the rules let through: nothing changes on a recording."""
    return ReadOnly(f"replay data: {what}")
