"""`tradeops bench faults`: the stack heals itself under load, with no operator.

A private stack run as `tradeops up` runs it: the embedded Redis, kept running by the process
supervisor (`keep_redis`), and gateway, normalizer, sink-ticks, risk, live-gateway, oms, ptrc and
alerting as processes under it, restarted when they die. The local exchange sends `--rate`
trades/s and paper orders go in on orders.new at `--order-rate`/s, each with a client order id of
its own, recorded once Redis took it (a submission Redis did not answer is sent again, same id,
as any client does: the OMS makes one order of an id). Then, every `--interval` seconds, one
fault in turn:

- a service's process SIGKILLed (its pid from the supervisor's instance table): recovered at the
  first `running` heartbeat under a new pid;
- Redis SIGKILLed: recovered when it answers PING again (`ping_s`) and every service heartbeats
  `running` after the kill;
- the tick store's disk full: the store lives on a small tmpfs the bench mounts (root only; else
  the fault is skipped and says why), a ballast file fills it until sink-ticks reports itself
  degraded (or `DEGRADED_WAIT_S` passed: `degraded_s` is then null), and is deleted: recovered
  when sink-ticks heartbeats `running`, not degraded, with a newer committed offset (a flush
  stored rows again).

The bench takes no step besides the faults (`operator_actions` counts any; it has none to take):
a service that does not recover within `--recovery-timeout` is a failure, left as it is, and
shows in `problems`. Then the flow stops and everything drains (the gateway's last trade ids
reach the exchange's, normalizer and sink-ticks have read and acked everything, every order is
final, ptrc has booked every report; each in `drains`) and it counts (backend/bench/counting.py):

- `ticks_lost`, `ticks_duplicated_stream`: md.ticks against the exchange's trade ids (per symbol,
  from the first id on md.ticks.raw to the last the exchange sent);
- `ticks_lost_store`, `ticks_duplicated_store`: the Parquet store, read back, against the same;
- `orders_lost` (submitted, no event at all), `orders_not_final`, `orders_duplicated` (more than
  one NEW, final state, routing or venue placement), and fills and positions as in `cutover`.

Everything but the recovery times must be zero (`problems` lists what is not).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
import redis

from backend.bench import counting, md_pipeline
from backend.bench.cutover import CONFIG, SERVICES
from backend.bench.md_pipeline import start_exchange, stop_exchange
from backend.bench.oms import order
from backend.bus import codec, embedded, streams
from backend.bus.publish import queue
from backend.errors import TradeopsError
from backend.marketdata.backfill import LAST_ID_KEY
from backend.runtime.process import ProcessSupervisor
from backend.runtime.spawn import health_key

NAME = "faults"
HELP = "SIGKILL each service and Redis, fill the tick store's disk, under load: lost, duplicated, recovery"
DEFAULT_SECONDS = 10.0
SERVICE_FAULTS = ["gateway", "normalizer", "sink-ticks", "oms", "risk", "live-gateway", "ptrc"]
FAULTS = [*SERVICE_FAULTS, "redis", "disk"]
SMALL: dict[str, Any] = {
    "rate": 500.0,
    "order_rate": 10.0,
    "interval": 3.0,
    "faults": ["gateway", "sink-ticks", "oms", "redis"],
}
DEFAULTS: dict[str, Any] = {"rate": 2000.0, "order_rate": 50.0, "interval": 5.0, "faults": FAULTS}
RECOVERY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 90.0
DEGRADED_WAIT_S = 15.0
STORE_MB = 64
ENV = "legacy"
POLL_S = 0.02
# what each faulted service's heartbeat says about its recovery, read just before the next fault
WATCH: dict[str, tuple[str, ...]] = {
    "gateway": ("gaps", "backfilled_trades", "missing_trades"),
    "normalizer": ("repeats", "taken_over", "rejected"),
    "sink-ticks": ("rows_written", "skipped_entries", "committed_id", "buffered"),
    "oms": ("orders", "duplicates", "conflicts"),
    "risk": ("denials",),
    "live-gateway": ("orders", "reports", "working"),
    "ptrc": ("fills", "duplicates", "breaks"),
}

log = logging.getLogger("tradeops.bench.faults")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=None, help="trades per second from the exchange (default 2000)")
    p.add_argument("--order-rate", type=float, default=None, help="paper orders per second (default 50)")
    p.add_argument("--interval", type=float, default=None, help="seconds between faults (default 5)")
    p.add_argument("--faults", default=None, help=f"comma-separated, in order (default all: {','.join(FAULTS)})")
    p.add_argument(
        "--small",
        action="store_true",
        help="rate 500, order rate 10, interval 3, faults gateway,sink-ticks,oms,redis (options given win)",
    )
    p.add_argument(
        "--recovery-timeout",
        type=float,
        default=RECOVERY_TIMEOUT_S,
        help=f"seconds a fault may take to recover before it counts as failed (default {RECOVERY_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--store-mb",
        type=int,
        default=STORE_MB,
        help=f"size of the tmpfs the tick store lives on for the disk fault (default {STORE_MB})",
    )


# -- reading the stack -------------------------------------------------------------------------


class Beat(msgspec.Struct):
    """A service's heartbeat hash as the bench reads it (any state, decoded loosely)."""

    state: str
    pid: int
    ts_ns: int
    extra: dict[str, Any]


def read_beat(r: redis.Redis, service: str) -> Beat | None:
    """The service's (legacy instance's) heartbeat, None when there is none or Redis is away."""
    try:
        state, pid, ts, d = r.hmget(health_key(service, f"{service}-{ENV}"), "state", "pid", "ts_ns", codec.FIELD_STR)
    except (redis.RedisError, OSError):
        return None
    if not isinstance(state, bytes) or pid is None:
        return None
    extra: dict[str, Any] = {}
    if isinstance(d, bytes):
        try:
            body = msgspec.msgpack.decode(d)
            extra = body.get("extra", {}) if isinstance(body, dict) else {}
        except msgspec.DecodeError:
            pass
    return Beat(state.decode(), int(pid), int(ts or 0), extra)


def degraded(beat: Beat) -> bool:
    """Whether a heartbeat says its service runs degraded (a state of its own, or a flag)."""
    return beat.state == "degraded" or bool(beat.extra.get("degraded"))


def committed(beat: Beat | None) -> tuple[int, int]:
    """sink-ticks' committed offset (the store's), as a sortable key."""
    # pandas: loaded when the bench runs, not by the CLI parser
    from backend.marketdata.store import id_key

    cid = beat.extra.get("committed_id") if beat else None
    return id_key(cid) if isinstance(cid, str) and cid else (0, 0)


def gateway_caught_up(r: redis.Redis) -> bool:
    """The gateway runs on live trades with no gap left to backfill (md_pipeline's, Redis away
    being a no)."""
    try:
        return md_pipeline.gateway_caught_up(r, f"gateway-{ENV}")
    except (redis.RedisError, OSError, msgspec.DecodeError):
        return False


def poll(pred: Callable[[], Any], timeout: float) -> Any:
    """`pred()`'s first truthy value within `timeout` seconds, else None (no error: the caller
    records what did not happen)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            return None
        time.sleep(POLL_S)


class LogLines(logging.Handler):
    """The supervisor's log lines (it runs in a thread of the bench), kept with their time."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.monotonic(), record.getMessage()))

    def since(self, t: float) -> list[str]:
        return [m for at, m in list(self.lines) if at >= t]


# -- the orders --------------------------------------------------------------------------------


class OrderSender:
    """Paper orders on orders.new at `rate`/s in a thread, each with a client order id of its
    own (backend/bench/oms.py's), recorded once Redis took it. While Redis is away the orders
    due wait and are sent again, same ids, when it is back (`resubmits` counts the tries)."""

    def __init__(self, url: str, rate: float) -> None:
        self.url = url
        self.rate = rate
        self.coids: list[str] = []
        self.resubmits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orders", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(60)
        return list(self.coids)

    def _run(self) -> None:
        r = redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=1.0)
        start = time.monotonic()
        made = 0
        due: list[Any] = []
        try:
            while not self._stop.is_set():
                n = int((time.monotonic() - start) * self.rate) - made
                due += [order(made + k, time.time_ns()) for k in range(max(0, n))]
                made += max(0, n)
                if due:
                    try:
                        pipe = r.pipeline(transaction=False)
                        for o in due:
                            queue(pipe, streams.ORDERS_NEW, o)
                        pipe.execute()
                        self.coids += [o.client_order_id for o in due]
                        due = []
                    except (redis.RedisError, OSError):
                        self.resubmits += 1  # Redis away: the same orders, same ids, next round
                self._stop.wait(0.02)
            if due:  # the last ones, Redis permitting
                poll(lambda: self._flush(r, due), 30)
        finally:
            r.close()

    def _flush(self, r: redis.Redis, due: list[Any]) -> bool:
        try:
            pipe = r.pipeline(transaction=False)
            for o in due:
                queue(pipe, streams.ORDERS_NEW, o)
            pipe.execute()
        except (redis.RedisError, OSError):
            self.resubmits += 1
            return False
        self.coids += [o.client_order_id for o in due]
        return True


# -- the stack ---------------------------------------------------------------------------------


class FaultStack:
    """The embedded Redis (kept running by the supervisor), the exchange and the services under
    the process supervisor, the tick store on a tmpfs when the disk fault is asked for and the
    bench may mount one; all stopped and thrown away on exit."""

    def __init__(
        self,
        rate: float,
        *,
        services: list[str] | None = None,
        store_mb: int = STORE_MB,
        mount_store: bool = True,
        keep_dir: bool = False,
    ) -> None:
        self.rate = rate
        self.keep_dir = keep_dir
        self.services = services or SERVICES
        self.store_mb = store_mb
        self.data_dir = Path(tempfile.mkdtemp(prefix="tradeops-faults-"))
        # pandas: loaded when the bench runs, not by the CLI parser
        from backend.marketdata.store import ticks_dir

        self.store_root = ticks_dir(self.data_dir)
        self.mount_store = mount_store
        self.mounted = False
        self.no_mount = ""  # why the store is not on a tmpfs of its own
        self.server: embedded.EmbeddedRedis | None = None
        self.url = ""
        self.r: redis.Redis = None  # type: ignore[assignment]  # set on enter
        self.exchange: subprocess.Popen[str] | None = None
        self.sup: ProcessSupervisor | None = None
        self._thread: threading.Thread | None = None
        self.sup_log = LogLines()
        self._sup_logger = logging.getLogger("tradeops.supervisor")
        self._sup_level = self._sup_logger.level
        self.last_ids: dict[str, int] | None = None

    def __enter__(self) -> FaultStack:
        try:
            self._mount()
            self.server = embedded.EmbeddedRedis(self.data_dir)
            self.url = self.server.start()
            self.r = redis.Redis.from_url(self.url, socket_timeout=5.0, socket_connect_timeout=2.0)
            config = self.data_dir / "config.toml"
            config.write_text(CONFIG)
            self.exchange = start_exchange(self.data_dir, self.rate)
            self._sup_logger.addHandler(self.sup_log)
            self._sup_logger.setLevel(logging.INFO)
            self.sup = ProcessSupervisor(
                self.url, self.data_dir, with_exchange=False, config=config, keep_redis=True, redis_server=self.server
            )
            self.sup.services = list(self.services)
            self._thread = threading.Thread(target=self.sup.run, name="supervisor", daemon=True)
            self._thread.start()
            up = poll(
                lambda: all((b := read_beat(self.r, s)) and b.state == "running" for s in self.services),
                RECOVERY_TIMEOUT_S,
            )
            if not up:
                raise TradeopsError(
                    f"faults: the stack did not come up within {RECOVERY_TIMEOUT_S:.0f}s; see {self.data_dir / 'logs'}"
                )
            if not poll(lambda: self.r.xlen(streams.MD_TICKS) > 0, RECOVERY_TIMEOUT_S):
                raise TradeopsError("faults: no ticks on md.ticks")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _mount(self) -> None:
        if not self.mount_store:
            self.no_mount = "not asked for"
            return
        if os.geteuid() != 0:
            self.no_mount = f"mounting a tmpfs for the tick store needs root (uid {os.geteuid()})"
            return
        self.store_root.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.store_mb}m,mode=0755", "tmpfs", str(self.store_root)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            self.no_mount = f"mount of a tmpfs failed: {(out.stderr or out.stdout).strip()}"
            return
        self.mounted = True

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self.sup is not None:
                self.sup.stop()
                if self._thread is not None:
                    self._thread.join(RECOVERY_TIMEOUT_S)
                self.sup.shutdown()
        finally:
            self._sup_logger.removeHandler(self.sup_log)
            self._sup_logger.setLevel(self._sup_level)
            if self.exchange is not None and self.exchange.poll() is None:
                self.exchange.kill()
                self.exchange.wait()
            if self.r is not None:
                self.r.close()
            watch = self.sup.redis_watch if self.sup is not None else None
            embedded.stop_data_dir(self.data_dir)  # whichever server runs now: the first or a restarted one
            for proc in {p for p in (self.server.proc if self.server else None, watch.proc if watch else None) if p}:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()  # reaped
            if self.mounted:
                if self.keep_dir:
                    shutil.copytree(self.store_root, self.data_dir / "store" / "ticks-kept", dirs_exist_ok=True)
                subprocess.run(["umount", str(self.store_root)], capture_output=True, check=False)
            if not self.keep_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def pid(self, service: str) -> int | None:
        assert self.sup is not None
        inst = self.sup.instances.get(f"{service}-{ENV}")
        return inst.pid if inst is not None else None

    def restarts(self, service: str) -> int | None:
        assert self.sup is not None
        inst = self.sup.instances.get(f"{service}-{ENV}")
        return inst.restarts if inst is not None else None

    def log_path(self, service: str) -> Path:
        return self.data_dir / "logs" / f"{service}-{ENV}.log"

    def log_tail(self, service: str, n: int = 8) -> list[str]:
        try:
            return self.log_path(service).read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return []


# -- the faults --------------------------------------------------------------------------------


def kill_service(stack: FaultStack, service: str, timeout: float) -> dict[str, Any]:
    """SIGKILL the service's process; recovered at its first `running` heartbeat under a new pid."""
    pid = stack.pid(service)
    if pid is None:
        return {
            "fault": service,
            "recovered": False,
            "recovery_s": None,
            "observed": {"error": "no instance of it in the supervisor's table"},
        }
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    new = poll(lambda: (b := read_beat(stack.r, service)) and b.pid != pid and b.state == "running" and b, timeout)
    done = time.monotonic()
    observed: dict[str, Any] = {
        "pid": pid,
        "new_pid": new.pid if new else None,
        "restarts": stack.restarts(service),
        "supervisor": stack.sup_log.since(t0),
    }
    if new is None:
        observed["log"] = stack.log_tail(service)
    elif service == "gateway":
        observed["backfilled_s"] = _backfilled(stack, t0, timeout)
    return {
        "fault": service,
        "action": f"SIGKILL pid {pid}",
        "recovered": new is not None,
        "recovery_s": round(done - t0, 3) if new else None,
        "observed": observed,
    }


def kill_redis(stack: FaultStack, timeout: float) -> dict[str, Any]:
    """SIGKILL Redis; recovered when it answers PING and every service heartbeats `running`
    after the kill."""
    info = embedded.read_info(stack.data_dir)
    if info is None:
        return {
            "fault": "redis",
            "recovered": False,
            "recovery_s": None,
            "observed": {"error": "no embedded Redis recorded in the data dir"},
        }
    pids = {s: stack.pid(s) for s in stack.services}
    killed_ns = time.time_ns()
    t0 = time.monotonic()
    os.kill(info.pid, signal.SIGKILL)
    back = poll(lambda: (i := embedded.live_info(stack.data_dir)) and i.pid != info.pid and i, timeout)
    t_ping = time.monotonic()

    def running() -> bool:
        beats = {s: read_beat(stack.r, s) for s in stack.services}
        return all(b is not None and b.state == "running" and b.ts_ns > killed_ns for b in beats.values())

    ok = back is not None and poll(running, max(0.0, timeout - (t_ping - t0)))
    done = time.monotonic()
    now = {s: stack.pid(s) for s in stack.services}
    observed: dict[str, Any] = {
        "pid": info.pid,
        "new_pid": back.pid if back else None,
        "same_url": bool(back and back.url == info.url),
        "ping_s": round(t_ping - t0, 3) if back else None,
        "restarted": sorted(s for s in stack.services if now[s] != pids[s]),
        "rode_through": sorted(s for s in stack.services if now[s] == pids[s]),
        "supervisor": stack.sup_log.since(t0),
    }
    if ok:
        observed["gateway_backfilled_s"] = _backfilled(stack, t0, timeout)
    else:
        observed["not_running"] = sorted(
            s
            for s in stack.services
            if not ((b := read_beat(stack.r, s)) and b.state == "running" and b.ts_ns > killed_ns)
        )
    return {
        "fault": "redis",
        "action": f"SIGKILL pid {info.pid}",
        "recovered": bool(ok),
        "recovery_s": round(done - t0, 3) if ok else None,
        "observed": observed,
    }


def _backfilled(stack: FaultStack, t0: float, timeout: float) -> float | None:
    """Seconds from `t0` until the gateway has its gap back from the venue's history and is on
    live trades again (null: not within `timeout`)."""
    return round(time.monotonic() - t0, 3) if poll(lambda: gateway_caught_up(stack.r), timeout) else None


def fill_disk(stack: FaultStack, timeout: float) -> dict[str, Any]:
    """Fill the tick store's tmpfs with a ballast file until sink-ticks says it is degraded (or
    DEGRADED_WAIT_S), delete it; recovered when sink-ticks runs, not degraded, and has committed
    a newer flush."""
    if not stack.mounted:
        return {"fault": "disk", "skipped": stack.no_mount, "recovered": None, "recovery_s": None, "observed": {}}
    ballast = stack.store_root / ".ballast"
    log_from = _size(stack.log_path("sink-ticks"))
    before = read_beat(stack.r, "sink-ticks")
    t_fill = time.monotonic()
    filled = _fill(ballast)
    t_full = time.monotonic()
    seen = poll(lambda: (b := read_beat(stack.r, "sink-ticks")) and degraded(b) and b, DEGRADED_WAIT_S)
    t_seen = time.monotonic()
    at_free = read_beat(stack.r, "sink-ticks")
    ballast.unlink()
    t0 = time.monotonic()
    mark = committed(at_free)
    back = poll(
        lambda: (
            (b := read_beat(stack.r, "sink-ticks"))
            and b.state == "running"
            and not degraded(b)
            and committed(b) > mark
            and b
        ),
        timeout,
    )
    done = time.monotonic()
    logged = _read_from(stack.log_path("sink-ticks"), log_from)
    observed: dict[str, Any] = {
        "ballast_mb": round(filled / 2**20, 1),
        "fill_s": round(t_full - t_fill, 3),
        "degraded_s": round(t_seen - t_full, 3) if seen else None,
        "state_when_full": at_free.state if at_free else None,
        "rows_written": [b.extra.get("rows_written") if b else None for b in (before, at_free, back)],
        "pid_before_after": [b.pid if b else None for b in (before, back)],
        "log_no_space": sum("No space left" in ln or "ENOSPC" in ln for ln in logged),
        "log": [ln for ln in logged if "No space" in ln or "degrad" in ln.lower() or "ENOSPC" in ln][:3],
    }
    if seen is None:
        observed["note"] = f"sink-ticks did not report degraded within {DEGRADED_WAIT_S:g}s of the disk being full"
    return {
        "fault": "disk",
        "action": f"ballast {observed['ballast_mb']} MB on the store's {stack.store_mb} MB tmpfs",
        "recovered": back is not None,
        "recovery_s": round(done - t0, 3) if back else None,
        "observed": observed,
    }


def _fill(path: Path) -> int:
    """Write `path` until the filesystem is full; the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    written = 0
    chunk = 1 << 20
    block = b"\0" * chunk
    try:
        while chunk >= 4096:
            try:
                n = os.write(fd, block[:chunk])
                written += n
                if n < chunk:
                    chunk //= 2
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    finally:
        os.close(fd)
    return written


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def inject(stack: FaultStack, fault: str, timeout: float) -> dict[str, Any]:
    if fault == "redis":
        return kill_redis(stack, timeout)
    if fault == "disk":
        return fill_disk(stack, timeout)
    return kill_service(stack, fault, timeout)


def settled(stack: FaultStack, result: dict[str, Any]) -> None:
    """What the faulted service's heartbeat says once it has run a while (its backfill, repeats,
    skipped entries ...), added to the fault's observations."""
    service = "sink-ticks" if result["fault"] == "disk" else result["fault"]
    b = read_beat(stack.r, service) if service in WATCH else None
    if b is not None:
        result["observed"]["after"] = {k: b.extra.get(k) for k in WATCH[service] if k in b.extra}


# -- the run -----------------------------------------------------------------------------------


def drain(stack: FaultStack, coids: list[str], timeout: float) -> dict[str, Any]:
    """After the flow stopped: wait (each up to `timeout`) until the gateway's last trade ids
    reach the exchange's, normalizer and sink-ticks have read and acked everything (nothing
    buffered), every order is final and ptrc has read every report. Seconds each took, or null."""
    r, last = stack.r, stack.last_ids or {}
    out: dict[str, Any] = {}

    def timed(name: str, pred: Callable[[], Any]) -> None:
        t0 = time.monotonic()
        out[name] = round(time.monotonic() - t0, 3) if poll(_quiet(pred), timeout) else None

    def gateway() -> bool:
        got = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in r.hgetall(LAST_ID_KEY).items()}
        return all(got.get(s, -1) >= i for s, i in last.items())

    timed("gateway_caught_up", gateway)
    timed("normalizer_drained", lambda: _drained(r, streams.MD_TICKS_RAW, "normalizer"))
    timed(
        "sink_ticks_drained",
        lambda: (
            _drained(r, streams.MD_TICKS, "sink-ticks")
            and (b := read_beat(r, "sink-ticks")) is not None
            and not b.extra.get("buffered")
        ),
    )
    want, done = set(coids), set[str]()
    cursor = ["-"]

    def final() -> bool:
        got, cursor[0] = counting.final_orders(r, want - done, cursor[0])
        done.update(got)
        return len(done) == len(want)

    timed("orders_final", final)
    timed("ptrc_drained", lambda: _drained(r, streams.EXEC_REPORTS_PTRC, "ptrc"))
    return out


def _quiet(pred: Callable[[], Any]) -> Callable[[], Any]:
    def safe() -> Any:
        try:
            return pred()
        except (redis.RedisError, OSError):
            return False

    return safe


def _drained(r: redis.Redis, stream: str, group: str) -> bool:
    g = {bytes(x["name"]).decode(): x for x in r.xinfo_groups(stream)}.get(group)
    return g is not None and g["lag"] == 0 and g["pending"] == 0


def problems_of(res: dict[str, Any]) -> list[str]:
    """Everything that is not as it must be: a fault not recovered, a drain that did not finish,
    a count that is not zero."""
    out = [f"{f['fault']}: not recovered within the timeout" for f in res["faults"] if f["recovered"] is False]
    out += [
        f"disk: sink-ticks did not report degraded within {DEGRADED_WAIT_S:g}s of its store's disk being full"
        for f in res["faults"]
        if f["fault"] == "disk" and "skipped" not in f and f["observed"].get("degraded_s") is None
    ]
    out += [f"drain: {k} did not happen" for k, v in res["drains"].items() if v is None]
    for k in (
        "ticks_lost",
        "ticks_duplicated_stream",
        "ticks_dead_lettered",
        "ticks_lost_store",
        "ticks_duplicated_store",
        "orders_lost",
        "orders_duplicated",
        "orders_not_final",
        "operator_actions",
        "fills_broken",
    ):
        if res.get(k):
            out.append(f"{k}: {res[k]}")
    if res.get("trade_ids_reused"):
        out.append(f"trade_ids_reused: {res['trade_ids_reused']}")
    if res.get("positions_wrong"):
        out.append(f"positions_wrong: {len(res['positions_wrong'])}")
    return out


def measure(
    rate: float = 2000.0,
    order_rate: float = 50.0,
    seconds: float = DEFAULT_SECONDS,
    interval: float = 5.0,
    faults: list[str] | None = None,
    recovery_timeout: float = RECOVERY_TIMEOUT_S,
    store_mb: int = STORE_MB,
    keep_dir: bool = False,
) -> dict[str, Any]:
    """The whole run; returns the figures (`keep_dir`: leave the data dir, logs and store, for a
    look after; the store as `store/ticks-kept` when it was on the tmpfs)."""
    faults = list(FAULTS if faults is None else faults)
    actions: list[str] = []  # steps besides the faults: the bench takes none
    with FaultStack(rate, store_mb=store_mb, mount_store="disk" in faults, keep_dir=keep_dir) as stack:
        sender = OrderSender(stack.url, order_rate)
        sender.start()
        t0 = time.monotonic()
        results: list[dict[str, Any]] = []
        try:
            next_at = t0 + interval
            for fault in faults:
                time.sleep(max(0.0, next_at - time.monotonic()))
                if results:
                    settled(stack, results[-1])
                at = time.monotonic()
                one = inject(stack, fault, recovery_timeout)
                results.append({"fault": one.pop("fault"), "at_s": round(at - t0, 2), **one})
                log.info("fault %s: %s", fault, one)
                next_at = max(at + interval, time.monotonic())
            time.sleep(max(0.0, max(next_at, t0 + seconds) - time.monotonic()))
            if results:
                settled(stack, results[-1])
        finally:
            elapsed = time.monotonic() - t0
            coids = sender.stop()
            # the venue's trade history is the exchange's: a gap in flight needs it up
            t_bf = time.monotonic()
            backfilled = poll(_quiet(lambda: gateway_caught_up(stack.r)), DRAIN_TIMEOUT_S)
            waited_backfill = round(time.monotonic() - t_bf, 3) if backfilled else None
            assert stack.exchange is not None
            stack.last_ids = stop_exchange(stack.exchange)
        drains = {"gateway_backfilled": waited_backfill, **drain(stack, coids, DRAIN_TIMEOUT_S)}
        ranges = counting.expected_ranges(
            stack.r, stack.last_ids or {}, counting.delivered_ids(stack.r)[0], counting.stored_ids(stack.data_dir)
        )
        ticks = counting.tick_counts(stack.r, ranges)
        stored = counting.store_counts(stack.data_dir, ranges)
        orders = counting.order_counts(stack.r, coids)
        ptrc = read_beat(stack.r, "ptrc")
        fills = counting.fill_counts(stack.r, coids, ptrc.extra.get("duplicates") if ptrc else None)
        alerts = counting.active_alerts(stack.r)
    res: dict[str, Any] = {
        **({"data_dir": str(stack.data_dir)} if keep_dir else {}),
        "rate": rate,
        "order_rate": order_rate,
        "interval_s": interval,
        "seconds": round(elapsed, 2),
        "faults": results,
        "ticks_sent": ticks["ticks_sent"],
        "ticks_delivered": ticks["ticks_delivered"],
        "ticks_lost": ticks["ticks_lost"],
        "ticks_duplicated_stream": ticks["ticks_duplicated"],
        "ticks_dead_lettered": ticks["ticks_dead_lettered"],
        **stored,
        "orders_submitted": orders["orders_sent"],
        "order_resubmits": sender.resubmits,
        **{k: v for k, v in orders.items() if k != "orders_sent"},
        **fills,
        "alerts_active": alerts,
        "operator_actions": len(actions),
        "drains": drains,
    }
    res["problems"] = problems_of(res)
    return res


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = SMALL if args.small else DEFAULTS
    rate = args.rate if args.rate is not None else base["rate"]
    order_rate = args.order_rate if args.order_rate is not None else base["order_rate"]
    interval = args.interval if args.interval is not None else base["interval"]
    faults = [f.strip() for f in args.faults.split(",") if f.strip()] if args.faults is not None else base["faults"]
    if rate <= 0 or order_rate <= 0 or interval <= 0:
        raise TradeopsError("--rate, --order-rate and --interval must be positive")
    if args.recovery_timeout <= 0 or args.store_mb < 8:
        raise TradeopsError("--recovery-timeout must be positive and --store-mb at least 8")
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        raise TradeopsError(f"unknown fault(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(FAULTS)}")
    return measure(rate, order_rate, args.seconds, interval, faults, args.recovery_timeout, args.store_mb)
