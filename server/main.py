"""``rerank-server`` entry point: flags, logging, startup, signals and drain.

Lifecycle: the gRPC port opens first with health NOT_SERVING, so orchestrators can
probe it while the model loads. After loading and warm-up, health turns SERVING.
On SIGTERM or SIGINT, health turns NOT_SERVING, new calls get UNAVAILABLE, calls
in flight get ``--grace-period`` seconds to finish, and the process exits 0.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rerank_client._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc

from .batcher import Batcher
from .cache import ScoreCache
from .config import ConfigError, ServerConfig, parse_config
from .engine import Engine, Limits
from .health import HealthState
from .loading import load_model
from .logs import RepeatFilter, configure_logging
from .metrics import ServerMetrics
from .model import CrossEncoderModel, ModelLoadError
from .security import BearerTokenInterceptor, read_token, server_credentials
from .service import RerankerService

logger = logging.getLogger("rerank_server")

# gRPC checks message sizes before our handler runs; the slack lets a request
# slightly over --max-request-bytes reach validation, which names the limit.
_MESSAGE_SLACK_BYTES = 1024 * 1024
# gRPC queues calls that wait for a free handler thread without bound. Past
# this many calls per worker, in progress or waiting, it returns
# RESOURCE_EXHAUSTED itself, so a flood cannot grow memory.
_CONCURRENT_RPCS_PER_WORKER = 2
# The drain closes the transport only after this long with no call arriving or
# finishing, so callers still sending get UNAVAILABLE in band rather than CANCELLED
# from gRPC core.
DRAIN_QUIET_S = 0.25
EXIT_CONFIG_ERROR = 2
EXIT_MODEL_ERROR = 3
# oneDNN, torch's CPU kernel library, caches a JIT-compiled primitive per input
# shape (oneDNN developer guide, "Primitive Cache"). Model batches vary in pair
# count and length, so the cache kept growing server RSS under bench/soak.py load.
# 0 disables it; on the 2-core test machine scoring took the same time without it.
ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


@dataclass
class RunningServer:
    """A started gRPC server and the parts a test or ``main`` needs to drive it."""

    config: ServerConfig
    server: grpc.Server
    port: int
    health: HealthState
    service: RerankerService
    metrics: ServerMetrics
    engine: Engine | None = None
    metrics_port: int | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return f"{_host_for_address(self.config.host)}:{self.port}"

    def load(self, model: CrossEncoderModel | None = None) -> Engine:
        """Load (or adopt) the model, warm it up, start batching and report SERVING."""
        config = self.config
        if model is None:
            started = time.perf_counter()
            model = load_model(config)
            logger.info("model loaded model=%s kind=%s backend=%s device=%s max_length=%d activation=%s "
                        "seconds=%.2f", model.name, model.model_kind, model.backend, model.device,
                        model.max_length, model.activation, time.perf_counter() - started)
        if config.warmup:
            logger.info("model warmed up seconds=%.2f", model.warm_up())
        batcher = Batcher(
            model, max_batch_pairs=config.batch_size, max_batch_tokens=config.max_batch_tokens,
            max_queue_delay_s=config.max_queue_delay_ms / 1000, max_queue_requests=config.max_queue_requests,
            max_queue_tokens=config.max_queue_tokens, metrics=self.metrics,
        )
        batcher.start()
        cache = ScoreCache(config.score_cache_size, model.name) if config.score_cache_size else None
        limits = Limits(max_documents=config.max_documents, max_document_bytes=config.max_document_bytes,
                        max_request_bytes=config.max_request_bytes, max_query_bytes=config.max_query_bytes,
                        max_document_chars=config.max_document_chars)
        if cache is not None:
            self.metrics.cache_entries.set_function(lambda: len(cache))
        self.engine = Engine(model, batcher, limits=limits, metrics=self.metrics, cache=cache)
        self.service.attach(self.engine)
        self.health.set_serving()
        self.metrics.serving.set(1)
        logger.info("serving model=%s address=%s", model.name, self.address)
        return self.engine

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop: NOT_SERVING, new calls UNAVAILABLE, in-flight calls get ``grace`` seconds.

        Safe to call more than once; later calls return at once.
        """
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_period_s if grace is None else grace
        started = time.monotonic()
        logger.info("draining grace_seconds=%.1f in_flight=%d", grace, self.service.in_flight)
        # Refuse new calls before health changes, so a caller that sees NOT_SERVING
        # can rely on new calls getting UNAVAILABLE.
        self.service.stop_accepting()
        self.health.set_not_serving()
        self.metrics.serving.set(0)
        # Keep the transport open until the admitted calls finish and callers stop
        # sending. Meanwhile the service returns UNAVAILABLE in band. gRPC core cancels
        # calls that reached it but no handler yet when its shutdown starts (the caller
        # sees CANCELLED), so the shutdown waits for a quiet moment, within the grace.
        deadline = started + grace
        if not self.service.wait_drained(deadline - time.monotonic(), quiet_s=DRAIN_QUIET_S):
            in_flight = self.service.in_flight
            if in_flight:
                logger.warning("grace period over; cancelling the calls in flight in_flight=%d", in_flight)
            else:
                logger.warning("grace period over while callers kept sending; closing the port, and calls "
                               "arriving now may get CANCELLED")
        self.server.stop(max(0.0, deadline - time.monotonic())).wait()
        if self.engine is not None:
            self.engine.batcher.stop(timeout=grace + 5)
        self.metrics.close()
        logger.info("stopped seconds=%.2f unfinished_calls=%d", time.monotonic() - started,
                    self.service.in_flight)


def create_server(config: ServerConfig) -> RunningServer:
    """Start the gRPC server with health NOT_SERVING and no model; call ``load`` next.

    Returns the running server; its ``port`` is the bound port (useful with port 0).
    """
    credentials = server_credentials(config)
    token = read_token(config)
    _warn_about_exposure(config, tls=credentials is not None, token=token is not None)
    metrics = ServerMetrics()
    health = HealthState()
    service = RerankerService(metrics=metrics, default_truncation=config.truncation, model_name=config.model,
                              max_in_flight=config.max_queue_requests)
    message_limit = config.max_request_bytes + _MESSAGE_SLACK_BYTES
    interceptors = [BearerTokenInterceptor(token, metrics)] if token is not None else []
    server = grpc.server(
        ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rerank-rpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", message_limit),
            ("grpc.max_send_message_length", message_limit),
            # Without this, a second server could bind the same port and split traffic silently.
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=config.workers * _CONCURRENT_RPCS_PER_WORKER,
    )
    rerank_pb2_grpc.add_RerankerServicer_to_server(service, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    reflection.enable_server_reflection(
        (rerank_pb2.DESCRIPTOR.services_by_name["Reranker"].full_name,
         health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )
    address = f"{_host_for_address(config.host)}:{config.port}"
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"could not bind {config.host}:{config.port}; is the port in use?")
    server.start()
    running = RunningServer(config=config, server=server, port=port, health=health, service=service,
                            metrics=metrics)
    if config.metrics_port:
        running.metrics_port = metrics.serve(config.host, config.metrics_port)
    logger.info("listening address=%s tls=%s mutual_tls=%s bearer_token=%s health=NOT_SERVING", running.address,
                credentials is not None, config.tls_client_ca is not None, token is not None)
    return running


def _warn_about_exposure(config: ServerConfig, *, tls: bool, token: bool) -> None:
    """Log a WARNING for settings that expose traffic or the token beyond this machine."""
    if tls:
        return
    if token:
        logger.warning("a bearer token is set without TLS: it crosses the network in plain text; "
                       "add --tls-cert and --tls-key")
    if not _is_loopback(config.host):
        logger.warning("serving plaintext gRPC on a non-loopback address host=%s; add --tls-cert and "
                       "--tls-key, or keep the port inside a private network", config.host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_for_address(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; return the process exit status."""
    try:
        config = parse_config(argv)
    except ConfigError as error:
        print(f"rerank-server: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    repeats = configure_logging(config.log_level, config.log_format)
    # Set before torch loads, which happens in load(); an operator's own value wins.
    os.environ.setdefault(ONEDNN_CACHE_ENV, "0")
    logger.info("starting config=%s %s=%s", config.redacted(), ONEDNN_CACHE_ENV, os.environ[ONEDNN_CACHE_ENV])

    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("signal received signal=%s", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    try:
        running = create_server(config)
    except (OSError, ConfigError) as error:
        logger.error("could not start: %s", error)
        return EXIT_CONFIG_ERROR
    try:
        running.load()
    except (ModelLoadError, ConfigError) as error:
        logger.error("model could not be loaded: %s", error)
        running.stop(grace=0)
        return EXIT_MODEL_ERROR
    if config.port_file is not None:
        config.port_file.write_text(f"{running.port}\n")

    while not stop_requested.wait(timeout=1.0):
        pass
    running.stop()
    _report_suppressed(repeats)
    return 0


def _report_suppressed(repeats: RepeatFilter) -> None:
    suppressed, templates = repeats.summary()
    if suppressed:
        logger.info("log repeats suppressed since their last line count=%d messages=%d", suppressed, templates)


if __name__ == "__main__":
    sys.exit(main())
