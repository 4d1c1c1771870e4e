"""The trading benchmarks run briefly and print the keys they promise (no figures asserted)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import TRADEOPS


def bench(args: list[str]) -> dict:
    out = subprocess.run([*TRADEOPS, "bench", *args, "--json"], capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.timeout(160)
def test_bench_risk_keys() -> None:
    res = bench(["risk", "--seconds", "1", "--rate", "300"])
    assert {"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "sent", "completed", "lost", "baseline_p50_ms"} <= set(
        res
    )
    assert res["completed"] == res["sent"] > 0 and res["lost"] == 0


@pytest.mark.timeout(160)
def test_bench_oms_keys() -> None:
    res = bench(["oms", "--seconds", "1", "--rate", "300"])
    assert {"orders_per_s", "p50_ms", "p99_ms", "lost", "duplicated", "final_states"} <= set(res)
    assert res["lost"] == 0 and res["duplicated"] == 0
    assert sum(res["final_states"].values()) == res["sent"]
