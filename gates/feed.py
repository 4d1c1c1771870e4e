"""The audit log read incrementally, for a reader that polls it (the console): the folded gate
state (gates/state.py) and the verified chain position (gates/audit.py) are kept between polls,
and each poll reads only the entries after the last one it saw, in one transaction with the
log's length and recorded head. A poll's cost follows what is new, not the length of the log.

Each entry is folded and verified once. The log's length and head, read with the entries, say
whether the log is still the one that was verified: an entry already read that is no longer there
(removed, or the log rebuilt shorter) makes the next poll fold and verify the whole log again, so
the verdict is the one `tradeops audit verify` gives; an entry changed in place after it was
verified is caught by `audit verify`, which checks every entry.

The log's archived entries (backend/bus/archive.py) are folded and verified first, once per reset;
a run of the archiver (its record moves) makes the next poll fold the log again, archive and all.

The operator registry (ops.operators) is read whole (archive then live) when the feed starts and
whenever it changes (its length or its archive's record moves: rare, an operator added, a key
revoked), and then the log is folded again, so every event is judged against the registry the CLI
would judge it against."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from backend.bus import archive, streams
from backend.bus.entries import UNDECODABLE, Skips, reason
from backend.messages import GateEvent
from gates import audit, operators
from gates.model import Gate
from gates.state import GateLedger, GateState

TAIL = 200  # newest gate events kept for the audit screen
CHUNK = 5000  # entries per read (a first poll of a long log reads it in several)


class GateFeed:
    def __init__(self, r: Any, gates: Mapping[str, Gate]) -> None:
        self.r = r
        self.read_last = 0  # entries read by the last poll
        self.read_total = 0  # entries read since this feed was made
        self.refolds = 0  # times the whole log was read again because it changed under the feed
        self._reset(gates)

    def _reset(self, gates: Mapping[str, Gate]) -> None:
        self.registry_mark = self._registry_mark()  # read before the registry: a change after it refolds
        self.archive_error = ""
        self.registry_skips = Skips()  # registry entries that do not decode (each one breaks its chain)
        try:
            self.registry = operators.load(self.r, self.registry_skips)
        except archive.ArchiveUnreadable as exc:
            self.registry = operators.Registry()
            self.archive_error = str(exc)
        self.ledger = GateLedger(gates, self.registry)
        self.chain = audit.ChainVerifier()
        self.cursor = "0-0"  # id of the last entry read
        self.count = 0  # live entries read since the reset
        self.skipped = 0  # of those, entries that are not gate events (each one breaks the chain)
        self.recent: deque[tuple[str, GateEvent]] = deque(maxlen=TAIL)
        self.recent_no: deque[int] = deque(maxlen=TAIL)  # each recent entry's number in the chain (1: the first)
        self.applied = 0  # entries folded since the reset, archived ones and undecodable ones too
        self.verdict = audit.Verdict(True, 0)
        self.archived = 0  # entries folded from the archive
        record = archive.record(self.r, streams.OPS_GATES)
        self.archive_last: bytes = record.get(b"last_id", b"")  # the archive's newest, as of this reset
        if self.archive_error:
            return
        try:
            old = archive.archived_entries(streams.OPS_GATES, record)
        except archive.ArchiveUnreadable as exc:
            self.archive_error = str(exc)
            return
        for eid, f in old:
            self._apply(eid.decode(), f)
        self.archived = len(old)
        # live entries the archive holds too (an archiver that stopped before trimming) are not read again
        self.count = len(self.r.xrange(streams.OPS_GATES, "-", self.cursor)) if old else 0

    def poll(self, gates: Mapping[str, Gate] | None = None) -> None:
        """Fold the entries added since the last poll. New `gates` (the gates file changed) fold
        the log again from its first entry."""
        if gates is not None and dict(gates) != self.ledger.gates:
            self._reset(gates)
        elif self._registry_mark() != self.registry_mark:
            self.refolds += 1
            self._reset(self.ledger.gates)
        n, length, head, archived_to = self._read()
        if length != self.count or archived_to != self.archive_last:
            # an entry read before is gone (or was archived): fold and verify the log as it is now
            self.refolds += 1
            self._reset(self.ledger.gates)
            more, length, head, _ = self._read()
            n += more
        self.read_last = n
        self.read_total += n
        self.verdict = (
            audit.Verdict(False, 0, self.archive_error)
            if self.archive_error
            else self.chain.verdict(head, self.archived)
        )

    def _registry_mark(self) -> tuple[int, bytes]:
        """What says the registry changed: ops.operators' length and its archive's newest entry."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.xlen(streams.OPS_OPERATORS)
            pipe.hget(archive.key(streams.OPS_OPERATORS), "last_id")
            length, last = pipe.execute()
        return int(length), last or b""

    def states(self) -> dict[str, GateState]:
        return self.ledger.states()

    def _read(self) -> tuple[int, int, str, bytes]:
        """Read to the end of the log: (entries read, the log's length, its head, the archive's
        newest entry), the last three from the same transaction as the last entries."""
        n = 0
        while True:
            with self.r.pipeline(transaction=True) as pipe:
                pipe.xread({streams.OPS_GATES: self.cursor}, count=CHUNK)
                pipe.xlen(streams.OPS_GATES)
                pipe.get(audit.HEAD_KEY)
                pipe.hget(archive.key(streams.OPS_GATES), "last_id")
                resp, length, head, archived_to = pipe.execute()
            items = [it for _, its in resp or [] for it in its]
            for eid, f in items:
                self._apply(eid.decode(), f)
            n += len(items)
            if len(items) < CHUNK:
                return n, int(length), head.decode() if head else "", archived_to or b""

    def _apply(self, eid: str, f: dict[Any, Any]) -> None:
        self.cursor = eid
        self.count += 1
        self.applied += 1
        try:
            ev = audit.decode(f)
        except UNDECODABLE as exc:
            self.skipped += 1
            self.chain.unreadable(eid, reason(exc))
            return
        self.chain.feed(eid, ev)
        self.ledger.apply(ev)
        self.recent.append((eid, ev))
        self.recent_no.append(self.applied)
