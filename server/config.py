"""Server configuration: one frozen dataclass, filled from flags with environment twins.

Every flag ``--some-flag`` has the twin ``RERANK_SOME_FLAG``. A flag given on the
command line wins over its environment variable, which wins over the default.
Defaults are written once, in :class:`ServerConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ENV_PREFIX = "RERANK_"
DEFAULT_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"
TRUNCATIONS = ("document_first", "longest_first")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("torch", "onnx")
MODEL_KINDS = ("auto", "cross-encoder", "bi-encoder")
ONNX_QUANTIZATIONS = ("none", "int8")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MiB = 1024 * 1024
# Handler threads that admitted Rerank requests can never take, so health checks
# and GetModelInfo are still served while the queue is full.
RESERVED_WORKERS = 4


class ConfigError(ValueError):
    """A flag or environment variable has an invalid value."""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Settings of one server process. See ``rerank-server --help`` for each field."""

    model: str = DEFAULT_MODEL
    model_kind: str = "auto"
    backend: str = "torch"
    device: str = "auto"
    threads: int | None = None
    max_length: int | None = None
    truncation: str = "document_first"

    host: str = "127.0.0.1"
    port: int = 50051
    port_file: Path | None = None
    metrics_port: int = 9464
    workers: int = 128
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token_file: Path | None = None
    # Read from RERANK_AUTH_TOKEN only, never from a flag, so it stays out of `ps` output.
    auth_token: str | None = dataclasses.field(default=None, repr=False)

    batch_size: int = 64
    max_batch_tokens: int = 4096
    max_queue_delay_ms: float = 2.0
    max_queue_requests: int = 120
    max_queue_tokens: int = 4_000_000

    max_documents: int = 1000
    max_document_bytes: int = 2 * MiB
    max_request_bytes: int = 64 * MiB
    max_query_bytes: int = 16 * 1024
    max_document_chars: int = 20_000

    score_cache_size: int = 0
    embedding_cache_size: int = 50_000
    onnx_quantize: str = "none"
    onnx_cache_dir: Path | None = None
    grace_period_s: float = 10.0
    warmup: bool = True
    log_level: str = "INFO"
    log_format: str = "text"

    def __post_init__(self) -> None:
        _check_choice("--truncation", self.truncation, TRUNCATIONS)
        _check_choice("--backend", self.backend, BACKENDS)
        _check_choice("--model-kind", self.model_kind, MODEL_KINDS)
        _check_choice("--log-format", self.log_format, LOG_FORMATS)
        _check_choice("--log-level", self.log_level.upper(), LOG_LEVELS)
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device {self.device!r} is invalid; expected one of auto, cpu, cuda, cuda:N")
        _check_range("--port", self.port, 0, 65535)
        _check_range("--metrics-port", self.metrics_port, 0, 65535)
        _check_range("--workers", self.workers, 1, 4096)
        _check_range("--batch-size", self.batch_size, 1, 65536)
        _check_range("--max-batch-tokens", self.max_batch_tokens, 1, 1 << 30)
        _check_range("--max-queue-requests", self.max_queue_requests, 1, 1 << 20)
        _check_range("--max-queue-tokens", self.max_queue_tokens, 1, 1 << 40)
        _check_range("--max-documents", self.max_documents, 1, 1 << 20)
        _check_range("--max-document-bytes", self.max_document_bytes, 1, 1 << 31)
        _check_range("--max-request-bytes", self.max_request_bytes, 1024, (1 << 31) - 1)
        _check_range("--max-query-bytes", self.max_query_bytes, 1, 1 << 31)
        _check_range("--max-document-chars", self.max_document_chars, 1, 1 << 31)
        _check_range("--score-cache-size", self.score_cache_size, 0, 1 << 31)
        _check_range("--embedding-cache-size", self.embedding_cache_size, 0, 1 << 31)
        _check_choice("--onnx-quantize", self.onnx_quantize, ONNX_QUANTIZATIONS)
        if self.threads is not None:
            _check_range("--threads", self.threads, 1, 1024)
        if self.max_length is not None:
            _check_range("--max-length", self.max_length, 8, 1 << 20)
        if self.max_queue_delay_ms < 0:
            raise ConfigError(f"--max-queue-delay-ms {self.max_queue_delay_ms} is invalid; expected >= 0")
        if self.grace_period_s < 0:
            raise ConfigError(f"--grace-period {self.grace_period_s} is invalid; expected >= 0 seconds")

        self._check_capacity()
        self._check_security()

    def _check_capacity(self) -> None:
        if self.max_queue_requests > self.workers - RESERVED_WORKERS:
            raise ConfigError(
                f"--max-queue-requests {self.max_queue_requests} is over --workers {self.workers} minus "
                f"{RESERVED_WORKERS}: each admitted request holds a handler thread, and {RESERVED_WORKERS} "
                "threads stay free for health checks; lower --max-queue-requests or raise --workers")

    def _check_security(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS runs over TLS")
        if self.auth_token_file is not None and self.auth_token is not None:
            raise ConfigError(f"set one of --auth-token-file and {ENV_PREFIX}AUTH_TOKEN, not both")
        if self.auth_token is not None and not self.auth_token.strip():
            raise ConfigError(f"{ENV_PREFIX}AUTH_TOKEN is empty; unset it or give a token")

    def redacted(self) -> dict[str, object]:
        """Return the settings as a dict for the startup log line, with the token masked."""
        settings = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if settings["auth_token"] is not None:
            settings["auth_token"] = "<redacted>"
        return settings


def _check_choice(flag: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{flag} {value!r} is invalid; expected one of {', '.join(choices)}")


def _check_range(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{flag} {value} is out of range; expected {low} to {high}")


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("", "none", "auto") else int(text)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; expected true or false")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``rerank-server`` argument parser; each flag's env twin is in its help."""
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="rerank-server",
        description="gRPC rerank sidecar: scores (query, document) pairs with a cross-encoder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    group: argparse._ArgumentGroup | argparse.ArgumentParser = parser

    def add(flag: str, help_text: str, **kwargs: object) -> None:
        env = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
        group.add_argument(flag, help=f"{help_text} [env {env}]", **kwargs)  # type: ignore[arg-type]

    model = parser.add_argument_group("model")
    group = model
    add("--model", "local CrossEncoder folder or Hugging Face hub id", default=defaults.model)
    add("--model-kind", "cross-encoder scores each pair jointly; bi-encoder scores by cosine similarity "
        "of embeddings; auto reads the model folder", choices=MODEL_KINDS, default=defaults.model_kind)
    add("--backend", "inference engine", choices=BACKENDS, default=defaults.backend)
    add("--device", "auto picks cuda when a GPU is visible, else cpu; or cpu, cuda, cuda:N",
        default=defaults.device)
    add("--threads", "CPU threads for inference (torch intra-op threads); default: all cores",
        type=_optional_int, default=defaults.threads)
    add("--max-length", "max tokens of one pair, special tokens included; default: the model's own, "
        "clamped to its position table", type=_optional_int, default=defaults.max_length)
    add("--truncation", "how over-length pairs are cut when a request does not say: document_first keeps "
        "the query whole, longest_first cuts as sentence-transformers does",
        choices=TRUNCATIONS, default=defaults.truncation)

    network = parser.add_argument_group("network")
    group = network
    add("--host", "address to bind; 0.0.0.0 exposes the port beyond this machine", default=defaults.host)
    add("--port", "gRPC port; 0 picks a free one (see --port-file)", type=int, default=defaults.port)
    add("--port-file", "write the bound gRPC port to this file once serving", type=Path,
        default=defaults.port_file)
    add("--metrics-port", "Prometheus metrics port on the same host; 0 disables", type=int,
        default=defaults.metrics_port)
    add("--workers", "gRPC handler threads; Rerank calls may use all but 4 of them, which stay free for "
        "health checks", type=int, default=defaults.workers)

    security = parser.add_argument_group(
        "security",
        f"TLS needs --tls-cert and --tls-key; --tls-client-ca adds mutual TLS. A bearer token (from "
        f"--auth-token-file, or the value of {ENV_PREFIX}AUTH_TOKEN) makes every call except health checks "
        "send the metadata 'authorization: Bearer <token>'. Changed certificate files are read again on the "
        "next TLS handshake.",
    )
    group = security
    add("--tls-cert", "PEM server certificate chain", type=Path, default=defaults.tls_cert)
    add("--tls-key", "PEM private key of --tls-cert", type=Path, default=defaults.tls_key)
    add("--tls-client-ca", "PEM CA bundle; when set, clients must present a certificate it signed",
        type=Path, default=defaults.tls_client_ca)
    add("--auth-token-file", "file whose first line is the bearer token clients must send", type=Path,
        default=defaults.auth_token_file)

    batching = parser.add_argument_group(
        "batching",
        "Pairs from all requests share model batches. Larger batches raise throughput and the latency "
        "of each request; a longer queue delay fills batches better at low load but adds to every request.",
    )
    group = batching
    add("--batch-size", "max pairs in one model batch", type=int, default=defaults.batch_size)
    add("--max-batch-tokens", "max padded tokens (pairs x longest pair) in one model batch", type=int,
        default=defaults.max_batch_tokens)
    add("--max-queue-delay-ms", "max time the oldest waiting pair waits for a batch to fill, in ms",
        type=float, default=defaults.max_queue_delay_ms)
    add("--max-queue-requests", "Rerank requests admitted at once (tokenizing, queued or being scored); "
        "past it new ones get RESOURCE_EXHAUSTED before any work is done. At most --workers minus 4",
        type=int, default=defaults.max_queue_requests)
    add("--max-queue-tokens", "tokens waiting beyond which new requests get RESOURCE_EXHAUSTED", type=int,
        default=defaults.max_queue_tokens)

    limits = parser.add_argument_group("request limits (violations get INVALID_ARGUMENT)")
    group = limits
    add("--max-documents", "max documents in one request", type=int, default=defaults.max_documents)
    add("--max-document-bytes", "max UTF-8 bytes of one document", type=int,
        default=defaults.max_document_bytes)
    add("--max-request-bytes", "max bytes of one serialized request; also the gRPC message limit",
        type=int, default=defaults.max_request_bytes)
    add("--max-query-bytes", "max UTF-8 bytes of the query", type=int, default=defaults.max_query_bytes)
    add("--max-document-chars", "characters of a document kept before tokenization; enough to fill "
        "the max length, so longer texts do not slow tokenization", type=int,
        default=defaults.max_document_chars)

    runtime = parser.add_argument_group("runtime")
    group = runtime
    add("--score-cache-size", "scores kept in an LRU cache keyed by query and document; 0 disables",
        type=int, default=defaults.score_cache_size)
    add("--embedding-cache-size", "document embeddings a bi-encoder keeps in an LRU cache keyed by text; "
        "0 disables", type=int, default=defaults.embedding_cache_size)
    add("--onnx-quantize", "with --backend onnx: int8 serves a dynamically quantized copy (faster on CPUs "
        "with VNNI, and it can reorder near-tied documents: check with python -m bench.fidelity)",
        choices=ONNX_QUANTIZATIONS, default=defaults.onnx_quantize)
    add("--onnx-cache-dir", "folder for ONNX exports of models whose own folder is read-only or a hub id; "
        "default ~/.cache/rerank-sidecar/onnx", type=Path, default=defaults.onnx_cache_dir)
    add("--grace-period", "seconds in-flight requests get to finish after SIGTERM", type=float,
        default=defaults.grace_period_s, dest="grace_period_s")
    add("--warmup", "run a few batches before reporting SERVING", type=_bool, default=defaults.warmup)
    add("--log-level", "DEBUG logs one line per request and batch", default=defaults.log_level)
    add("--log-format", "text or one JSON object per line", choices=LOG_FORMATS,
        default=defaults.log_format)
    return parser


def parse_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Build a :class:`ServerConfig` from flags, environment variables and defaults.

    Raises:
        ConfigError: a value is invalid; the message names the flag.
    """
    environ = os.environ if environ is None else environ
    parser = build_parser()
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = action.option_strings[0]
        env = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
        if env in environ:
            raw = environ[env]
            try:
                action.default = action.type(raw) if action.type else raw  # type: ignore[operator]
            except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
                raise ConfigError(f"{env}={raw!r} is invalid for {flag}: {error}") from error
            if action.choices is not None and action.default not in action.choices:
                raise ConfigError(f"{env}={raw!r} is invalid; expected one of {', '.join(action.choices)}")
    namespace = parser.parse_args(argv)
    token = environ.get(ENV_PREFIX + "AUTH_TOKEN")
    return ServerConfig(**vars(namespace), auth_token=token)
