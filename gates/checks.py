"""Running one check and recording its evidence. Outcomes: passed, failed, inconclusive (timed
out or not enough data). Every run records the numbers, the threshold, what was probed, when."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from backend import locations, s3
from backend.bus import replies, streams
from backend.errors import TradeopsError
from backend.health import read_heartbeats
from backend.migration import inventory
from backend.settings import Settings
from gates.model import Check


@dataclass
class CheckContext:
    r: redis.Redis
    redis_url: str
    settings: Settings

    @property
    def data_dir(self) -> Path:
        return self.settings.resolved_data_dir()


@dataclass
class Result:
    outcome: str  # passed | failed | inconclusive
    evidence: dict[str, Any]


class Inconclusive(Exception):
    pass


def run_check(ctx: CheckContext, check: Check) -> Result:
    if check.kind == "manual":
        return Result("inconclusive", {"note": "manual check: attest it with `tradeops gate attest`"})
    fn: Callable[[CheckContext, dict[str, Any]], Result] = KINDS[check.kind]
    started = time.time()
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        res = pool.submit(fn, ctx, check.params).result(timeout=check.timeout_s)
    except FutureTimeout:
        res = Result("inconclusive", {"reason": f"timed out after {check.timeout_s:g}s"})
    except Inconclusive as exc:
        res = Result("inconclusive", {"reason": str(exc)})
    except (TradeopsError, redis.RedisError, OSError) as exc:
        res = Result("failed", {"error": str(exc)})
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    res.evidence["duration_s"] = round(time.time() - started, 3)
    return res


# -- health ------------------------------------------------------------------------------------
def health(ctx: CheckContext, p: dict[str, Any]) -> Result:
    max_age = float(p.get("max_age_s", 3.0))
    now = time.time_ns()
    beats = read_heartbeats(ctx.r)
    per: dict[str, Any] = {}
    ok = True
    for svc in p["services"]:
        mine = [b for b in beats if b.service == svc]
        fresh = [b for b in mine if (now - b.ts_ns) / 1e9 <= max_age and b.state == "running"]
        per[svc] = {
            "instances": len(mine),
            "running_fresh": len(fresh),
            "instances_detail": [
                {
                    "instance": b.instance,
                    "env": b.environment,
                    "state": b.state,
                    **({"reason": b.reason} if b.reason else {}),
                    "age_s": round((now - b.ts_ns) / 1e9, 2),
                }
                for b in mine
            ],
        }
        ok &= bool(fresh)
    return Result("passed" if ok else "failed", {"services": per, "max_age_s": max_age})


# -- flow --------------------------------------------------------------------------------------
def flow(ctx: CheckContext, p: dict[str, Any]) -> Result:
    a, b, window = p["from"], p["to"], float(p.get("window_s", 3.0))
    start = {s: _last_id(ctx.r, s) for s in (a, b)}
    time.sleep(window)  # the window is the measurement itself
    counts = {s: len(replies.entries(ctx.r.xrange(s, min=f"({start[s]}", count=100_000))) for s in (a, b)}
    ev = {"from": a, "to": b, "window_s": window, "entries": counts}
    if counts[a] > 0 and counts[b] > 0:
        return Result("passed", ev)
    # what is missing, exactly, and the command that provides it (`missing`, `provide` in the check)
    if counts[a] == 0:
        ev["missing"] = f"{a} 0 in {window:g}s" + (f": {p['missing']}" if p.get("missing") else "")
    else:
        ev["missing"] = (
            f"{b} 0 in {window:g}s while {a} had {counts[a]}: the service between them is not passing them on"
        )
    if p.get("provide"):
        ev["provide"] = p["provide"]
    return Result(
        "failed",
        {**ev, "reason": "nothing passed in the window" if not counts[b] and not counts[a] else f"nothing reached {b}"},
    )


def _last_id(r: redis.Redis, stream: str) -> str:
    last = replies.entries(r.xrevrange(stream, count=1))
    return last[0][0].decode() if last else "0-0"


# -- data --------------------------------------------------------------------------------------
def data(ctx: CheckContext, p: dict[str, Any]) -> Result:
    need = int(p.get("min_rows", 1))
    on_s3 = s3.configured(ctx.settings)  # "S3 receiving ticks", "S3 + OpenSearch receiving alt data"
    extra: dict[str, Any] = {}
    if p["sink"] == "ticks":
        from backend.marketdata.store import DELTA_NAME, delta_rows, read_ticks, ticks_dir

        if on_s3 is not None:
            rows = delta_rows(ctx.data_dir, on_s3)
            where = on_s3.where(DELTA_NAME)
        else:
            rows = len(read_ticks(ctx.data_dir))
            where = str(ticks_dir(ctx.data_dir))
    elif p["sink"] == "alt":
        from backend.alt.index import index_path, open_index

        idx = open_index(ctx.data_dir, ctx.settings.infra.get("opensearch"))
        try:
            rows = idx.count()
        finally:
            idx.close()
        where = ctx.settings.infra.get("opensearch") or str(index_path(ctx.data_dir))
        if on_s3 is not None:  # stored on S3 and searchable: the lesser of the two counts
            from backend.alt import s3table

            stored = s3table.count(on_s3)
            extra = {"indexed": rows, "stored": stored, "stored_at": on_s3.where(s3table.NAME)}
            rows = min(rows, stored)
    else:
        raise TradeopsError(f"unknown sink {p['sink']!r}")
    return Result(
        "passed" if rows >= need else "failed",
        {"sink": p["sink"], "rows": rows, "threshold": need, "where": where, **extra},
    )


# -- perf --------------------------------------------------------------------------------------
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda v, t: v <= t,
    ">=": lambda v, t: v >= t,
    "==": lambda v, t: v == t,
    "<": lambda v, t: v < t,
    ">": lambda v, t: v > t,
}


def perf(ctx: CheckContext, p: dict[str, Any]) -> Result:
    name = p["bench"].replace("-", "_")
    try:
        mod = importlib.import_module(f"backend.bench.{name}")
    except ModuleNotFoundError:
        raise Inconclusive(f"benchmark {p['bench']!r} is not built yet") from None
    args = argparse.Namespace(json=True, seconds=getattr(mod, "DEFAULT_SECONDS", 5.0))
    defaults = argparse.ArgumentParser()
    mod.add_arguments(defaults)
    for k, v in vars(defaults.parse_args([])).items():
        setattr(args, k, v)
    for k, v in p.get("args", {}).items():
        setattr(args, k, v)
    out = mod.run(args)
    value = out.get(p["metric"])
    ev = {
        "bench": p["bench"],
        "metric": p["metric"],
        "value": value,
        "op": p["op"],
        "threshold": p["threshold"],
        "result": out,
    }
    if value is None:
        return Result("inconclusive", {**ev, "reason": "the benchmark gave no value"})
    return Result("passed" if OPS[p["op"]](float(value), float(p["threshold"])) else "failed", ev)


# -- target: the deployed target instances, measured (gates/targets.py) -------------------------
def target(ctx: CheckContext, p: dict[str, Any]) -> Result:
    from gates import targets

    return targets.check(ctx, p)


def paper(ctx: CheckContext, p: dict[str, Any]) -> Result:
    from gates import targets

    return targets.paper(ctx, p)


# -- probe -------------------------------------------------------------------------------------
def probe(ctx: CheckContext, p: dict[str, Any]) -> Result:
    target: str = p["target"]
    group, _, what = target.partition(":")
    fn = PROBES.get(group)
    if fn is None:
        raise TradeopsError(f"unknown probe target {target!r}")
    return fn(ctx, what, p)


def _probe_infra(ctx: CheckContext, name: str, p: dict[str, Any]) -> Result:
    spec = inventory.load().infra_spec(name)
    if name == "minio":
        loc = s3.configured(ctx.settings)  # infra.s3 or infra.minio, the credentials from the secrets
        if loc is not None:  # a real S3: an object written, read back and deleted (S3Error: failed)
            return Result("passed", s3.probe(loc))
    endpoint = ctx.settings.infra.get(name)
    if name == "prometheus":
        return _probe_prometheus(ctx, endpoint)
    if name == "grafana":
        return _probe_grafana(ctx, endpoint)
    if name == "redis":
        endpoint = endpoint or ctx.redis_url
    if endpoint:
        return _probe_endpoint(name, endpoint, spec.probe.kind, spec.probe.path)
    ok, detail = _standin(ctx, name)
    return Result(
        "passed" if ok else "failed", {"probed": "embedded stand-in", "standin": spec.standin, "detail": detail}
    )


def _probe_endpoint(name: str, endpoint: str, kind: str, path: str) -> Result:
    u = urlsplit(endpoint if "://" in endpoint else f"tcp://{endpoint}")
    host, port = u.hostname or "127.0.0.1", u.port
    if kind == "http" and u.scheme.startswith("http"):
        url = f"{u.scheme}://{u.netloc}{path}"
        t0 = time.perf_counter()
        resp = httpx.get(url, timeout=3)
        return Result(
            "passed" if resp.status_code < 400 else "failed",
            {"probed": url, "status": resp.status_code, "ms": round((time.perf_counter() - t0) * 1000, 2)},
        )
    if port is None:
        raise TradeopsError(f"{name}: endpoint {endpoint!r} has no port")
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=3):
        pass
    return Result("passed", {"probed": f"tcp {host}:{port}", "ms": round((time.perf_counter() - t0) * 1000, 2)})


UP_QUERY = 'up{job="tradeops"}'


def _metrics_instances(ctx: CheckContext) -> dict[str, str]:
    """The live instances that serve /metrics: instance id -> host:port (their heartbeats)."""
    from backend.runtime.scrape import LIVE_STATES

    return {b.instance: b.metrics_addr for b in read_heartbeats(ctx.r) if b.metrics_addr and b.state in LIVE_STATES}


def _probe_prometheus(ctx: CheckContext, endpoint: str | None) -> Result:
    """With `infra.prometheus`: its query API says every target of the platform is up, and every
    live instance that serves /metrics is one of them. Without: each live instance's /metrics
    answers (what a Prometheus would scrape)."""
    live = _metrics_instances(ctx)
    if not endpoint:
        answered, failed = [], {}
        for inst, addr in sorted(live.items()):
            try:
                resp = httpx.get(f"http://{addr}/metrics", timeout=3)
                if resp.status_code == 200 and "tradeops_processed_total" in resp.text:
                    answered.append(inst)
                else:
                    failed[inst] = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                failed[inst] = str(exc) or type(exc).__name__
        ev: dict[str, Any] = {"probed": "the instances' /metrics (no infra.prometheus configured)"}
        ev |= {"instances": len(live), "answered": answered, "failed": failed}
        if not live:
            ev["reason"] = "no running instance serves /metrics: start the stack (`tradeops up`)"
        return Result("passed" if live and not failed else "failed", ev)
    base_url = (endpoint if "://" in endpoint else f"http://{endpoint}").rstrip("/")
    url = f"{base_url}/api/v1/query"
    try:
        resp = httpx.get(url, params={"query": UP_QUERY}, timeout=5)
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        return Result("failed", {"probed": url, "query": UP_QUERY, "error": str(exc) or type(exc).__name__})
    if resp.status_code != 200 or body.get("status") != "success":
        ev = {"probed": url, "query": UP_QUERY, "status": resp.status_code, "error": body.get("error")}
        return Result("failed", ev)
    series = body["data"]["result"]

    def who(r: dict[str, Any]) -> str:
        return str(r["metric"].get("instance_id") or r["metric"].get("instance", "?"))

    up = sorted(who(r) for r in series if r["value"][1] == "1")
    down = sorted(who(r) for r in series if r["value"][1] != "1")
    missing = sorted(set(live) - set(up) - set(down))
    ev = {"probed": url, "query": UP_QUERY, "targets": len(series), "up": up, "down": down, "not_scraped": missing}
    if not series:
        ev["reason"] = "prometheus scrapes no tradeops target (its config: <data dir>/prometheus/prometheus.yml)"
    return Result("passed" if series and not down and not missing else "failed", ev)


def _probe_grafana(ctx: CheckContext, endpoint: str | None) -> Result:
    """The dashboards in the data dir (`tradeops dashboards`, `tradeops up`) exist and query only
    metrics the services export; with `infra.grafana`, that Grafana answers its health check too."""
    from backend import dashboards, metrics

    where = dashboards.default_dir(ctx.data_dir)
    files, problems = dashboards.validate_dir(where, metrics.catalog())
    queries = 0
    for f in files:
        with contextlib.suppress(OSError, ValueError):
            queries += len(dashboards.queries(json.loads(f.read_text())))
    ev: dict[str, Any] = {"dashboards": str(where), "files": [f.name for f in files], "queries": queries}
    ev["problems"] = problems
    ok = bool(files) and not problems
    if not files:
        ev["reason"] = "no dashboards: `tradeops dashboards` (or `tradeops up`) writes them"
    if endpoint:
        try:
            res = _probe_endpoint("grafana", endpoint, "http", inventory.load().infra_spec("grafana").probe.path)
        except httpx.HTTPError as exc:
            res = Result("failed", {"error": str(exc) or type(exc).__name__})
        ev["grafana"] = res.evidence
        ok = ok and res.outcome == "passed"
    return Result("passed" if ok else "failed", ev)


def _standin(ctx: CheckContext, name: str) -> tuple[bool, str]:
    d = ctx.data_dir
    if name in ("questdb", "minio"):
        target = d / "store"
        target.mkdir(parents=True, exist_ok=True)
        probe_file = target / f".probe-{uuid.uuid4().hex}"
        probe_file.write_text("ok")
        probe_file.unlink()
        return True, f"{target} writable"
    if name in ("opensearch", "postgres"):
        import sqlite3

        con = sqlite3.connect(":memory:")
        con.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        con.close()
        return True, f"sqlite {sqlite3.sqlite_version} with FTS5"
    if name == "vault":
        cfg = locations.config_file()
        return True, f"config {cfg} {'present' if cfg.exists() else 'absent (defaults)'}, env TRADEOPS_*"
    return False, f"no stand-in for {name}"


def _probe_bus(ctx: CheckContext, what: str, p: dict[str, Any]) -> Result:
    r = ctx.r
    if what == "version":
        info = r.info("server")
        v = str(info.get("redis_version", "0"))
        major = int(v.split(".")[0])
        return Result(
            "passed" if major >= 7 else "failed",
            {"redis_version": v, "threshold": "7.0", "server": info.get("server_name", "redis")},
        )
    if what == "aof":
        aof = r.config_get("appendonly").get("appendonly")
        fsync = r.config_get("appendfsync").get("appendfsync")
        return Result("passed" if aof == "yes" else "failed", {"appendonly": aof, "appendfsync": fsync})
    if what == "noeviction":
        pol = r.config_get("maxmemory-policy").get("maxmemory-policy")
        return Result("passed" if pol == "noeviction" else "failed", {"maxmemory-policy": pol})
    if what == "latency":
        samples = []
        for _ in range(20):
            t0 = time.perf_counter()
            r.ping()
            samples.append((time.perf_counter() - t0) * 1000)
        med = sorted(samples)[len(samples) // 2]
        return Result(
            "passed" if med <= p.get("max_ms", 5.0) else "failed",
            {"median_ms": round(med, 3), "threshold_ms": p.get("max_ms", 5.0)},
        )
    key = f"gates:probe:{uuid.uuid4().hex}"
    try:
        if what in ("write", "read"):
            eid = replies.blob(r.xadd(key, {"probe": "1"}))
            got = replies.entries(r.xrange(key))
            ok = bool(got) and got[0][0] == eid
            return Result("passed" if ok else "failed", {"stream": key, "wrote": eid.decode(), "read_back": ok})
        if what == "groups":
            r.xadd(key, {"probe": "1"})
            r.xgroup_create(key, "probe", id="0")
            eid = replies.read(r.xreadgroup("probe", "c", {key: ">"}, count=1))[0][1][0][0]
            acked = r.xack(key, "probe", eid)
            return Result("passed" if acked == 1 else "failed", {"delivered": eid.decode(), "acked": acked})
        if what == "dlq":
            d = streams.dlq(key)
            r.xadd(d, {"dlq_reason": "probe"})
            ok = r.xlen(d) == 1
            r.delete(d)
            return Result("passed" if ok else "failed", {"stream": d})
        if what == "clock":
            sec, usec = r.time()
            skew = abs(time.time() - (sec + usec / 1e6))
            return Result(
                "passed" if skew <= p.get("max_s", 1.0) else "failed",
                {"skew_s": round(skew, 4), "threshold_s": p.get("max_s", 1.0)},
            )
        if what == "stream":
            name = p["stream"]
            n = r.xlen(name)
            r.xrevrange(name, count=1)
            return Result("passed", {"stream": name, "entries": n})
    finally:
        r.delete(key)
    raise TradeopsError(f"unknown bus probe {what!r}")


def _probe_host(ctx: CheckContext, what: str, p: dict[str, Any]) -> Result:
    d = ctx.data_dir
    if what == "disk":
        d.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(d).free / 2**30
        need = float(p.get("min_gib", 1.0))
        return Result(
            "passed" if free >= need else "failed", {"free_gib": round(free, 2), "threshold_gib": need, "path": str(d)}
        )
    if what == "datadir":
        d.mkdir(parents=True, exist_ok=True)
        f = d / f".probe-{uuid.uuid4().hex}"
        f.write_text("ok")
        f.unlink()
        return Result("passed", {"path": str(d)})
    if what == "config":
        from backend.settings import load_settings

        load_settings()  # raises ConfigError naming the key on a bad file
        cfg = locations.config_file()
        return Result("passed", {"file": str(cfg), "present": cfg.exists()})
    if what == "inventory":
        inv = inventory.load()  # loading it checks both relations for cycles
        ok = len(inv.services) == 18 and len(inv.infra) == 8
        evidence = {"services": len(inv.services), "infra": len(inv.infra), "levels": len(inv.levels())}
        return Result("passed" if ok else "failed", {**evidence, "lanes": inv.lane_totals()})
    if what == "audit":
        from gates.audit import verify

        v = verify(ctx.r)
        return Result("passed" if v.ok else "failed", {"entries": v.checked, "problem": v.problem})
    raise TradeopsError(f"unknown host probe {what!r}")


PROBES = {"infra": _probe_infra, "bus": _probe_bus, "host": _probe_host}
KINDS = {"health": health, "flow": flow, "data": data, "perf": perf, "probe": probe, "target": target, "paper": paper}
