"""Exit 0 when the rerank server's gRPC health service reports SERVING, else 1.

The container healthcheck runs this file directly. It imports only grpcio and
grpcio-health-checking, which the base install of rerank-sidecar brings, and no
project module, so it behaves the same with any server version.

Usage:
    python grpc_health_check.py [--address HOST:PORT] [--service NAME] [--timeout SECONDS]

The default address is 127.0.0.1 on RERANK_PORT (50051 when unset). Exit status 1
covers NOT_SERVING, an unknown service and an unreachable server, because Docker
reads any status other than 0 and 1 as reserved.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address",
        default=f"127.0.0.1:{os.environ.get('RERANK_PORT', '50051')}",
        help="HOST:PORT of the gRPC server (default: 127.0.0.1 on RERANK_PORT, else 50051)",
    )
    parser.add_argument(
        "--service",
        default="",
        help="service name to check. The empty default checks the server as a whole.",
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="deadline of the Check call in seconds")
    return parser.parse_args(argv)


def check(address: str, service: str, timeout: float) -> int:
    """Call Health.Check once and return the exit status: 0 for SERVING, else 1."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            message = f"health check on {address} failed: {error.code().name}: {error.details()}"
            print(message, file=sys.stderr)
            return 1

    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"health check on {address}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return check(args.address, args.service, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
