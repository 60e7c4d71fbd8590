"""Request queue and model batching shared by all requests.

Each request becomes a job of pairs. One worker thread takes pairs from the
queue, cuts them into batches bounded by a pair count and a padded-token budget,
runs the scorer and writes each score back to its job's slot. Pairs of one batch
may come from different requests. Padding is masked, so a pair's score depends
on the other pairs in its batch only through float rounding.

This module has no gRPC imports: the service maps its exceptions to status codes.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

# A caller that leaves less than this many seconds before its deadline is counted
# as timed out rather than cancelled.
DEADLINE_SLACK_S = 0.5


class PairLike(Protocol):
    @property
    def length(self) -> int: ...


class Scorer(Protocol):
    """Model seam: returns one raw score per pair of a padded batch."""

    def score(self, pairs: Sequence[PairLike]) -> np.ndarray: ...


class BatcherMetrics(Protocol):
    def batch_done(self, stats: BatchStats) -> None: ...
    def queue_changed(self, requests: int, tokens: int) -> None: ...
    def dropped(self, reason: str, pairs: int) -> None: ...


class QueueFullError(Exception):
    """The queue is at its request or token limit; the request was not admitted."""

    def __init__(self, resource: str, current: int, incoming: int, limit: int) -> None:
        super().__init__(
            f"server queue is full: {current} {resource} waiting plus {incoming} in this request "
            f"exceeds the limit of {limit}; retry later or on another replica"
        )
        self.resource = resource
        self.limit = limit


class JobDroppedError(Exception):
    """A job was removed before it was scored, because its caller left or its deadline passed.

    ``reason`` is ``deadline`` or ``cancelled``.
    """

    MESSAGES = {
        "deadline": "deadline exceeded before the pairs were scored",
        "cancelled": "caller cancelled the request before the pairs were scored",
    }

    def __init__(self, reason: str) -> None:
        super().__init__(self.MESSAGES.get(reason, reason))
        self.reason = reason


class BatcherStoppedError(Exception):
    """The batcher stopped before the job was scored."""


@dataclass(frozen=True)
class BatchStats:
    """Figures of one model batch, for metrics and DEBUG logs."""

    pairs: int
    requests: int
    tokens: int
    padded_tokens: int
    queue_wait_s: float
    inference_s: float
    queue_requests: int
    queue_tokens: int


class Job:
    """Pairs of one request and, once all are scored, their raw scores."""

    def __init__(self, size: int, *, deadline: float | None, is_active: Callable[[], bool] | None) -> None:
        self.scores = np.zeros(size, dtype=np.float32)
        self.deadline = deadline
        self.is_active = is_active
        self.enqueued_at = 0.0
        self.tokens = 0
        self._remaining = size
        self._error: BaseException | None = None
        self._done = threading.Event()
        if size == 0:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None) -> np.ndarray:
        """Block until scored; return the scores or raise what stopped the job.

        Raises:
            TimeoutError: ``timeout`` seconds passed first. The job stays queued;
                call :meth:`cancel` to drop its remaining pairs.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"job not scored within {timeout:.3f} s")
        if self._error is not None:
            raise self._error
        return self.scores

    def cancel(self, reason: str = "cancelled") -> None:
        """Drop the job's unscored pairs (reason ``deadline`` or ``cancelled``).

        Safe to call at any time and more than once; a finished job is unaffected.
        """
        self._fail(JobDroppedError(reason))

    def _set(self, slot: int, value: float) -> bool:
        if self._done.is_set():
            return False
        self.scores[slot] = value
        self._remaining -= 1
        if self._remaining == 0:
            self._done.set()
            return True
        return False

    def _fail(self, error: BaseException) -> bool:
        if self._done.is_set():
            return False
        self._error = error
        self._done.set()
        return True

    def _drop_reason(self, now: float) -> str | None:
        if self._done.is_set():
            if isinstance(self._error, JobDroppedError):
                return self._error.reason
            return "finished" if self._error is None else "failed"
        if self.deadline is not None and now >= self.deadline:
            return "deadline"
        if self.is_active is not None and not self.is_active():
            # The caller's deadline timer fires before the server's, which starts a
            # network hop later, so a caller gone just before its deadline timed out.
            if self.deadline is not None and now >= self.deadline - DEADLINE_SLACK_S:
                return "deadline"
            return "cancelled"
        return None


@dataclass
class _Item:
    job: Job
    slot: int
    pair: PairLike
    sequence: int


class Batcher:
    """Cuts queued pairs into model batches on one worker thread.

    Args:
        scorer: Model seam that scores one batch.
        max_batch_pairs: Max pairs in one batch.
        max_batch_tokens: Max padded tokens (pairs times the longest pair) in one
            batch. A single pair longer than this still runs, alone.
        max_queue_delay_s: Max time the oldest queued pair waits for more pairs
            before a batch that is not full is cut.
        max_queue_requests: Jobs admitted and not yet finished beyond which
            :meth:`submit` raises :class:`QueueFullError`.
        max_queue_tokens: Queued tokens beyond which :meth:`submit` raises. An
            empty queue admits any job, so no request is rejected only for its size.
    """

    def __init__(self, scorer: Scorer, *, max_batch_pairs: int, max_batch_tokens: int,
                 max_queue_delay_s: float, max_queue_requests: int, max_queue_tokens: int,
                 metrics: BatcherMetrics | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._scorer = scorer
        self._max_pairs = max_batch_pairs
        self._max_tokens = max_batch_tokens
        self._max_delay = max_queue_delay_s
        self._max_requests = max_queue_requests
        self._max_queue_tokens = max_queue_tokens
        self._metrics = metrics
        self._clock = clock
        self._condition = threading.Condition()
        self._pending: list[_Item] = []
        self._active_jobs: set[Job] = set()
        self._queued_tokens = 0
        self._sequence = itertools.count()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rerank-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the worker after the batch in progress; fail every job still queued."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._condition:
            for job in list(self._active_jobs):
                job._fail(BatcherStoppedError("server is stopping; retry on another replica"))
            self._active_jobs.clear()
            self._pending.clear()
            self._queued_tokens = 0

    def queue_depth(self) -> tuple[int, int]:
        """Return (jobs admitted and not finished, queued tokens)."""
        with self._condition:
            self._forget_finished()
            return len(self._active_jobs), self._queued_tokens

    def submit(self, pairs: Sequence[PairLike], *, deadline: float | None = None,
               is_active: Callable[[], bool] | None = None) -> Job:
        """Queue the pairs of one request and return its job.

        Args:
            pairs: Encoded pairs; the job's score ``i`` belongs to ``pairs[i]``.
            deadline: Clock time after which the job's unscored pairs are dropped.
            is_active: Returns False once the caller has gone; its pairs are dropped.

        Raises:
            QueueFullError: The request or token limit is reached.
            BatcherStoppedError: The batcher is stopping.
        """
        job = Job(len(pairs), deadline=deadline, is_active=is_active)
        if not pairs:
            return job
        tokens = sum(pair.length for pair in pairs)
        with self._condition:
            if self._stopping:
                raise BatcherStoppedError("server is stopping; retry on another replica")
            self._forget_finished()
            if len(self._active_jobs) >= self._max_requests:
                raise QueueFullError("requests", len(self._active_jobs), 1, self._max_requests)
            if self._queued_tokens and self._queued_tokens + tokens > self._max_queue_tokens:
                raise QueueFullError("tokens", self._queued_tokens, tokens, self._max_queue_tokens)
            job.enqueued_at = self._clock()
            job.tokens = tokens
            for slot, pair in enumerate(pairs):
                self._pending.append(_Item(job, slot, pair, next(self._sequence)))
            self._active_jobs.add(job)
            self._queued_tokens += tokens
            self._report_queue()
            self._condition.notify_all()
        return job

    # -- worker -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._condition:
                batch = self._wait_for_batch()
                if batch is None:
                    return
                queue_requests, queue_tokens = len(self._active_jobs), self._queued_tokens
            self._score(batch, queue_requests, queue_tokens)

    def _wait_for_batch(self) -> list[_Item] | None:
        """Wait for pairs, give the batch up to max_queue_delay to fill, then cut it. Holds the lock."""
        while True:
            while not self._pending and not self._stopping:
                self._condition.wait()
            if self._stopping:
                return None
            # Waiting a little turns many small requests into one efficient batch;
            # the wait is bounded by the oldest pair's time in the queue.
            oldest = self._pending[0].job.enqueued_at
            while not self._stopping and not self._batch_is_full():
                remaining = oldest + self._max_delay - self._clock()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            self._drop_dead_jobs()
            if self._pending:
                return self._cut_batch()

    def _batch_is_full(self) -> bool:
        if len(self._pending) >= self._max_pairs:
            return True
        longest = max(item.pair.length for item in self._pending)
        return longest * len(self._pending) >= self._max_tokens

    def _drop_dead_jobs(self) -> None:
        now = self._clock()
        dead: dict[Job, str] = {}
        for item in self._pending:
            if item.job not in dead:
                reason = item.job._drop_reason(now)
                if reason is not None:
                    dead[item.job] = reason
        if not dead:
            return
        kept = []
        dropped_pairs: dict[str, int] = {}
        for item in self._pending:
            reason = dead.get(item.job)
            if reason is None:
                kept.append(item)
                continue
            self._queued_tokens -= item.pair.length
            dropped_pairs[reason] = dropped_pairs.get(reason, 0) + 1
        self._pending = kept
        for job, reason in dead.items():
            if reason in JobDroppedError.MESSAGES:
                job._fail(JobDroppedError(reason))
            self._active_jobs.discard(job)
        for reason, pairs in dropped_pairs.items():
            if reason in ("deadline", "cancelled"):
                logger.debug("dropped unscored pairs reason=%s pairs=%d", reason, pairs)
                if self._metrics is not None:
                    self._metrics.dropped(reason, pairs)
        self._report_queue()

    def _cut_batch(self) -> list[_Item]:
        """Take the longest pair of the oldest job and the pairs no longer than it.

        Sorting by length keeps padding low; anchoring on the oldest job keeps the
        queue first come, first served.
        """
        anchor = self._pending[0].job
        ordered = sorted(self._pending, key=lambda item: (-item.pair.length, item.sequence))
        start = next(index for index, item in enumerate(ordered) if item.job is anchor)
        width = ordered[start].pair.length
        batch = []
        for item in ordered[start:]:
            if len(batch) >= self._max_pairs or (batch and (len(batch) + 1) * width > self._max_tokens):
                break
            batch.append(item)
        taken = {id(item) for item in batch}
        self._pending = [item for item in self._pending if id(item) not in taken]
        self._queued_tokens -= sum(item.pair.length for item in batch)
        return batch

    def _score(self, batch: list[_Item], queue_requests: int, queue_tokens: int) -> None:
        started = self._clock()
        try:
            scores = self._scorer.score([item.pair for item in batch])
        except Exception as error:  # noqa: BLE001 - any model failure fails the jobs, never the worker
            logger.exception("model batch failed pairs=%d", len(batch))
            with self._condition:
                for job in {item.job for item in batch}:
                    job._fail(error)
                self._forget_finished()
                self._report_queue()
            return
        finished = self._clock()
        with self._condition:
            for item, value in zip(batch, scores):
                item.job._set(item.slot, float(value))
            self._forget_finished()
            self._report_queue()
        stats = BatchStats(
            pairs=len(batch),
            requests=len({id(item.job) for item in batch}),
            tokens=sum(item.pair.length for item in batch),
            padded_tokens=len(batch) * max(item.pair.length for item in batch),
            queue_wait_s=started - min(item.job.enqueued_at for item in batch),
            inference_s=finished - started,
            queue_requests=queue_requests,
            queue_tokens=queue_tokens,
        )
        logger.debug(
            "batch pairs=%d requests=%d tokens=%d padded_tokens=%d queue_wait_ms=%.1f inference_ms=%.1f",
            stats.pairs, stats.requests, stats.tokens, stats.padded_tokens,
            stats.queue_wait_s * 1000, stats.inference_s * 1000,
        )
        if self._metrics is not None:
            self._metrics.batch_done(stats)

    def _forget_finished(self) -> None:
        finished = [job for job in self._active_jobs if job.done]
        if not finished:
            return
        for job in finished:
            self._active_jobs.discard(job)
        if any(item.job.done for item in self._pending):
            # Pairs of dropped jobs are counted by reason before they leave the queue.
            self._drop_dead_jobs()

    def _report_queue(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_changed(len(self._active_jobs), self._queued_tokens)
