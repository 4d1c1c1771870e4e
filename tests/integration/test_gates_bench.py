"""`tradeops bench gates`, small: its figures are there and sane (timings are not asserted)."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import TRADEOPS


def test_bench_gates_small(tradeops_env) -> None:
    out = subprocess.run(
        [*TRADEOPS, "bench", "gates", "--events", "200", "--polls", "3", "--json"],
        capture_output=True,
        text=True,
        env=tradeops_env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["events"] == 200 and res["polls"] == 3
    for who in ("", "gates_"):  # the console's whole poll, and the gate feed's alone
        for tag in ("0", "n"):
            for key in ("first_poll_ms", "poll_ms", "poll_min_ms"):
                assert res[f"{who}{key}_{tag}"] > 0
            assert res[f"{who}poll_min_ms_{tag}"] <= res[f"{who}poll_ms_{tag}"]
            assert res[f"{who}read_per_poll_{tag}"] == 1  # each timed poll read the one new entry
    assert res["write_s"] > 0 and res["verify_ms"] > 0
    assert res["verify_ok"] is True and res["verify_entries"] == 203  # the 200 and the 3 appended while polling
    res = subprocess.run(
        [*TRADEOPS, "bench", "gates", "--events", "-1"], capture_output=True, text=True, env=tradeops_env, timeout=60
    )
    assert res.returncode == 1 and "--events must be 0 or more" in res.stderr and "Traceback" not in res.stderr
