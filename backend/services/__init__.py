"""The 18 services: name -> "module:Class", imported only when one is run."""

from __future__ import annotations

import importlib

from backend.errors import TradeopsError
from backend.services.base import Service

SERVICES: dict[str, str] = {
    # Priority 1
    "normalizer": "backend.services.normalizer:NormalizerService",
    "sink-ticks": "backend.services.sink_ticks:SinkTicksService",
    "sink-alt": "backend.services.sink_alt:SinkAltService",
    # Priority 2
    "gateway": "backend.services.gateway:GatewayService",
    "live-gateway": "backend.services.live_gateway:LiveGatewayService",
    # Priority 3
    "oms": "backend.services.oms:OmsService",
    "risk": "backend.services.risk:RiskService",
    # Priority 4
    "ptrc": "backend.services.ptrc:PtrcService",
    "feast-pipeline": "backend.services.feast_pipeline:FeastPipelineService",
    "refdata": "backend.services.refdata:RefdataService",
    "scheduler": "backend.services.scheduler:SchedulerService",
    "alerting": "backend.services.alerting:AlertingService",
    "md-replay": "backend.services.md_replay:MdReplayService",
    # Priority 5
    "serving": "backend.services.serving:ServingService",
    "bt-orchestrator": "backend.services.bt_orchestrator:BtOrchestratorService",
    "ml-training": "backend.services.ml_training:MlTrainingService",
    "marketplace": "backend.services.marketplace:MarketplaceService",
    "modelops": "backend.services.modelops:ModelopsService",
}


def service_class(name: str) -> type[Service]:
    """The Service class for `name`, or a clear error naming the known services."""
    target = SERVICES.get(name)
    if target is None:
        raise TradeopsError(f"unknown service {name!r}; known: {', '.join(sorted(SERVICES))}")
    module, _, cls = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise TradeopsError(f"service {name!r} is not built yet ({module})") from None
        raise
    return getattr(mod, cls)


__all__ = ["SERVICES", "Service", "service_class"]
