"""The market-data benchmarks run briefly and print the keys they promise (figures are not
asserted: speed is shown by the benchmarks themselves)."""

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
def test_bench_normalizer_prints_its_keys() -> None:
    res = bench(["normalizer", "--ticks", "200000", "--batch", "500"])
    assert {"ticks_per_s", "bars_emitted", "dlq", "baseline_ticks_per_s"} <= set(res)
    assert res["ticks_out"] == res["ticks"] == 200000
    assert res["dlq"] == 0 and res["ticks_per_s"] > 0 and res["baseline_ticks_per_s"] > 0


@pytest.mark.timeout(160)
def test_bench_md_pipeline_prints_its_keys() -> None:
    res = bench(["md-pipeline", "--seconds", "2", "--rate", "2000"])
    assert {"rate", "delivered", "lost", "p50_ms", "p99_ms", "sink_rows"} <= set(res)
    assert res["delivered"] > 1000 and res["lost"] == 0
    assert res["sink_rows"] == res["delivered"]


def test_bench_rejects_bad_arguments() -> None:
    out = subprocess.run(
        [*TRADEOPS, "bench", "md-pipeline", "--rate", "-5"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "--rate must be positive" in out.stderr
    out = subprocess.run(
        [*TRADEOPS, "bench", "normalizer", "--seconds", "x"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "usage:" in out.stderr
