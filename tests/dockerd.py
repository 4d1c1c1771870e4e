"""A Docker engine for the test session: its own `dockerd` (own socket, data root, exec root and
pid file; `--iptables=false --bridge=none --storage-driver=vfs`), started once, stopped after the
session. When it cannot start, `reason` says precisely why and the docker tests are skipped with it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

DOCKERD_FLAGS = ["--iptables=false", "--bridge=none", "--storage-driver=vfs"]


class SessionDockerd:
    """One dockerd; `host` is its DOCKER_HOST address once `start` returned None."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tradeops-dockerd-", dir="/tmp"))  # short: socket paths
        self.host = f"unix://{self.root}/docker.sock"
        self.log = self.root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> str | None:
        """Start dockerd and wait until it answers; None when it does, else why it cannot."""
        binary = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/local/sbin:/usr/sbin:/sbin")
        if binary is None:
            return "no dockerd binary on PATH (`apt-get install docker.io`)"
        if os.geteuid() != 0:
            return f"dockerd needs root; these tests run as uid {os.geteuid()}"
        cmd = [
            binary,
            "--host",
            self.host,
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.root / "docker.pid"),
            *DOCKERD_FLAGS,
        ]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        import docker

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"dockerd exited with {self.proc.returncode}: {self._last_error()}"
            if (self.root / "docker.sock").exists():
                try:
                    client = docker.DockerClient(base_url=self.host, version="auto", timeout=5)
                    client.ping()
                    client.close()
                    return None
                except docker.errors.DockerException:
                    pass
            time.sleep(0.1)
        self.stop()
        return f"dockerd did not answer on {self.host} within {timeout:.0f}s: {self._last_error()}"

    def _last_error(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        errors = [ln for ln in lines if "level=error" in ln or "level=fatal" in ln or "failed to start" in ln]
        return (errors or lines or ["no output"])[-1]

    def stop(self) -> None:
        """Remove what the tests left (containers, and networks: dockerd keeps their host bridges
        otherwise), stop dockerd (it stops its containerd), unmount and remove its dirs."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                import docker

                client = docker.DockerClient(base_url=self.host, version="auto", timeout=30)
                for c in client.containers.list(all=True):
                    c.remove(force=True)
                client.networks.prune()
                client.close()
            except Exception:  # noqa: BLE001 - best effort: dockerd is stopped next anyway
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for mount in sorted(_mounts_under(self.root), reverse=True):  # e.g. exec/netns/default
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    return [f.split()[1] for f in lines if f.split()[1].startswith(f"{root}/")]
