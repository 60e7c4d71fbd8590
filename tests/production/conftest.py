"""Fixtures for production tests: real server processes, metrics scrapes, RSS and test certificates.

Every server here binds 127.0.0.1 and runs with ``--threads 1``: on a small shared
machine, several torch threads per process slow the tiny model down many times.
"""

from __future__ import annotations

import datetime
import ipaddress
import signal
import socket
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from rerank_client._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc

_MESSAGE_LIMIT = 80 * 1024 * 1024
CHANNEL_OPTIONS = [("grpc.max_send_message_length", _MESSAGE_LIMIT),
                   ("grpc.max_receive_message_length", _MESSAGE_LIMIT)]
BASE_ARGS = ("--threads", "1")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Return the resident set size of a process in KiB, from /proc."""
    return _proc_status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """Return the peak resident set size of a process in KiB, from /proc."""
    return _proc_status_kib(pid, "VmHWM")


def _proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/{pid}/status")


def scrape(metrics_port: int) -> dict[str, float]:
    """Read the Prometheus endpoint; return ``{'name{label="v"}': value}`` for every sample."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def request(query: str, texts: Sequence[str], **fields: object) -> rerank_pb2.RerankRequest:
    return rerank_pb2.RerankRequest(query=query, documents=[rerank_pb2.Document(text=text) for text in texts],
                                    **fields)


def scores_by_index(response: rerank_pb2.RerankResponse) -> dict[int, float]:
    return {result.index: result.score for result in response.results}


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """Run ``call`` and return the gRPC error it raises; fail the test if it succeeds."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


@dataclass
class Server:
    """A started server process with a channel and stubs on it."""

    process: object
    channel: grpc.Channel
    metrics_port: int | None

    @property
    def pid(self) -> int:
        return self.process.pid  # type: ignore[attr-defined]

    @property
    def stub(self) -> rerank_pb2_grpc.RerankerStub:
        return rerank_pb2_grpc.RerankerStub(self.channel)

    @property
    def health(self) -> health_pb2_grpc.HealthStub:
        return health_pb2_grpc.HealthStub(self.channel)

    def metrics(self) -> dict[str, float]:
        assert self.metrics_port is not None, "this server was started without a metrics port"
        return scrape(self.metrics_port)


@pytest.fixture(scope="session")
def start_server(tiny_model_dir: Path) -> Iterator[Callable[..., Server]]:
    """Start real ``rerank-server`` processes with the tiny model; all are stopped at session end.

    The factory takes extra flags, ``metrics=True`` to give the process a metrics
    port, and ``credentials`` for a TLS channel (health is then probed over TLS).
    """
    from rerank_harness.sidecar import SidecarProcess

    started: list[tuple[object, grpc.Channel]] = []

    def start(*args: str, metrics: bool = False, env: dict[str, str] | None = None,
              credentials: grpc.ChannelCredentials | None = None, model: str | Path | None = None) -> Server:
        metrics_port = free_port() if metrics else None
        flags = [*BASE_ARGS, *args]
        if metrics_port is not None:
            flags += ["--metrics-port", str(metrics_port)]
        process = SidecarProcess(model or tiny_model_dir, args=flags, env=env, credentials=credentials)
        process.start()
        channel = process.channel(CHANNEL_OPTIONS)
        started.append((process, channel))
        return Server(process, channel, metrics_port)

    yield start
    for process, channel in started:
        channel.close()
        if process.process.poll() is None:  # type: ignore[attr-defined]
            # Signal every process first, so their shutdowns overlap.
            process.process.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    for process, _channel in started:
        process.stop()


@pytest.fixture(scope="session")
def main_server(start_server: Callable[..., Server]) -> Server:
    """The shared server: default limits and batch size 32, metrics on, JSON log lines."""
    return start_server("--batch-size", "32", "--log-format", "json", metrics=True)


# -- test certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """PEM files of one test CA, a server certificate for 127.0.0.1 and a client certificate it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def channel_credentials(self, *, client_certificate: bool = False) -> grpc.ChannelCredentials:
        """Credentials that trust this CA, presenting this CA's client certificate when asked."""
        if client_certificate:
            return grpc.ssl_channel_credentials(self.ca.read_bytes(), self.client_key.read_bytes(),
                                                self.client_cert.read_bytes())
        return grpc.ssl_channel_credentials(self.ca.read_bytes())


@dataclass(frozen=True)
class Certificates:
    """Two unrelated test authorities: ``main`` for the servers, ``other`` for strangers and rotation."""

    main: Authority
    other: Authority


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Generate two CAs, each with a server and a client certificate valid for one day."""
    folder = tmp_path_factory.mktemp("certificates")
    return Certificates(main=_authority(folder, "main"), other=_authority(folder, "other"))


def _authority(folder: Path, name: str) -> Authority:
    ca_key, ca_cert = _self_signed_ca(f"rerank test CA {name}")
    server_key, server_cert = _signed_leaf("127.0.0.1", ca_key, ca_cert, server=True)
    client_key, client_cert = _signed_leaf(f"rerank test client {name}", ca_key, ca_cert, server=False)
    paths = Authority(ca=folder / f"{name}-ca.pem", server_cert=folder / f"{name}-server.pem",
                      server_key=folder / f"{name}-server.key", client_cert=folder / f"{name}-client.pem",
                      client_key=folder / f"{name}-client.key")
    paths.ca.write_bytes(_pem_cert(ca_cert))
    paths.server_cert.write_bytes(_pem_cert(server_cert))
    paths.server_key.write_bytes(_pem_key(server_key))
    paths.client_cert.write_bytes(_pem_cert(client_cert))
    paths.client_key.write_bytes(_pem_key(client_key))
    return paths


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _self_signed_ca(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _signed_leaf(name: str, ca_key, ca_cert, *, server: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.DNSName("localhost")]), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
