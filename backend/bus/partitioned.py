"""Consuming a partitioned stream: a StreamWorker per partition this instance owns, started and
stopped as its leases come and go (backend/bus/leases.py).

With one partition there is nothing to share out: the worker of the stream itself runs for the
life of the service, as it always has (no lease, no membership). With P > 1 every instance of the
service runs the leases' rounds; when a partition becomes ours, its pending entries (left by the
previous owner, dead or only paused) are claimed by us first, then its worker starts and reads in
order; when it goes, its worker stops after the batch in hand (acked, or refused by the fence if
the lease moved on meanwhile) and only then is the lease given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend.bus import partitions
from backend.bus.leases import Leases
from backend.bus.worker import StreamWorker

log = logging.getLogger("tradeops.partitioned")


@dataclass
class Partition:
    p: int
    stream: str
    token: int
    workers: list[StreamWorker]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass
class Partitioned:
    """The partitions of `stream` this instance consumes in `group`.

    `make_worker(p, stream)` builds the StreamWorker of one partition (the service's consume
    options, its handler for that partition); `on_acquire(p, token)` / `on_release(p)` let the
    service load and drop what it keeps per partition (before the worker starts, after it stopped).
    `also`: more streams owned with it, partition by partition (the OMS owns partition p of
    orders.new, risk.decisions and exec.reports together): one lease, a worker for each."""

    r: Any
    stream: str
    n: int
    group: str
    instance: str
    make_worker: Callable[[int, str], StreamWorker]
    on_acquire: Callable[[int, int], Any] | None = None
    on_release: Callable[[int], Any] | None = None
    also: tuple[str, ...] = ()
    ttl_ms: int = 3000
    owned: dict[int, Partition] = field(default_factory=dict)
    leases: Leases | None = None
    taken_over: int = 0
    """Entries claimed from a previous owner when a partition became ours."""
    processed_before: int = 0
    """Entries processed by the workers of partitions no longer ours."""
    _failed: asyncio.Future[None] | None = None
    _stopping: bool = False

    def __post_init__(self) -> None:
        if self.n > 1 or partitions.on_cluster(self.r):  # a cluster: leases even for one partition
            self.leases = Leases(
                self.r, self.group, self.instance, self.n, self._acquire, self._release, ttl_ms=self.ttl_ms
            )

    @property
    def workers(self) -> list[StreamWorker]:
        return [w for part in self.owned.values() for w in part.workers]

    def processed(self) -> int:
        return self.processed_before + sum(w.stats.processed for w in self.workers)

    def partitions(self) -> list[int]:
        return sorted(self.owned)

    def lease(self, p: int) -> tuple[str, str] | None:
        return None if self.leases is None else self.leases.lease(p)

    async def _acquire(self, p: int, token: int) -> None:
        tagged = partitions.on_cluster(self.r)
        names = [partitions.name(s, p, self.n, tagged=tagged) for s in (self.stream, *self.also)]
        workers = [self.make_worker(p, stream) for stream in names]
        for worker, stream in zip(workers, names, strict=True):
            await worker.setup()
            if self.leases is not None:  # one owner: what the previous one left is ours, in order
                self.taken_over += await take_pending(self.r, stream, self.group, self.instance)
        part = self.owned[p] = Partition(p, names[0], token, workers)  # on_acquire may look at them
        if self.on_acquire is not None:
            res = self.on_acquire(p, token)
            if asyncio.iscoroutine(res):
                await res
        if self._stopping:  # stopped while this was set up: the workers never start
            for w in workers:
                w.stop()
        part.tasks = [asyncio.create_task(self._run_worker(w), name=f"worker:{w.stream}") for w in workers]

    async def _run_worker(self, worker: StreamWorker) -> None:
        try:
            await worker.run()
        except Exception as exc:
            if self._failed is not None and not self._failed.done():
                self._failed.set_exception(exc)
            raise

    async def _release(self, p: int) -> None:
        part = self.owned.pop(p, None)
        if part is None:
            return
        for w in part.workers:
            w.stop()
        for task in part.tasks:
            with contextlib.suppress(Exception):
                await task
        self.processed_before += sum(w.stats.processed for w in part.workers)
        if self.on_release is not None:
            res = self.on_release(p)
            if asyncio.iscoroutine(res):
                await res

    async def prepare(self) -> None:
        """Without leases (one partition on one Redis), set the one partition up now (its group
        made, what `on_acquire` does done), as a service does its consumers before it says
        `running`; with leases the rounds of `run()` do it."""
        if self.leases is None and 0 not in self.owned:
            await self._acquire(0, 0)

    async def run(self) -> None:
        """Until stop(): one worker without partitions, else the leases' rounds (a worker that
        fails fails this, with its error)."""
        self._failed = asyncio.get_running_loop().create_future()
        if self.leases is None:
            await self.prepare()
            part = self.owned[0]
            await asyncio.gather(*part.tasks)
            return
        rounds = asyncio.create_task(self.leases.run(), name=f"leases:{self.stream}")
        done, _ = await asyncio.wait([rounds, self._failed], return_when=asyncio.FIRST_COMPLETED)
        if self._failed in done:
            self.leases.stop()
            with contextlib.suppress(Exception):
                await rounds
            self._failed.result()  # raises the worker's error
        rounds.result()

    def stop(self) -> None:
        self._stopping = True
        if self.leases is not None:
            self.leases.stop()  # its last round gives every partition up (workers stop first)
        else:
            for part in self.owned.values():
                for w in part.workers:
                    w.stop()


async def take_pending(r: Any, stream: str, group: str, consumer: str) -> int:
    """Claim every entry pending in `group` on `stream` to another consumer for `consumer` (XCLAIM
    JUSTID: no delivery counted): a partition's new owner holds all of it before it reads, so the
    entries are handed in order by one owner."""
    taken, start = 0, "-"
    while True:
        rows = await r.xpending_range(stream, group, min=start, max="+", count=1000)
        if not rows:
            return taken
        ids = [row["message_id"] for row in rows if _text(row["consumer"]) != consumer]
        if ids:
            await r.xclaim(stream, group, consumer, 0, ids, justid=True)
            taken += len(ids)
        start = "(" + _text(rows[-1]["message_id"])


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
