"""TLS, mutual TLS and the bearer token, with certificates generated at test time."""

from __future__ import annotations

import logging
import re
import shutil

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rerank_client._proto.rerank.v1 import rerank_pb2_grpc

from .conftest import CHANNEL_OPTIONS, request, rpc_error

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def secure_channels():
    """Open TLS channels to in-process servers; close them after the test."""
    channels = []

    def open_channel(running, credentials: grpc.ChannelCredentials) -> grpc.Channel:
        channel = grpc.secure_channel(running.address, credentials, options=CHANNEL_OPTIONS)
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        channel.close()


def _rerank(channel: grpc.Channel, metadata=None):
    return rerank_pb2_grpc.RerankerStub(channel).Rerank(request("kettle", ["descale it", "museum"]), timeout=30,
                                                        metadata=metadata)


def _tls_settings(authority, *, mutual: bool = False) -> dict[str, object]:
    settings: dict[str, object] = {"tls_cert": authority.server_cert, "tls_key": authority.server_key}
    if mutual:
        settings["tls_client_ca"] = authority.ca
    return settings


# -- TLS and mutual TLS ------------------------------------------------------------------------------


def test_tls_serves_client_trusting_ca(make_server, secure_channels, certificates):
    running = make_server(**_tls_settings(certificates.main))
    response = _rerank(secure_channels(running, certificates.main.channel_credentials()))
    assert len(response.results) == 2


def test_tls_rejects_plaintext_client(make_server, certificates):
    running = make_server(**_tls_settings(certificates.main))
    with grpc.insecure_channel(running.address) as channel:
        error = rpc_error(lambda: _rerank(channel))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_tls_rejects_client_trusting_other_ca(make_server, secure_channels, certificates):
    running = make_server(**_tls_settings(certificates.main))
    error = rpc_error(lambda: _rerank(secure_channels(running, certificates.other.channel_credentials())))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_serves_client_with_certificate(make_server, secure_channels, certificates):
    running = make_server(**_tls_settings(certificates.main, mutual=True))
    credentials = certificates.main.channel_credentials(client_certificate=True)
    assert len(_rerank(secure_channels(running, credentials)).results) == 2


def test_mutual_tls_rejects_client_without_certificate(make_server, secure_channels, certificates):
    running = make_server(**_tls_settings(certificates.main, mutual=True))
    error = rpc_error(lambda: _rerank(secure_channels(running, certificates.main.channel_credentials())))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_rejects_certificate_of_other_ca(make_server, secure_channels, certificates):
    running = make_server(**_tls_settings(certificates.main, mutual=True))
    stranger = grpc.ssl_channel_credentials(certificates.main.ca.read_bytes(),
                                            certificates.other.client_key.read_bytes(),
                                            certificates.other.client_cert.read_bytes())
    error = rpc_error(lambda: _rerank(secure_channels(running, stranger)))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_tls_certificate_files_reloaded(make_server, secure_channels, certificates, tmp_path):
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(certificates.main.server_cert, cert)
    shutil.copy(certificates.main.server_key, key)
    running = make_server(tls_cert=cert, tls_key=key)
    assert len(_rerank(secure_channels(running, certificates.main.channel_credentials())).results) == 2

    # Rotate to a certificate of the other CA, as a renewal job would.
    shutil.copy(certificates.other.server_cert, cert)
    shutil.copy(certificates.other.server_key, key)

    assert len(_rerank(secure_channels(running, certificates.other.channel_credentials())).results) == 2
    error = rpc_error(lambda: _rerank(secure_channels(running, certificates.main.channel_credentials())))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


# -- bearer token ------------------------------------------------------------------------------------


@pytest.fixture
def token_server(make_server, certificates):
    return make_server(auth_token=TOKEN, **_tls_settings(certificates.main))


@pytest.fixture
def token_channel(token_server, secure_channels, certificates):
    return secure_channels(token_server, certificates.main.channel_credentials())


def test_token_missing_is_unauthenticated(token_channel):
    error = rpc_error(lambda: _rerank(token_channel))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == ("missing bearer token; send the metadata 'authorization: Bearer <token>' "
                               "with the server's token")


@pytest.mark.parametrize("value", [f"Bearer {TOKEN}x", "Bearer", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}"])
def test_token_wrong_is_unauthenticated(token_channel, value):
    error = rpc_error(lambda: _rerank(token_channel, metadata=(("authorization", value),)))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert error.details().startswith("invalid bearer token;")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_token_valid_is_served(token_channel, scheme):
    response = _rerank(token_channel, metadata=(("authorization", f"{scheme} {TOKEN}"),))
    assert len(response.results) == 2


def test_token_not_needed_for_health(token_channel):
    response = health_pb2_grpc.HealthStub(token_channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_token_needed_for_reflection(token_channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(token_channel)

    def list_services(metadata=None):
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                              timeout=10, metadata=metadata)
        return [service.name for response in responses for service in response.list_services_response.service]

    error = rpc_error(list_services)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "rerank.v1.Reranker" in list_services(metadata=(("authorization", f"Bearer {TOKEN}"),))


def test_token_rejection_counted_and_never_logged(token_server, token_channel, caplog):
    caplog.set_level(logging.DEBUG)
    for value in (None, f"Bearer {TOKEN}-wrong"):
        metadata = None if value is None else (("authorization", value), ("x-request-id", "req-7"))
        rpc_error(lambda: _rerank(token_channel, metadata=metadata))
    _rerank(token_channel, metadata=(("authorization", f"Bearer {TOKEN}"),))

    registry = token_server.metrics.registry
    assert registry.get_sample_value("rerank_requests_total", {"method": "Rerank", "code": "UNAUTHENTICATED"}) == 2
    assert registry.get_sample_value("rerank_rejected_requests_total", {"reason": "auth_missing"}) == 1
    assert registry.get_sample_value("rerank_rejected_requests_total", {"reason": "auth_invalid"}) == 1
    assert "call rejected: invalid bearer token method=Rerank request_id=req-7" in caplog.text
    assert TOKEN not in caplog.text


# -- a real process configured by flags and environment ----------------------------------------------


def test_process_with_tls_and_token_file(start_server, certificates, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    server = start_server("--tls-cert", str(certificates.main.server_cert),
                          "--tls-key", str(certificates.main.server_key),
                          env={"RERANK_AUTH_TOKEN_FILE": str(token_file)},
                          credentials=certificates.main.channel_credentials())

    error = rpc_error(lambda: _rerank(server.channel))
    response = _rerank(server.channel, metadata=(("authorization", f"Bearer {TOKEN}"),))

    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert len(response.results) == 2
    log = server.process.log_text()
    assert re.search(r"listening address=127\.0\.0\.1:\d+ tls=True mutual_tls=False bearer_token=True", log)
    assert TOKEN not in log


# -- settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--tls-cert", "a.pem"], {}, "--tls-cert and --tls-key must be given together"),
        (["--tls-client-ca", "ca.pem"], {},
         "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS runs over TLS"),
        (["--auth-token-file", "token"], {"RERANK_AUTH_TOKEN": "x"},
         "set one of --auth-token-file and RERANK_AUTH_TOKEN, not both"),
        ([], {"RERANK_AUTH_TOKEN": "  "}, "RERANK_AUTH_TOKEN is empty; unset it or give a token"),
        (["--workers", "8", "--max-queue-requests", "5"], {},
         "--max-queue-requests 5 is over --workers 8 minus 4: each admitted request holds a handler thread, "
         "and 4 threads stay free for health checks; lower --max-queue-requests or raise --workers"),
    ],
)
def test_security_settings_checked(argv, environ, message):
    from rerank_server.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        parse_config(argv, environ)


def test_token_redacted_in_startup_settings():
    from rerank_server.config import parse_config

    config = parse_config([], {"RERANK_AUTH_TOKEN": TOKEN})
    assert config.auth_token == TOKEN
    assert config.redacted()["auth_token"] == "<redacted>"
    assert TOKEN not in repr(config)


def test_token_file_empty_rejected(tmp_path):
    from rerank_server.config import ConfigError, parse_config
    from rerank_server.security import read_token

    token_file = tmp_path / "token"
    token_file.write_text("\n")
    config = parse_config(["--auth-token-file", str(token_file)], {})
    with pytest.raises(ConfigError, match="is empty; its first line must hold the token"):
        read_token(config)
