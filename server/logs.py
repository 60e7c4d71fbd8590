"""Log setup of the server process: one handler, text or JSON lines, repeats rate-limited.

Library modules only create loggers; :func:`configure_logging` is called once, by
``main``. Lines carry ``key=value`` fields; with ``--log-format json`` each line is
one JSON object whose ``message`` contains the same text.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

REQUEST_ID_KEY = "x-request-id"
MAX_REQUEST_ID_CHARS = 64
# The kept characters cover UUIDs, W3C trace ids and "service-1234" forms. Dropping
# the rest keeps a caller from forging log lines with newlines or quotes.
_REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+=-]")

REPEAT_LIMIT = 5
REPEAT_INTERVAL_S = 10.0
_MAX_TRACKED_TEMPLATES = 1024
_QUIET_LIBRARIES = ("transformers", "sentence_transformers", "urllib3", "filelock", "httpx", "huggingface_hub")


def request_id_from(metadata: Iterable[tuple[str, object]]) -> str:
    """Return the caller's ``x-request-id`` metadata, cleaned, or a new random id.

    Characters outside ``A-Z a-z 0-9 . _ : / + = -`` are removed and the id is
    cut to 64 characters, so an id is always safe to put on a log line.
    """
    for key, value in metadata:
        if key == REQUEST_ID_KEY:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            cleaned = _REQUEST_ID_UNSAFE.sub("", text)[:MAX_REQUEST_ID_CHARS]
            if cleaned:
                return cleaned
    return uuid.uuid4().hex[:16]


@dataclass
class _Window:
    started: float
    passed: int
    suppressed: int


class RepeatFilter(logging.Filter):
    """Pass the first ``limit`` records of each message per ``interval_s``, and count the rest.

    Records are alike when they share logger, level and message template (the
    format string before ``%`` arguments), so "rejected request_id=%s" lines of
    different requests count as repeats. The first record passed after a
    suppressed run gets ``repeats_suppressed=N`` appended: the number of alike
    records dropped since the previous one passed. :meth:`summary` returns the
    counts still pending, for a last line at shutdown.

    Args:
        limit: Records of one template passed per interval.
        interval_s: Length of the counting window in seconds.
        clock: Time source in seconds; a seam for tests.
    """

    def __init__(self, limit: int = REPEAT_LIMIT, interval_s: float = REPEAT_INTERVAL_S, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if limit < 1 or interval_s <= 0:
            raise ValueError(f"limit must be >= 1 and interval_s > 0, got {limit} and {interval_s}")
        self.limit = limit
        self.interval_s = interval_s
        self._clock = clock
        self._windows: OrderedDict[tuple[str, int, str], _Window] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.started >= self.interval_s:
                suppressed = window.suppressed if window is not None else 0
                self._windows[key] = _Window(started=now, passed=1, suppressed=0)
                self._windows.move_to_end(key)
                while len(self._windows) > _MAX_TRACKED_TEMPLATES:
                    self._windows.popitem(last=False)
            elif window.passed < self.limit:
                window.passed += 1
                return True
            else:
                window.suppressed += 1
                return False
        if suppressed:
            _append_suppressed(record, suppressed)
        return True

    def summary(self) -> tuple[int, int]:
        """Return (records suppressed and not yet reported, templates they belong to)."""
        with self._lock:
            counts = [window.suppressed for window in self._windows.values() if window.suppressed]
        return sum(counts), len(counts)


def _append_suppressed(record: logging.LogRecord, suppressed: int) -> None:
    # The formatted text travels as an argument, because it may contain "%" signs of its own.
    message = record.getMessage()
    record.msg = "%s repeats_suppressed=%d"
    record.args = (message, suppressed)
    record.repeats_suppressed = suppressed


def configure_logging(level: str, log_format: str, *, stream: object = None) -> RepeatFilter:
    """Install the one root handler: text lines or one JSON object per line, on stderr.

    Returns the handler's :class:`RepeatFilter`, so ``main`` can report the
    repeats still pending when it stops.
    """
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    repeats = RepeatFilter()
    handler.addFilter(repeats)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter (weights loading bars, hub lookups) stays at WARNING.
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Python warnings (deprecations in model libraries) go through the same handler and format.
    logging.captureWarnings(True)
    return repeats
