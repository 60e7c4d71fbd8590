"""Standard grpc.health.v1 service, NOT_SERVING until warm-up ends and again while draining."""

from __future__ import annotations

import logging

from grpc_health.v1 import health, health_pb2

logger = logging.getLogger(__name__)

RERANKER_SERVICE = "rerank.v1.Reranker"


class HealthState:
    """Sets the overall status ("") and the Reranker service's status together."""

    def __init__(self) -> None:
        self.servicer = health.HealthServicer(experimental_non_blocking=True)
        self._serving = False
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    @property
    def serving(self) -> bool:
        return self._serving

    def set_serving(self) -> None:
        self._serving = True
        self._set(health_pb2.HealthCheckResponse.SERVING)

    def set_not_serving(self) -> None:
        self._serving = False
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    def _set(self, status: int) -> None:
        for service in ("", RERANKER_SERVICE):
            self.servicer.set(service, status)
