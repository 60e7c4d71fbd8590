"""Prometheus endpoint: every documented series is served, and counters move with traffic."""

from __future__ import annotations

import grpc
import pytest

from rerank_client._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc

from .conftest import free_port, request, rpc_error, scrape

EXPECTED_SERIES = [
    'rerank_requests_total{code="OK",method="Rerank"}',
    'rerank_requests_total{code="INVALID_ARGUMENT",method="Rerank"}',
    'rerank_requests_total{code="OK",method="GetModelInfo"}',
    'rerank_rejected_requests_total{reason="invalid_query"}',
    "rerank_pairs_scored_total",
    "rerank_tokens_total",
    "rerank_documents_truncated_total",
    "rerank_truncated_tokens_total",
    "rerank_queries_truncated_total",
    'rerank_dropped_pairs_total{reason="deadline"}',
    'rerank_dropped_pairs_total{reason="cancelled"}',
    "rerank_queue_wait_seconds_count",
    "rerank_tokenization_seconds_count",
    "rerank_inference_seconds_count",
    "rerank_request_seconds_count",
    "rerank_batch_pairs_count",
    "rerank_batch_padded_tokens_count",
    "rerank_queue_requests",
    "rerank_queue_tokens",
    "rerank_in_flight_requests",
    "rerank_serving",
]

MOVING_COUNTERS = [
    'rerank_requests_total{code="OK",method="Rerank"}',
    'rerank_requests_total{code="INVALID_ARGUMENT",method="Rerank"}',
    'rerank_rejected_requests_total{reason="invalid_query"}',
    "rerank_pairs_scored_total",
    "rerank_tokens_total",
    "rerank_documents_truncated_total",
    "rerank_truncated_tokens_total",
    "rerank_queries_truncated_total",
    "rerank_queue_wait_seconds_count",
    "rerank_tokenization_seconds_count",
    "rerank_inference_seconds_count",
    "rerank_request_seconds_count",
    "rerank_batch_pairs_count",
    "rerank_batch_padded_tokens_count",
]


def test_process_metrics_served_and_moving(main_server):
    main_server.stub.Rerank(request("warm", ["up"]), timeout=60)
    main_server.stub.GetModelInfo(rerank_pb2.GetModelInfoRequest(), timeout=30)
    rpc_error(lambda: main_server.stub.Rerank(request(" ", ["document"]), timeout=30))
    before = main_server.metrics()

    response = main_server.stub.Rerank(request("cat " * 600, ["dog " * 600, "short document"]), timeout=60)
    rpc_error(lambda: main_server.stub.Rerank(request("", ["document"]), timeout=30))
    after = main_server.metrics()

    missing = [name for name in EXPECTED_SERIES if name not in after]
    assert missing == []
    not_moved = [name for name in MOVING_COUNTERS if after[name] <= before.get(name, 0)]
    assert not_moved == []
    assert after["rerank_pairs_scored_total"] - before["rerank_pairs_scored_total"] == 2
    assert after["rerank_tokens_total"] - before["rerank_tokens_total"] == response.usage.tokens
    assert after["rerank_queries_truncated_total"] - before["rerank_queries_truncated_total"] == 1
    assert after["rerank_serving"] == 1
    assert after["rerank_in_flight_requests"] == 0


def test_score_cache_metrics_served(make_server, texts):
    port = free_port()
    running = make_server(score_cache_size=100, metrics_port=port)
    with grpc.insecure_channel(running.address) as channel:
        stub = rerank_pb2_grpc.RerankerStub(channel)
        stub.Rerank(request(texts["Q"], [texts["D_REL"], texts["D_IRR"]]), timeout=30)
        stub.Rerank(request(texts["Q"], [texts["D_REL"], texts["D_MID"]]), timeout=30)
    samples = scrape(port)
    assert samples['rerank_score_cache_total{result="hit"}'] == 1
    assert samples['rerank_score_cache_total{result="miss"}'] == 3
    assert samples["rerank_score_cache_entries"] == 3


@pytest.mark.parametrize("series", ['rerank_score_cache_total{result="hit"}', "rerank_score_cache_entries"])
def test_cache_series_zero_without_cache(main_server, series):
    samples = main_server.metrics()
    assert samples.get(series, 0) == 0
