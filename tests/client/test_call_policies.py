"""Retries, the circuit breaker, replica targets and channel options of the client."""

from __future__ import annotations

import re
import time

import grpc
import pytest
from client_pages import D_IRR, D_REL, Q, body_page

from rerank_client import (
    RERANK_KEY,
    CircuitBreaker,
    Keepalive,
    RerankCircuitOpenError,
    RerankClient,
    RerankInputError,
    RerankServerError,
    RerankTimeoutError,
    RerankUnavailableError,
    RetryPolicy,
)
from rerank_client._core import resolve_target
from rerank_harness.fake_sidecar import FakeBehaviour, FakeSidecar, fault_behaviour


class FakeClock:
    """Monotonic clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- retries ----------------------------------------------------------------------------------


def test_unavailable_retried_then_succeeds(fake: FakeSidecar, fake_client: RerankClient) -> None:
    fake.behaviour = FakeBehaviour(status=grpc.StatusCode.UNAVAILABLE, fail_times=2)

    results = fake_client.rerank(Q, [D_IRR, D_REL])

    assert [result.index for result in results] == [1, 0]
    assert len(fake.requests) == 3
    assert fake_client.retries == 2


def test_retries_stop_at_max_attempts(fake: FakeSidecar) -> None:
    fake.behaviour = fault_behaviour("unavailable")

    with RerankClient(fake.target, retry=RetryPolicy(max_attempts=2)) as client, \
            pytest.raises(RerankUnavailableError, match="failed with UNAVAILABLE"):
        client.rerank(Q, [D_REL])

    assert len(fake.requests) == 2


def test_retry_policy_none_sends_once(fake: FakeSidecar) -> None:
    fake.behaviour = fault_behaviour("unavailable")

    with RerankClient(fake.target, retry=None) as client, pytest.raises(RerankUnavailableError):
        client.rerank(Q, [D_REL])

    assert len(fake.requests) == 1


def test_internal_error_not_retried(fake: FakeSidecar, fake_client: RerankClient) -> None:
    fake.behaviour = fault_behaviour("failing")

    with pytest.raises(RerankServerError, match="failed with INTERNAL"):
        fake_client.rerank(Q, [D_REL])

    assert len(fake.requests) == 1
    assert fake_client.retries == 0


def test_deadline_exceeded_not_retried(fake: FakeSidecar) -> None:
    fake.behaviour = fault_behaviour("slow", delay_s=3.0)

    with RerankClient(fake.target, timeout=0.3) as client, pytest.raises(RerankTimeoutError):
        client.rerank(Q, [D_REL])

    assert len(fake.requests) == 1


def test_retry_never_passes_deadline(fake: FakeSidecar) -> None:
    fake.behaviour = fault_behaviour("unavailable")
    slow_backoff = RetryPolicy(max_attempts=10, initial_backoff_s=0.2, max_backoff_s=0.2)

    with RerankClient(fake.target, timeout=0.25, retry=slow_backoff) as client:
        started = time.monotonic()
        with pytest.raises(RerankUnavailableError):
            client.rerank(Q, [D_REL])
        elapsed = time.monotonic() - started

    # The first retry waits 0.1 to 0.2 s, so at most two attempts fit in
    # 0.25 s. The 0.1 s margin covers the work after the last RPC returns on a
    # busy machine, and is shorter than one 0.2 s backoff past the deadline.
    assert len(fake.requests) <= 2
    assert elapsed < 0.25 + 0.1


def test_retry_backoff_grows_to_ceiling() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=0.3, multiplier=2.0)

    waits = [policy.backoff_s(retry) for retry in (1, 2, 3, 4)]

    assert 0.05 <= waits[0] <= 0.1
    assert 0.1 <= waits[1] <= 0.2
    assert 0.15 <= waits[2] <= 0.3
    assert 0.15 <= waits[3] <= 0.3


@pytest.mark.parametrize(("options", "message"), [
    ({"max_attempts": 0}, "RetryPolicy.max_attempts must be an integer >= 1, got 0"),
    ({"initial_backoff_s": -1.0}, "RetryPolicy.initial_backoff_s must be a non-negative number of seconds"),
    ({"multiplier": 0.5}, "RetryPolicy.multiplier must be a number >= 1, got 0.5"),
])
def test_retry_policy_rejects_invalid(options: dict[str, object], message: str) -> None:
    with pytest.raises(RerankInputError, match=re.escape(message)):
        RetryPolicy(**options)


# -- circuit breaker --------------------------------------------------------------------------


def test_breaker_opens_after_threshold() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=5.0, clock=clock)

    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record_failure()

    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.retry_after_s() == 5.0


def test_breaker_half_open_allows_one_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5.0)

    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow()


def test_breaker_trial_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5.0)
    breaker.allow()

    breaker.record_success()

    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 0


def test_breaker_trial_failure_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5.0)
    breaker.allow()

    breaker.record_failure()

    assert breaker.state == "open"
    assert breaker.retry_after_s() == 5.0


def test_breaker_lost_trial_expires() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5.0, clock=clock)
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()

    clock.advance(5.0)

    assert breaker.allow()


def test_breaker_skips_rpc_when_open(fake: FakeSidecar) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=10.0, clock=clock)
    fake.behaviour = fault_behaviour("failing")
    page = body_page([D_IRR, D_REL])

    with RerankClient(fake.target, breaker=breaker, fail_open=True) as client:
        first = [client.rerank_page(page, Q, "body") for _ in range(2)]
        skipped = client.rerank_page(page, Q, "body")
        with pytest.raises(RerankCircuitOpenError, match="circuit breaker open after 2 consecutive"):
            client.rerank_page(page, Q, "body", fail_open=False)

        fake.behaviour = FakeBehaviour()
        clock.advance(10.0)
        recovered = client.rerank_page(page, Q, "body")

    assert [out[RERANK_KEY]["reason_code"] for out in first] == ["server_error", "server_error"]
    assert skipped[RERANK_KEY]["reason_code"] == "circuit_open"
    assert skipped["hits"]["hits"] == page["hits"]["hits"]
    assert len(fake.requests) == 3
    assert recovered[RERANK_KEY]["status"] == "reranked"
    assert breaker.state == "closed"
    assert client.fallbacks == {"RerankServerError": 2, "RerankCircuitOpenError": 1}


def test_breaker_ignores_rejected_requests(fake: FakeSidecar) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    fake.behaviour = FakeBehaviour(status=grpc.StatusCode.INVALID_ARGUMENT)

    with RerankClient(fake.target, breaker=breaker, fail_open=True) as client:
        client.rerank_page(body_page([D_REL]), Q, "body")

    assert breaker.state == "closed"


def test_breaker_counts_protocol_errors(fake: FakeSidecar) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    fake.behaviour = fault_behaviour("wrong_count")

    with RerankClient(fake.target, breaker=breaker, fail_open=True) as client:
        client.rerank_page(body_page([D_REL, D_IRR]), Q, "body")

    assert breaker.state == "open"


def test_health_check_bypasses_open_breaker(fake: FakeSidecar) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    breaker.record_failure()

    with RerankClient(fake.target, breaker=breaker) as client:
        assert client.check_health() is True


# -- replicas ---------------------------------------------------------------------------------


def test_replica_list_becomes_ipv4_target() -> None:
    assert resolve_target(["127.0.0.1:5001", "127.0.0.1:5002"]) == "ipv4:127.0.0.1:5001,127.0.0.1:5002"
    assert resolve_target(["[::1]:5001"]) == "ipv6:[::1]:5001"
    assert resolve_target("dns:///reranker:50051") == "dns:///reranker:50051"


@pytest.mark.parametrize(("target", "message"), [
    (["reranker:50051"], "is not an IP address; name replicas behind a DNS name"),
    (["127.0.0.1:5001", "[::1]:5002"], "target mixes IPv4 and IPv6 addresses"),
    (["127.0.0.1"], "each replica must be a 'host:port' string"),
    (["127.0.0.1:0"], "invalid port in replica address"),
    ([], "non-empty list"),
    ("", "got an empty string"),
])
def test_replica_target_rejects_invalid(target: object, message: str) -> None:
    with pytest.raises(RerankInputError, match=re.escape(message)):
        resolve_target(target)  # type: ignore[arg-type]


def test_replicas_share_calls_round_robin() -> None:
    with FakeSidecar() as first, FakeSidecar() as second, \
            RerankClient([first.target, second.target], timeout=5.0) as client:
        for _ in range(10):
            client.rerank(Q, [D_REL])

    assert len(first.requests) > 0
    assert len(second.requests) > 0
    assert len(first.requests) + len(second.requests) == 10


def test_replica_stopped_calls_go_to_other() -> None:
    with FakeSidecar() as first, FakeSidecar() as second, \
            RerankClient([first.target, second.target], timeout=5.0) as client:
        client.rerank(Q, [D_REL])
        first.stop()
        results = [client.rerank(Q, [D_IRR, D_REL]) for _ in range(10)]
        after_stop = len(second.requests)

    assert all([result.index for result in ranking] == [1, 0] for ranking in results)
    assert after_stop >= 10


def test_retry_goes_to_other_replica() -> None:
    with FakeSidecar() as first, FakeSidecar() as second, \
            RerankClient([first.target, second.target], timeout=5.0, retry=RetryPolicy(max_attempts=2)) as client:
        # Calls on both replicas first, so that both connections are ready.
        for _ in range(4):
            client.rerank(Q, [D_REL])
        first.requests.clear()
        second.requests.clear()
        first.behaviour = fault_behaviour("unavailable")

        rankings = [client.rerank(Q, [D_IRR, D_REL]) for _ in range(10)]

    # Two attempts only, so each call whose first attempt hit the failing
    # replica succeeded on its one retry, which went to the other replica.
    assert all([result.index for result in ranking] == [1, 0] for ranking in rankings)
    assert len(first.requests) >= 1
    assert client.retries == len(first.requests)
    assert len(second.requests) == 10


# -- channel options --------------------------------------------------------------------------


def test_keepalive_channel_options() -> None:
    options = Keepalive(time_s=20.0, timeout_s=5.0, permit_without_calls=True).channel_options()

    assert options == [("grpc.keepalive_time_ms", 20000), ("grpc.keepalive_timeout_ms", 5000),
                       ("grpc.keepalive_permit_without_calls", 1)]


def test_client_channel_options_set_round_robin_and_keepalive() -> None:
    with RerankClient("127.0.0.1:1") as client:
        names = dict(client._channel_options)

    assert '"round_robin"' in names["grpc.service_config"]
    assert names["grpc.keepalive_time_ms"] == 30000


def test_caller_service_config_wins() -> None:
    config = '{"loadBalancingConfig": [{"pick_first": {}}]}'

    with RerankClient("127.0.0.1:1", channel_options=[("grpc.service_config", config)]) as client:
        configs = [value for name, value in client._channel_options if name == "grpc.service_config"]

    assert configs == [config]
