"""RerankClient.rerank_page against a fake sidecar that records requests: page shapes and odd values."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import grpc
import pytest
from client_pages import D_IRR, D_MID, D_REL, POSITION_KEY, Q, body_page, check_page_invariants, make_page, \
    positions, snapshot

from rerank_client import (
    RERANK_KEY,
    RerankClient,
    RerankInputError,
    RerankProtocolError,
    RerankRejectedError,
    RerankServerError,
    RerankUnavailableError,
)
from rerank_client._proto.rerank.v1 import rerank_pb2
from rerank_harness.fake_sidecar import FakeBehaviour, FakeSidecar, fault_behaviour

EMPTY_PAGE = {
    "took": 3,
    "timed_out": False,
    "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
    "hits": {"total": {"value": 0, "relation": "eq"}, "max_score": None, "hits": []},
}


def test_empty_page_unchanged_without_rpc(fake: FakeSidecar, fake_client: RerankClient) -> None:
    page = json.loads(json.dumps(EMPTY_PAGE))

    out = fake_client.rerank_page(page, Q, "body")

    assert out == EMPTY_PAGE
    assert out["hits"]["max_score"] is None
    assert fake.requests == []


def test_empty_page_unchanged_with_fail_open(fake: FakeSidecar, fake_client: RerankClient) -> None:
    out = fake_client.rerank_page(EMPTY_PAGE, Q, "body", fail_open=True)

    assert out == EMPTY_PAGE
    assert fake.requests == []


def test_blank_query_raises_before_rpc(fake: FakeSidecar, fake_client: RerankClient) -> None:
    with pytest.raises(RerankInputError, match="query must be a non-blank string"):
        fake_client.rerank_page(body_page([D_REL]), "  \n", "body", fail_open=True)

    assert fake.requests == []


def test_page_without_text_sends_no_rpc(fake: FakeSidecar, fake_client: RerankClient) -> None:
    page = body_page([None, "", {"en": "x"}])

    out = fake_client.rerank_page(page, Q, "body")

    assert fake.requests == []
    assert positions(out) == [0, 1, 2]
    assert [hit["_score"] for hit in out["hits"]["hits"]] == [None, None, None]
    assert out[RERANK_KEY]["hits_without_text"] == 3
    check_page_invariants(body_page([None, "", {"en": "x"}]), out)


def test_relevant_hit_first(fake: FakeSidecar, fake_client: RerankClient) -> None:
    page = body_page([D_IRR, D_MID, D_REL])
    before = snapshot(page)

    out = fake_client.rerank_page(page, Q, "body")

    assert positions(out) == [2, 0, 1]
    assert out[RERANK_KEY]["status"] == "reranked"
    assert out[RERANK_KEY]["model"] == "fake-sidecar"
    check_page_invariants(before, out, input_after_call=page)


# -- responses that break the contract -------------------------------------------------------

PROTOCOL_FAULTS = [
    ("wrong_count", "expected 10 results, one per document, but received 9"),
    ("duplicate_index", "received index 3 more than once and no result for index"),
    ("index_out_of_range", "expected result indices from 0 to 9, but received index 10"),
    ("negative_index", "expected result indices from 0 to 9, but received index 4294967295"),
]


@pytest.mark.parametrize(("fault", "message"), PROTOCOL_FAULTS)
def test_invalid_response_raises_protocol_error(fake: FakeSidecar, fake_client: RerankClient, fault: str,
                                                message: str) -> None:
    fake.behaviour = fault_behaviour(fault)
    page = body_page([f"{D_REL} {n}" for n in range(10)])

    with pytest.raises(RerankProtocolError, match=re.escape(message)):
        fake_client.rerank_page(page, Q, "body")


@pytest.mark.parametrize(("fault", "message"), PROTOCOL_FAULTS)
def test_invalid_response_fails_open_unchanged(fake: FakeSidecar, fake_client: RerankClient, fault: str,
                                               message: str) -> None:
    fake.behaviour = fault_behaviour(fault)
    page = body_page([f"{D_IRR} {n}" if n % 2 else D_REL for n in range(10)])
    before = snapshot(page)

    out = fake_client.rerank_page(page, Q, "body", fail_open=True)

    assert out["hits"]["hits"] == before["hits"]["hits"]
    assert out[RERANK_KEY]["status"] == "skipped"
    assert out[RERANK_KEY]["reason_code"] == "protocol_error"
    assert message in out[RERANK_KEY]["reason"]
    assert fake_client.fallbacks == {"RerankProtocolError": 1}
    check_page_invariants(before, out, input_after_call=page)


def test_wrong_score_kind_raises_protocol_error(fake: FakeSidecar, fake_client: RerankClient) -> None:
    # A server that ignored the requested kind would send raw scores.
    fake.behaviour = FakeBehaviour(score_kind=rerank_pb2.SCORE_KIND_RAW)

    with pytest.raises(RerankProtocolError, match="expected score kind SCORE_KIND_NORMALIZED, but received "
                                                  "SCORE_KIND_RAW"):
        fake_client.rerank_page(body_page([D_REL, D_IRR]), Q, "body", normalized=True)


# -- a closed port ----------------------------------------------------------------------------


def test_closed_port_raises_typed_error_within_deadline(closed_target: str) -> None:
    with RerankClient(closed_target, timeout=2.0) as client:
        started = time.monotonic()
        with pytest.raises(RerankUnavailableError, match=re.escape(closed_target)):
            client.rerank_page(body_page([D_REL, D_MID, D_IRR]), Q, "body")
        elapsed = time.monotonic() - started

    assert elapsed < 2.0


def test_closed_port_fail_open_marks_page(closed_target: str, caplog: pytest.LogCaptureFixture) -> None:
    page = body_page([D_IRR, D_MID, D_REL])
    before = snapshot(page)

    with RerankClient(closed_target, timeout=2.0, fail_open=True) as client, \
            caplog.at_level(logging.WARNING, logger="rerank_client"):
        out = client.rerank_page(page, Q, "body")

    assert out["hits"] == before["hits"]
    assert out[RERANK_KEY]["status"] == "skipped"
    assert out[RERANK_KEY]["reason_code"] == "unavailable"
    assert closed_target in out[RERANK_KEY]["reason"]
    assert client.fallbacks == {"RerankUnavailableError": 1}
    assert "rerank skipped, page kept in first-stage order" in caplog.text
    check_page_invariants(before, out, input_after_call=page)


def test_empty_page_still_lets_health_report_bad_address(closed_target: str) -> None:
    with RerankClient(closed_target, timeout=2.0, fail_open=True) as client:
        out = client.rerank_page(EMPTY_PAGE, Q, "body")

        with pytest.raises(RerankUnavailableError, match=re.escape(closed_target)):
            client.check_health()

    assert out == EMPTY_PAGE


def test_health_reports_not_serving(fake: FakeSidecar, fake_client: RerankClient) -> None:
    from grpc_health.v1 import health_pb2

    assert fake_client.check_health() is True
    fake.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

    assert fake_client.check_health() is False


@pytest.mark.parametrize(("code", "error_type", "reason_code"), [
    (grpc.StatusCode.INTERNAL, RerankServerError, "server_error"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, RerankRejectedError, "rejected"),
    (grpc.StatusCode.INVALID_ARGUMENT, RerankRejectedError, "rejected"),
    (grpc.StatusCode.UNAUTHENTICATED, RerankRejectedError, "rejected"),
])
def test_server_status_maps_to_error_and_reason(fake: FakeSidecar, fake_client: RerankClient,
                                                code: grpc.StatusCode, error_type: type,
                                                reason_code: str) -> None:
    fake.behaviour = FakeBehaviour(status=code, status_details="injected")
    page = body_page([D_REL, D_IRR])

    with pytest.raises(error_type, match=f"failed with {code.name}: injected"):
        fake_client.rerank_page(page, Q, "body")
    out = fake_client.rerank_page(page, Q, "body", fail_open=True)

    assert out[RERANK_KEY]["reason_code"] == reason_code
    assert out["hits"]["hits"] == page["hits"]["hits"]


# -- odd field values and page shapes ---------------------------------------------------------


def test_non_string_values_rendered_by_rule(fake: FakeSidecar, fake_client: RerankClient) -> None:
    bodies = [42, 3.5, True, None, ["alpha kettle", "beta"], {"en": "gamma"}, "", D_REL]
    page = json.loads(json.dumps(body_page(bodies)))
    before = snapshot(page)

    out = fake_client.rerank_page(page, Q, "body")

    assert fake.texts() == ["42", "3.5", "true", "alpha kettle beta", D_REL]
    assert len(out["hits"]["hits"]) == 8
    assert positions(out)[0] == 7
    assert positions(out)[-3:] == [3, 5, 6]
    assert [hit["_score"] for hit in out["hits"]["hits"][-3:]] == [None, None, None]
    check_page_invariants(before, out, input_after_call=page)


def test_dot_path_nested_arrays_and_literal_key(fake: FakeSidecar, fake_client: RerankClient) -> None:
    sources = [
        {"content": [{"text": "good morning", "page": 1}, {"text": "good evening", "page": 2}]},
        {"content": [{"text": D_REL, "page": 1}, {"text": "see appendix", "page": 2}]},
        {"content": {"text": D_IRR}},
        {"content.text": D_MID},
    ]
    hits = [{"_index": "i", "_id": f"h{n}", "_score": 1.0 - n / 10, "_source": source, POSITION_KEY: n}
            for n, source in enumerate(sources)]
    page = make_page(hits)
    before = snapshot(page)

    out = fake_client.rerank_page(page, Q, "content.text")

    assert fake.texts() == ["good morning good evening", f"{D_REL} see appendix", D_IRR, D_MID]
    assert positions(out)[0] == 1
    check_page_invariants(before, out, input_after_call=page)


def test_hits_without_source(fake: FakeSidecar, fake_client: RerankClient) -> None:
    inner_hits = {"parts": {"hits": {"total": {"value": 1, "relation": "eq"}, "max_score": None, "hits": [
        {"_index": "i", "_id": "d", "_nested": {"field": "parts", "offset": 0}, "_score": None}]}}}
    hits = [
        {"_index": "i", "_id": "a", "_score": 1.2, "fields": {"title": ["Descaling a kettle with vinegar"]}},
        {"_index": "i", "_id": "b", "_score": 1.1, "_source": {"title": "Museum roof repair"}},
        {"_index": "i", "_id": "c", "_score": 1.0},
        {"_index": "i", "_id": "d", "_score": 0.9, "_source": {}, "inner_hits": inner_hits},
    ]
    for position, hit in enumerate(hits):
        hit[POSITION_KEY] = position
    page = make_page(hits)
    before = snapshot(page)

    out = fake_client.rerank_page(page, Q, "title")

    assert fake.texts() == ["Descaling a kettle with vinegar", "Museum roof repair"]
    assert positions(out) == [0, 1, 2, 3]
    assert [hit["_score"] for hit in out["hits"]["hits"][2:]] == [None, None]
    assert out["hits"]["hits"][3]["inner_hits"] == before["hits"]["hits"][3]["inner_hits"]
    assert ["_source" in hit for hit in out["hits"]["hits"]] == [False, True, False, True]
    check_page_invariants(before, out, input_after_call=page)


def test_source_untouched_and_first_stage_score_kept(fake: FakeSidecar, fake_client: RerankClient) -> None:
    hits = [
        {"_index": "i", "_id": "x", "_score": 3.2,
         "_source": {"body": D_REL, "previous_score": "0-2", "rerank_score": "n/a"},
         "highlight": {"body": ["<em>kettle</em> tips"]}, POSITION_KEY: 0},
        {"_index": "i", "_id": "y", "_score": 3.0, "_source": {"body": D_IRR}, POSITION_KEY: 1},
    ]
    page = make_page(hits)
    before = snapshot(page)

    out = fake_client.rerank_page(page, Q, "body")

    top = out["hits"]["hits"][0]
    assert top["_id"] == "x"
    assert json.dumps(top["_source"]) == json.dumps(before["hits"]["hits"][0]["_source"])
    assert top["highlight"] == {"body": ["<em>kettle</em> tips"]}
    assert top[RERANK_KEY]["first_stage_score"] == 3.2
    assert top[RERANK_KEY]["first_stage_rank"] == 0
    assert top[RERANK_KEY]["score"] == top["_score"]
    check_page_invariants(before, out, input_after_call=page)


def test_elasticsearch_response_object_accepted(fake: FakeSidecar, fake_client: RerankClient) -> None:
    class ObjectApiResponse:
        """Stand-in for elastic-transport's response: the dict is under ``body``."""

        def __init__(self, body: dict[str, Any]) -> None:
            self.body = body

    page = body_page([D_IRR, D_REL])

    out = fake_client.rerank_page(ObjectApiResponse(page), Q, "body")

    assert isinstance(out, dict)
    assert positions(out) == [1, 0]
    check_page_invariants(body_page([D_IRR, D_REL]), out, input_after_call=page)


def test_template_with_highlight_fallback(fake: FakeSidecar, fake_client: RerankClient) -> None:
    from rerank_client import TextField, TextTemplate

    template = TextTemplate((TextField(path="title", prefix="T: ", max_chars=5), "body"), separator=" | ",
                            use_highlight=True)
    hits = [
        {"_index": "i", "_id": "a", "_score": 2.0, "_source": {"title": "Kettle care guide"},
         "highlight": {"body": ["<em>descale</em> it"]}},
        {"_index": "i", "_id": "b", "_score": 1.0, "_source": {"body": D_IRR}},
    ]

    fake_client.rerank_page(make_page(hits), Q, template)

    assert fake.texts() == ["T: Kettl | <em>descale</em> it", D_IRR]


# -- bearer token -----------------------------------------------------------------------------


def test_token_sent_as_bearer_metadata(fake: FakeSidecar) -> None:
    with RerankClient(fake.target, token="s3cret-token") as client:
        client.rerank("kettle", ["a kettle"])

    assert fake.metadata[-1]["authorization"] == "Bearer s3cret-token"


def test_token_absent_from_repr_and_logs(closed_target: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="rerank_client"), \
            RerankClient(closed_target, token="s3cret-token", timeout=1.0) as client:
        out = client.rerank_page(body_page([D_REL]), Q, "body", fail_open=True)

    assert "s3cret" not in repr(client)
    assert "s3cret" not in caplog.text
    assert "s3cret" not in json.dumps(out)
    assert "plaintext channel" in caplog.text


@pytest.mark.parametrize("token", ["", "two words", "line\nbreak", "caf\u00e9"])
def test_invalid_token_rejected_without_echo(token: str) -> None:
    with pytest.raises(RerankInputError) as raised:
        RerankClient("127.0.0.1:1", token=token)

    if token:
        assert token not in str(raised.value)
