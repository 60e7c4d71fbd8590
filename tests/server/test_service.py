"""gRPC service behaviour on an in-process server over 127.0.0.1."""

from __future__ import annotations

import re

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from rerank_client._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc


@pytest.fixture
def channel_to():
    channels = []

    def open_channel(running):
        channel = grpc.insecure_channel(running.address)
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        channel.close()


def _request(query: str, texts: list[str], **fields) -> rerank_pb2.RerankRequest:
    return rerank_pb2.RerankRequest(query=query, documents=[rerank_pb2.Document(text=text) for text in texts],
                                    **fields)


def _error(stub, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Rerank(request, timeout=10)
    return raised.value


def test_health_not_serving_until_loaded(make_server, channel_to, tiny_model):
    running = make_server(load=False)
    health = health_pb2_grpc.HealthStub(channel_to(running))
    before = health.Check(health_pb2.HealthCheckRequest(service="rerank.v1.Reranker"), timeout=5)
    running.load(model=tiny_model)
    after = health.Check(health_pb2.HealthCheckRequest(service="rerank.v1.Reranker"), timeout=5)
    assert before.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert after.status == health_pb2.HealthCheckResponse.SERVING


def test_rerank_before_load_is_unavailable(make_server, channel_to):
    running = make_server(load=False)
    error = _error(rerank_pb2_grpc.RerankerStub(channel_to(running)), _request("q", ["d"]))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "is still loading" in error.details()


def test_rerank_after_stop_accepting_is_unavailable(make_server, channel_to):
    running = make_server()
    running.service.stop_accepting()
    error = _error(rerank_pb2_grpc.RerankerStub(channel_to(running)), _request("q", ["d"]))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert error.details() == "server is draining; retry on another replica"


@pytest.mark.parametrize(
    ("request_fields", "field_message"),
    [
        ({"query": ""}, "query '' is empty or whitespace only; send the search text"),
        ({"query": " \n\t"}, "query ' \\n\\t' is empty or whitespace only; send the search text"),
        ({"query": "q", "top_n": -1}, "top_n is -1; expected 0 or more, or unset to return every result"),
        ({"query": "q" * 40}, "query is 40 bytes, over the limit of 32 bytes (--max-query-bytes)"),
    ],
)
def test_invalid_argument_names_field_value_limit(make_server, channel_to, request_fields, field_message):
    running = make_server(max_query_bytes=32)
    stub = rerank_pb2_grpc.RerankerStub(channel_to(running))
    request = rerank_pb2.RerankRequest(documents=[rerank_pb2.Document(text="a document")], **request_fields)
    error = _error(stub, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == field_message


def test_too_many_documents_names_limit(make_server, channel_to):
    running = make_server(max_documents=3)
    error = _error(rerank_pb2_grpc.RerankerStub(channel_to(running)), _request("q", ["d"] * 4))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ("documents has 4 entries, over the limit of 3 per request (--max-documents); "
                               "split the page into several requests")


def test_document_over_byte_limit_names_index(make_server, channel_to):
    running = make_server(max_document_bytes=100)
    error = _error(rerank_pb2_grpc.RerankerStub(channel_to(running)), _request("q", ["ok", "é" * 60]))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "documents[1].text is 120 bytes, over the limit of 100 bytes (--max-document-bytes)"


def test_unknown_enum_value_rejected(make_server, channel_to):
    running = make_server()
    error = _error(rerank_pb2_grpc.RerankerStub(channel_to(running)), _request("q", ["d"], score_kind=7))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("score_kind 7 is not a known ScoreKind")


def test_empty_document_list_is_ok(make_server, channel_to):
    running = make_server()
    response = rerank_pb2_grpc.RerankerStub(channel_to(running)).Rerank(_request("q", []), timeout=10)
    assert list(response.results) == []
    assert response.usage.pairs_scored == 0


def test_results_sorted_with_ids_and_texts(make_server, channel_to, reference_encoder, texts):
    running = make_server()
    documents = [texts["D_IRR"], texts["D_REL"], texts["D_MID"]]
    request = rerank_pb2.RerankRequest(
        query=texts["Q"], return_documents=True,
        documents=[rerank_pb2.Document(id=f"doc-{i}", text=text) for i, text in enumerate(documents)])
    response = rerank_pb2_grpc.RerankerStub(channel_to(running)).Rerank(request, timeout=10)
    reference = reference_encoder.predict([(texts["Q"], text) for text in documents])
    expected_order = sorted(range(3), key=lambda index: -reference[index])
    assert [result.index for result in response.results] == expected_order
    assert [result.id for result in response.results] == [f"doc-{index}" for index in expected_order]
    assert [result.text for result in response.results] == [documents[index] for index in expected_order]
    for result in response.results:
        assert result.score == pytest.approx(float(reference[result.index]), abs=1e-5)
    assert response.score_kind == rerank_pb2.SCORE_KIND_RAW
    assert response.usage.pairs_scored == 3
    assert response.usage.tokens > 0


def test_model_info_reports_model_and_limits(make_server, channel_to, tiny_model_dir):
    running = make_server(max_documents=77)
    info = rerank_pb2_grpc.RerankerStub(channel_to(running)).GetModelInfo(rerank_pb2.GetModelInfoRequest())
    assert info.model == str(tiny_model_dir)
    assert info.max_length == 512
    assert info.num_labels == 1
    assert info.activation == "sigmoid"
    assert info.backend == "torch"
    assert info.device == "cpu"
    assert info.model_kind == "cross-encoder"
    assert info.limits.max_documents_per_request == 77
    assert info.default_truncation == rerank_pb2.TRUNCATION_DOCUMENT_FIRST


def test_reflection_lists_services(make_server, channel_to):
    running = make_server()
    stub = reflection_pb2_grpc.ServerReflectionStub(channel_to(running))
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {service.name for response in responses for service in response.list_services_response.service}
    assert {"rerank.v1.Reranker", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_score_cache_answers_repeated_pairs(make_server, channel_to, texts):
    running = make_server(score_cache_size=100)
    stub = rerank_pb2_grpc.RerankerStub(channel_to(running))
    first = stub.Rerank(_request(texts["Q"], [texts["D_REL"], texts["D_IRR"]]), timeout=10)
    second = stub.Rerank(_request(texts["Q"], [texts["D_IRR"], texts["D_REL"], texts["D_MID"]]), timeout=10)
    assert first.usage.cache_hits == 0
    assert second.usage.cache_hits == 2
    assert second.usage.pairs_scored == 1
    scores_first = {result.index: result.score for result in first.results}
    scores_second = {result.index: result.score for result in second.results}
    assert scores_second[1] == scores_first[0]
    assert scores_second[0] == scores_first[1]


def test_pooling_max_not_below_truncated_score(make_server, channel_to):
    running = make_server()
    stub = rerank_pb2_grpc.RerankerStub(channel_to(running))
    document = "kettle scale " * 600
    truncated = stub.Rerank(_request("kettle", [document]), timeout=30).results[0].score
    pooled_max = stub.Rerank(_request("kettle", [document], pooling=rerank_pb2.POOLING_MAX), timeout=30)
    pooled_mean = stub.Rerank(_request("kettle", [document], pooling=rerank_pb2.POOLING_MEAN), timeout=30)
    assert pooled_max.usage.pairs_scored > 1
    assert pooled_max.results[0].score >= truncated - 1e-5
    assert pooled_mean.results[0].score <= pooled_max.results[0].score + 1e-9


def test_config_error_names_flag():
    from rerank_server.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=re.escape("RERANK_BATCH_SIZE='zero' is invalid for --batch-size")):
        parse_config([], {"RERANK_BATCH_SIZE": "zero"})
    with pytest.raises(ConfigError, match=re.escape("--max-documents 0 is out of range; expected 1 to 1048576")):
        parse_config(["--max-documents", "0"], {})


def test_config_flag_beats_environment():
    from rerank_server.config import parse_config

    config = parse_config(["--port", "7001"], {"RERANK_PORT": "7002", "RERANK_MAX_LENGTH": "256"})
    assert config.port == 7001
    assert config.max_length == 256
