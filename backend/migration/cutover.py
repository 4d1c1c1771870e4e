"""Blue/green cutover and rollback on the bus, in one place: the CLI, the console and the
benchmarks all call `cutover` and `rollback` here.

The instances themselves are started and stopped by whatever supervises them (process or docker
runtime), converging on the migration state; this module records the moves and waits on the
instances' heartbeats (`health:<service>:<instance>`), so it works the same under any runtime:

- cutover: wait until a target instance is healthy -> record `cutover` -> the supervisor stops
  the legacy instance with SIGTERM -> wait until it has drained (its final heartbeat says
  `stopped`: it stopped reading, finished its batch and acked) and is gone;
- rollback from migrated, make before break: record `rollback` keeping the target running ->
  the legacy instance comes back -> wait until it is healthy -> record `retire` -> the target
  drains -> wait until it is gone. Running `rollback` again finishes one that timed out. From
  deploying / validating / failed the legacy instance is still running: the target just drains.

An instance that disappears without a final heartbeat (SIGKILL, crash) is reported as
`vanished`: its pending entries are taken over by the surviving instances of its group
(backend/bus/worker.py), not lost.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from backend.bus import streams
from backend.errors import TradeopsError
from backend.health import gone
from backend.messages import LIVE_STATES
from backend.migration.state import MoveRefused, check, move

FRESH_S = 3.0  # a heartbeat older than this does not count as healthy (they come every second)
POLL_S = 0.02
DEFAULT_TIMEOUT_S = 30.0
LIVE = LIVE_STATES  # a degraded instance still works: a cutover waits for it to drain


class CutoverError(TradeopsError):
    """A cutover or rollback that could not finish; the message says what was recorded."""


@dataclass
class MoveResult:
    """What one cutover or rollback did and how long its phases took."""

    service: str
    action: str
    from_state: str
    to_state: str
    healthy_ms: float
    """Waiting for the incoming side (target on cutover, legacy on rollback) to be healthy."""
    switch_ms: float
    """From the switch being recorded to the outgoing side drained and gone."""
    incoming: list[str] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)
    """Outgoing instances whose final heartbeat said they drained (stopped or failed)."""
    vanished: list[str] = field(default_factory=list)
    """Outgoing instances gone without a final heartbeat: their pending entries are taken over."""
    warnings: list[str] = field(default_factory=list)
    """What the move leaves at risk (a rollback under services that depend on it and stay moved)."""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["healthy_ms"], d["switch_ms"] = round(self.healthy_ms, 1), round(self.switch_ms, 1)
        return d

    def summary(self) -> str:
        """One line for an operator."""
        parts = [f"{self.service}: {self.from_state} -> {self.to_state}"]
        if self.incoming:
            parts.append(f"{', '.join(self.incoming)} healthy after {self.healthy_ms / 1000:.1f}s")
        if self.drained:
            parts.append(f"{', '.join(self.drained)} drained and stopped")
        if self.vanished:
            parts.append(
                f"{', '.join(self.vanished)} vanished without draining (its pending entries "
                "are taken over by the survivors)"
            )
        if not (self.drained or self.vanished):
            parts.append("no instance to drain")
        line = "; ".join(parts) + f" ({self.switch_ms / 1000:.1f}s after the switch)"
        return line + "".join(f"\nwarning: {w}" for w in self.warnings)


def instances(r: Any, service: str, environment: str) -> dict[str, dict[str, Any]]:
    """The heartbeat hashes of the service's instances in one environment, by instance id."""
    keys = sorted(r.scan_iter(match=streams.HEALTH_KEY.format(service=service, instance="*"), count=1000))
    if not keys:
        return {}
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.hmget(k, "instance", "environment", "state", "ts_ns", "pid", "host", "pidns")
    out: dict[str, dict[str, Any]] = {}
    for row in pipe.execute():
        inst, env, state, ts, pid, host, pidns = (v.decode() if isinstance(v, bytes) else v for v in row)
        if inst and env == environment:
            out[inst] = {"state": state, "ts_ns": int(ts or 0), "pid": pid, "host": host, "pidns": pidns}
    return out


def healthy(r: Any, service: str, environment: str, since_ns: int = 0) -> list[str]:
    """Instances running with a fresh heartbeat (newer than `since_ns` when given)."""
    now = time.time_ns()
    return sorted(
        i
        for i, h in instances(r, service, environment).items()
        if h["state"] == "running"
        and now - h["ts_ns"] < FRESH_S * 1e9
        and h["ts_ns"] > since_ns
        and not gone(h["state"], h["pid"], h["host"], h["pidns"])
    )


def wait_healthy(r: Any, service: str, environment: str, timeout: float, since_ns: int = 0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        ok = healthy(r, service, environment, since_ns)
        if ok:
            return ok
        if time.monotonic() > deadline:
            seen = instances(r, service, environment)
            what = ", ".join(f"{i} {h['state']}" for i, h in sorted(seen.items())) or "no heartbeat at all"
            raise CutoverError(f"no healthy {environment} instance of {service} within {timeout:g}s ({what})")
        time.sleep(POLL_S)


def wait_gone(r: Any, service: str, environment: str, timeout: float, since_ns: int) -> tuple[list[str], list[str]]:
    """Wait until no instance of the environment works any more: (drained, vanished) since the
    switch recorded at `since_ns`."""
    deadline = time.monotonic() + timeout
    drained: set[str] = set()
    vanished: set[str] = set()
    watched: set[str] = set()
    while True:
        seen = instances(r, service, environment)
        live = []
        for inst, h in seen.items():
            alive = not gone(h["state"], h["pid"], h["host"], h["pidns"])
            if h["state"] in LIVE and alive:
                live.append(inst)
                watched.add(inst)
            elif h["state"] in ("stopped", "failed") and h["ts_ns"] >= since_ns:
                drained.add(inst)  # its final heartbeat: workers stopped, batch finished and acked
            elif h["state"] in LIVE and inst in watched:
                vanished.add(inst)  # its pid is gone and it never said stopped
        vanished |= {i for i in watched if i not in seen}  # its heartbeat expired
        if not live:
            return sorted(drained), sorted(vanished - drained)
        if time.monotonic() > deadline:
            raise CutoverError(
                f"{', '.join(sorted(live))} still running {timeout:g}s after the switch; "
                "is a supervisor running (`tradeops up`)?"
            )
        time.sleep(POLL_S)


def cutover(
    r: Any, service: str, operator: str, reason: str, *, timeout: float = DEFAULT_TIMEOUT_S, seal: Any = None
) -> MoveResult:
    """Wait for a healthy target, record the cutover, wait until the legacy instance drained."""
    st, to = check(r, service, "cutover", reason)
    t0 = time.monotonic()
    try:
        incoming = wait_healthy(r, service, "target", timeout)
    except CutoverError as exc:
        raise CutoverError(f"cannot cut over {service}: {exc}; is the stack up (`tradeops up`)?") from None
    t1 = time.monotonic()
    ev = move(r, service, "cutover", operator, reason, seal=seal)
    try:
        drained, vanished = wait_gone(r, service, "legacy", timeout, ev.ts_ns)
    except CutoverError as exc:
        raise CutoverError(f"{service} is cut over (migrated), but {exc}") from None
    return MoveResult(
        service, "cutover", st.state, to, (t1 - t0) * 1000, (time.monotonic() - t1) * 1000, incoming, drained, vanished
    )


def rollback(
    r: Any, service: str, operator: str, reason: str, *, timeout: float = DEFAULT_TIMEOUT_S, seal: Any = None
) -> MoveResult:
    """Roll back: from migrated, the legacy instance is back and healthy before the target drains."""
    try:
        st, to = check(r, service, "rollback", reason)
    except MoveRefused as refused:
        try:  # a rollback that kept the target and timed out: finish it
            st, to = check(r, service, "retire", reason)
        except MoveRefused:
            raise refused from None
        ev = st.history[-1]
        from_state: str = ev.from_state or ""
        kept = True
    else:
        kept = st.state == "migrated"
        ev = move(r, service, "rollback", operator, reason, seal=seal, keep_target=kept)
        from_state = st.state
    warnings = _rollback_warnings(r, service)
    t0 = time.monotonic()
    incoming: list[str] = []
    if kept:
        try:
            incoming = wait_healthy(r, service, "legacy", timeout, since_ns=ev.ts_ns)
        except CutoverError as exc:
            raise CutoverError(
                f"{service} is rolled back, but {exc}: the target keeps serving until there is "
                "one (run the rollback again to finish it)"
            ) from None
        ev = move(r, service, "retire", operator, reason, seal=seal)
    t1 = time.monotonic()
    try:
        drained, vanished = wait_gone(r, service, "target", timeout, ev.ts_ns)
    except CutoverError as exc:
        raise CutoverError(f"{service} is rolled back, but {exc}") from None
    return MoveResult(
        service,
        "rollback",
        from_state,
        to,
        (t1 - t0) * 1000,
        (time.monotonic() - t1) * 1000,
        incoming,
        drained,
        vanished,
        warnings,
    )


def _rollback_warnings(r: Any, service: str) -> list[str]:
    from backend.migration.state import board, dependents_moved

    states = board(r)
    moved = dependents_moved(states, service)
    return [
        f"{name}, which depends on {service}, stays {states[name].state}: roll it back too "
        f"(`tradeops migrate rollback {name} --reason ...`) or move {service} forward again"
        for name in moved
    ]


def switch(
    r: Any,
    service: str,
    action: str,
    operator: str,
    reason: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    seal: Any = None,
) -> MoveResult:
    """`cutover` or `rollback` by name (`seal`: signs each move, as `state.move`)."""
    if action not in ("cutover", "rollback"):
        raise CutoverError(f"unknown switch {action!r}: cutover or rollback")
    return (cutover if action == "cutover" else rollback)(r, service, operator, reason, timeout=timeout, seal=seal)
