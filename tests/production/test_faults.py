"""Fault suite: overload, expired deadlines, SIGTERM under load, huge requests, many clients.

Every loop here is bounded in count and time, and all traffic goes to servers on
127.0.0.1 that the tests start.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2

from rerank_client._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc

from .conftest import CHANNEL_OPTIONS, request, rpc_error, rss_kib, scores_by_index

WAIT_LIMIT_S = 60.0


def _wait_for(condition, description: str, limit_s: float = WAIT_LIMIT_S) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit_s:.0f} s waiting for {description}")
        time.sleep(0.05)


def _code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def small_queue_server(start_server):
    """A server that admits one Rerank call at a time and takes 10,000 documents per request."""
    return start_server("--workers", "8", "--max-queue-requests", "1", "--max-documents", "10000", metrics=True)


# -- overload ----------------------------------------------------------------------------------------


def test_overload_rejects_and_memory_stays_bounded(small_queue_server, texts, record_property):
    server = small_queue_server
    server.stub.Rerank(request(texts["Q"], [texts["D_REL"]]), timeout=60)
    batches_before = server.metrics()["rerank_batch_pairs_count"]
    # 1,500 pairs of 500 tokens keep the model busy for seconds; the test cancels the call when done.
    blocker = server.stub.Rerank.future(request(texts["Q"], ["dog " * 500] * 1500), timeout=300)
    _wait_for(lambda: server.metrics()["rerank_batch_pairs_count"] > batches_before,
              "the blocking call to reach the model")

    # About 1 MB per call, 32 calls at once, three rounds: 96 MB sent while one call is admitted.
    burst = request(texts["Q"], [texts["D_IRR"] * 40] * 250)
    codes: Counter[grpc.StatusCode] = Counter()
    details: Counter[str] = Counter()
    rss_per_round = []
    record_property("rss_kib_before_burst", rss_kib(server.pid))
    with ThreadPoolExecutor(max_workers=32) as pool:
        for _round in range(3):
            for code, message in pool.map(lambda _n: _outcome(server.stub, burst), range(32)):
                codes[code] += 1
                details[message.split(":")[0]] += 1
            rss_per_round.append(rss_kib(server.pid))
    blocker_was_running = not blocker.done()
    blocker.cancel()
    record_property("burst_codes", {code.name: count for code, count in codes.items()})
    record_property("burst_details", dict(details))
    record_property("rss_kib_per_round", rss_per_round)

    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert blocker_was_running
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] == 96
    assert rss_per_round[-1] <= rss_per_round[0] * 1.10, rss_per_round
    metrics = server.metrics()
    assert metrics['rerank_rejected_requests_total{reason="queue_full_requests"}'] == details["server queue is full"]
    _wait_for(lambda: server.metrics()["rerank_in_flight_requests"] == 0, "the cancelled call to leave")
    _wait_for(lambda: server.metrics().get('rerank_dropped_pairs_total{reason="cancelled"}', 0) > 0,
              "the cancelled call's pairs to be dropped")
    after = server.stub.Rerank(request(texts["Q"], [texts["D_REL"], texts["D_IRR"]]), timeout=60)
    assert len(after.results) == 2


def _outcome(stub: rerank_pb2_grpc.RerankerStub, item: rerank_pb2.RerankRequest) -> tuple[grpc.StatusCode, str]:
    try:
        stub.Rerank(item, timeout=120)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


# -- deadlines ---------------------------------------------------------------------------------------


class GatedModel:
    """The tiny model with a gate on its first batch and a record of every pair it scored."""

    def __init__(self, model) -> None:
        self._model = model
        self.gate = threading.Event()
        self.first_batch_started = threading.Event()
        self.scored_pairs: list[tuple[int, ...]] = []

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def score(self, pairs):
        self.first_batch_started.set()
        if not self.gate.wait(timeout=WAIT_LIMIT_S):
            raise TimeoutError("the test never opened the gate")
        self.scored_pairs.extend(tuple(pair.input_ids) for pair in pairs)
        return self._model.score(pairs)


def test_expired_deadlines_are_never_scored(make_server, tiny_model, texts):
    model = GatedModel(tiny_model)
    running = make_server(load=False, batch_size=4)
    running.load(model=model)
    channel = grpc.insecure_channel(running.address, options=CHANNEL_OPTIONS)
    stub = rerank_pb2_grpc.RerankerStub(channel)
    try:
        blocker = stub.Rerank.future(request(texts["Q"], [f"blocker {n} {texts['D_MID']}" for n in range(8)]),
                                     timeout=120)
        _wait_for(model.first_batch_started.is_set, "the first batch to reach the model")
        late_documents = [[f"late {call}-{n} {texts['D_IRR']}" for n in range(5)] for call in range(8)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(
                lambda documents: _code_of(lambda: stub.Rerank(request(texts["Q"], documents), timeout=1.0)),
                late_documents))
        model.gate.set()
        blocker_response = blocker.result(timeout=120)
        probe = stub.Rerank(request(texts["Q"], [texts["D_REL"]]), timeout=60)
    finally:
        model.gate.set()
        channel.close()

    late_pairs = {tuple(pair.input_ids) for documents in late_documents
                  for pair in tiny_model.encode(texts["Q"], documents, truncation="document_first").pairs}
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 8
    assert len(blocker_response.results) == 8
    assert len(probe.results) == 1
    assert late_pairs.isdisjoint(model.scored_pairs)
    assert len(model.scored_pairs) == 8 + 1
    registry = running.metrics.registry
    _wait_for(lambda: registry.get_sample_value("rerank_requests_total",
                                                {"method": "Rerank", "code": "DEADLINE_EXCEEDED"}) == 8,
              "8 DEADLINE_EXCEEDED calls counted")
    assert registry.get_sample_value("rerank_dropped_pairs_total", {"reason": "deadline"}) == 40


# -- drain on SIGTERM --------------------------------------------------------------------------------


def test_sigterm_under_load_loses_no_call(start_server, texts, record_property):
    server = start_server("--workers", "24", "--max-queue-requests", "16", "--grace-period", "60", metrics=True)
    long_request = request(texts["Q"], [f"{n} " + "dog " * 300 for n in range(400)])
    in_flight = [server.stub.Rerank.future(long_request, timeout=300) for _ in range(8)]
    _wait_for(lambda: server.metrics()["rerank_in_flight_requests"] >= 8, "8 calls in flight")

    light_codes: Counter[grpc.StatusCode] = Counter()
    rejections: list[str] = []

    def light_load() -> None:
        # Each client calls until the drain turns it away, or 500 calls at most.
        for _call in range(500):
            try:
                server.stub.Rerank(request(texts["Q"], [texts["D_MID"]]), timeout=60)
            except grpc.RpcError as error:
                light_codes[error.code()] += 1
                rejections.append(error.details())
                return
            light_codes[grpc.StatusCode.OK] += 1

    workers = [threading.Thread(target=light_load) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    finished_before_signal = sum(future.done() for future in in_flight)
    server.process.process.send_signal(signal.SIGTERM)
    _wait_for(lambda: not _serving(server), "health to leave SERVING")
    after_signal = rpc_error(lambda: server.stub.Rerank(request(texts["Q"], [texts["D_REL"]]), timeout=30))
    results = [future.result(timeout=300) for future in in_flight]
    for worker in workers:
        worker.join(timeout=WAIT_LIMIT_S)
    exit_status = server.process.wait(timeout=120)
    record_property("light_load_codes", {code.name: count for code, count in light_codes.items()})

    assert finished_before_signal == 0, "the long calls must still run when the drain starts"
    assert after_signal.code() is grpc.StatusCode.UNAVAILABLE
    assert "draining" in after_signal.details()
    assert [len(response.results) for response in results] == [400] * 8
    assert set(light_codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, light_codes
    assert light_codes[grpc.StatusCode.UNAVAILABLE] == 4
    # The drain keeps the port open until callers stop, so each rejection is the
    # server's in-band one, never a closed connection or gRPC core's CANCELLED.
    assert all("draining" in details for details in rejections), rejections
    assert exit_status == 0
    log = server.process.log_text()
    assert log.count("INFO rerank_server draining") == 1
    assert log.count("INFO rerank_server stopped") == 1


def _serving(server) -> bool:
    try:
        response = server.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError:
        return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


# -- huge requests -----------------------------------------------------------------------------------


def _ten_thousand_documents(texts: dict[str, str]) -> list[str]:
    bodies = [texts[name] for name in ("D_REL", "D_REL2", "D_MID", "D_IRR", "D_IRR2")]
    return [f"note {number}: {bodies[number % 5]}" for number in range(10_000)]


def test_ten_thousand_documents_rejected_by_default(main_server, texts):
    documents = _ten_thousand_documents(texts)
    error = rpc_error(lambda: main_server.stub.Rerank(request(texts["Q"], documents), timeout=60))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ("documents has 10000 entries, over the limit of 1000 per request "
                               "(--max-documents); split the page into several requests")


def test_ten_thousand_documents_with_raised_limit(small_queue_server, reference_encoder, texts):
    documents = _ten_thousand_documents(texts)
    response = small_queue_server.stub.Rerank(request(texts["Q"], documents), timeout=600)

    indexes = [result.index for result in response.results]
    scores = [result.score for result in response.results]
    assert sorted(indexes) == list(range(10_000))
    assert scores == sorted(scores, reverse=True)
    whole = scores_by_index(response)
    for start in (0, 4000, 9000):
        part = small_queue_server.stub.Rerank(request(texts["Q"], documents[start:start + 1000]), timeout=120)
        for index, score in scores_by_index(part).items():
            assert whole[start + index] == pytest.approx(score, abs=1e-4)
    sample = list(range(0, 10_000, 97))
    reference = reference_encoder.predict([(texts["Q"], documents[index]) for index in sample])
    for index, expected in zip(sample, reference):
        assert whole[index] == pytest.approx(float(expected), abs=1e-4)


# -- many clients ------------------------------------------------------------------------------------


def test_thirty_two_clients_match_sequential(main_server, texts):
    bodies = [texts[name] for name in ("D_REL", "D_REL2", "D_MID", "D_IRR", "D_IRR2")]
    requests = [request(f"{texts['Q']} {client}", [f"{bodies[(client + n) % 5]} {n}" * (1 + n % 4)
                                                    for n in range(3 + client % 12)])
                for client in range(32)]
    sequential = [main_server.stub.Rerank(item, timeout=60) for item in requests]

    def client_run(item: rerank_pb2.RerankRequest) -> list[rerank_pb2.RerankResponse]:
        with grpc.insecure_channel(main_server.process.target, options=CHANNEL_OPTIONS) as channel:
            stub = rerank_pb2_grpc.RerankerStub(channel)
            return [stub.Rerank(item, timeout=120) for _ in range(5)]

    with ThreadPoolExecutor(max_workers=32) as pool:
        concurrent = list(pool.map(client_run, requests))

    for alone, repeats in zip(sequential, concurrent):
        for response in repeats:
            assert [result.index for result in response.results] == [result.index for result in alone.results]
            assert scores_by_index(response) == pytest.approx(scores_by_index(alone), abs=1e-5)
