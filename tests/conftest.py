"""Shared fixtures: in-process servers and clients.

The reusable fixtures (OpenSearch node, SciFact index, tiny model, sidecar process)
come from the rerank_harness.pytest_plugin plugin.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest_plugins = ["rerank_harness.pytest_plugin"]

# Server settings tests must not inherit from the shell (RERANK_MODEL and friends).
_KEPT_PREFIXES = ("RERANK_TEST_", "RERANK_OPENSEARCH_", "RERANK_SCIFACT_")

FIXTURE_TEXTS = {
    "Q": "how to descale a kettle",
    "D_REL": "To descale a kettle, fill it with equal parts water and white vinegar, boil it, then rinse twice.",
    "D_REL2": "Citric acid dissolved in warm water removes limescale from kettles and coffee makers.",
    "D_MID": "Kettles collect mineral scale over time in hard-water areas.",
    "D_IRR": "The museum's east wing reopens after the roof repair.",
    "D_IRR2": "Library opening hours change during the winter months.",
}


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RERANK_") and not name.startswith(_KEPT_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    from rerank_server.model import CrossEncoderModel, ModelSettings

    return CrossEncoderModel(ModelSettings(model=str(tiny_model_dir), device="cpu"))


@pytest.fixture
def make_server(tiny_model_dir: Path, tiny_model) -> Iterator[Callable[..., object]]:
    """Start in-process gRPC servers on 127.0.0.1 that share the tiny model; stop them after."""
    from rerank_server.config import ServerConfig
    from rerank_server.main import create_server

    started = []

    def start(*, load: bool = True, **overrides: object):
        settings = {"model": str(tiny_model_dir), "port": 0, "metrics_port": 0, "warmup": False, **overrides}
        running = create_server(ServerConfig(**settings))
        started.append(running)
        if load:
            running.load(model=tiny_model)
        return running

    yield start
    for running in started:
        running.stop(grace=0)


@pytest.fixture
def texts() -> dict[str, str]:
    return dict(FIXTURE_TEXTS)


# -- CI guard: the OpenSearch tests must run, never skip -----------------------------------------

_REQUIRE_OPENSEARCH_ENV = "RERANK_TEST_REQUIRE_OPENSEARCH"
_opensearch_outcomes: dict[str, int] = {"passed": 0, "skipped": 0}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if item.get_closest_marker("opensearch") is None or report.when != "call" and not report.skipped:
        return report
    if report.skipped:
        _opensearch_outcomes["skipped"] += 1
        if os.environ.get(_REQUIRE_OPENSEARCH_ENV) == "1":
            report.outcome = "failed"
            report.longrepr = (f"{item.nodeid} was skipped, but {_REQUIRE_OPENSEARCH_ENV}=1 requires every "
                               "OpenSearch test to run against a real node")
    elif report.when == "call" and report.passed:
        _opensearch_outcomes["passed"] += 1
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(_REQUIRE_OPENSEARCH_ENV) != "1" or session.config.option.collectonly:
        return
    if _opensearch_outcomes["passed"] == 0 and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\n{_REQUIRE_OPENSEARCH_ENV}=1 but no OpenSearch test passed; the integration suite did not run")
