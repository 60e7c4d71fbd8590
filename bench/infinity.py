"""infinity-emb, started from its own virtual environment, as a comparison reranker.

infinity-emb 0.0.78 pins torch, transformers and sentence-transformers versions
that differ from this project's, so it lives in a separate virtual environment::

    python3 -m venv /tmp/infinity-venv
    /tmp/infinity-venv/bin/pip install 'infinity-emb[all]==0.0.78'

It serves the same model folder on 127.0.0.1 with its defaults (torch engine on
the CPU, batches of up to 32), and pages go to its Cohere-style ``/rerank``
endpoint with ``raw_scores`` so its scores compare with the sidecar's.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .load import Sender
from .workload import Page

INFINITY_VERSION = "0.0.78"


class InfinityError(RuntimeError):
    """infinity-emb is not installed, did not start, or returned an error."""


def find_executable(venv: Path) -> Path:
    """Return ``venv/bin/infinity_emb`` or raise :class:`InfinityError` with the install command."""
    executable = venv / "bin" / "infinity_emb"
    if not executable.exists():
        raise InfinityError(
            f"{executable} not found; create it with: python3 -m venv {venv} && "
            f"{venv}/bin/pip install 'infinity-emb[all]=={INFINITY_VERSION}'")
    return executable


class InfinityProcess:
    """One ``infinity_emb v2`` process on 127.0.0.1, stopped by its PID."""

    def __init__(self, executable: Path, model: Path, *, startup_timeout_s: float = 300.0) -> None:
        self.executable = executable
        self.model = model
        self.startup_timeout_s = startup_timeout_s
        self.port = _free_port()
        self.log_path = Path(tempfile.mkdtemp(prefix="bench-infinity-")) / "infinity.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    def start(self) -> InfinityProcess:
        """Launch the process and wait until ``/health`` returns HTTP 200, bounded by the startup timeout."""
        command = [str(self.executable), "v2", "--model-id", str(self.model), "--engine", "torch",
                   "--device", "cpu", "--host", "127.0.0.1", "--port", str(self.port)]
        # Telemetry off and hub lookups off: the run must reach nothing beyond 127.0.0.1.
        env = {**os.environ, "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = started + self.startup_timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise InfinityError(f"infinity_emb exited with status {self.process.returncode} during startup; "
                                    f"log tail:\n{self.log_tail()}")
            if self._healthy():
                self.startup_s = time.perf_counter() - started
                return self
            time.sleep(0.5)
        self.stop()
        raise InfinityError(f"infinity_emb not healthy within {self.startup_timeout_s:.0f} s; "
                            f"log tail:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def make_sender(self, timeout_s: float = 600.0) -> Sender:
        """Return a sender with its own keep-alive HTTP connection, for one client thread."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)

        def send(page: Page) -> Sequence[float]:
            body = json.dumps({"query": page.query, "documents": page.documents, "raw_scores": True,
                               "return_documents": False})
            connection.request("POST", "/rerank", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise InfinityError(f"POST /rerank returned HTTP {response.status}: {payload[:300]!r}")
            scores = [0.0] * page.size
            for result in json.loads(payload)["results"]:
                scores[result["index"]] = float(result["relevance_score"])
            return scores

        return send

    def _healthy(self) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", "/health")
            healthy = connection.getresponse().status == 200
            connection.close()
            return healthy
        except OSError:
            return False


def _free_port() -> int:
    # A small race remains: another process could take the port before infinity binds it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
