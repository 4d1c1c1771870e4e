"""The 18 services: name -> its Service class ("module:Class", imported only when one is run) and
its domain package, the code of what it does (rules, models, stores) that the service puts on the
bus.

A service's name and its domain package's often differ: this registry is the one place that says
so (ptrc -> posttrade, sink-alt -> alt, marketplace -> catalog, feast-pipeline -> features ...).
A service with no domain package (None) holds all its logic itself.

`python -m backend.services NAME` runs one (backend.services.run)."""

from __future__ import annotations

import difflib
import importlib
from typing import NamedTuple

from backend.errors import ConfigError, TradeopsError
from backend.services.base import BASE_KEYS, Service
from backend.settings import Settings, convert_section


class Registered(NamedTuple):
    target: str
    """The Service class, "module:Class"."""
    domain: str | None
    """The domain package ("backend.posttrade"), or None."""


SERVICES: dict[str, Registered] = {
    # Priority 1
    "normalizer": Registered("backend.services.normalizer:NormalizerService", "backend.marketdata"),
    "sink-ticks": Registered("backend.services.sink_ticks:SinkTicksService", "backend.marketdata"),
    "sink-alt": Registered("backend.services.sink_alt:SinkAltService", "backend.alt"),
    # Priority 2
    "gateway": Registered("backend.services.gateway:GatewayService", "backend.marketdata"),
    "live-gateway": Registered("backend.services.live_gateway:LiveGatewayService", "backend.trading"),
    # Priority 3
    "oms": Registered("backend.services.oms:OmsService", "backend.trading"),
    "risk": Registered("backend.services.risk:RiskService", "backend.trading"),
    # Priority 4
    "ptrc": Registered("backend.services.ptrc:PtrcService", "backend.posttrade"),
    "feast-pipeline": Registered("backend.services.feast_pipeline:FeastPipelineService", "backend.features"),
    "refdata": Registered("backend.services.refdata:RefdataService", "backend.refdata"),
    "scheduler": Registered("backend.services.scheduler:SchedulerService", "backend.scheduling"),
    "alerting": Registered("backend.services.alerting:AlertingService", None),
    "md-replay": Registered("backend.services.md_replay:MdReplayService", "backend.marketdata"),
    # Priority 5
    "serving": Registered("backend.services.serving:ServingService", "backend.models"),
    "bt-orchestrator": Registered("backend.services.bt_orchestrator:BtOrchestratorService", "backend.backtest"),
    "ml-training": Registered("backend.services.ml_training:MlTrainingService", "backend.models"),
    "marketplace": Registered("backend.services.marketplace:MarketplaceService", "backend.catalog"),
    "modelops": Registered("backend.services.modelops:ModelopsService", "backend.models"),
}


def service_class(name: str) -> type[Service]:
    """The Service class for `name`, or a clear error naming the known services."""
    entry = SERVICES.get(name)
    if entry is None:
        raise TradeopsError(f"unknown service {name!r}; known: {', '.join(sorted(SERVICES))}")
    module, _, cls = entry.target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise TradeopsError(f"service {name!r} is not built yet ({module})") from None
        raise
    return getattr(mod, cls)


def check_sections(settings: Settings) -> None:
    """Every `[services.<name>]` section of the config names a service and holds only keys its
    Config knows (or the base's own, BASE_KEYS), with values it accepts, and every `[replicas]`
    entry names a service: a ConfigError naming the section and the key, at start (`tradeops up`),
    not when that service first runs."""
    for name, raw in settings.services.items():
        if name not in SERVICES:
            near = difflib.get_close_matches(name, SERVICES, n=1)
            hint = f" (did you mean [services.{near[0]}]?)" if near else f"; known: {', '.join(sorted(SERVICES))}"
            raise ConfigError(f"[services.{name}]: there is no service {name!r}{hint}")
        try:
            cls = service_class(name)
        except TradeopsError:
            continue  # not built: nothing to check it against
        section = {k: v for k, v in raw.items() if k not in BASE_KEYS}  # the base's own keys
        convert_section(name, section, cls.Config)
    for name in settings.replicas:
        if name not in SERVICES:
            near = difflib.get_close_matches(name, SERVICES, n=1)
            hint = f" (did you mean {near[0]}?)" if near else f"; known: {', '.join(sorted(SERVICES))}"
            raise ConfigError(f"[replicas] {name}: there is no service {name!r}{hint}")


__all__ = ["SERVICES", "Registered", "Service", "check_sections", "service_class"]
