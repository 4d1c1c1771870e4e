"""A commit fenced on ownership: what a consumer writes for a batch, and the XACK of that batch,
happen in one server-side step, and only while every entry of the batch is still pending to that
consumer. A consumer taken for gone (its entries claimed by another) that was only paused finds
that out here and writes nothing, so nothing is published twice.

Commands are plain argument lists (`backend.bus.publish.xadd(stream, msg)`, a dead letter's
`backend.bus.deadletter.xadd(...)`, `("HSET", key, field, value)`), run in order inside one Lua
script (atomic, like MULTI), then the XACK. The commands name keys the script does not declare: on
a Redis Cluster they must share the stream's slot (a partition's keys share its hash tag:
backend/bus/partitions.py). A partitioned consumer's commit also checks its lease (the fencing
token of backend/bus/leases.py): an owner that lost its partition while paused writes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from backend.bus.scripts import Script
from backend.bus.worker import id_key

# KEYS[1] stream (KEYS[2]: the partition's lease, when leased); ARGV: the lease's value ("" when
# not leased), group, consumer, lowest id, highest id, n, id_1..id_n, then per command: argc,
# arg_1..arg_argc. Returns the number of commands run, or -1 (nothing written) when an id of the
# batch is no longer pending to this consumer, -2 when the lease is no longer this consumer's.
_SCRIPT = """
if #KEYS > 1 and redis.call('GET', KEYS[2]) ~= ARGV[1] then return -2 end
local stream, group, consumer = KEYS[1], ARGV[2], ARGV[3]
local n = tonumber(ARGV[6])
if n > 0 then
  local want = {}
  for i = 1, n do want[ARGV[6 + i]] = true end
  local rows = redis.call('XPENDING', stream, group, ARGV[4], ARGV[5], n + 10000, consumer)
  local found = 0
  for _, row in ipairs(rows) do
    if want[row[1]] then found = found + 1 end
  end
  if found < n then return -1 end
end
local i, done = 7 + n, 0
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i, done = i + argc + 1, done + 1
end
if n > 0 then redis.call('XACK', stream, group, unpack(ARGV, 7, 6 + n)) end
return done
"""

Command = Sequence[Any]


_COMMIT = Script(_SCRIPT)


class Fence:
    """The fenced commit of one consumer. `call(*args)` sends one raw command (a service's
    fast connection, `Service.call`); the script is loaded on first use."""

    def __init__(
        self,
        call: Callable[..., Awaitable[Any]],
        stream: str,
        group: str,
        consumer: str,
        lease: tuple[str, str] | None = None,
    ) -> None:
        self.call = call
        self.stream, self.group, self.consumer = stream, group, consumer
        self.lease = lease
        """(key, value) of the partition's lease (backend/bus/leases.py): the commit also needs the
        lease to be this consumer's still (its fencing token)."""
        self.refused = 0  # batches another consumer had taken over
        self.lease_lost = 0  # batches refused because the partition's lease had moved on

    async def commit(self, ids: list[bytes], commands: list[Command]) -> bool:
        """Run `commands` and XACK `ids`, atomically, if every id is still pending to this
        consumer; False (nothing written, nothing acked) if another consumer took any over."""
        lo, hi = (min(ids, key=id_key), max(ids, key=id_key)) if ids else (b"0", b"0")
        keys = [self.stream] if self.lease is None else [self.stream, self.lease[0]]
        args = ["" if self.lease is None else self.lease[1], self.group, self.consumer, lo, hi, len(ids), *ids]
        for c in commands:
            args.append(len(c))
            args.extend(c)
        res = int(await _COMMIT.run(self.call, keys, args))
        self.refused += res < 0
        self.lease_lost += res == -2
        return res >= 0
