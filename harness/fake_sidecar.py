"""A fake rerank sidecar for fault injection in client tests. Not a model server.

It speaks rerank.v1 over real gRPC on 127.0.0.1, records every request it
receives, and answers from a script: fixed results, a status code, a delay, or
by default a deterministic stand-in score (the number of query words found in
the document, minus a millionth of its index). Use the real ``rerank-server``
(see :mod:`rerank_harness.sidecar`) for anything about scores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from rerank_client._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc

ResultsScript = Callable[[rerank_pb2.RerankRequest], Sequence[tuple[int, float | None]]]


def word_overlap_results(request: rerank_pb2.RerankRequest) -> list[tuple[int, float | None]]:
    """Score each document by how many query words it contains; blank documents get no score."""
    words = {word.strip(".,;:!?").lower() for word in request.query.split()}
    scored = []
    for index, document in enumerate(request.documents):
        if not document.text.strip():
            scored.append((index, None))
            continue
        tokens = {token.strip(".,;:!?'").lower() for token in document.text.split()}
        scored.append((index, float(len(words & tokens)) - index * 1e-6))
    scored.sort(key=lambda item: (item[1] is None, -(item[1] or 0.0), item[0]))
    return scored


@dataclass
class FakeBehaviour:
    """What the fake does on the next calls. Change fields between calls as needed."""

    results: ResultsScript = word_overlap_results
    status: grpc.StatusCode | None = None
    status_details: str = "fault injected by FakeSidecar"
    delay_s: float = 0.0


class _Servicer(rerank_pb2_grpc.RerankerServicer):
    def __init__(self, fake: FakeSidecar) -> None:
        self._fake = fake

    def Rerank(self, request: rerank_pb2.RerankRequest, context: grpc.ServicerContext) -> rerank_pb2.RerankResponse:
        fake = self._fake
        with fake._lock:
            fake.requests.append(request)
            behaviour = fake.behaviour
        if behaviour.delay_s:
            time.sleep(behaviour.delay_s)
        if behaviour.status is not None:
            context.abort(behaviour.status, behaviour.status_details)
        response = rerank_pb2.RerankResponse(model="fake-sidecar", score_kind=rerank_pb2.SCORE_KIND_RAW)
        for index, score in behaviour.results(request):
            result = response.results.add(index=index)
            if 0 <= index < len(request.documents):
                result.id = request.documents[index].id
            if score is not None:
                result.score = score
        return response


class FakeSidecar:
    """A scripted rerank.v1 server on 127.0.0.1 that records requests; use as a context manager."""

    def __init__(self) -> None:
        self.requests: list[rerank_pb2.RerankRequest] = []
        self.behaviour = FakeBehaviour()
        self._lock = threading.Lock()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=8))
        rerank_pb2_grpc.add_RerankerServicer_to_server(_Servicer(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def texts(self, call: int = -1) -> list[str]:
        """Return the document texts of one recorded request (the last by default)."""
        return [document.text for document in self.requests[call].documents]

    def __enter__(self) -> FakeSidecar:
        self._server.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.stop(grace=None)
