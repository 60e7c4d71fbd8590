"""Tests of the OpenSearch node harness: config, Java detection, node lifecycle and CLI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rerank_harness import opensearch
from rerank_harness.opensearch import (
    DEFAULT_VERSION,
    ExternalNode,
    NodeConfig,
    OpenSearchNode,
    OpenSearchNodeError,
    fetch_distribution,
    find_java_home,
    process_alive,
)

# ---------------------------------------------------------------------------
# Without a node


def test_config_defaults() -> None:
    config = NodeConfig()

    assert config.version == "3.5.0"
    assert config.http_port == 0
    assert config.heap == "512m"
    assert config.work_dir is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("version", "3.5", "invalid OpenSearch version '3.5'"),
        ("http_port", 70000, "invalid http_port 70000"),
        ("heap", "512", "invalid heap '512'"),
        ("timeout_s", 0, "invalid timeout_s 0"),
    ],
)
def test_config_rejects_invalid_value(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NodeConfig(**{field: value})


def test_config_from_env_reads_prefixed_variables(tmp_path: Path) -> None:
    environ = {
        "RERANK_OPENSEARCH_VERSION": "3.4.0",
        "RERANK_OPENSEARCH_HTTP_PORT": "9250",
        "RERANK_OPENSEARCH_HEAP": "1g",
        "RERANK_OPENSEARCH_CACHE": str(tmp_path),
        "RERANK_OPENSEARCH_TIMEOUT_S": "30",
    }

    config = NodeConfig.from_env(environ, heap="768m")

    assert config.version == "3.4.0"
    assert config.http_port == 9250
    assert config.heap == "768m"
    assert config.cache_dir == tmp_path
    assert config.timeout_s == 30.0


def test_config_from_env_names_invalid_variable() -> None:
    with pytest.raises(ValueError, match="invalid RERANK_OPENSEARCH_HTTP_PORT='http'"):
        NodeConfig.from_env({"RERANK_OPENSEARCH_HTTP_PORT": "http"})


def test_find_java_home_rejects_old_explicit_java(tmp_path: Path) -> None:
    java_home = tmp_path / "jdk-17"
    (java_home / "bin").mkdir(parents=True)
    (java_home / "bin" / "java").write_text("")
    (java_home / "release").write_text('JAVA_VERSION="17.0.15"\n')

    with pytest.raises(OpenSearchNodeError, match=f"the configured Java home {java_home} is not Java 21\\+ \\(Java 17\\)"):
        find_java_home(java_home)


def test_find_java_home_skips_old_java_home(tmp_path: Path) -> None:
    java_home = tmp_path / "jdk-17"
    (java_home / "bin").mkdir(parents=True)
    (java_home / "bin" / "java").write_text("")
    (java_home / "release").write_text('JAVA_VERSION="17.0.15"\n')

    found = find_java_home(None, {"JAVA_HOME": str(java_home)})

    assert found != java_home
    assert opensearch.java_major_version(found) >= 21


def test_fetch_distribution_uses_cache_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unpacked = tmp_path / DEFAULT_VERSION
    unpacked.mkdir()
    (unpacked / ".unpacked").write_text("")
    # With no mvn on PATH, any download attempt would raise.
    monkeypatch.setattr(opensearch.shutil, "which", lambda name: None)

    home = fetch_distribution(DEFAULT_VERSION, tmp_path)

    assert home == tmp_path / DEFAULT_VERSION / f"opensearch-{DEFAULT_VERSION}"


def test_jvm_options_point_at_node_folders(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        -XX:HeapDumpPath=data
        -XX:ErrorFile=logs/hs_err_pid%p.log
        9-:-Xlog:gc*,gc+age=trace,safepoint:file=logs/gc.log:utctime,pid,tags:filecount=32,filesize=64m
        21-:-javaagent:agent/opensearch-agent.jar
        """
    )

    localised = opensearch._localise_jvm_options(text, tmp_path).splitlines()

    assert localised[0] == f"-XX:HeapDumpPath={tmp_path}/data"
    assert localised[1] == f"-XX:ErrorFile={tmp_path}/logs/hs_err_pid%p.log"
    assert f"file={tmp_path}/logs/gc.log:utctime" in localised[2]
    assert localised[3] == "21-:-javaagent:agent/opensearch-agent.jar"


def test_ports_file_first_port(tmp_path: Path) -> None:
    ports_file = tmp_path / "http.ports"
    ports_file.write_text("127.0.0.1:41234\n[::1]:41235\n")

    assert opensearch._read_ports_file(ports_file) == 41234
    assert opensearch._read_ports_file(tmp_path / "missing") is None


def test_node_url_before_start_raises() -> None:
    with pytest.raises(OpenSearchNodeError, match="has not bound its HTTP port yet"):
        OpenSearchNode().url


# ---------------------------------------------------------------------------
# With real nodes


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _process_group_members(group_id: int) -> list[int]:
    """Return the PIDs of live (not zombie) processes in process group ``group_id``."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the parenthesised command name: state, parent PID, group ID.
            state, _, group = stat_file.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue
        if int(group) == group_id and state != "Z":
            members.append(int(stat_file.parent.name))
    return members


@pytest.mark.opensearch
def test_node_is_green(opensearch_node: OpenSearchNode | ExternalNode) -> None:
    health = _get_json(f"{opensearch_node.url}/_cluster/health")

    assert health["status"] == "green"
    assert health["number_of_nodes"] == 1


@pytest.mark.opensearch
def test_node_runs_configured_version(opensearch_node: OpenSearchNode | ExternalNode) -> None:
    expected = NodeConfig.from_env().version

    info = _get_json(opensearch_node.url)

    assert info["version"]["number"] == expected


@pytest.mark.opensearch
def test_node_stop_leaves_no_process() -> None:
    node = OpenSearchNode(NodeConfig.from_env(http_port=0))

    with node:
        pid = node.pid
        work_dir = node.work_dir
        assert node.url.startswith("http://127.0.0.1:")
        assert pid is not None
        assert process_alive(pid)
        assert "org.opensearch.bootstrap.OpenSearch" in opensearch._process_command_line(pid)

    assert not process_alive(pid)
    assert node.pid is None
    assert not work_dir.exists()


@pytest.mark.opensearch
def test_node_start_failure_reports_url_and_log() -> None:
    # A 1 KiB heap makes the JVM exit at once, after the start script has run.
    node = OpenSearchNode(NodeConfig.from_env(http_port=_free_port(), heap="1k"))
    port = node.config.http_port

    with pytest.raises(OpenSearchNodeError) as raised:
        node.start()

    message = str(raised.value)
    assert message.startswith(f"OpenSearch node at http://127.0.0.1:{port} exited with code 1 before binding")
    assert "--- last 50 lines of " in message
    assert "Too small maximum heap" in message
    assert node.pid is None


@pytest.mark.opensearch
def test_node_start_timeout_leaves_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def recording_popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        process = popen(*args, **kwargs)
        if "-Ediscovery.type=single-node" in process.args:
            launched.append(process)
        return process

    monkeypatch.setattr(opensearch.subprocess, "Popen", recording_popen)
    node = OpenSearchNode(NodeConfig.from_env(http_port=0, timeout_s=1))

    with pytest.raises(OpenSearchNodeError) as raised:
        node.start()

    assert str(raised.value).startswith(
        "OpenSearch node at http://127.0.0.1 (port not bound yet) timed out after 1 s waiting for its HTTP port"
    )
    assert len(launched) == 1
    # The start script runs helper JVMs in the node's process group before the
    # server JVM; none of them may outlive the failed start.
    assert _process_group_members(launched[0].pid) == []
    assert node.pid is None


@pytest.fixture
def searchable_tmp() -> Iterator[Path]:
    """Yield a temporary folder that the rerank-opensearch user can enter.

    Under root the node runs as that user, and pytest's ``tmp_path`` is private
    to root (mode 0700).
    """
    folder = Path(tempfile.mkdtemp(prefix="rerank-harness-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.opensearch
def test_cli_start_status_stop(searchable_tmp: Path) -> None:
    tmp_path = searchable_tmp
    command = [str(Path(sys.executable).with_name("rerank-opensearch"))]
    state_dir = ["--state-dir", str(tmp_path / "state")]

    started = subprocess.run(
        [*command, "start", *state_dir, "--http-port", "0"], capture_output=True, text=True, timeout=400
    )
    try:
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url.startswith("http://127.0.0.1:")
        state = json.loads((tmp_path / "state" / "node.json").read_text())
        pid = state["pid"]
        assert state["url"] == url
        assert process_alive(pid)

        status = subprocess.run([*command, "status", *state_dir], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.startswith(f"status=running url={url} pid={pid} health=green")

        again = subprocess.run(
            [*command, "start", *state_dir, "--http-port", "0"], capture_output=True, text=True, timeout=60
        )
        assert again.returncode == 1
        assert f"a node is already running at {url} (pid {pid})" in again.stderr
    finally:
        stopped = subprocess.run([*command, "stop", *state_dir], capture_output=True, text=True, timeout=120)

    assert stopped.returncode == 0, stopped.stderr
    assert not process_alive(pid)
    assert not (tmp_path / "state" / "node.json").exists()
    after = subprocess.run([*command, "status", *state_dir], capture_output=True, text=True, timeout=60)
    assert after.returncode == 1
    assert after.stdout.startswith("status=stopped reason=no-state-file")


# ---------------------------------------------------------------------------
# The opensearch_node fixture with RERANK_TEST_OPENSEARCH_URL

_FIXTURE_TEST = """
def test_uses_given_node(opensearch_node):
    assert opensearch_node.url == {url!r}
    assert opensearch_node.pid is None
"""


def _run_inner_session(tmp_path: Path, url: str, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(_FIXTURE_TEST.format(url=url))
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    env.update({"RERANK_TEST_OPENSEARCH_URL": url, **extra_env})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "rerank_harness.pytest_plugin", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.opensearch
def test_fixture_uses_node_from_env(tmp_path: Path, opensearch_node: OpenSearchNode | ExternalNode) -> None:
    result = _run_inner_session(tmp_path, opensearch_node.url, {})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_fixture_fails_for_unreachable_node(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"

    result = _run_inner_session(tmp_path, url, {"RERANK_OPENSEARCH_TIMEOUT_S": "2"})

    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "skipped" not in result.stdout
    assert f"OpenSearch node at {url} timed out after 2 s waiting for green cluster health" in result.stdout
