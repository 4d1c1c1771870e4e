"""The streams' memory budgets: every stream's MAXLEN follows from its budget, and all of them
together fit the embedded server's default maxmemory with room to spare."""

from __future__ import annotations

import pytest

from backend.bus import streams
from backend.settings import load_settings


def every_stream() -> list[str]:
    known = [*streams.BUDGETS, *streams.ALL]
    return sorted({*known, *(streams.dlq(s) for s in known)})


def test_the_budgets_sum_well_under_the_default_maxmemory() -> None:
    maxmemory = streams.memory_bytes(streams.DEFAULT_MAXMEMORY)
    assert maxmemory == 1 << 30
    total = streams.total_budget()
    assert total == sum(b.bytes + streams.budget(streams.dlq(s)).bytes for s, b in streams.BUDGETS.items())
    assert total <= streams.BUDGET_SHARE * maxmemory, (
        f"streams' budgets {total / 2**20:.0f} MB leave too little of {maxmemory / 2**20:.0f} MB for the other keys"
    )
    assert streams.MAXMEMORY_POLICY == "noeviction"
    assert load_settings().redis_maxmemory == streams.DEFAULT_MAXMEMORY


@pytest.mark.parametrize("stream", every_stream())
def test_each_stream_fits_its_budget(stream: str) -> None:
    b = streams.budget(stream)
    assert b.entry <= b.max_entry <= b.bytes, stream
    limit = streams.maxlen(stream)
    if b.archived:
        assert limit is None  # trimmed only by the archiver
    else:
        assert limit is not None and limit * b.entry <= b.bytes and limit >= 500, stream
    assert streams.max_entry(stream) == b.max_entry


def test_every_stream_in_use_has_a_budget_of_its_own() -> None:
    consts = {
        v
        for k, v in vars(streams).items()
        if k.isupper() and isinstance(v, str) and "." in v and not k.endswith(("PREFIX", "KEY", "MAXMEMORY", "POLICY"))
    }
    assert consts <= set(streams.BUDGETS), sorted(consts - set(streams.BUDGETS))
    assert set(streams.archived()) == {
        streams.OPS_GATES,
        streams.OPS_MIGRATION,
        streams.OPS_OPERATORS,
        streams.OPS_CONTROL,  # kill switch toggles: signed and anchored, archived before they are trimmed
        streams.MODELS_EVENTS,
    }


def test_dead_letter_streams_take_their_sources_largest_entry() -> None:
    src = streams.budget(streams.ORDERS_NEW)
    d = streams.budget(streams.dlq(streams.ORDERS_NEW))
    assert d.bytes == streams.DLQ_BYTES and d.max_entry == src.max_entry + streams.DLQ_OVERHEAD
    assert streams.max_entry(streams.dlq(streams.MD_TICKS_RAW)) == streams.DLQ_MAX_ENTRY  # cut to fit
    assert streams.maxlen(streams.dlq(streams.OPS_GATES)) is not None  # a DLQ is never archived


@pytest.mark.parametrize(
    "text,n", [("1gb", 1 << 30), ("512mb", 512 << 20), ("100000", 100_000), ("2g", 2 * 10**9), (" 64MB ", 64 << 20)]
)
def test_memory_sizes_read_as_redis_reads_them(text: str, n: int) -> None:
    assert streams.memory_bytes(text) == n


def test_a_bad_maxmemory_setting_is_a_clear_error(tmp_path) -> None:
    from backend.errors import ConfigError

    cfg = tmp_path / "c.toml"
    cfg.write_text('redis_maxmemory = "lots"\n')
    with pytest.raises(ConfigError, match=r"redis_maxmemory: 'lots' is not a memory size \(e\.g\. 1gb"):
        load_settings(cfg)
    cfg.write_text('redis_maxmemory = "10mb"\n')
    with pytest.raises(ConfigError, match="redis_maxmemory '10mb' is below 64 MB"):
        load_settings(cfg)
    cfg.write_text('redis_maxmemory = "2gb"\n')
    assert load_settings(cfg).redis_maxmemory == "2gb"
