"""App-wide messages: fresh snapshots, and the changes an operator asks for (ActionRequest). A
screen posts a request; the app takes every one in one handler (TradeopsApp.change): the one
read-only guard, then `apply` in an action worker, its answer or refusal shown as a notification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

from backend.errors import TradeopsError
from console.data.snapshot import Snapshot

if TYPE_CHECKING:
    from backend.messages import Side
    from console.actions import ConsoleActions, Decision, ModelStageName, Move


@dataclass
class SnapshotReady(Message):
    """A fresh snapshot from the data source. A newer one replaces a queued older one."""

    snapshot: Snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


class UnknownAction(TradeopsError):
    pass


@dataclass
class ActionRequest(Message):
    """The operator asked for a change. Each kind below calls its one typed ConsoleActions method."""

    @property
    def label(self) -> str:
        """What the status bar shows while it runs."""
        return type(self).__name__

    def apply(self, actions: ConsoleActions) -> str:
        raise UnknownAction(f"{type(self).__name__} is not an action the console knows")


@dataclass
class RequestMigrate(ActionRequest):
    service: str
    action: Move
    reason: str

    @property
    def label(self) -> str:
        return f"{self.action} {self.service}"

    def apply(self, actions: ConsoleActions) -> str:
        return actions.migrate(self.service, self.action, self.reason)


@dataclass
class RequestGateRun(ActionRequest):
    gate_id: str
    check: str | None  # None: every check of the gate that is not manual

    @property
    def label(self) -> str:
        return f"{self.gate_id}/{self.check}" if self.check else f"{self.gate_id} checks"

    def apply(self, actions: ConsoleActions) -> str:
        return actions.gate_run(self.gate_id, self.check)


@dataclass
class RequestGateAttest(ActionRequest):
    gate_id: str
    check: str
    note: str

    @property
    def label(self) -> str:
        return "gate attest"

    def apply(self, actions: ConsoleActions) -> str:
        return actions.gate_attest(self.gate_id, self.check, self.note)


@dataclass
class RequestGateApprove(ActionRequest):
    gate_id: str
    reason: str
    evidence: str | None = None  # the evidence digest the modal showed: what the approval signs

    @property
    def label(self) -> str:
        return "gate approve"

    def apply(self, actions: ConsoleActions) -> str:
        return actions.gate_approve(self.gate_id, self.reason, self.evidence)


@dataclass
class RequestGateDecide(ActionRequest):
    gate_id: str
    decision: Decision
    reason: str
    evidence: str | None = None  # the evidence digest the modal showed: what the decision signs

    @property
    def label(self) -> str:
        return "gate decide"

    def apply(self, actions: ConsoleActions) -> str:
        return actions.gate_decide(self.gate_id, self.decision, self.reason, self.evidence)


@dataclass
class RequestOrderSubmit(ActionRequest):
    symbol: str
    side: Side
    qty: float
    limit: float | None  # None: a market order

    @property
    def label(self) -> str:
        return "submit order"

    def apply(self, actions: ConsoleActions) -> str:
        return actions.order_submit(self.symbol, self.side, self.qty, self.limit)


@dataclass
class RequestOrderCancel(ActionRequest):
    client_order_id: str

    @property
    def label(self) -> str:
        return "cancel order"

    def apply(self, actions: ConsoleActions) -> str:
        return actions.order_cancel(self.client_order_id)


@dataclass
class RequestKillSwitch(ActionRequest):
    on: bool
    reason: str

    @property
    def label(self) -> str:
        return "kill switch"

    def apply(self, actions: ConsoleActions) -> str:
        return actions.kill_switch(self.on, self.reason)


@dataclass
class RequestAlertAck(ActionRequest):
    key: str

    @property
    def label(self) -> str:
        return "acknowledge alert"

    def apply(self, actions: ConsoleActions) -> str:
        return actions.alert_ack(self.key)


@dataclass
class RequestModelPromote(ActionRequest):
    name: str
    version: int
    stage: ModelStageName
    reason: str

    @property
    def label(self) -> str:
        return f"promote {self.name} v{self.version}"

    def apply(self, actions: ConsoleActions) -> str:
        return actions.model_promote(self.name, self.version, self.stage, self.reason)


@dataclass
class RequestModelRollback(ActionRequest):
    name: str
    reason: str

    @property
    def label(self) -> str:
        return f"rollback {self.name}"

    def apply(self, actions: ConsoleActions) -> str:
        return actions.model_rollback(self.name, self.reason)
