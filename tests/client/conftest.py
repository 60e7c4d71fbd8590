"""Fixtures of the client tests: a fake sidecar that records requests, and clients of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rerank_client import RerankClient
from rerank_harness.fake_sidecar import FakeSidecar, closed_port


@pytest.fixture
def fake() -> Iterator[FakeSidecar]:
    """A started fake sidecar on 127.0.0.1, stopped after the test."""
    with FakeSidecar() as sidecar:
        yield sidecar


@pytest.fixture
def fake_client(fake: FakeSidecar) -> Iterator[RerankClient]:
    """A strict client of `fake` with a 5 s deadline."""
    with RerankClient(fake.target, timeout=5.0) as client:
        yield client


@pytest.fixture
def closed_target() -> str:
    """A 127.0.0.1 target that nothing listens on."""
    return f"127.0.0.1:{closed_port()}"


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeSidecar]:
    """One fake sidecar for a whole module, for property tests that call it many times.

    Tests reset ``behaviour`` and the request log themselves.
    """
    with FakeSidecar() as sidecar:
        yield sidecar
