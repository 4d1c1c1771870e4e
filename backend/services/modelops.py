"""modelops (P5): the model registry. Versions, stages (staging, production), promotion and
rollback with a reason, lineage (data range, features, metrics, parent version).

It is the registry's only writer: registrations (ModelRegister from ml-training) and stage
changes (ModelStage from an operator) arrive on `models.requests`; each is applied in one MULTI
with the ModelEvent that records it on `models.events` (serving hot-swaps on those). A request
that cannot be applied (unknown version, rollback with nothing to roll back to, no reason) is
refused with an event naming why; bytes that are not a request go to `dlq.models.requests`.
"""

from __future__ import annotations

import msgspec

from backend.bus import replies, streams
from backend.bus.access import Keys, Reads, Writes
from backend.messages import ModelRegister, ModelStage
from backend.models import registry as reg
from backend.services.base import Service


class ModelopsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    auto_promote_min_ic: float | None = None
    """Promote a new version straight to production when its held-out IC is at least this
    (None: production only by an operator's promotion)."""


class ModelopsService(Service):
    name = "modelops"
    Config = ModelopsConfig
    reads = (Reads(streams.MODELS_REQUESTS, group=True),)
    writes = (Writes(streams.MODELS_EVENTS),)
    keys = (Keys(reg.KEYS, write=True),)  # the registry's only writer

    async def setup(self) -> None:
        self.counts = {"registered": 0, "promoted": 0, "rolled_back": 0, "refused": 0}
        self.worker = self.consume(
            streams.MODELS_REQUESTS, self.on_requests, decode=ModelRegister | ModelStage, what="model request", count=32
        )

    def metrics(self) -> dict[str, object]:
        return dict(self.counts)

    async def on_requests(self, requests: list[tuple[bytes, ModelRegister | ModelStage]]) -> None:
        # One at a time, in order: a promotion may name the version registered just before it.
        for _, req in requests:
            if isinstance(req, ModelRegister):
                await self.register(req)
            else:
                await self.change_stage(req)

    async def _refuse(self, name: str, reason: str, req: ModelRegister | ModelStage) -> None:
        self.counts["refused"] += 1
        self.log.warning("refused %s: %s", name, reason)
        pipe = self.r.pipeline(transaction=True)
        reg.queue_event(
            pipe,
            reg.event(
                name,
                "refused",
                reason=reason,
                request_id=req.request_id,
                operator=getattr(req, "operator", "") or getattr(req, "trained_by", ""),
            ),
        )
        await pipe.execute()

    async def register(self, req: ModelRegister) -> None:
        if req.request_id and await self.r.sismember("models:requests_done", req.request_id):
            return  # a redelivery: already applied
        try:
            model = reg.validate(req)
        except ValueError as exc:
            await self._refuse(req.name or "?", f"registration refused: {exc}", req)
            return
        version = int(await self.r.incr(reg.k_seq(req.name)))
        prod = await self.r.hget(reg.k_stage(req.name), "production")
        rec = reg.new_record(req, version, int(prod) if prod else 0)
        pipe = self.r.pipeline(transaction=True)
        reg.queue_register(
            pipe,
            rec,
            reg.event(
                req.name,
                "registered",
                version=version,
                stage="staging",
                from_version=rec.parent,
                operator=req.trained_by,
                request_id=req.request_id,
                reason=f"{len(model.features)} features, {req.rows} rows",
            ),
        )
        ic = req.metrics.get("ic")
        auto = self.cfg.auto_promote_min_ic
        if auto is not None and ic is not None and ic >= auto:
            reg.queue_stage(
                pipe,
                req.name,
                "production",
                version,
                reg.event(
                    req.name,
                    "promoted",
                    version=version,
                    stage="production",
                    from_version=rec.parent,
                    operator=self.name,
                    reason=f"auto: held-out ic {ic:.3f} >= {auto:g}",
                ),
            )
            self.counts["promoted"] += 1
        if req.request_id:
            pipe.sadd("models:requests_done", req.request_id)
        await pipe.execute()
        self.counts["registered"] += 1
        self.log.info("registered %s v%d", req.name, version)

    async def change_stage(self, req: ModelStage) -> None:
        if req.request_id and await self.r.sismember("models:requests_done", req.request_id):
            return
        if not req.reason.strip():
            await self._refuse(req.name, f"{req.action} needs a reason", req)
            return
        stage_now = {k.decode(): int(v) for k, v in replies.fields(await self.r.hgetall(reg.k_stage(req.name))).items()}
        current = stage_now.get(req.stage, 0)
        pipe = self.r.pipeline(transaction=True)
        if req.action == "promote":
            if not await self.r.hexists(reg.k_versions(req.name), str(req.version)):
                await self._refuse(req.name, f"no version {req.version} of model {req.name!r}", req)
                return
            reg.queue_stage(
                pipe,
                req.name,
                req.stage,
                req.version,
                reg.event(
                    req.name,
                    "promoted",
                    version=req.version,
                    stage=req.stage,
                    from_version=current,
                    reason=req.reason,
                    operator=req.operator,
                    request_id=req.request_id,
                ),
            )
            self.counts["promoted"] += 1
        else:
            if req.stage != "production":
                await self._refuse(req.name, "only production can be rolled back", req)
                return
            hist = [int(v) for v in await self.r.lrange(reg.k_history(req.name), 0, -1)]
            if len(hist) < 2:
                await self._refuse(req.name, f"nothing to roll back to: production history {hist}", req)
                return
            target = hist[-2]
            pipe.rpop(reg.k_history(req.name))
            reg.queue_stage(
                pipe,
                req.name,
                "production",
                target,
                reg.event(
                    req.name,
                    "rolled_back",
                    version=target,
                    stage="production",
                    from_version=current,
                    reason=req.reason,
                    operator=req.operator,
                    request_id=req.request_id,
                ),
                history=False,
            )
            self.counts["rolled_back"] += 1
        if req.request_id:
            pipe.sadd("models:requests_done", req.request_id)
        await pipe.execute()
