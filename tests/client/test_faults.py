"""Fault injection: every page comes back within its deadline, flagged, with every hit.

The named faults of the fake sidecar (slow, failing, unavailable, wrong count,
bad indices) and a closed port run through a fail-open client and a strict
one. Real ``rerank-server`` processes cover a sidecar killed in the middle of
a call, alone and as one of two replicas.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from client_pages import D_IRR, D_MID, D_REL, Q, body_page, check_page_invariants, snapshot

from rerank_client import (
    RERANK_KEY,
    RerankClient,
    RerankError,
    RerankProtocolError,
    RerankServerError,
    RerankTimeoutError,
    RerankUnavailableError,
)
from rerank_harness.fake_sidecar import FAULTS, FakeSidecar, closed_port, fault_behaviour
from rerank_harness.sidecar import SidecarProcess

DEADLINE_S = 0.5
# Work after the last RPC returns (checking the response, building the page)
# on a busy 2-core machine; the RPCs themselves never outlive the deadline.
SLACK_S = 0.25
PAGES_PER_FAULT = 5
FAULT_CASES = (*FAULTS, "closed_port")
STRICT_ERRORS: dict[str, type[RerankError]] = {
    "slow": RerankTimeoutError,
    "failing": RerankServerError,
    "unavailable": RerankUnavailableError,
    "wrong_count": RerankProtocolError,
    "duplicate_index": RerankProtocolError,
    "index_out_of_range": RerankProtocolError,
    "negative_index": RerankProtocolError,
    "closed_port": RerankUnavailableError,
}


def fault_target(stack: ExitStack, fault: str) -> str:
    """Return the target of a fake sidecar with `fault`, or a closed port."""
    if fault == "closed_port":
        return f"127.0.0.1:{closed_port()}"
    fake = stack.enter_context(FakeSidecar())
    fake.behaviour = fault_behaviour(fault, delay_s=DEADLINE_S * 6)
    return fake.target


def varied_page(seed: int) -> dict[str, Any]:
    texts = [D_IRR, D_REL, D_MID, "", None, 42]
    return body_page([texts[(seed + n) % len(texts)] for n in range(10)])


@pytest.mark.parametrize("fault", FAULT_CASES)
def test_fault_pages_returned_flagged_and_complete(fault: str, record_property: Any) -> None:
    figures = {"pages": 0, "within_deadline": 0, "flagged": 0, "complete": 0, "max_elapsed_s": 0.0}

    with ExitStack() as stack:
        client = stack.enter_context(RerankClient(fault_target(stack, fault), timeout=DEADLINE_S, fail_open=True))
        for seed in range(PAGES_PER_FAULT):
            page = varied_page(seed)
            before = snapshot(page)

            started = time.monotonic()
            out = client.rerank_page(page, Q, "body")
            elapsed = time.monotonic() - started

            figures["pages"] += 1
            figures["within_deadline"] += elapsed <= DEADLINE_S + SLACK_S
            figures["flagged"] += out[RERANK_KEY]["status"] == "skipped" and bool(out[RERANK_KEY]["reason"])
            figures["complete"] += out["hits"]["hits"] == before["hits"]["hits"]
            figures["max_elapsed_s"] = max(figures["max_elapsed_s"], round(elapsed, 3))
            check_page_invariants(before, out, input_after_call=page)

    record_property("fault_figures", figures)
    assert figures["within_deadline"] == PAGES_PER_FAULT
    assert figures["flagged"] == PAGES_PER_FAULT
    assert figures["complete"] == PAGES_PER_FAULT
    assert sum(client.fallbacks.values()) == PAGES_PER_FAULT


@pytest.mark.parametrize("fault", FAULT_CASES)
def test_fault_strict_raises_typed_error(fault: str) -> None:
    with ExitStack() as stack:
        client = stack.enter_context(RerankClient(fault_target(stack, fault), timeout=DEADLINE_S))
        started = time.monotonic()
        with pytest.raises(STRICT_ERRORS[fault]):
            client.rerank_page(varied_page(0), Q, "body")
        elapsed = time.monotonic() - started

    assert elapsed <= DEADLINE_S + SLACK_S
    assert client.fallbacks == {}


# -- real sidecar processes -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar_pair(tiny_model_dir: Path) -> Iterator[tuple[SidecarProcess, SidecarProcess]]:
    """Two real rerank-server processes with the tiny model, started side by side."""
    processes = [SidecarProcess(tiny_model_dir) for _ in range(2)]
    try:
        for process in processes:
            process.start(wait=False)
        for process in processes:
            process.wait_until_serving()
        yield processes[0], processes[1]
    finally:
        for process in processes:
            process.stop()


@pytest.mark.slow
def test_sidecar_killed_mid_call(sidecar_pair: tuple[SidecarProcess, SidecarProcess],
                                 record_property: Any) -> None:
    doomed, survivor = sidecar_pair
    deadline_s = 10.0
    # 400 documents of about 250 tokens take the tiny model over a second on
    # 2 CPU cores, so the call is still running when the process is killed.
    long_page = body_page([f"{D_REL} " + "kettle scale " * 120 + str(n) for n in range(400)])
    long_before = snapshot(long_page)
    alone = RerankClient(doomed.target, timeout=deadline_s, fail_open=True)
    replicated = RerankClient([doomed.target, survivor.target], timeout=deadline_s)
    replicated_outcomes: list[tuple[float, float, str]] = []
    stop_replicated = threading.Event()
    documents = [D_IRR, D_MID, D_REL]
    expected: list[int] = []

    def call_replicas() -> None:
        # Bounded by count and by the stop event.
        for _ in range(2000):
            if stop_replicated.is_set():
                return
            started = time.monotonic()
            try:
                ranking = replicated.rerank(Q, documents)
                outcome = "ok" if [result.index for result in ranking] == expected else "wrong order"
            except RerankError as error:
                outcome = type(error).__name__
            replicated_outcomes.append((started, time.monotonic(), outcome))

    with alone, replicated, ThreadPoolExecutor(max_workers=2) as pool:
        assert alone.check_health()
        assert replicated.check_health()
        # Both replicas serve the same model, so either gives this ranking.
        expected.extend(result.index for result in replicated.rerank(Q, documents))
        replicated_loop = pool.submit(call_replicas)
        started = time.monotonic()
        in_flight = pool.submit(alone.rerank_page, long_page, Q, "body")
        time.sleep(0.3)
        assert not in_flight.done()

        killed_at = time.monotonic()
        doomed.process.kill()
        doomed.process.wait(10)
        killed_page = in_flight.result(timeout=deadline_s + SLACK_S)
        killed_elapsed = time.monotonic() - started
        time.sleep(0.5)
        stop_replicated.set()
        replicated_loop.result(timeout=deadline_s + SLACK_S)

        later_pages = []
        for seed in range(5):
            page = varied_page(seed)
            page_started = time.monotonic()
            later_pages.append((snapshot(page), alone.rerank_page(page, Q, "body"),
                                time.monotonic() - page_started))
        after_kill = [replicated.rerank(Q, documents) for _ in range(20)]

    record_property("killed_figures", {
        "in_flight_elapsed_s": round(killed_elapsed, 3),
        "later_pages": len(later_pages),
        "later_max_elapsed_s": round(max(elapsed for _b, _o, elapsed in later_pages), 3),
        "replicated_calls": len(replicated_outcomes) + len(after_kill),
        "replicated_calls_spanning_kill": sum(start <= killed_at <= end for start, end, _o in replicated_outcomes),
    })

    assert killed_page[RERANK_KEY]["status"] == "skipped"
    assert killed_page[RERANK_KEY]["reason_code"] == "unavailable"
    assert killed_page["hits"]["hits"] == long_before["hits"]["hits"]
    assert killed_elapsed <= deadline_s + SLACK_S
    for before, out, elapsed in later_pages:
        assert out[RERANK_KEY]["status"] == "skipped"
        assert elapsed <= deadline_s + SLACK_S
        check_page_invariants(before, out)
    assert {outcome for _s, _e, outcome in replicated_outcomes} == {"ok"}
    assert all([result.index for result in ranking] == expected for ranking in after_kill)
