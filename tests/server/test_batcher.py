"""Batcher behaviour with a fake scorer: batch cuts, neighbours, deadlines, backpressure."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from rerank_server.batcher import Batcher, BatcherStoppedError, JobDroppedError, QueueFullError


@dataclass(frozen=True)
class FakePair:
    length: int
    value: float


class FakeScorer:
    """Returns each pair's preset value and records the batches it saw."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.batches: list[list[FakePair]] = []
        self.delay_s = delay_s
        self.gate = gate

    def score(self, pairs):
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        self.batches.append(list(pairs))
        return np.array([pair.value for pair in pairs], dtype=np.float32)


def _batcher(scorer, **overrides) -> Batcher:
    settings = dict(max_batch_pairs=4, max_batch_tokens=100, max_queue_delay_s=0.0, max_queue_requests=8,
                    max_queue_tokens=10_000)
    settings.update(overrides)
    batcher = Batcher(scorer, **settings)
    batcher.start()
    return batcher


def test_scores_map_back_to_request_order():
    scorer = FakeScorer()
    batcher = _batcher(scorer)
    pairs = [FakePair(length, float(index)) for index, length in enumerate([5, 30, 10, 20, 1, 7])]
    scores = batcher.submit(pairs).wait(5)
    batcher.stop()
    assert scores.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_batches_respect_pair_and_token_limits():
    scorer = FakeScorer()
    batcher = _batcher(scorer, max_batch_pairs=3, max_batch_tokens=60)
    pairs = [FakePair(length, 0.0) for length in [25, 25, 25, 10, 10, 10, 10, 10]]
    batcher.submit(pairs).wait(5)
    batcher.stop()
    for batch in scorer.batches:
        assert len(batch) <= 3
        assert len(batch) * max(pair.length for pair in batch) <= 60
    assert sum(len(batch) for batch in scorer.batches) == len(pairs)


def test_batches_are_sorted_by_length():
    scorer = FakeScorer()
    batcher = _batcher(scorer, max_batch_pairs=2, max_batch_tokens=1000)
    batcher.submit([FakePair(length, 0.0) for length in [3, 50, 4, 49]]).wait(5)
    batcher.stop()
    assert [[pair.length for pair in batch] for batch in scorer.batches] == [[50, 49], [4, 3]]


def test_oversized_pair_runs_alone():
    scorer = FakeScorer()
    batcher = _batcher(scorer, max_batch_tokens=10)
    scores = batcher.submit([FakePair(500, 1.5)]).wait(5)
    batcher.stop()
    assert scores.tolist() == [1.5]


def test_requests_share_batches():
    gate = threading.Event()
    scorer = FakeScorer(gate=gate)
    batcher = _batcher(scorer, max_batch_pairs=8, max_batch_tokens=1000)
    first = batcher.submit([FakePair(5, 1.0)])
    time.sleep(0.05)  # the worker now waits on the gate with the first batch
    second = batcher.submit([FakePair(5, 2.0), FakePair(5, 3.0)])
    third = batcher.submit([FakePair(5, 4.0)])
    gate.set()
    assert first.wait(5).tolist() == [1.0]
    assert second.wait(5).tolist() == [2.0, 3.0]
    assert third.wait(5).tolist() == [4.0]
    batcher.stop()
    assert [len(batch) for batch in scorer.batches] == [1, 3]


def test_expired_deadline_is_dropped_before_scoring():
    gate = threading.Event()
    scorer = FakeScorer(gate=gate)
    batcher = _batcher(scorer)
    blocker = batcher.submit([FakePair(5, 1.0)])
    time.sleep(0.05)
    late = batcher.submit([FakePair(5, 9.0)], deadline=time.monotonic() + 0.01)
    time.sleep(0.05)
    gate.set()
    blocker.wait(5)
    with pytest.raises(JobDroppedError) as raised:
        late.wait(5)
    batcher.stop()
    assert raised.value.reason == "deadline"
    assert [pair.value for batch in scorer.batches for pair in batch] == [1.0]


def test_cancelled_caller_is_dropped_before_scoring():
    gate = threading.Event()
    scorer = FakeScorer(gate=gate)
    batcher = _batcher(scorer)
    blocker = batcher.submit([FakePair(5, 1.0)])
    time.sleep(0.05)
    gone = batcher.submit([FakePair(5, 9.0)], is_active=lambda: False)
    gate.set()
    blocker.wait(5)
    with pytest.raises(JobDroppedError) as raised:
        gone.wait(5)
    batcher.stop()
    assert raised.value.reason == "cancelled"
    assert [pair.value for batch in scorer.batches for pair in batch] == [1.0]


def test_queue_full_by_requests():
    gate = threading.Event()
    batcher = _batcher(FakeScorer(gate=gate), max_queue_requests=2)
    batcher.submit([FakePair(5, 1.0)])
    batcher.submit([FakePair(5, 1.0)])
    with pytest.raises(QueueFullError, match="exceeds the limit of 2"):
        batcher.submit([FakePair(5, 1.0)])
    gate.set()
    batcher.stop()


def test_queue_full_by_tokens():
    gate = threading.Event()
    batcher = _batcher(FakeScorer(gate=gate), max_queue_tokens=100)
    batcher.submit([FakePair(60, 1.0)])  # taken by the worker, which blocks on the gate
    time.sleep(0.05)
    batcher.submit([FakePair(150, 1.0)])  # the queue is empty again, so any size is admitted
    with pytest.raises(QueueFullError, match="150 tokens waiting plus 1 in this request exceeds the limit of 100"):
        batcher.submit([FakePair(1, 1.0)])
    gate.set()
    batcher.stop()


def test_scorer_failure_fails_only_its_jobs():
    class FailingOnce(FakeScorer):
        def score(self, pairs):
            if not self.batches:
                self.batches.append(list(pairs))
                raise RuntimeError("injected model failure")
            return super().score(pairs)

    batcher = _batcher(FailingOnce())
    with pytest.raises(RuntimeError, match="injected model failure"):
        batcher.submit([FakePair(5, 1.0)]).wait(5)
    assert batcher.submit([FakePair(5, 2.0)]).wait(5).tolist() == [2.0]
    batcher.stop()


def test_stop_fails_queued_jobs():
    gate = threading.Event()
    batcher = _batcher(FakeScorer(gate=gate))
    batcher.submit([FakePair(5, 1.0)])
    time.sleep(0.05)
    queued = batcher.submit([FakePair(5, 2.0)])
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    gate.set()
    stopper.join(10)
    with pytest.raises(BatcherStoppedError):
        queued.wait(1)
    with pytest.raises(BatcherStoppedError):
        batcher.submit([FakePair(5, 1.0)])


def test_empty_job_is_done_at_once():
    batcher = _batcher(FakeScorer())
    assert batcher.submit([]).wait(0).tolist() == []
    batcher.stop()
