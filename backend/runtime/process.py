"""The process runtime: every service instance its own OS process, logs under `<data>/logs`,
restarted with backoff when it crashes, the instance table kept in `<data>/runtime/instances.json`
so `tradeops ps` in another terminal sees it.

The supervisor converges on the migration state (`backend.runtime.supervisor`): legacy instances
for services not yet cut over, target instances from `start` on (blue/green: both in the same
consumer group); a cutover stops the legacy instance with SIGTERM, so it drains (stops reading,
finishes its batch, acks)."""

from __future__ import annotations

from backend.bus.embedded import local_url
from backend.runtime.spawn import spawn_service
from backend.runtime.supervisor import (
    EXCHANGE,
    Instance,
    InstanceHandle,
    ProcessHandle,
    Supervisor,
    built_services,
    read_table,
    runtime_dir,
    table_path,
)

__all__ = ["EXCHANGE", "Instance", "ProcessSupervisor", "built_services", "read_table", "runtime_dir", "table_path"]


class ProcessSupervisor(Supervisor):
    """Each instance a child process running `python -m backend.services NAME`."""

    runtime = "process"

    def launch(self, service: str, environment: str, instance: str) -> tuple[InstanceHandle, str]:
        logf = self.data_dir / "logs" / f"{instance}.log"
        url = local_url(self.redis_url, self.data_dir)  # the embedded server's unix socket if it is ours
        proc = spawn_service(
            service,
            redis_url=url,
            data_dir=self.data_dir,
            instance=instance,
            environment=environment,
            log_path=logf,
            config=self.config,
        )
        return ProcessHandle(proc), str(logf)
