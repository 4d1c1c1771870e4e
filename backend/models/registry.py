"""The model registry's records in Redis, and the reads that serving, the CLI and the tests share.

Only modelops writes (`apply_*` below are called by it, one MULTI per change, with the event that
says what changed on `models.events`); everyone else reads.

Keys per model NAME: `models:NAME:versions` (hash version -> msgpack VersionRecord),
`models:NAME:seq` (the last version number), `models:NAME:stage` (hash stage -> version),
`models:NAME:prod_history` (list: every version that went to production, in order).
`models:names` is the set of names.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import msgspec

from backend.bus import streams
from backend.bus.entries import Skips, decode_entries
from backend.bus.publish import queue
from backend.messages import ModelEvent, ModelEventKind, ModelRegister
from backend.models.linear import LinearModel

NAMES = "models:names"
KEYS = "models:*"
"""Every key of the registry (its names, versions, stages, history, requests done)."""
STAGES = ("staging", "production")


def k_versions(name: str) -> str:
    return f"models:{name}:versions"


def k_seq(name: str) -> str:
    return f"models:{name}:seq"


def k_stage(name: str) -> str:
    return f"models:{name}:stage"


def k_history(name: str) -> str:
    return f"models:{name}:prod_history"


class VersionRecord(msgspec.Struct, kw_only=True):
    """One registered version: the artifact and its lineage (what data, which features, how good,
    which production version it was trained to replace)."""

    name: str
    version: int
    kind: str
    features: list[str]
    label: str
    metrics: dict[str, float]
    data_start_ns: int
    data_end_ns: int
    rows: int
    symbols: list[str]
    params: dict[str, Any]
    trained_by: str
    created_ns: int
    parent: int
    """The production version when this one was registered (0: none)."""
    sha256: str
    artifact: bytes

    def model(self) -> LinearModel:
        return LinearModel.from_bytes(self.artifact)

    def summary(self) -> dict[str, Any]:
        """Everything but the artifact bytes (for --json and tables)."""
        d = msgspec.to_builtins(self)
        d.pop("artifact")
        return d


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(VersionRecord)


def decode_record(data: bytes) -> VersionRecord:
    return _dec.decode(data)


def validate(req: ModelRegister) -> LinearModel:
    """The checks a registration must pass; ValueError names what is wrong."""
    if not req.name or not req.name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"model name {req.name!r} must be letters, digits, '-' or '_'")
    model = LinearModel.from_bytes(req.artifact)
    if model.features != req.features:
        raise ValueError(f"artifact features {model.features} differ from declared {req.features}")
    bad = [k for k, v in req.metrics.items() if v != v or v in (float("inf"), float("-inf"))]
    if bad:
        raise ValueError(f"non-finite metrics: {', '.join(bad)}")
    if req.rows <= 0 or req.data_end_ns <= req.data_start_ns:
        raise ValueError(f"empty lineage: rows={req.rows}, data range {req.data_start_ns}..{req.data_end_ns}")
    return model


def new_record(req: ModelRegister, version: int, parent: int) -> VersionRecord:
    return VersionRecord(
        name=req.name,
        version=version,
        kind=req.kind,
        features=req.features,
        label=req.label,
        metrics=req.metrics,
        data_start_ns=req.data_start_ns,
        data_end_ns=req.data_end_ns,
        rows=req.rows,
        symbols=req.symbols,
        params=req.params,
        trained_by=req.trained_by,
        created_ns=time.time_ns(),
        parent=parent,
        sha256=hashlib.sha256(req.artifact).hexdigest(),
        artifact=req.artifact,
    )


def queue_register(pipe: Any, rec: VersionRecord, ev: ModelEvent) -> None:
    pipe.sadd(NAMES, rec.name)
    pipe.hset(k_versions(rec.name), str(rec.version), _enc.encode(rec))
    pipe.hset(k_stage(rec.name), "staging", rec.version)
    queue_event(pipe, ev)


def queue_stage(pipe: Any, name: str, stage: str, version: int, ev: ModelEvent, *, history: bool = True) -> None:
    pipe.hset(k_stage(name), stage, version)
    if stage == "production" and history:
        pipe.rpush(k_history(name), version)
    queue_event(pipe, ev)


def queue_event(pipe: Any, ev: ModelEvent) -> None:
    queue(pipe, streams.MODELS_EVENTS, ev)


def event(name: str, kind: ModelEventKind, **kw: Any) -> ModelEvent:
    return ModelEvent(name=name, kind=kind, ts_ns=time.time_ns(), **kw)


# -- reads (sync clients: CLI, tests) --------------------------------------------------------------


def names(r: Any) -> list[str]:
    return sorted(n.decode() for n in r.smembers(NAMES))


def stages(r: Any, name: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(k_stage(name)).items()}


def get_version(r: Any, name: str, version: int) -> VersionRecord | None:
    data = r.hget(k_versions(name), str(version))
    return decode_record(data) if data else None


def versions(r: Any, name: str) -> list[VersionRecord]:
    recs = [decode_record(v) for v in r.hvals(k_versions(name))]
    return sorted(recs, key=lambda rec: rec.version)


def production(r: Any, name: str) -> VersionRecord | None:
    v = r.hget(k_stage(name), "production")
    return get_version(r, name, int(v)) if v else None


def history(r: Any, name: str) -> list[int]:
    return [int(v) for v in r.lrange(k_history(name), 0, -1)]


def events(r: Any, name: str | None = None, count: int = 1000, skips: Skips | None = None) -> list[ModelEvent]:
    """The registry's newest `count` events (of `name`), oldest first; those that do not decode
    are skipped (counted in `skips`)."""
    got, _ = decode_entries(
        reversed(r.xrevrange(streams.MODELS_EVENTS, count=count)), ModelEvent, stream=streams.MODELS_EVENTS, skips=skips
    )
    return [e for _, e in got if name is None or e.name == name]


# -- reads (async clients: services) ---------------------------------------------------------------


async def aproduction(r: Any, name: str) -> VersionRecord | None:
    v = await r.hget(k_stage(name), "production")
    if not v:
        return None
    data = await r.hget(k_versions(name), v.decode())
    return decode_record(data) if data else None
