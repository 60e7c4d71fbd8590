"""Sidecar acceptance cases against real server processes: long pairs, concurrency, size limits.

Scores are compared with sentence-transformers' ``CrossEncoder.predict`` on the
same tiny random model, or with the same request sent alone.
"""

from __future__ import annotations

import math
import random
import re
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from rerank_client._proto.rerank.v1 import rerank_pb2

from .conftest import request, rpc_error, rss_kib, scores_by_index

LONGEST_FIRST = {"truncation": rerank_pb2.TRUNCATION_LONGEST_FIRST}
DOCUMENT_FIRST = {"truncation": rerank_pb2.TRUNCATION_DOCUMENT_FIRST}


# -- over-length pairs ---------------------------------------------------------------------------


@pytest.mark.parametrize("truncation", [DOCUMENT_FIRST, LONGEST_FIRST], ids=["document_first", "longest_first"])
def test_over_length_pair_scores(main_server, truncation):
    response = main_server.stub.Rerank(request("cat " * 300, ["dog " * 300], **truncation), timeout=60)
    assert len(response.results) == 1
    assert math.isfinite(response.results[0].score)
    assert response.usage.tokens == 512
    assert response.usage.documents_truncated == 1


def test_over_length_query_is_cut_not_rejected(main_server):
    response = main_server.stub.Rerank(request("cat " * 600, ["dogs nap in the sun"]), timeout=60)
    assert len(response.results) == 1
    assert math.isfinite(response.results[0].score)
    assert response.usage.queries_truncated == 1


def test_over_length_query_longest_first(main_server):
    response = main_server.stub.Rerank(request("cat " * 600, ["dogs nap in the sun"], **LONGEST_FIRST),
                                       timeout=60)
    assert math.isfinite(response.results[0].score)
    assert response.usage.tokens == 512


@pytest.mark.parametrize("pair_tokens", [511, 512, 513, 514])
def test_boundary_pair_lengths(main_server, pair_tokens):
    # "dog" and "cat" are one word piece each; a pair adds 3 special tokens.
    document = "cat " * (pair_tokens - 4)
    response = main_server.stub.Rerank(request("dog", [document]), timeout=60)
    assert math.isfinite(response.results[0].score)
    assert response.usage.tokens == min(pair_tokens, 512)
    assert response.usage.tokens_truncated == max(0, pair_tokens - 512)


def test_long_inputs_leave_no_state(main_server, start_server, texts):
    for query, documents in [("cat " * 300, ["dog " * 300]), ("cat " * 600, ["dogs nap in the sun"])]:
        main_server.stub.Rerank(request(query, documents), timeout=60)
    after_long = main_server.stub.Rerank(request(texts["Q"], [texts["D_REL"], texts["D_IRR"]]), timeout=60)

    # A fresh process, started with a max length above the model's 512 positions.
    fresh = start_server("--max-length", "1024")
    info = fresh.stub.GetModelInfo(rerank_pb2.GetModelInfoRequest(), timeout=30)
    fresh_scores = fresh.stub.Rerank(request(texts["Q"], [texts["D_REL"], texts["D_IRR"]]), timeout=60)

    assert info.max_length == 512
    assert "--max-length 1024 exceeds the 512 positions" in fresh.process.log_text()
    for index, score in scores_by_index(fresh_scores).items():
        assert scores_by_index(after_long)[index] == pytest.approx(score, abs=1e-5)


# -- concurrency and memory ------------------------------------------------------------------------


def _mixed_request(rng: random.Random, texts: dict[str, str], number: int,
                   max_documents: int = 50) -> rerank_pb2.RerankRequest:
    """A request with a distinct query and 1 to ``max_documents`` documents of roughly 10 to 600 tokens."""
    bodies = [texts[name] for name in ("D_REL", "D_REL2", "D_MID", "D_IRR", "D_IRR2")]
    documents = []
    for position in range(rng.randint(1, max_documents)):
        words = rng.randint(10, 600)
        filler = " ".join(f"{rng.choice(bodies)} {position}-{word}" for word in range(max(1, words // 20)))
        documents.append(" ".join(filler.split()[:words]))
    return request(f"{texts['Q']} {number}", documents)


def test_concurrent_then_sequential_calls(main_server, texts):
    rng = random.Random(9)
    concurrent = [_mixed_request(rng, texts, number) for number in range(64)]
    with ThreadPoolExecutor(max_workers=64) as pool:
        together = list(pool.map(lambda item: main_server.stub.Rerank(item, timeout=300), concurrent))

    # Fewer documents per sequential call keep the run short on a 2-core machine.
    sequential = [_mixed_request(rng, texts, 1000 + number, max_documents=20) for number in range(300)]
    first_answers = []
    rss_after_call_100 = 0
    for number, item in enumerate(sequential, start=1):
        response = main_server.stub.Rerank(item, timeout=120)
        assert len(response.results) == len(item.documents)
        if number <= 10:
            first_answers.append(response)
        if number == 100:
            # The first calls still grow the allocator pools of the handler threads.
            rss_after_call_100 = rss_kib(main_server.pid)
    rss_at_end = rss_kib(main_server.pid)

    for item, response in zip(concurrent, together):
        alone = main_server.stub.Rerank(item, timeout=120)
        assert sorted(scores_by_index(response)) == list(range(len(item.documents)))
        for index, score in scores_by_index(alone).items():
            assert scores_by_index(response)[index] == pytest.approx(score, abs=1e-4)
    for item, response in zip(sequential, first_answers):
        again = main_server.stub.Rerank(item, timeout=120)
        assert scores_by_index(again) == pytest.approx(scores_by_index(response), abs=1e-4)
    assert rss_at_end <= rss_after_call_100 * 1.10, (rss_after_call_100, rss_at_end)


# -- size limits -----------------------------------------------------------------------------------


def test_megabyte_document_scored_as_its_first_chars(main_server, texts):
    document = "river stone " * 90000 + texts["D_REL"]
    whole = main_server.stub.Rerank(request(texts["Q"], [document]), timeout=60)
    cut = main_server.stub.Rerank(request(texts["Q"], [document[:20_000]]), timeout=60)
    assert len(document.encode()) > 1_000_000
    assert whole.results[0].score == pytest.approx(cut.results[0].score, abs=1e-5)


def test_thousand_documents_over_batch_size(main_server, reference_encoder, texts):
    documents = [f"item {number}: {texts['D_IRR2']}" for number in range(1000)]
    documents[737] = texts["D_REL"]
    response = main_server.stub.Rerank(request(texts["Q"], documents), timeout=300)

    reference = reference_encoder.predict([(texts["Q"], text) for text in documents], batch_size=64)
    indexes = [result.index for result in response.results]
    assert sorted(indexes) == list(range(1000))
    assert indexes[0] == int(reference.argmax())
    assert [result.score for result in response.results] == sorted((result.score for result in response.results),
                                                                   reverse=True)
    for result in response.results:
        assert result.score == pytest.approx(float(reference[result.index]), abs=1e-4)
    assert scores_by_index(response)[737] == pytest.approx(float(reference[737]), abs=1e-4)


def test_thousand_and_one_documents_rejected(main_server, texts):
    documents = [f"item {number}: {texts['D_IRR2']}" for number in range(1001)]
    error = rpc_error(lambda: main_server.stub.Rerank(request(texts["Q"], documents), timeout=60))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ("documents has 1001 entries, over the limit of 1000 per request (--max-documents); "
                               "split the page into several requests")


# -- missing model ---------------------------------------------------------------------------------


def test_missing_model_exits_nonzero(tmp_path, tiny_model_dir):
    from rerank_harness.sidecar import SidecarProcess

    missing = tmp_path / "no-such-model"
    process = SidecarProcess(missing, args=["--threads", "1"])
    process.start(wait=False)
    try:
        status = process.wait(timeout=120)
    finally:
        process.stop()
    assert status != 0
    assert re.search(rf"model folder '{re.escape(str(missing))}' not found", process.log_text())
