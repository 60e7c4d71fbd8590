"""asyncio client of the rerank sidecar, on ``grpc.aio``.

`AsyncRerankClient` has the API of `RerankClient` with coroutines in place of
the calling methods. Both share every step but the RPC loop (`BaseClient`),
so requests, responses, pages, fail-open, retries and the circuit breaker
behave the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from ._blend import ScoreBlend
from ._core import (
    BaseClient,
    DocumentInput,
    Pooling,
    RerankPlan,
    RerankResult,
    Truncation,
    map_rpc_error,
    should_fail_open,
)
from ._errors import RerankError, RerankInputError
from ._proto.rerank.v1 import rerank_pb2
from ._reorder import as_page
from ._shadow import ShadowResult
from ._text import TextSpec

__all__ = ["AsyncRerankClient"]


class AsyncRerankClient(BaseClient):
    """asyncio client of one rerank sidecar target, or of several replicas.

    The arguments, defaults, exceptions and fail-open rules are those of
    `RerankClient`. Create it inside the event loop that uses it (``grpc.aio``
    binds a channel to the running loop) and close it with ``await close()``
    or ``async with``.

    Example::

        async with AsyncRerankClient("127.0.0.1:50051", timeout=0.5, fail_open=True) as client:
            page = await client.rerank_page(response, query, ["title", "text"])
    """

    def _open_channel(self, credentials: grpc.ChannelCredentials | None) -> Any:
        if credentials is None:
            return grpc.aio.insecure_channel(self.target, options=self._channel_options)
        return grpc.aio.secure_channel(self.target, credentials, options=self._channel_options)

    async def __aenter__(self) -> AsyncRerankClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel, cancelling calls in flight. Calls after this fail with RerankUnavailableError."""
        await self._channel.close()

    async def rerank(self, query: str, documents: Sequence[DocumentInput], top_n: int | None = None, *,
                     normalized: bool = False, truncation: Truncation | None = None,
                     pooling: Pooling | None = None, timeout: float | None = None) -> list[RerankResult]:
        """Score documents against the query; see `RerankClient.rerank`."""
        plan = self._plan_rerank(query, documents, top_n, normalized=normalized, truncation=truncation,
                                 pooling=pooling)
        results, _model = await self._send(plan, self._deadline(timeout))
        return results

    async def rerank_page(self, page: object, query: str, fields: TextSpec, *, normalized: bool = False,
                          truncation: Truncation | None = None, timeout: float | None = None,
                          fail_open: bool | None = None, blend: ScoreBlend | None = None,
                          min_score: float | None = None) -> dict[str, Any]:
        """Return a new search response with its hits sorted by rerank score; see `RerankClient.rerank_page`."""
        fail_open = self._resolve_fail_open(fail_open)
        plan = self._plan_page(page, query, fields, normalized=normalized, truncation=truncation, blend=blend,
                               min_score=min_score)
        try:
            results, model = await self._send(plan.rerank, self._deadline(timeout))
        except RerankError as error:
            if not should_fail_open(error, fail_open):
                raise
            return self._fallback_page(plan.source, error)
        return self._finish_page(plan, results, model, normalized=normalized, blend=blend, min_score=min_score)

    async def shadow_page(self, page: object, query: str, fields: TextSpec, *, top_k: int = 10,
                          normalized: bool = False, truncation: Truncation | None = None,
                          timeout: float | None = None) -> ShadowResult:
        """Rerank a page in shadow mode; see `RerankClient.shadow_page`."""
        source = as_page(page)
        try:
            reranked = await self.rerank_page(source, query, fields, normalized=normalized,
                                              truncation=truncation, timeout=timeout, fail_open=False)
        except RerankInputError:
            raise
        except RerankError as error:
            return self._shadow_failure(source, error)
        return self._shadow_result(source, reranked, top_k)

    async def check_health(self, timeout: float | None = None) -> bool:
        """Return True when the sidecar reports SERVING; see `RerankClient.check_health`."""
        request = health_pb2.HealthCheckRequest(service="")
        response = await self._call(self._health.Check, request, self._deadline(timeout), guarded=False)
        return response.status == health_pb2.HealthCheckResponse.SERVING

    async def model_info(self, timeout: float | None = None) -> rerank_pb2.ModelInfo:
        """Return the served model's description and the server's request limits."""
        request = rerank_pb2.GetModelInfoRequest()
        return await self._call(self._stub.GetModelInfo, request, self._deadline(timeout), guarded=False)

    async def _send(self, plan: RerankPlan | None, deadline: float) -> tuple[list[RerankResult], str]:
        if plan is None:
            return [], ""
        responses = [await self._call(self._stub.Rerank, request, deadline)
                     for _start, _stop, request in plan.requests]
        return self._collect(plan, responses)

    async def _call(self, method: Any, request: Any, deadline: float, *, guarded: bool = True) -> Any:
        """Send one RPC, retrying by the retry policy, within the deadline."""
        attempt = 1
        while True:
            timeout = self._start_attempt(deadline, guarded)
            try:
                response = await method(request, timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as error:
                delay = self._retry_delay(error, attempt, deadline, guarded)
                if delay is None:
                    raise map_rpc_error(error, self.target) from error
            else:
                if guarded:
                    self._record_breaker(failed=False)
                return response
            await asyncio.sleep(delay)
            attempt += 1
