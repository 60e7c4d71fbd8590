"""Fetch OpenSearch and run a single-node cluster on 127.0.0.1 for tests and the demo.

The node runs from the ``integ-test-zip`` distribution, fetched with Maven by its
coordinates. That zip has every module (``analysis-common`` included) but no
security plugin and no bundled JDK. The node therefore serves plain HTTP with no
credentials, and it needs a Java 21+ installation.

One unpacked distribution is shared by all nodes and only read. Each node gets
its own working folder with a copy of ``config/`` (OpenSearch writes its keystore
there) and its own ``data/``, ``logs/`` and ``tmp/`` folders.

OpenSearch does not start as root. When this process runs as root, the node runs
as the system user ``rerank-opensearch``, created on first use.

Command line (``rerank-opensearch``)::

    rerank-opensearch fetch     # download and unpack the distribution
    rerank-opensearch start     # start a node in the background, print its URL once green
    rerank-opensearch status    # print the node's URL, PID and cluster health
    rerank-opensearch stop      # stop the node started by ``start``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "3.5.0"
DEFAULT_HEAP = "512m"
DEFAULT_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
MIN_JAVA_MAJOR = 21
ENV_PREFIX = "RERANK_OPENSEARCH_"
SERVICE_USER = "rerank-opensearch"
CLUSTER_NAME = "rerank-harness"
MAVEN_ARTIFACT = "org.opensearch.distribution.integ-test-zip:opensearch:{version}:zip"
JVM_ROOT = Path("/usr/lib/jvm")
HOST = "127.0.0.1"

_STATE_FILE_NAME = "node.json"
_UNPACKED_MARKER = ".unpacked"
_FETCH_TIMEOUT_S = 900.0
_POLL_INTERVAL_S = 0.5
_VERSION_PATTERN = re.compile(r"^\d+\.\d+\.\d+(-[A-Za-z0-9.]+)?$")
_HEAP_PATTERN = re.compile(r"^[1-9]\d*[kKmMgG]$")
# jvm.options names these folders relative to the working directory, which the
# start script sets to the shared distribution. Each node points them at its own
# folders instead, so the distribution stays read-only.
_RELATIVE_JVM_PATH = re.compile(r"(?P<option>HeapDumpPath=|ErrorFile=|file=|-Xloggc:)(?P<folder>data|logs)\b")


class OpenSearchNodeError(RuntimeError):
    """Fetching, starting, checking or stopping an OpenSearch node failed."""


# ---------------------------------------------------------------------------
# Configuration


def repo_root() -> Path:
    """Return the repository root of this editable install, else the current folder."""
    candidate = Path(__file__).resolve().parent.parent
    if (candidate / "pyproject.toml").is_file():
        return candidate
    return Path.cwd()


def default_cache_dir() -> Path:
    """Return ``<repo>/.cache/opensearch``, where zips and unpacked distributions live."""
    return repo_root() / ".cache" / "opensearch"


def default_state_dir() -> Path:
    """Return ``<repo>/.state/opensearch``, where the CLI keeps its node and state file."""
    return repo_root() / ".state" / "opensearch"


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Settings of one OpenSearch node.

    Attributes:
        version: OpenSearch version of the integ-test zip to run.
        http_port: HTTP port on 127.0.0.1. 0 lets the node bind a free port,
            which avoids clashes when several nodes share a machine.
        heap: JVM heap, used for both -Xms and -Xmx (for example ``512m``).
        work_dir: Folder for this node's config copy, data and logs. None
            creates a temporary folder that ``stop()`` deletes.
        cache_dir: Folder for downloaded zips and unpacked distributions. None
            means ``<repo>/.cache/opensearch``.
        java_home: Java 21+ installation. None means detect one (see
            ``find_java_home``).
        timeout_s: Seconds to wait for the node to bind its port and again for
            green health.
    """

    version: str = DEFAULT_VERSION
    http_port: int = 0
    heap: str = DEFAULT_HEAP
    work_dir: Path | None = None
    cache_dir: Path | None = None
    java_home: Path | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not _VERSION_PATTERN.match(self.version):
            raise ValueError(f"invalid OpenSearch version {self.version!r}: expected MAJOR.MINOR.PATCH such as 3.5.0")
        if not 0 <= self.http_port <= 65535:
            raise ValueError(f"invalid http_port {self.http_port}: expected 0 (any free port) to 65535")
        if not _HEAP_PATTERN.match(self.heap):
            raise ValueError(f"invalid heap {self.heap!r}: expected a size such as 512m or 1g")
        if self.timeout_s <= 0:
            raise ValueError(f"invalid timeout_s {self.timeout_s}: expected a positive number of seconds")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> NodeConfig:
        """Build a config from ``RERANK_OPENSEARCH_*`` variables, then apply ``overrides``.

        Reads VERSION, HTTP_PORT, HEAP, CACHE, JAVA_HOME and TIMEOUT_S. Unset
        variables keep the defaults.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if value := env.get(f"{ENV_PREFIX}VERSION"):
            values["version"] = value
        if value := env.get(f"{ENV_PREFIX}HTTP_PORT"):
            values["http_port"] = _parse_number(f"{ENV_PREFIX}HTTP_PORT", value, int)
        if value := env.get(f"{ENV_PREFIX}HEAP"):
            values["heap"] = value
        if value := env.get(f"{ENV_PREFIX}CACHE"):
            values["cache_dir"] = Path(value)
        if value := env.get(f"{ENV_PREFIX}JAVA_HOME"):
            values["java_home"] = Path(value)
        if value := env.get(f"{ENV_PREFIX}TIMEOUT_S"):
            values["timeout_s"] = _parse_number(f"{ENV_PREFIX}TIMEOUT_S", value, float)
        values.update(overrides)
        return cls(**values)


def _parse_number(name: str, value: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"invalid {name}={value!r}: expected a {kind.__name__}") from None


# ---------------------------------------------------------------------------
# Java


def java_major_version(java_home: Path) -> int | None:
    """Return the major Java version of ``java_home``, or None when it is not a Java installation."""
    if not (java_home / "bin" / "java").is_file():
        return None
    release = java_home / "release"
    text = release.read_text(errors="replace") if release.is_file() else _java_version_output(java_home)
    match = re.search(r'(?:JAVA_VERSION=|version )"(\d+)(?:\.(\d+))?', text)
    if match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older report themselves as 1.8, 1.7 and so on.
    if major == 1 and match.group(2):
        return int(match.group(2))
    return major


def _java_version_output(java_home: Path) -> str:
    try:
        result = subprocess.run(
            [str(java_home / "bin" / "java"), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stderr


def find_java_home(explicit: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """Return a Java 21+ installation to run OpenSearch with.

    Tries, in order: ``explicit`` (an error if it is not Java 21+, because the
    caller asked for it), ``JAVA_HOME`` if it is Java 21+, then the newest Java
    21+ under /usr/lib/jvm (where Debian and the Temurin packages install).

    Raises:
        OpenSearchNodeError: No candidate is Java 21+. The message lists each
            candidate tried and why it was rejected.
    """
    env = os.environ if environ is None else environ
    if explicit is not None:
        major = java_major_version(explicit)
        if major is None or major < MIN_JAVA_MAJOR:
            found = "no bin/java" if major is None else f"Java {major}"
            raise OpenSearchNodeError(
                f"the configured Java home {explicit} is not Java {MIN_JAVA_MAJOR}+ ({found}); "
                f"set {ENV_PREFIX}JAVA_HOME or --java-home to a Java {MIN_JAVA_MAJOR}+ installation"
            )
        return explicit

    rejected: list[str] = []
    if java_home := env.get("JAVA_HOME"):
        major = java_major_version(Path(java_home))
        if major is not None and major >= MIN_JAVA_MAJOR:
            return Path(java_home)
        rejected.append(f"JAVA_HOME={java_home} ({'no bin/java' if major is None else f'Java {major}'})")

    candidates: list[tuple[int, Path]] = []
    if JVM_ROOT.is_dir():
        for path in sorted(JVM_ROOT.iterdir()):
            if path.is_symlink() or not path.is_dir():
                continue
            major = java_major_version(path)
            if major is not None and major >= MIN_JAVA_MAJOR:
                candidates.append((major, path))
            else:
                rejected.append(f"{path} ({'no bin/java' if major is None else f'Java {major}'})")
    else:
        rejected.append(f"{JVM_ROOT} (missing)")
    if candidates:
        return max(candidates)[1]

    raise OpenSearchNodeError(
        f"no Java {MIN_JAVA_MAJOR}+ installation found for OpenSearch; tried: {'; '.join(rejected) or 'nothing'}. "
        f"Install a Java {MIN_JAVA_MAJOR}+ JDK or set {ENV_PREFIX}JAVA_HOME"
    )


# ---------------------------------------------------------------------------
# Distribution


def fetch_distribution(version: str = DEFAULT_VERSION, cache_dir: Path | None = None) -> Path:
    """Download and unpack the OpenSearch integ-test zip unless it is already in the cache.

    Safe to call repeatedly and from several processes at once: a file lock in
    the cache folder serialises fetches, and a marker file records a finished
    unpack. A zip that fails to unpack is deleted, so the next call downloads
    it again.

    Returns:
        The distribution's home folder, ``<cache>/<version>/opensearch-<version>``.
    """
    cache = (cache_dir or default_cache_dir()).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    unpack_root = cache / version
    home = unpack_root / f"opensearch-{version}"
    if (unpack_root / _UNPACKED_MARKER).is_file():
        return home

    with _file_lock(cache / ".lock", timeout_s=_FETCH_TIMEOUT_S):
        if (unpack_root / _UNPACKED_MARKER).is_file():
            return home
        zip_path = cache / f"opensearch-{version}.zip"
        if not zip_path.is_file():
            _download_with_maven(version, cache)
        _unpack(zip_path, unpack_root)
        if not (home / "bin" / "opensearch").is_file():
            raise OpenSearchNodeError(f"{zip_path} unpacked without opensearch-{version}/bin/opensearch")
        (unpack_root / _UNPACKED_MARKER).write_text(f"{zip_path.name}\n")
    logger.info("OpenSearch distribution ready version=%s home=%s", version, home)
    return home


def _download_with_maven(version: str, cache: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise OpenSearchNodeError(
            f"mvn not found on PATH; install Maven, or put opensearch-{version}.zip "
            f"(artifact {MAVEN_ARTIFACT.format(version=version)}) into {cache}"
        )
    artifact = MAVEN_ARTIFACT.format(version=version)
    logger.info("downloading OpenSearch with Maven artifact=%s target=%s", artifact, cache)
    # Maven writes into a private folder first, so an interrupted download never
    # leaves a partial zip where the next call would take it for a finished one.
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as staging:
        command = [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={staging}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=_FETCH_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as error:
            raise OpenSearchNodeError(f"mvn timed out after {_FETCH_TIMEOUT_S:.0f} s fetching {artifact}") from error
        downloaded = Path(staging) / f"opensearch-{version}.zip"
        if result.returncode != 0 or not downloaded.is_file():
            output = (result.stdout + result.stderr).strip()[-4000:]
            raise OpenSearchNodeError(f"mvn failed to fetch {artifact} (exit {result.returncode}):\n{output}")
        downloaded.replace(cache / downloaded.name)


def _unpack(zip_path: Path, unpack_root: Path) -> None:
    logger.info("unpacking %s", zip_path)
    shutil.rmtree(unpack_root, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(dir=unpack_root.parent, prefix=".unpack-"))
    # mkdtemp creates mode 0700, but nodes may run as another user and must read the distribution.
    staging.chmod(0o755)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member in archive.infolist():
                target = Path(archive.extract(member, staging))
                # zipfile drops Unix permissions, so restore them to keep bin/
                # executable. Everything becomes world-readable as well, because
                # nodes may run as other users than the one who unpacked.
                mode = (member.external_attr >> 16) & 0o777
                readable = 0o555 if member.is_dir() else 0o444
                target.chmod(mode | readable)
        staging.replace(unpack_root)
    except (zipfile.BadZipFile, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        zip_path.unlink(missing_ok=True)
        raise OpenSearchNodeError(
            f"failed to unpack {zip_path} ({error}); deleted it, so the next fetch downloads it again"
        ) from error


@contextlib.contextmanager
def _file_lock(path: Path, *, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``, polling for it until ``timeout_s`` passes."""
    with open(path, "a") as handle:
        for _ in _poll(timeout_s, _POLL_INTERVAL_S):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                continue
        else:
            raise OpenSearchNodeError(f"timed out after {timeout_s:.0f} s waiting for the lock {path}")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _poll(timeout_s: float, interval_s: float) -> Iterator[int]:
    """Yield attempt numbers, sleeping ``interval_s`` between them, until ``timeout_s`` passes.

    Both the attempt count and the elapsed time are bounded, so a loop over this
    generator ends even if each attempt is slow.
    """
    deadline = time.monotonic() + timeout_s
    max_attempts = int(timeout_s / interval_s) + 1
    for attempt in range(max_attempts):
        yield attempt
        if time.monotonic() >= deadline:
            return
        time.sleep(interval_s)


# ---------------------------------------------------------------------------
# Processes


def _service_account() -> tuple[int, int] | None:
    """Return (uid, gid) of the user to run the node as, or None to run as this user.

    OpenSearch does not start as root, so a root caller hands the node to the
    system user ``rerank-opensearch``, created here if missing.
    """
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        logger.info("creating system user %s to run OpenSearch, because OpenSearch does not start as root", SERVICE_USER)
        command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        try:
            # Another process may have created the user between the lookup and useradd.
            account = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            raise OpenSearchNodeError(
                f"failed to create the system user {SERVICE_USER} (exit {result.returncode}): {result.stderr.strip()}"
            ) from None
    return account.pw_uid, account.pw_gid


def _as_user(command: list[str], account: tuple[int, int] | None) -> list[str]:
    if account is None:
        return command
    uid, gid = account
    # setpriv replaces itself with the command, so the launched PID stays the
    # node's PID (runuser would fork and wait instead).
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--", *command]


def _check_access(account: tuple[int, int] | None, path: Path, test_flag: str, what: str) -> None:
    if account is None:
        return
    command = _as_user(["test", test_flag, str(path)], account)
    if subprocess.run(command, timeout=30, check=False).returncode != 0:
        raise OpenSearchNodeError(
            f"user {SERVICE_USER} cannot access {what} {path}; make every parent folder "
            f"world-searchable (chmod o+x) or choose another folder"
        )


def _chown_tree(root: Path, account: tuple[int, int]) -> None:
    uid, gid = account
    os.chown(root, uid, gid)
    for folder, subfolders, files in os.walk(root):
        for name in subfolders + files:
            os.chown(Path(folder) / name, uid, gid, follow_symlinks=False)


def process_alive(pid: int) -> bool:
    """Return whether ``pid`` names a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        # No /proc (macOS), or the process exited after the kill() check.
        return True
    # The state letter follows the command name, which is in parentheses.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _group_alive(group_id: int) -> bool:
    """Return whether process group ``group_id`` has a live (not zombie) member."""
    try:
        os.killpg(group_id, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat_file in proc.glob("[0-9]*/stat"):
        try:
            # After the parenthesised command name come the state, the parent
            # PID and the process group ID.
            state, _, group = stat_file.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == group_id and state != "Z":
            return True
    return False


def _process_command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_process(pid: int, *, marker: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop ``pid`` with SIGTERM, then SIGKILL after ``timeout_s``, and check that it is gone.

    Signals the process only while its command line contains ``marker`` (the
    node's PID file path), so a stale PID that the system has since reused for
    another program is left alone. Safe to call on a process that already exited.

    Raises:
        OpenSearchNodeError: The process is still alive 10 s after SIGKILL.
    """
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        if not process_alive(pid) or marker not in _process_command_line(pid):
            return
        logger.info("sending %s to OpenSearch pid=%d", sig.name, pid)
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        for _ in _poll(wait_s, 0.2):
            if not process_alive(pid):
                return
    if process_alive(pid):
        raise OpenSearchNodeError(f"OpenSearch pid={pid} is still alive 10 s after SIGKILL")


# ---------------------------------------------------------------------------
# Health


def cluster_health(url: str, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """Return the ``GET /_cluster/health`` response of the node at ``url``.

    Raises:
        OSError: The node did not respond (``urllib.error.URLError`` is an OSError).
        ValueError: The response was not JSON.
    """
    with urllib.request.urlopen(f"{url}/_cluster/health", timeout=timeout_s) as response:
        return json.loads(response.read())


def _wait_for_green(url: str, timeout_s: float, exit_code: Callable[[], int | None] | None = None) -> str | None:
    """Poll cluster health until it is green. Return None once it is, else the reason it did not turn green.

    ``exit_code`` returns the node process's exit code once it has ended (such
    as ``Popen.poll``), so a crashed node fails at once instead of at the timeout.
    """
    last = "no response yet"
    for _ in _poll(timeout_s, _POLL_INTERVAL_S):
        if exit_code is not None and (code := exit_code()) is not None:
            return f"exited with code {code} before the cluster turned green"
        try:
            status = cluster_health(url)["status"]
        except (OSError, ValueError, KeyError) as error:
            last = f"last error: {error}"
            continue
        if status == "green":
            return None
        last = f"last status: {status}"
    return f"timed out after {timeout_s:.0f} s waiting for green cluster health ({last})"


# ---------------------------------------------------------------------------
# Nodes


class OpenSearchNode:
    """One OpenSearch node on 127.0.0.1, run from the shared integ-test distribution.

    ``start()`` returns once the node has bound its HTTP port, and
    ``wait_for_green()`` then waits for green cluster health. As a context
    manager the node does both on entry and stops on exit::

        with OpenSearchNode(NodeConfig(heap="512m")) as node:
            print(node.url)  # http://127.0.0.1:PORT

    The process runs in its own session, so it outlives this Python process
    unless ``stop()`` is called.
    """

    def __init__(self, config: NodeConfig | None = None) -> None:
        self.config = config or NodeConfig()
        self._process: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None
        self._work_dir: Path | None = None
        self._owns_work_dir = False
        self._port: int | None = None

    # Folders and files of this node. Valid once start() has run.

    @property
    def work_dir(self) -> Path:
        """Folder with this node's config copy, data, logs and PID file."""
        if self._work_dir is None:
            raise OpenSearchNodeError("the node has no working folder yet; call start() first")
        return self._work_dir

    @property
    def pid_file(self) -> Path:
        """File where OpenSearch writes its Java process ID (the ``-p`` option)."""
        return self.work_dir / "opensearch.pid"

    @property
    def log_file(self) -> Path:
        """File with the node's standard output and error, which include the server log."""
        return self.work_dir / "console.log"

    @property
    def url(self) -> str:
        """Base URL of the node's HTTP API, such as ``http://127.0.0.1:9200``."""
        if self._port is None:
            raise OpenSearchNodeError("the node has not bound its HTTP port yet; call start() first")
        return f"http://{HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        """Process ID of the node's JVM, or None before ``start()`` and after ``stop()``."""
        if self._process is None:
            return None
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            # Before the JVM writes its PID file, the launched process is the
            # start script, which later replaces itself with the JVM (exec).
            return self._process.pid

    def log_tail(self, lines: int = 50) -> str:
        """Return the last ``lines`` lines of the node's console log, or a note when there is none."""
        if self._work_dir is None:
            return "(no log: the node was never started)"
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Start the node and wait until it has bound its HTTP port.

        Fetches the distribution first when it is not in the cache. On failure
        the node is stopped before the error is raised. After ``stop()`` the same
        instance can start again.

        Raises:
            OpenSearchNodeError: Java or the distribution is missing, or the node
                exited or timed out before binding its port. The message names
                the URL and includes the tail of the node log.
        """
        if self._process is not None:
            raise OpenSearchNodeError(f"the node at {self.url} is already started")
        java_home = find_java_home(self.config.java_home)
        home = fetch_distribution(self.config.version, self.config.cache_dir)
        account = _service_account()
        try:
            self._launch(java_home, home, account)
            self._wait_for_port()
        except BaseException:
            # The error message already contains the log tail, which stop()
            # deletes along with a temporary working folder.
            self.stop()
            raise

    def wait_for_green(self, timeout_s: float | None = None) -> None:
        """Wait until cluster health is green.

        Args:
            timeout_s: Seconds to wait; None means ``config.timeout_s``.

        Raises:
            OpenSearchNodeError: The node exited or the wait timed out. After a
                timeout the node keeps running, so call ``stop()``.
        """
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        process = self._process
        reason = _wait_for_green(self.url, timeout, exit_code=process.poll if process else None)
        if reason is not None:
            raise self._failure(reason)
        logger.info("OpenSearch is green url=%s pid=%s", self.url, self.pid)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop the node (SIGTERM, then SIGKILL after ``timeout_s``) and wait until it is gone.

        Signals the node's whole process group, so a node stopped during startup
        leaves none of the start script's helper JVMs behind. Safe to call
        repeatedly and before ``start()``. Deletes the working folder only when
        the node created it (``config.work_dir`` is None).

        Raises:
            OpenSearchNodeError: A process of the node survived SIGKILL.
        """
        process = self._process
        if process is not None:
            java_pid = self.pid
            group_id = process.pid
            # The launched process leads its own session and process group, and
            # its PID cannot be reused before poll() reaps it, so signalling the
            # group cannot hit an unrelated program.
            for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
                if not _group_alive(group_id):
                    break
                logger.info("sending %s to OpenSearch pid=%s group=%d", sig.name, java_pid, group_id)
                try:
                    os.killpg(group_id, sig)
                except ProcessLookupError:
                    break
                for _ in _poll(wait_s, 0.2):
                    process.poll()
                    if not _group_alive(group_id):
                        break
            if _group_alive(group_id):
                raise OpenSearchNodeError(f"OpenSearch process group {group_id} is still alive 10 s after SIGKILL")
            process.wait(timeout=10)
            logger.info("OpenSearch stopped pid=%s exit_code=%s", java_pid, process.returncode)
            self._process = None
        self._port = None
        if self._console is not None:
            self._console.close()
            self._console = None
        if self._owns_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
            self._owns_work_dir = False

    def __enter__(self) -> OpenSearchNode:
        self.start()
        try:
            self.wait_for_green()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _launch(self, java_home: Path, home: Path, account: tuple[int, int] | None) -> None:
        work_dir = self._prepare_work_dir(home, account)
        command = [
            str(home / "bin" / "opensearch"),
            "-p",
            str(self.pid_file),
            f"-Ecluster.name={CLUSTER_NAME}",
            f"-Enode.name={CLUSTER_NAME}-{os.getpid()}",
            "-Ediscovery.type=single-node",
            f"-Enetwork.host={HOST}",
            f"-Ehttp.port={self.config.http_port}",
            "-Etransport.port=0",
            # The node writes its bound ports to logs/http.ports, which is how a
            # node started with port 0 reports the port it picked.
            "-Enode.portsfile=true",
            f"-Epath.data={work_dir / 'data'}",
            f"-Epath.logs={work_dir / 'logs'}",
            # Test nodes share developer and CI disks. A nearly full disk must
            # not leave new shards unassigned and the cluster yellow.
            "-Ecluster.routing.allocation.disk.threshold_enabled=false",
        ]
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(work_dir),
            "LANG": "C.UTF-8",
            "OPENSEARCH_JAVA_HOME": str(java_home),
            "OPENSEARCH_JAVA_OPTS": f"-Xms{self.config.heap} -Xmx{self.config.heap}",
            "OPENSEARCH_PATH_CONF": str(work_dir / "config"),
            "OPENSEARCH_TMPDIR": str(work_dir / "tmp"),
        }
        self._console = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
        logger.info(
            "starting OpenSearch version=%s http_port=%d heap=%s java_home=%s work_dir=%s user=%s",
            self.config.version,
            self.config.http_port,
            self.config.heap,
            java_home,
            work_dir,
            SERVICE_USER if account else "current",
        )
        self._process = subprocess.Popen(
            _as_user(command, account),
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _prepare_work_dir(self, home: Path, account: tuple[int, int] | None) -> Path:
        if self.config.work_dir is None:
            work_dir = Path(tempfile.mkdtemp(prefix="rerank-opensearch-"))
            self._owns_work_dir = True
        else:
            work_dir = self.config.work_dir.resolve()
            work_dir.mkdir(parents=True, exist_ok=True)
        self._work_dir = work_dir

        for name in ("data", "logs", "tmp"):
            (work_dir / name).mkdir(exist_ok=True)
        # Files left by an earlier run in the same folder would report a dead
        # node's port and PID.
        for stale in (self.pid_file, work_dir / "logs" / "http.ports", work_dir / "logs" / "transport.ports"):
            stale.unlink(missing_ok=True)
        shutil.rmtree(work_dir / "config", ignore_errors=True)
        shutil.copytree(home / "config", work_dir / "config")
        jvm_options = work_dir / "config" / "jvm.options"
        jvm_options.write_text(_localise_jvm_options(jvm_options.read_text(), work_dir))

        if account is not None:
            _chown_tree(work_dir, account)
            _check_access(account, home / "bin" / "opensearch", "-x", "the OpenSearch start script")
            _check_access(account, work_dir / "data", "-w", "the node data folder")
        return work_dir

    def _wait_for_port(self) -> None:
        assert self._process is not None
        ports_file = self.work_dir / "logs" / "http.ports"
        for _ in _poll(self.config.timeout_s, _POLL_INTERVAL_S):
            if (code := self._process.poll()) is not None:
                raise self._failure(f"exited with code {code} before binding its HTTP port")
            port = _read_ports_file(ports_file)
            if port is not None:
                self._port = port
                return
        raise self._failure(f"timed out after {self.config.timeout_s:.0f} s waiting for its HTTP port ({ports_file})")

    def _failure(self, reason: str) -> OpenSearchNodeError:
        if self._port is not None:
            where = self.url
        elif self.config.http_port:
            where = f"http://{HOST}:{self.config.http_port}"
        else:
            where = f"http://{HOST} (port not bound yet)"
        log = self.log_file if self._work_dir is not None else "the node log"
        return OpenSearchNodeError(f"OpenSearch node at {where} {reason}\n--- last 50 lines of {log} ---\n{self.log_tail(50)}")


def _localise_jvm_options(text: str, work_dir: Path) -> str:
    """Point the ``data`` and ``logs`` paths in jvm.options at the node's own folders."""
    return _RELATIVE_JVM_PATH.sub(lambda match: match.group("option") + str(work_dir / match.group("folder")), text)


def _read_ports_file(path: Path) -> int | None:
    """Return the first port in an OpenSearch ports file (lines like ``127.0.0.1:9200``), or None."""
    try:
        lines = path.read_text().split()
    except OSError:
        return None
    if not lines:
        return None
    try:
        return int(lines[0].rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


@dataclasses.dataclass(frozen=True)
class ExternalNode:
    """An OpenSearch node that the harness did not start, for example one in CI.

    It offers the read-only part of ``OpenSearchNode``: ``url``, ``pid`` (always
    None), ``log_tail()`` and ``wait_for_green()``.
    """

    url: str
    pid: None = None

    def log_tail(self, lines: int = 50) -> str:
        """Return a note that no log is available, because the harness did not start this node."""
        return f"(no log: the harness did not start the node at {self.url})"

    def wait_for_green(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Wait until cluster health is green.

        Raises:
            OpenSearchNodeError: The wait timed out.
        """
        reason = _wait_for_green(self.url, timeout_s)
        if reason is not None:
            raise OpenSearchNodeError(f"OpenSearch node at {self.url} {reason}")


# ---------------------------------------------------------------------------
# Command line


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / _STATE_FILE_NAME).read_text())
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise OpenSearchNodeError(f"invalid state file {state_dir / _STATE_FILE_NAME}: {error}; delete it") from error


def _write_state(state_dir: Path, node: OpenSearchNode) -> None:
    state = {
        "pid": node.pid,
        "url": node.url,
        "version": node.config.version,
        "work_dir": str(node.work_dir),
        "pid_file": str(node.pid_file),
        "log_file": str(node.log_file),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = state_dir / _STATE_FILE_NAME
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(state, indent=2) + "\n")
    staging.replace(path)


def _state_pid(state: dict[str, Any]) -> int:
    """Return the JVM PID from the node's PID file, else the PID stored at start."""
    try:
        return int(Path(state["pid_file"]).read_text().strip())
    except (OSError, ValueError):
        return int(state["pid"])


def _state_running(state: dict[str, Any]) -> bool:
    pid = _state_pid(state)
    return process_alive(pid) and state["pid_file"] in _process_command_line(pid)


def _command_fetch(args: argparse.Namespace) -> int:
    print(fetch_distribution(args.version, args.cache))
    return 0


def _command_start(args: argparse.Namespace) -> int:
    state_dir = args.state_dir.resolve()
    state = _read_state(state_dir)
    if state is not None and _state_running(state):
        print(
            f"rerank-opensearch: error: a node is already running at {state['url']} "
            f"(pid {_state_pid(state)}); run `rerank-opensearch stop` first",
            file=sys.stderr,
        )
        return 1

    state_dir.mkdir(parents=True, exist_ok=True)
    work_dir = state_dir / "node"
    # Each start begins from an empty node, so no data or logs of an earlier
    # run (possibly of another version) carry over.
    shutil.rmtree(work_dir, ignore_errors=True)
    config = NodeConfig(
        version=args.version,
        http_port=args.http_port,
        heap=args.heap,
        work_dir=work_dir,
        cache_dir=args.cache,
        java_home=args.java_home,
        timeout_s=args.timeout,
    )
    node = OpenSearchNode(config)
    try:
        node.start()
        _write_state(state_dir, node)
        node.wait_for_green()
    except BaseException:
        node.stop()
        (state_dir / _STATE_FILE_NAME).unlink(missing_ok=True)
        raise
    print(node.url)
    return 0


def _command_stop(args: argparse.Namespace) -> int:
    state_dir = args.state_dir.resolve()
    state = _read_state(state_dir)
    if state is None:
        logger.info("no node state in %s; nothing to stop", state_dir)
        return 0
    pid = _state_pid(state)
    stop_process(pid, marker=state["pid_file"], timeout_s=args.timeout)
    (state_dir / _STATE_FILE_NAME).unlink(missing_ok=True)
    logger.info("stopped OpenSearch pid=%d url=%s logs=%s", pid, state["url"], state["log_file"])
    return 0


def _command_status(args: argparse.Namespace) -> int:
    state_dir = args.state_dir.resolve()
    state = _read_state(state_dir)
    if state is None:
        print(f"status=stopped reason=no-state-file state_dir={state_dir}")
        return 1
    pid = _state_pid(state)
    if not _state_running(state):
        print(f"status=stopped reason=process-gone pid={pid} state_dir={state_dir}")
        return 1
    try:
        health = cluster_health(state["url"])["status"]
    except (OSError, ValueError, KeyError) as error:
        print(f"status=unreachable url={state['url']} pid={pid} error={error!r}")
        return 1
    print(f"status=running url={state['url']} pid={pid} health={health} log={state['log_file']}")
    return 0


def _env(name: str, default: Any) -> Any:
    return os.environ.get(ENV_PREFIX + name, default)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-opensearch",
        description=(
            "Fetch OpenSearch and run one node on 127.0.0.1 for tests and the demo. "
            f"Every flag has an environment variable twin with the prefix {ENV_PREFIX}; the flag wins."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)

    distribution = argparse.ArgumentParser(add_help=False)
    distribution.add_argument(
        "--version",
        default=_env("VERSION", DEFAULT_VERSION),
        help=f"OpenSearch version of the integ-test zip (env {ENV_PREFIX}VERSION; default %(default)s)",
    )
    distribution.add_argument(
        "--cache",
        type=Path,
        default=_env("CACHE", default_cache_dir()),
        help=f"folder for the downloaded zip and unpacked distribution (env {ENV_PREFIX}CACHE; default %(default)s)",
    )
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument(
        "--state-dir",
        type=Path,
        default=_env("STATE_DIR", default_state_dir()),
        help=(
            "folder for the state file and the node's config, data and logs "
            f"(env {ENV_PREFIX}STATE_DIR; default %(default)s)"
        ),
    )

    fetch = commands.add_parser("fetch", parents=[distribution], help="download and unpack the distribution")
    fetch.set_defaults(handler=_command_fetch)

    start = commands.add_parser(
        "start", parents=[distribution, state], help="start a node in the background and print its URL once green"
    )
    start.add_argument(
        "--http-port",
        type=int,
        default=_env("HTTP_PORT", 0),
        help=f"HTTP port on 127.0.0.1; 0 picks a free port (env {ENV_PREFIX}HTTP_PORT; default %(default)s)",
    )
    start.add_argument(
        "--heap",
        default=_env("HEAP", DEFAULT_HEAP),
        help=(
            "JVM heap for -Xms and -Xmx. 512m is enough for SciFact (5,183 documents), so give "
            f"larger corpora more (env {ENV_PREFIX}HEAP; default %(default)s)"
        ),
    )
    start.add_argument(
        "--java-home",
        type=Path,
        default=_env("JAVA_HOME", None),
        help=(
            f"Java {MIN_JAVA_MAJOR}+ installation (env {ENV_PREFIX}JAVA_HOME; default: JAVA_HOME "
            f"if it is Java {MIN_JAVA_MAJOR}+, else the newest Java {MIN_JAVA_MAJOR}+ in {JVM_ROOT})"
        ),
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=_env("TIMEOUT_S", DEFAULT_TIMEOUT_S),
        help=(
            "seconds to wait for the node to bind its port, and again for green health "
            f"(env {ENV_PREFIX}TIMEOUT_S; default %(default)s)"
        ),
    )
    start.set_defaults(handler=_command_start)

    stop = commands.add_parser("stop", parents=[state], help="stop the node started by `start`")
    stop.add_argument(
        "--timeout",
        type=float,
        default=STOP_TIMEOUT_S,
        help="seconds to wait after SIGTERM before sending SIGKILL (default %(default)s)",
    )
    stop.set_defaults(handler=_command_stop)

    status = commands.add_parser(
        "status", parents=[state], help="print the node's state; exit code 0 only when it is running and responds to a health request"
    )
    status.set_defaults(handler=_command_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rerank-opensearch`` command line and return its exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    try:
        return args.handler(args)
    except (OpenSearchNodeError, ValueError) as error:
        print(f"rerank-opensearch: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
