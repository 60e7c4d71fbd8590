"""Sidecar behaviour users reported broken in other rerankers, against a real server process.

The tiny test model has random weights, so relevance is checked against direct
``CrossEncoder.predict`` scores of the same model rather than against meaning.
"""

from __future__ import annotations

import itertools
import re
import threading
import time

import grpc
import pytest

from rerank_client._proto.rerank.v1 import rerank_pb2, rerank_pb2_grpc
from rerank_harness.models import build_tiny_cross_encoder
from rerank_harness.sidecar import SidecarError, SidecarProcess

SCORE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def stub(sidecar):
    channel = grpc.insecure_channel(sidecar.target)
    yield rerank_pb2_grpc.RerankerStub(channel)
    channel.close()


def _rerank(stub, query, texts, **fields):
    request = rerank_pb2.RerankRequest(query=query, documents=[rerank_pb2.Document(text=t) for t in texts],
                                       **fields)
    return stub.Rerank(request, timeout=60)


def _scores(response) -> dict[int, float | None]:
    return {result.index: (result.score if result.HasField("score") else None) for result in response.results}


def _expected_order(reference_encoder, query, texts) -> list[int]:
    reference = reference_encoder.predict([(query, text) for text in texts])
    return sorted(range(len(texts)), key=lambda index: (-reference[index], index))


def test_empty_document_list_returns_ok(stub, texts):
    response = _rerank(stub, texts["Q"], [])
    assert list(response.results) == []


@pytest.mark.parametrize("query", ["", "  \n"])
def test_blank_query_is_invalid_argument(stub, texts, query):
    with pytest.raises(grpc.RpcError) as raised:
        _rerank(stub, query, [texts["D_REL"]])
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"query {query!r} is empty or whitespace only")


@pytest.fixture
def five_documents(texts) -> list[str]:
    return [texts["D_IRR"], texts["D_IRR2"], texts["D_REL"], texts["D_REL2"], texts["D_MID"]]


@pytest.mark.parametrize("top_n", [None, 5, 50])
def test_top_n_at_or_above_count_returns_all(stub, texts, five_documents, reference_encoder, top_n):
    fields = {} if top_n is None else {"top_n": top_n}
    response = _rerank(stub, texts["Q"], five_documents, **fields)
    assert [result.index for result in response.results] == _expected_order(reference_encoder, texts["Q"],
                                                                              five_documents)


def test_top_n_truncates_after_sorting(stub, texts, five_documents):
    full = _rerank(stub, texts["Q"], five_documents)
    top_two = _rerank(stub, texts["Q"], five_documents, top_n=2)
    assert [(r.index, r.score) for r in top_two.results] == [(r.index, r.score) for r in full.results[:2]]


def test_top_n_zero_returns_no_results(stub, texts, five_documents):
    assert list(_rerank(stub, texts["Q"], five_documents, top_n=0).results) == []


def test_top_n_negative_is_rejected(stub, texts, five_documents):
    with pytest.raises(grpc.RpcError) as raised:
        _rerank(stub, texts["Q"], five_documents, top_n=-1)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "top_n is -1" in raised.value.details()


def test_raw_scores_are_unclamped_logits(stub, texts, reference_encoder):
    response = _rerank(stub, texts["Q"], [texts["D_REL"], texts["D_IRR"]])
    reference = reference_encoder.predict([(texts["Q"], texts["D_REL"]), (texts["Q"], texts["D_IRR"])])
    scores = _scores(response)
    assert scores[0] == pytest.approx(float(reference[0]), abs=SCORE_TOLERANCE)
    assert scores[1] == pytest.approx(float(reference[1]), abs=SCORE_TOLERANCE)
    assert min(scores.values()) < 0  # the tiny model's logits here are negative, and come back as such


def test_normalized_keeps_raw_ranking_without_ties(stub, texts):
    documents = [texts["D_REL"], texts["D_REL2"], texts["D_MID"]]
    raw = _rerank(stub, texts["Q"], documents)
    normalized = _rerank(stub, texts["Q"], documents, score_kind=rerank_pb2.SCORE_KIND_NORMALIZED)
    assert [r.index for r in normalized.results] == [r.index for r in raw.results]
    assert len({r.score for r in normalized.results}) == 3
    assert all(0.0 < r.score < 1.0 for r in normalized.results)
    assert normalized.score_kind == rerank_pb2.SCORE_KIND_NORMALIZED


def test_single_label_scores_are_not_flattened(stub, texts, reference_encoder):
    documents = [texts["D_IRR"], texts["D_MID"], texts["D_REL"]]
    response = _rerank(stub, texts["Q"], documents)
    scores = [result.score for result in response.results]
    assert max(scores) - min(scores) > 1e-3
    assert [r.index for r in response.results] == _expected_order(reference_encoder, texts["Q"], documents)


def test_three_label_model_fails_at_start(tmp_path):
    folder = build_tiny_cross_encoder(tmp_path / "three-labels", num_labels=3)
    process = SidecarProcess(folder, startup_timeout_s=120)
    with pytest.raises(SidecarError, match="exited with status 3"):
        process.start()
    assert "has 3 output labels, but a reranker needs exactly 1" in process.log_text()


def test_missing_model_fails_at_start(tmp_path):
    process = SidecarProcess(tmp_path / "no-such-model", startup_timeout_s=120)
    with pytest.raises(SidecarError, match="exited with status 3"):
        process.start()
    assert f"model folder '{tmp_path / 'no-such-model'}' not found" in process.log_text()


NEIGHBOURS = ["D_IRR", "LONG", "D_REL", "D_MID"]


def _neighbour_texts(texts) -> list[str]:
    return [texts[name] if name != "LONG" else "x " * 400 for name in NEIGHBOURS]


@pytest.fixture(scope="module")
def small_batch_sidecars(tiny_model_dir):
    processes = [
        SidecarProcess(tiny_model_dir, args=["--batch-size", "1"]),
        SidecarProcess(tiny_model_dir, args=["--batch-size", "2", "--max-batch-tokens", "256"]),
    ]
    for process in processes:
        process.start(wait=False)
    try:
        for process in processes:
            process.wait_until_serving()
        yield processes
    finally:
        for process in processes:
            process.stop()


def test_score_independent_of_neighbours_and_batch_size(stub, texts, small_batch_sidecars):
    alone = _scores(_rerank(stub, texts["Q"], [texts["D_REL"]]))[0]
    mixed_texts = _neighbour_texts(texts)
    observed = [_scores(_rerank(stub, texts["Q"], mixed_texts))[2]]
    for process in small_batch_sidecars:
        with grpc.insecure_channel(process.target) as channel:
            other = rerank_pb2_grpc.RerankerStub(channel)
            observed.append(_scores(_rerank(other, texts["Q"], mixed_texts))[2])
            observed.append(_scores(_rerank(other, texts["Q"], [texts["D_REL"]]))[0])
    for score in observed:
        assert score == pytest.approx(alone, abs=1e-4)


def test_ranking_same_under_every_input_permutation(stub, texts):
    names = ["D_REL", "D_IRR", "D_MID", "D_IRR2"]
    baseline = None
    for permutation in itertools.permutations(names):
        response = _rerank(stub, texts["Q"], [texts[name] for name in permutation])
        ranking = [permutation[result.index] for result in response.results]
        if baseline is None:
            baseline = ranking
        assert ranking == baseline


def test_blank_documents_rank_last_in_request_order(stub, texts):
    response = _rerank(stub, texts["Q"], [texts["D_REL"], "", "   \n\t", texts["D_IRR"]])
    scores = _scores(response)
    assert [r.index for r in response.results][2:] == [1, 2]
    assert scores[1] is None
    assert scores[2] is None
    assert scores[0] is not None
    assert scores[3] is not None
    assert response.usage.pairs_scored == 2


def test_all_blank_documents_keep_order_without_scoring(stub, texts):
    response = _rerank(stub, texts["Q"], ["", " "])
    assert [r.index for r in response.results] == [0, 1]
    assert response.usage.pairs_scored == 0


GOLDEN_QUERIES = [
    "how to descale a kettle",
    "when does the museum reopen",
    "library hours in winter",
]
GOLDEN_DOCUMENTS = [
    "To descale a kettle, fill it with equal parts water and white vinegar, boil it, then rinse twice.",
    "Citric acid dissolved in warm water removes limescale from kettles and coffee makers.",
    "Kettles collect mineral scale over time in hard-water areas.",
    "The museum's east wing reopens after the roof repair.",
    "Library opening hours change during the winter months.",
    "Vinegar and a long boil clear the white crust inside an electric kettle.",
    "After repairs to its roof, the east wing of the museum opens to visitors again.",
    "In December and January the library closes two hours earlier.",
]


@pytest.mark.parametrize("query", GOLDEN_QUERIES)
def test_served_scores_match_reference(stub, reference_encoder, query):
    response = _rerank(stub, query, GOLDEN_DOCUMENTS, truncation=rerank_pb2.TRUNCATION_LONGEST_FIRST)
    reference = reference_encoder.predict([(query, document) for document in GOLDEN_DOCUMENTS])
    for result in response.results:
        assert result.score == pytest.approx(float(reference[result.index]), abs=SCORE_TOLERANCE)
    assert [r.index for r in response.results] == _expected_order(reference_encoder, query, GOLDEN_DOCUMENTS)


def test_sigterm_finishes_in_flight_and_exits_zero(tiny_model_dir, texts):
    process = SidecarProcess(tiny_model_dir, args=["--grace-period", "60", "--log-level", "DEBUG"]).start()
    outcome = {}

    def call() -> None:
        with grpc.insecure_channel(process.target) as channel:
            stub = rerank_pb2_grpc.RerankerStub(channel)
            try:
                outcome["response"] = _rerank(stub, texts["Q"], ["kettle scale " * 200] * 300)
            except grpc.RpcError as error:
                outcome["error"] = error

    caller = threading.Thread(target=call)
    caller.start()
    # The first batch's DEBUG line shows the request is in flight; bounded wait.
    deadline = time.monotonic() + 60
    while "batch pairs=" not in process.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "batch pairs=" in process.log_text()

    status = process.stop(timeout=90)
    caller.join(90)
    log = process.log_text()
    assert status == 0
    assert "error" not in outcome
    assert len(outcome["response"].results) == 300
    assert "draining grace_seconds=60.0" in log
    assert re.search(r"INFO rerank_server stopped", log)
