"""Log lines: request ids, rate-limited repeats, JSON output and one line per lifecycle event."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest

from rerank_server.logs import RepeatFilter, request_id_from

from .conftest import request, rpc_error


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(message: str, *args: object, name: str = "rerank_server.service",
            level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_repeat_filter_passes_first_lines_then_counts():
    clock = FakeClock()
    repeats = RepeatFilter(limit=3, interval_s=10.0, clock=clock)
    passed = [repeats.filter(_record("rejected request_id=%s", number)) for number in range(8)]
    assert passed == [True, True, True, False, False, False, False, False]
    assert repeats.summary() == (5, 1)


def test_repeat_filter_reports_count_on_next_window():
    clock = FakeClock()
    repeats = RepeatFilter(limit=2, interval_s=10.0, clock=clock)
    for number in range(6):
        repeats.filter(_record("rejected request_id=%s", number))
    clock.now += 10.0
    record = _record("rejected request_id=%s", "r-100%")
    assert repeats.filter(record)
    assert record.getMessage() == "rejected request_id=r-100% repeats_suppressed=4"
    assert record.repeats_suppressed == 4
    assert repeats.summary() == (0, 0)


def test_repeat_filter_keeps_templates_and_levels_apart():
    clock = FakeClock()
    repeats = RepeatFilter(limit=1, interval_s=10.0, clock=clock)
    assert repeats.filter(_record("first %s", 1))
    assert repeats.filter(_record("second %s", 1))
    assert repeats.filter(_record("first %s", 1, level=logging.WARNING))
    assert repeats.filter(_record("first %s", 1, name="rerank_server.batcher"))
    assert not repeats.filter(_record("first %s", 2))


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((("x-request-id", "abc-123"),), "abc-123"),
        ((("x-request-id", "evil\nINFO forged line"),), "evilINFOforgedline"),
        ((("x-request-id", "a" * 200),), "a" * 64),
        ((("other", "x"), ("x-request-id", "trace:00f0/1")), "trace:00f0/1"),
    ],
)
def test_request_id_cleaned(metadata, expected):
    assert request_id_from(metadata) == expected


@pytest.mark.parametrize("metadata", [(), (("x-request-id", "\n\t "),)])
def test_request_id_generated_when_missing(metadata):
    assert re.fullmatch(r"[0-9a-f]{16}", request_id_from(metadata))


def test_request_id_returned_in_trailing_metadata(main_server):
    _response, call = main_server.stub.Rerank.with_call(request("kettle", ["descale"]), timeout=30,
                                                        metadata=(("x-request-id", "caller-42"),))
    assert ("x-request-id", "caller-42") in call.trailing_metadata()


def test_process_log_is_json_lines(main_server):
    error = rpc_error(lambda: main_server.stub.Rerank(request("", ["document"]), timeout=30,
                                                      metadata=(("x-request-id", "json-check-1"),)))
    assert error.details().startswith("query '' is empty")
    lines = [json.loads(line) for line in main_server.process.log_text().splitlines() if line.strip()]
    messages = [line["message"] for line in lines]

    assert all({"time", "level", "name", "message"} <= set(line) for line in lines)
    for event in ("listening address=", "model loaded ", "model warmed up ", "serving model="):
        assert sum(message.startswith(event) for message in messages) == 1, event
    rejected = [line for line in lines if "request_id=json-check-1" in line["message"]]
    assert [line["level"] for line in rejected] == ["INFO"]
    assert "code=INVALID_ARGUMENT" in rejected[0]["message"]


def test_process_log_repeats_limited(main_server):
    started = time.monotonic()
    for number in range(50):
        rpc_error(lambda: main_server.stub.Rerank(request(" ", ["document"]), timeout=30,
                                                  metadata=(("x-request-id", f"flood-{number}"),)))
    windows = 1 + int((time.monotonic() - started) // 10)
    flood_lines = [line for line in main_server.process.log_text().splitlines() if "request_id=flood-" in line]
    assert len(flood_lines) <= 5 * windows


def test_process_disables_onednn_cache(main_server):
    starting = [json.loads(line)["message"] for line in main_server.process.log_text().splitlines()
                if '"starting config=' in line]
    assert len(starting) == 1
    assert starting[0].endswith(" ONEDNN_PRIMITIVE_CACHE_CAPACITY=0")
