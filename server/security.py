"""Transport security of the gRPC port: TLS, mutual TLS and a bearer token.

TLS uses gRPC's dynamic server credentials, so certificate files replaced on disk
(for example by a certificate rotation job) are read again on the next handshake
without a restart. Connections already open keep the certificate they started with.

The bearer token is checked by a server interceptor on every method except the
standard health service: orchestrator probes (Kubernetes gRPC probes, most load
balancers) cannot send metadata, and health reveals nothing but the serving
state. Reflection needs the token like Rerank, because it is only a debugging aid.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from .config import ConfigError, ServerConfig
from .logs import request_id_from
from .metrics import ServerMetrics

logger = logging.getLogger(__name__)

HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"
AUTHORIZATION_KEY = "authorization"
_BEARER_PREFIX = "bearer "
# Methods counted under their own name in metrics; any other name is counted as
# "other", so callers cannot create unbounded label values.
_KNOWN_METHODS = ("Rerank", "GetModelInfo", "ServerReflectionInfo")


def read_token(config: ServerConfig) -> bytes | None:
    """Return the configured bearer token as bytes, or None when no token is configured.

    Raises:
        ConfigError: the token file cannot be read or its first line is empty.
    """
    if config.auth_token is not None:
        return config.auth_token.strip().encode("utf-8")
    if config.auth_token_file is None:
        return None
    try:
        text = config.auth_token_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"--auth-token-file {str(config.auth_token_file)!r} could not be read: {error}") from error
    lines = text.splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"--auth-token-file {str(config.auth_token_file)!r} is empty; its first line must "
                          "hold the token")
    return token.encode("utf-8")


@dataclass(frozen=True)
class _CertificateFiles:
    cert: Path
    key: Path
    client_ca: Path | None

    def stamp(self) -> tuple[tuple[int, int], ...]:
        """Return (mtime_ns, size) of each file; a change means the files were replaced."""
        paths = [self.cert, self.key] + ([self.client_ca] if self.client_ca is not None else [])
        stamps = []
        for path in paths:
            status = path.stat()
            stamps.append((status.st_mtime_ns, status.st_size))
        return tuple(stamps)

    def load(self) -> grpc.ServerCertificateConfiguration:
        cert = self.cert.read_bytes()
        key = self.key.read_bytes()
        client_ca = self.client_ca.read_bytes() if self.client_ca is not None else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=client_ca)


class _CertificateReloader:
    """Certificate fetcher for ``grpc.dynamic_ssl_server_credentials``.

    gRPC calls it before each handshake. It returns a new configuration when a
    file changed since the last load, else None, which keeps the current one.
    A file that cannot be read (a rotation half done) keeps the current
    configuration and is tried again on the next handshake.
    """

    def __init__(self, files: _CertificateFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._stamp = files.stamp()

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                stamp = self._files.stamp()
                if stamp == self._stamp:
                    return None
                configuration = self._files.load()
            except OSError as error:
                logger.warning("TLS certificate reload failed; keeping the loaded certificate error=%s", error)
                return None
            self._stamp = stamp
        logger.info("TLS certificate files changed; loaded them for new connections cert=%s", self._files.cert)
        return configuration


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """Build TLS server credentials from the config, or return None for a plaintext port.

    With ``--tls-client-ca`` the server requires a client certificate signed by
    that CA (mutual TLS); a client without one fails the handshake.

    Raises:
        ConfigError: a certificate file cannot be read.
    """
    if config.tls_cert is None or config.tls_key is None:
        return None
    files = _CertificateFiles(config.tls_cert, config.tls_key, config.tls_client_ca)
    try:
        initial = files.load()
        reloader = _CertificateReloader(files)
    except OSError as error:
        raise ConfigError(f"TLS file could not be read: {error}; check --tls-cert, --tls-key and "
                          "--tls-client-ca") from error
    return grpc.dynamic_ssl_server_credentials(initial, reloader,
                                               require_client_authentication=config.tls_client_ca is not None)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Reject calls without ``authorization: Bearer <token>`` with UNAUTHENTICATED.

    Health methods pass without a token. The comparison takes constant time, and
    neither the expected nor the received token is ever logged.
    """

    def __init__(self, token: bytes, metrics: ServerMetrics | None = None) -> None:
        if not token:
            raise ValueError("the bearer token must not be empty")
        self._expected = _BEARER_PREFIX.encode("ascii") + token
        self._metrics = metrics

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method or ""
        if method.startswith(HEALTH_METHOD_PREFIX):
            return continuation(handler_call_details)
        reason = self._check(handler_call_details.invocation_metadata or ())
        if reason is None:
            return continuation(handler_call_details)

        handler = continuation(handler_call_details)
        if handler is None:
            return None  # an unknown method: gRPC returns UNIMPLEMENTED either way
        name = _method_label(method)
        request_id = request_id_from(handler_call_details.invocation_metadata or ())
        logger.info("call rejected: %s bearer token method=%s request_id=%s", reason, name, request_id)
        if self._metrics is not None:
            self._metrics.requests.labels(method=name, code=grpc.StatusCode.UNAUTHENTICATED.name).inc()
            self._metrics.rejected.labels(reason=f"auth_{reason}").inc()
        return _denying_handler(handler, f"{reason} bearer token; send the metadata "
                                         "'authorization: Bearer <token>' with the server's token")

    def _check(self, metadata: object) -> str | None:
        """Return None when the token matches, else ``missing`` or ``invalid``."""
        received = _metadata_value(metadata, AUTHORIZATION_KEY)
        if received is None:
            return "missing"
        received_bytes = received.encode("utf-8", "replace") if isinstance(received, str) else bytes(received)
        # The scheme name is case-insensitive (RFC 9110); the token is compared as is.
        scheme, _, credentials = received_bytes.partition(b" ")
        candidate = scheme.lower() + b" " + credentials.strip()
        if hmac.compare_digest(candidate, self._expected):
            return None
        return "invalid"


def _metadata_value(metadata: object, key: str) -> str | None:
    for item_key, value in metadata:  # type: ignore[attr-defined]
        if item_key == key:
            return value
    return None


def _method_label(method: str) -> str:
    name = method.rsplit("/", 1)[-1]
    return name if name in _KNOWN_METHODS else "other"


def _denying_handler(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """Return a handler of the same kind as ``handler`` that aborts with UNAUTHENTICATED."""

    def deny(_request: object, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(deny, deserializer, serializer)

