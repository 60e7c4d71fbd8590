"""A fake rerank sidecar for fault injection in client tests. Not a model server.

It speaks rerank.v1 and gRPC health over real gRPC on 127.0.0.1, records every
request it receives with its metadata, and responds from a script: fixed
results, a status code, a delay, or by default a deterministic stand-in score
(the number of query words found in the document, minus a millionth of its
index). Use the real ``rerank-server`` (see :mod:`rerank_harness.sidecar`) for
anything about scores.

Named faults (`FAULTS`, built by `fault_behaviour`):

- ``slow``: answers correctly after a delay longer than the test's deadline.
- ``failing``: aborts every call with INTERNAL.
- ``unavailable``: aborts every call with UNAVAILABLE.
- ``wrong_count``: returns one result fewer than the documents sent.
- ``duplicate_index``: repeats index 3 (or 0) and leaves one index out.
- ``index_out_of_range``: returns index ``len(documents)``.
- ``negative_index``: returns index -1, which the uint32 field carries as
  4294967295, as a server that casts -1 to uint32 would send it.

`closed_port` gives a port on 127.0.0.1 with nothing listening.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from rerank_client._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc

ResultsScript = Callable[[rerank_pb2.RerankRequest], Sequence[tuple[int, float | None]]]

_UINT32 = 2**32


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


def short_results(request: rerank_pb2.RerankRequest) -> list[tuple[int, float | None]]:
    """Return one result fewer than the documents sent, as a top-n server that cut one would."""
    return word_overlap_results(request)[:-1]


def duplicate_index_results(request: rerank_pb2.RerankRequest) -> list[tuple[int, float | None]]:
    """Return as many results as documents, but with one index twice and another missing."""
    results = word_overlap_results(request)
    repeated = 3 if len(results) > 3 else 0
    missing = next((i for i, (index, _score) in enumerate(results) if index != repeated), None)
    if missing is not None:
        results[missing] = (repeated, 1.0)
    return results


def out_of_range_results(request: rerank_pb2.RerankRequest) -> list[tuple[int, float | None]]:
    """Return index len(documents) in place of the last result."""
    results = word_overlap_results(request)
    if results:
        results[-1] = (len(request.documents), 0.5)
    return results


def negative_index_results(request: rerank_pb2.RerankRequest) -> list[tuple[int, float | None]]:
    """Return index -1 in place of the last result."""
    results = word_overlap_results(request)
    if results:
        results[-1] = (-1, 0.5)
    return results


@dataclass
class FakeBehaviour:
    """What the fake does on the next calls. Change fields between calls as needed.

    Attributes:
        results: Script that returns the ``(index, score)`` results of a request.
        status: Abort calls with this status instead of responding.
        status_details: Details sent with `status`.
        delay_s: Sleep before responding. The sleep ends early when the call
            ends (its deadline passed) or the fake stops.
        fail_times: Abort only the next this many calls with `status`, then
            answer normally; None aborts every call.
        score_kind: Score kind to report; None reports the requested one.
    """

    results: ResultsScript = word_overlap_results
    status: grpc.StatusCode | None = None
    status_details: str = "fault injected by FakeSidecar"
    delay_s: float = 0.0
    fail_times: int | None = None
    score_kind: int | None = None


FAULTS = ("slow", "failing", "unavailable", "wrong_count", "duplicate_index", "index_out_of_range",
          "negative_index")


def fault_behaviour(name: str, *, delay_s: float = 5.0) -> FakeBehaviour:
    """Return the behaviour of a named fault from `FAULTS`; `delay_s` sets the ``slow`` delay."""
    behaviours = {
        "slow": lambda: FakeBehaviour(delay_s=delay_s),
        "failing": lambda: FakeBehaviour(status=grpc.StatusCode.INTERNAL),
        "unavailable": lambda: FakeBehaviour(status=grpc.StatusCode.UNAVAILABLE),
        "wrong_count": lambda: FakeBehaviour(results=short_results),
        "duplicate_index": lambda: FakeBehaviour(results=duplicate_index_results),
        "index_out_of_range": lambda: FakeBehaviour(results=out_of_range_results),
        "negative_index": lambda: FakeBehaviour(results=negative_index_results),
    }
    if name not in behaviours:
        raise ValueError(f"unknown fault {name!r}; expected one of {', '.join(FAULTS)}")
    return behaviours[name]()


class _Servicer(rerank_pb2_grpc.RerankerServicer):
    def __init__(self, fake: FakeSidecar) -> None:
        self._fake = fake

    def Rerank(self, request: rerank_pb2.RerankRequest, context: grpc.ServicerContext) -> rerank_pb2.RerankResponse:
        fake = self._fake
        with fake._lock:
            fake.requests.append(request)
            fake.metadata.append(dict(context.invocation_metadata()))
            behaviour = fake.behaviour
            fail = behaviour.status is not None and (behaviour.fail_times is None or behaviour.fail_times > 0)
            if fail and behaviour.fail_times is not None:
                behaviour.fail_times -= 1
        if behaviour.delay_s:
            # The callback runs when the call ends: deadline passed, client
            # gone or server stopped. Waiting on it frees the worker thread
            # as soon as the client stops waiting for the response.
            ended = threading.Event()
            context.add_callback(ended.set)
            ended.wait(behaviour.delay_s)
            if not context.is_active():
                return rerank_pb2.RerankResponse()
        if fail:
            context.abort(behaviour.status, behaviour.status_details)
        kind = behaviour.score_kind
        if kind is None:
            kind = request.score_kind or rerank_pb2.SCORE_KIND_RAW
        response = rerank_pb2.RerankResponse(model="fake-sidecar", score_kind=kind)
        for index, score in behaviour.results(request):
            result = response.results.add(index=index % _UINT32)
            if 0 <= index < len(request.documents):
                result.id = request.documents[index].id
            if score is not None:
                result.score = score
        return response


class FakeSidecar:
    """A scripted rerank.v1 server on 127.0.0.1 that records requests; use as a context manager.

    Attributes:
        requests: Every Rerank request received, in order.
        metadata: The invocation metadata of each request, as a dict.
        behaviour: What the next calls do (see `FakeBehaviour`).
        health: The gRPC health servicer; ``health.set("", status)`` changes
            what health checks report (SERVING at start).
    """

    def __init__(self) -> None:
        self.requests: list[rerank_pb2.RerankRequest] = []
        self.metadata: list[dict[str, str | bytes]] = []
        self.behaviour = FakeBehaviour()
        self._lock = threading.Lock()
        self._server = grpc.server(ThreadPoolExecutor(max_workers=8))
        rerank_pb2_grpc.add_RerankerServicer_to_server(_Servicer(self), self._server)
        self.health = health.HealthServicer()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
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
        self.stop()

    def stop(self) -> None:
        """Stop serving at once; calls in flight end with UNAVAILABLE or CANCELLED."""
        self._server.stop(grace=None).wait(5)


def closed_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on.

    The port comes from the kernel and is released at once, so another process
    could take it in between; tests use it within milliseconds.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
