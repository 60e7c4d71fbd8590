"""Start and stop a real ``rerank-server`` process on 127.0.0.1 for tests and demos."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class SidecarError(RuntimeError):
    """The sidecar process did not start, or did not become SERVING in time."""


class SidecarProcess:
    """One ``rerank-server`` child process bound to 127.0.0.1 on a free port.

    Args:
        model: ``--model`` value: a local CrossEncoder folder or a hub id.
        args: Further server flags, for example ``["--batch-size", "2"]``.
        env: Extra environment variables for the child.
        startup_timeout_s: Time allowed to reach SERVING.
        credentials: Channel credentials for a server started with ``--tls-cert``
            (for example ``grpc.ssl_channel_credentials(ca_pem)``); the health
            check, :meth:`channel` and clients then use TLS. None: plain text.

    The process is stopped by its PID: :meth:`stop` sends SIGTERM and waits.
    """

    def __init__(self, model: str | os.PathLike[str], *, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, startup_timeout_s: float = 120.0,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.model = str(model)
        self.args = list(args)
        self.env = dict(env or {})
        self.startup_timeout_s = startup_timeout_s
        self.credentials = credentials
        self._folder = Path(tempfile.mkdtemp(prefix="rerank-sidecar-"))
        self.log_path = self._folder / "server.log"
        self.port_file = self._folder / "port"
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @property
    def target(self) -> str:
        if self.port is None:
            raise SidecarError("the sidecar has not started")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self, *, wait: bool = True) -> SidecarProcess:
        """Launch the process; with ``wait``, return once health reports SERVING."""
        command = [sys.executable, "-m", "rerank_server.main", "--model", self.model, "--host", "127.0.0.1",
                   "--port", "0", "--port-file", str(self.port_file), "--metrics-port", "0", *self.args]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **self.env}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_until_serving()
        return self

    def wait_until_serving(self) -> None:
        """Wait for the port file and a SERVING health check, bounded by the startup timeout."""
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SidecarError(
                    f"rerank-server exited with status {self.process.returncode} during startup; "
                    f"log tail:\n{self.log_tail()}")
            if self.port_file.exists() and self.port_file.read_text().strip():
                self.port = int(self.port_file.read_text())
                if self._serving():
                    return
            time.sleep(0.2)
        raise SidecarError(f"rerank-server not SERVING within {self.startup_timeout_s:.0f} s; "
                           f"log tail:\n{self.log_tail()}")

    def channel(self, options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
        """Open a channel to the sidecar: TLS with ``credentials`` when given, else plain text.

        The caller closes it.
        """
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=list(options))
        return grpc.secure_channel(self.target, self.credentials, options=list(options))

    def _serving(self) -> bool:
        with self.channel() as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                return False
        return response.status == health_pb2.HealthCheckResponse.SERVING

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; return its exit status."""
        if self.process is None:
            raise SidecarError("the sidecar has not started")
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Send SIGTERM to the PID and wait; SIGKILL if it outlives ``timeout``. Return the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> SidecarProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
