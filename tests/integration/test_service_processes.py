"""The 11 Priority 4 and 5 services as real processes (`tradeops service run NAME`): each comes up
healthy on the shared base, heartbeats, reads its stream in its own consumer group, sends a poison
message to the DLQ with its reason and keeps running, and stops cleanly on SIGTERM; each refuses
a bad config with one line naming the section and the key, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis

from backend.bench.harness import BenchStack
from backend.bus import codec, streams
from backend.messages import Heartbeat
from backend.runtime.spawn import wait_healthy
from tests.conftest import TRADEOPS, wait_for

CONSUMES = {
    "ptrc": streams.EXEC_REPORTS_PTRC,  # its copy of exec.reports
    "feast-pipeline": streams.MD_BARS_1S,
    "refdata": streams.REFDATA_UPDATES,
    "scheduler": streams.SCHEDULER_REQUESTS,
    "alerting": streams.OPS_ALERTS,
    "md-replay": streams.REPLAY_REQUESTS,
    "ml-training": streams.TRAINING_JOBS,
    "modelops": streams.MODELS_REQUESTS,
    "serving": streams.FEATURES,
    "bt-orchestrator": streams.BACKTEST_JOBS,
    "marketplace": streams.SIGNALS,
}
BAD_CONFIG = {
    "ptrc": ("max_exposur = 1", "unknown field `max_exposur`"),
    "feast-pipeline": ('flush_rows = "many"', "Expected `int`, got `str` - at `$.flush_rows`"),
    "refdata": (
        'file = "/nonexistent/instruments.toml"',
        "file /nonexistent/instruments.toml: cannot read it: No such file or directory",
    ),
    "scheduler": ('jobs = [{name = "daily-report", at = "7pm"}]', "time '7pm' is not HH:MM"),
    "alerting": ('webhook = "ftp://hooks"', "webhook 'ftp://hooks' is not an http:// or https:// URL"),
    "md-replay": ('batch = "x"', "- at `$.batch`"),
    "ml-training": ('price_source = "quotes"', "Invalid enum value 'quotes' - at `$.price_source`"),
    "modelops": ('auto_promote_min_ic = "high"', "- at `$.auto_promote_min_ic`"),
    "serving": ("threshhold = 1", "unknown field `threshhold`"),
    "bt-orchestrator": ('source = "quotes"', "Invalid enum value 'quotes' - at `$.source`"),
    "marketplace": ("max_signal_age_s = -1", "max_signal_age_s must be positive, not -1.0"),
}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_each_runs_as_a_process_with_group_heartbeat_dlq_and_clean_stop(redis_url: str, r: redis.Redis) -> None:
    with BenchStack(redis_url=redis_url) as st:
        procs = {name: st.start(name, instance=f"{name}-p", wait=False) for name in CONSUMES}
        for name, proc in procs.items():
            wait_healthy(r, name, f"{name}-p", proc=proc, timeout=45, log_path=st.data_dir / "logs" / f"{name}-p.log")
        for name, stream in CONSUMES.items():
            groups = {g["name"].decode() for g in r.xinfo_groups(stream)}
            assert name in groups, f"{name} has no consumer group on {stream}: {groups}"
            r.xadd(stream, {b"d": b"\xc1poison"})

        def reasons(name: str) -> list[str]:
            return [
                f[b"dlq_reason"].decode()
                for _, f in r.xrange(streams.dlq(CONSUMES[name]))
                if f[b"dlq_group"] == name.encode()
            ]

        wait_for(lambda: all(reasons(n) for n in CONSUMES), 30, what="every poison message dead-lettered")
        for name in CONSUMES:
            assert reasons(name)[0].startswith("undecodable"), (name, reasons(name))

        def beat(name: str) -> Heartbeat:
            return codec.decode(r.hget(f"health:{name}:{name}-p", codec.FIELD_STR), Heartbeat)

        wait_for(lambda: all(beat(n).dlq >= 1 for n in CONSUMES), 15, what="the DLQ in every heartbeat")
        assert {beat(n).state for n in CONSUMES} == {"running"}
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited"
        for name in CONSUMES:
            assert st.stop(f"{name}-p") == 0, name
            # checked at once: the per-instance hash has a TTL, and stopping all takes longer
            assert beat(name).state == "stopped", name


@pytest.mark.parametrize("name", sorted(BAD_CONFIG))
def test_bad_config_is_one_line_naming_section_and_key(name: str, tradeops_env: dict[str, str], tmp_path: Path) -> None:
    line, message = BAD_CONFIG[name]
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f"[services.{name}]\n{line}\n")
    out = subprocess.run(
        [*TRADEOPS, "service", "run", name, "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=tradeops_env,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"[services.{name}]" in out.stderr and message in out.stderr, out.stderr
