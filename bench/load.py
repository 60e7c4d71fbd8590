"""Closed-loop load: N client threads each send one page, wait for it, then send the next.

Every page's latency is measured from just before the call to its return, on
the client side, so it includes serialization, the network hop on 127.0.0.1,
queueing and scoring.

The first page of each client is left out of the percentiles. Those pages
arrive together, so the k-th of them waits for k-1 others, a spread that the
steady state never has: there, each new page joins a queue of the other
clients' pages. Throughput counts every page.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from .workload import Page

# A sender scores one page and returns its raw scores in document order.
Sender = Callable[[Page], Sequence[float]]


@dataclass
class CellResult:
    """Latencies and throughput of one (system, page size, clients) cell."""

    system: str
    page_size: int | str
    clients: int
    latencies_s: list[float] = field(default_factory=list)
    first_page_latencies_s: list[float] = field(default_factory=list)
    pairs: int = 0
    wall_s: float = 0.0
    errors: int = 0
    first_error: str | None = None

    @property
    def pages(self) -> int:
        return len(self.latencies_s) + len(self.first_page_latencies_s)

    def percentile_ms(self, percent: float) -> float | None:
        """Return a latency percentile of the steady-state pages, or of the first pages when there are no others."""
        values = self.latencies_s or self.first_page_latencies_s
        if not values:
            return None
        return float(np.percentile(values, percent) * 1000)

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.wall_s if self.wall_s else 0.0

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.wall_s if self.wall_s else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "system": self.system, "page_size": self.page_size, "clients": self.clients, "pages": self.pages,
            "pairs": self.pairs, "wall_s": round(self.wall_s, 4), "errors": self.errors,
            "first_error": self.first_error, "p50_ms": _round(self.percentile_ms(50)),
            "p99_ms": _round(self.percentile_ms(99)), "pages_per_s": round(self.pages_per_s, 4),
            "pairs_per_s": round(self.pairs_per_s, 3), "steady_pages": len(self.latencies_s),
            "latencies_ms": [round(value * 1000, 3) for value in self.latencies_s],
            "first_page_latencies_ms": [round(value * 1000, 3) for value in self.first_page_latencies_s],
        }


def run_closed_loop(make_sender: Callable[[], Sender], pages: Sequence[Page], *, system: str,
                    page_size: int | str, clients: int, max_seconds: float, progress: bool = True) -> CellResult:
    """Send ``pages`` from ``clients`` threads, each with its own sender; return the cell's figures.

    No new page starts after ``max_seconds``; pages in flight finish. A failed
    page counts as an error and is left out of the latencies.
    """
    result = CellResult(system=system, page_size=page_size, clients=clients)
    lock = threading.Lock()
    next_page = iter(range(len(pages)))
    bar = tqdm(total=len(pages), desc=f"{system} {page_size}x{clients}", unit="page", leave=False,
               disable=not progress)
    deadline = float("inf")  # set just before the threads start

    def client_loop(send: Sender) -> None:
        first = True
        while time.perf_counter() < deadline:
            with lock:
                index = next(next_page, None)
            if index is None:
                return
            page = pages[index]
            sent = time.perf_counter()
            try:
                send(page)
            except Exception as error:  # noqa: BLE001 - any failure is counted, the run goes on
                with lock:
                    result.errors += 1
                    result.first_error = result.first_error or f"{type(error).__name__}: {error}"
                continue
            finished = time.perf_counter()
            with lock:
                (result.first_page_latencies_s if first else result.latencies_s).append(finished - sent)
                result.pairs += page.size
                bar.update(1)
            first = False

    senders = [make_sender() for _ in range(clients)]
    threads = [threading.Thread(target=client_loop, args=(send,), name=f"bench-client-{number}", daemon=True)
               for number, send in enumerate(senders)]
    started = time.perf_counter()
    deadline = started + max_seconds
    for thread in threads:
        thread.start()
    for thread in threads:
        # Bounded so a hung server cannot hang the benchmark; the client timeout ends calls sooner.
        thread.join(timeout=max_seconds + 600)
    result.wall_s = time.perf_counter() - started
    bar.close()
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
