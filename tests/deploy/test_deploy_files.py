"""Checks of deploy/ that need no Docker engine and no Kubernetes cluster.

The YAML files are parsed with PyYAML and checked for the settings the sidecar
relies on. The Dockerfile is read instruction by instruction. The container
health check script runs against a real gRPC health server on 127.0.0.1, and
scripts/check_compose.sh runs the Compose tool's own schema check.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
KUBERNETES_DIR = DEPLOY_DIR / "kubernetes"
DOCKERFILE = DEPLOY_DIR / "Dockerfile"
COMPOSE_FILE = DEPLOY_DIR / "docker-compose.yml"
HEALTH_CHECK_SCRIPT = DEPLOY_DIR / "grpc_health_check.py"
CHECK_COMPOSE_SCRIPT = REPO_ROOT / "scripts" / "check_compose.sh"

GRPC_PORT = 50051
METRICS_PORT = 9464
IMAGE_UID = 10001


# --- helpers -------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[list[tuple[str, str]]]:
    """Return the (INSTRUCTION, arguments) pairs of each build stage, in order.

    Comment lines are dropped and backslash continuations joined, which covers
    the syntax deploy/Dockerfile uses (no heredocs, no escape directive).
    """
    logical_lines: list[str] = []
    pending = ""
    for raw_line in path.read_text().splitlines():
        stripped = raw_line.strip()
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            logical_lines.append(line)

    stages: list[list[tuple[str, str]]] = [[]]
    for line in logical_lines:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, arguments.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE)[-1]


def instruction_arguments(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for instruction, arguments in stage if instruction == name]


def env_from_dockerfile(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in instruction_arguments(stage, "ENV"):
        for token in shlex.split(arguments):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_service(name: str) -> dict[str, Any]:
    return load_compose()["services"][name]


def load_kubernetes_documents() -> list[tuple[Path, dict[str, Any]]]:
    documents = []
    for path in sorted(KUBERNETES_DIR.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                documents.append((path, document))
    return documents


def kubernetes_object(kind: str, name: str) -> dict[str, Any]:
    matches = [
        document
        for _, document in load_kubernetes_documents()
        if document["kind"] == kind and document["metadata"]["name"] == name
    ]
    assert len(matches) == 1, f"expected one {kind} named {name!r}, found {len(matches)}"
    return matches[0]


def kubernetes_object_by_kind(kind: str) -> dict[str, Any]:
    matches = [document for _, document in load_kubernetes_documents() if document["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def reranker_container() -> dict[str, Any]:
    deployment = kubernetes_object("Deployment", "reranker")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [container["name"] for container in containers] == ["reranker"]
    return containers[0]


def configmap_data() -> dict[str, Any]:
    return kubernetes_object("ConfigMap", "reranker-config")["data"]


def parse_duration_seconds(text: str) -> float:
    """Parse a Compose duration such as ``30s``, ``1m30s`` or ``500ms`` into seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts, f"{text!r} is not a Compose duration"
    assert "".join(number + unit for number, unit in parts) == text, f"{text!r} has unparsed parts"
    return sum(float(number) * units[unit] for number, unit in parts)


def compose_command() -> list[str] | None:
    """Return the Compose CLI that scripts/check_compose.sh would pick, or None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def require_compose_tool() -> None:
    """Skip without a Compose tool, except under CI=true, where the check must run."""
    if compose_command() is not None:
        return
    message = (
        "neither 'docker compose' nor 'docker-compose' is installed; "
        "run scripts/check_compose.sh as root once (it installs Debian's docker-compose) "
        "or apt-get install --no-install-recommends docker-compose"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def run_check_compose(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CHECK_COMPOSE_SCRIPT), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )


# --- Dockerfile ------------------------------------------------------------------


def test_dockerfile_final_user_not_root() -> None:
    users = instruction_arguments(final_stage(), "USER")

    assert users, "the final stage has no USER instruction, so the server would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0")
    assert user == str(IMAGE_UID)
    assert group == str(IMAGE_UID)


def test_dockerfile_stopsignal_sigterm() -> None:
    assert instruction_arguments(final_stage(), "STOPSIGNAL") == ["SIGTERM"]


def test_dockerfile_healthcheck_runs_grpc_script() -> None:
    healthchecks = instruction_arguments(final_stage(), "HEALTHCHECK")

    assert len(healthchecks) == 1
    assert "CMD" in healthchecks[0]
    assert "/opt/rerank/grpc_health_check.py" in healthchecks[0]
    copies = instruction_arguments(final_stage(), "COPY")
    assert "deploy/grpc_health_check.py /opt/rerank/grpc_health_check.py" in copies


def test_dockerfile_exposes_grpc_and_metrics() -> None:
    exposed = " ".join(instruction_arguments(final_stage(), "EXPOSE")).split()

    assert str(GRPC_PORT) in exposed
    assert str(METRICS_PORT) in exposed
    # The planned HTTP port is reserved in comments only, since nothing serves it yet.
    assert "8080" not in exposed


def test_dockerfile_entrypoint_rerank_server() -> None:
    assert instruction_arguments(final_stage(), "ENTRYPOINT") == ['["rerank-server"]']


def test_dockerfile_env_binds_all_interfaces() -> None:
    env = env_from_dockerfile(final_stage())

    assert env["RERANK_HOST"] == "0.0.0.0"
    assert env["RERANK_PORT"] == str(GRPC_PORT)
    assert env["RERANK_METRICS_PORT"] == str(METRICS_PORT)


def test_dockerfile_env_loads_local_model_offline() -> None:
    env = env_from_dockerfile(final_stage())

    assert env["RERANK_MODEL"] == "/models/reranker"
    assert env["HF_HUB_OFFLINE"] == "1"


def test_dockerfile_installs_server_extra() -> None:
    build_stage = dockerfile_instructions(DOCKERFILE)[1]
    runs = " ".join(instruction_arguments(build_stage, "RUN"))

    assert "pip install" in runs
    assert '".[server]"' in runs


def test_dockerfile_extra_index_only_from_empty_arg() -> None:
    build_stage = dockerfile_instructions(DOCKERFILE)[1]
    runs = " ".join(instruction_arguments(build_stage, "RUN"))

    assert 'EXTRA_INDEX_URL=""' in instruction_arguments(build_stage, "ARG")
    assert 'INDEX_URL=""' in instruction_arguments(build_stage, "ARG")
    assert runs.count("--extra-index-url") == 1
    assert '${EXTRA_INDEX_URL:+--extra-index-url "$EXTRA_INDEX_URL"}' in runs
    assert '${INDEX_URL:+--index-url "$INDEX_URL"}' in runs


def test_dockerignore_admits_package_sources() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    package_dirs = pyproject["tool"]["setuptools"]["package-dir"]

    # Everything is excluded first, so only the re-included paths reach the build.
    assert patterns[0] == "*"
    assert "!pyproject.toml" in patterns
    assert "!deploy/grpc_health_check.py" in patterns
    for folder in sorted(set(package_dirs.values())):
        assert f"!{folder}/" in patterns, f"package folder {folder}/ is missing from the build context"


def test_deploy_files_name_no_remote_hosts() -> None:
    files = [
        *sorted(path for path in DEPLOY_DIR.rglob("*") if path.is_file()),
        REPO_ROOT / ".dockerignore",
        CHECK_COMPOSE_SCRIPT,
    ]
    allowed_hosts = {"127.0.0.1", "localhost"}

    for path in files:
        for host in re.findall(r"[a-z][a-z0-9+.-]*://([^/:'\"\s]+)", path.read_text()):
            assert host in allowed_hosts, f"{path.relative_to(REPO_ROOT)} names the host {host!r}"


# --- Compose -------------------------------------------------------------------


def test_compose_defines_both_services() -> None:
    assert set(load_compose()["services"]) == {"opensearch", "reranker"}


@pytest.mark.parametrize(
    ("service", "container_ports"),
    [("opensearch", {9200}), ("reranker", {GRPC_PORT, METRICS_PORT})],
)
def test_compose_ports_bound_to_loopback(service: str, container_ports: set[int]) -> None:
    ports = compose_service(service)["ports"]

    for mapping in ports:
        assert isinstance(mapping, str), f"{service} port {mapping!r} is not a HOST_IP:HOST:CONTAINER string"
        assert mapping.startswith("127.0.0.1:"), f"{service} publishes {mapping!r} beyond loopback"
    assert {int(mapping.rsplit(":", 1)[1]) for mapping in ports} == container_ports


def test_compose_opensearch_healthcheck_cluster_health() -> None:
    test = compose_service("opensearch")["healthcheck"]["test"]

    assert test[0] == "CMD-SHELL"
    assert "/_cluster/health" in test[1]
    assert "127.0.0.1:9200" in test[1]


def test_compose_reranker_healthcheck_grpc_script() -> None:
    healthcheck = compose_service("reranker")["healthcheck"]

    assert healthcheck["test"] == ["CMD", "/opt/venv/bin/python", "/opt/rerank/grpc_health_check.py"]
    assert parse_duration_seconds(healthcheck["start_period"]) >= 60


def test_compose_opensearch_single_node_no_security() -> None:
    environment = compose_service("opensearch")["environment"]

    assert environment["discovery.type"] == "single-node"
    assert environment["DISABLE_SECURITY_PLUGIN"] == "true"
    assert environment["DISABLE_INSTALL_DEMO_CONFIG"] == "true"
    assert environment["OPENSEARCH_JAVA_OPTS"] == "-Xms512m -Xmx512m"


def test_compose_opensearch_image_version() -> None:
    assert compose_service("opensearch")["image"] == "opensearchproject/opensearch:3.5.0"


def test_compose_reranker_waits_for_healthy_opensearch() -> None:
    depends_on = compose_service("reranker")["depends_on"]

    assert depends_on == {"opensearch": {"condition": "service_healthy"}}


def test_compose_stop_grace_exceeds_drain() -> None:
    reranker = compose_service("reranker")
    drain_seconds = float(reranker["environment"]["RERANK_GRACE_PERIOD"])

    assert parse_duration_seconds(reranker["stop_grace_period"]) > drain_seconds


def test_compose_model_folder_mounted_read_only() -> None:
    reranker = compose_service("reranker")
    model_path = reranker["environment"]["RERANK_MODEL"]
    mounts = [volume for volume in reranker["volumes"] if volume.split(":")[-2] == model_path]

    assert mounts == ["${RERANK_MODEL_DIR:-./models/reranker}:/models/reranker:ro"]
    assert reranker["environment"]["HF_HUB_OFFLINE"] == "${HF_HUB_OFFLINE:-1}"


def test_compose_builds_deploy_dockerfile() -> None:
    build = compose_service("reranker")["build"]
    context = (COMPOSE_FILE.parent / build["context"]).resolve()

    assert context == REPO_ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_environment_values_are_strings() -> None:
    # Compose rejects booleans in an environment mapping, and strings keep every
    # value exactly as written (YAML would turn 1.0 into a float).
    for name, service in load_compose()["services"].items():
        for key, value in service.get("environment", {}).items():
            assert isinstance(value, str), f"{name}: {key}={value!r} is not a string"


def test_check_compose_accepts_deploy_file() -> None:
    require_compose_tool()

    result = run_check_compose()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout


def test_check_compose_rejects_invalid_file(tmp_path: Path) -> None:
    require_compose_tool()
    invalid = tmp_path / "docker-compose.yml"
    invalid.write_text("services:\n  broken:\n    image: busybox\n    ports: 5\n    not_an_option: 1\n")

    result = run_check_compose(str(invalid))

    assert result.returncode != 0
    assert "is valid" not in result.stdout


def test_check_compose_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_check_compose(str(tmp_path / "absent.yml"))

    assert result.returncode == 2
    assert "compose file not found" in result.stderr


# --- Kubernetes --------------------------------------------------------------------


def test_kubernetes_documents_have_identity() -> None:
    documents = load_kubernetes_documents()

    assert documents
    for path, document in documents:
        assert document.get("apiVersion"), f"{path.name} has no apiVersion"
        assert document.get("kind"), f"{path.name} has no kind"
        if document["kind"] != "Kustomization":
            assert document["metadata"]["name"], f"{path.name} has no metadata.name"
            assert "namespace" not in document["metadata"], f"{path.name} pins a namespace"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = kubernetes_object_by_kind("Kustomization")
    manifests = {path.name for path in KUBERNETES_DIR.glob("*.yaml")} - {"kustomization.yaml"}

    assert sorted(kustomization["resources"]) == sorted(manifests)


def test_deployment_two_replicas() -> None:
    assert kubernetes_object("Deployment", "reranker")["spec"]["replicas"] == 2


def test_deployment_readiness_grpc_probe() -> None:
    container = reranker_container()

    assert container["readinessProbe"]["grpc"] == {"port": GRPC_PORT}
    assert container["startupProbe"]["grpc"] == {"port": GRPC_PORT}


def test_deployment_liveness_probe_on_grpc_port() -> None:
    liveness = reranker_container()["livenessProbe"]

    assert liveness["tcpSocket"] == {"port": "grpc"}
    assert liveness["failureThreshold"] * liveness["periodSeconds"] >= 20


def test_deployment_grace_exceeds_prestop_and_drain() -> None:
    pod_spec = kubernetes_object("Deployment", "reranker")["spec"]["template"]["spec"]
    drain_seconds = float(configmap_data()["RERANK_GRACE_PERIOD"])
    pre_stop = reranker_container()["lifecycle"]["preStop"]["exec"]["command"]

    assert pre_stop[0] == "sleep"
    sleep_seconds = float(pre_stop[1])
    assert sleep_seconds > 0
    assert pod_spec["terminationGracePeriodSeconds"] > drain_seconds
    assert pod_spec["terminationGracePeriodSeconds"] > sleep_seconds + drain_seconds


def test_deployment_sets_requests_and_limits() -> None:
    resources = reranker_container()["resources"]

    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}
    assert resources["limits"]["cpu"] == configmap_data()["RERANK_THREADS"]


def test_deployment_runs_as_image_user() -> None:
    security = kubernetes_object("Deployment", "reranker")["spec"]["template"]["spec"]["securityContext"]

    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == IMAGE_UID
    assert security["runAsGroup"] == IMAGE_UID


def test_deployment_env_from_configmap() -> None:
    env_from = reranker_container()["envFrom"]

    assert env_from == [{"configMapRef": {"name": "reranker-config"}}]


def test_deployment_mounts_model_read_only() -> None:
    mounts = {mount["mountPath"]: mount for mount in reranker_container()["volumeMounts"]}
    model_mount = mounts[configmap_data()["RERANK_MODEL"]]

    assert model_mount["readOnly"] is True
    volumes = kubernetes_object("Deployment", "reranker")["spec"]["template"]["spec"]["volumes"]
    assert model_mount["name"] in {volume["name"] for volume in volumes}


def test_deployment_container_ports_named() -> None:
    ports = {port["name"]: port["containerPort"] for port in reranker_container()["ports"]}

    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}


def test_headless_service_has_no_cluster_ip() -> None:
    spec = kubernetes_object("Service", "reranker-headless")["spec"]

    assert spec["clusterIP"] == "None"
    assert [(port["name"], port["port"], port["targetPort"]) for port in spec["ports"]] == [
        ("grpc", GRPC_PORT, "grpc"),
    ]


def test_metrics_service_targets_metrics_port() -> None:
    spec = kubernetes_object("Service", "reranker-metrics")["spec"]

    assert spec.get("clusterIP") != "None"
    assert [(port["name"], port["port"], port["targetPort"]) for port in spec["ports"]] == [
        ("metrics", METRICS_PORT, "metrics"),
    ]


@pytest.mark.parametrize(
    ("kind", "name"),
    [("Service", "reranker-headless"), ("Service", "reranker-metrics"), ("PodDisruptionBudget", "reranker")],
)
def test_selector_matches_pod_labels(kind: str, name: str) -> None:
    spec = kubernetes_object(kind, name)["spec"]
    selector = spec["selector"].get("matchLabels", spec["selector"])
    pod_labels = kubernetes_object("Deployment", "reranker")["spec"]["template"]["metadata"]["labels"]

    assert selector
    assert selector.items() <= pod_labels.items()


def test_pdb_keeps_one_pod() -> None:
    spec = kubernetes_object("PodDisruptionBudget", "reranker")["spec"]

    assert spec["minAvailable"] == 1
    assert spec["minAvailable"] < kubernetes_object("Deployment", "reranker")["spec"]["replicas"]


def test_configmap_values_are_strings() -> None:
    # The API server rejects a ConfigMap whose data contains numbers or booleans.
    for key, value in configmap_data().items():
        assert isinstance(value, str), f"{key}={value!r} is not a string"


# --- environment shared with the server --------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["dockerfile", "compose", "configmap"],
)
def test_rerank_env_accepted_by_server(source: str) -> None:
    from rerank_server.config import ENV_PREFIX, build_parser, parse_config

    environments = {
        "dockerfile": env_from_dockerfile(final_stage()),
        "compose": compose_service("reranker")["environment"],
        "configmap": configmap_data(),
    }
    rerank_env = {key: value for key, value in environments[source].items() if key.startswith(ENV_PREFIX)}
    known_env = {
        ENV_PREFIX + action.option_strings[0].lstrip("-").replace("-", "_").upper()
        for action in build_parser()._actions
        if action.option_strings and action.dest != "help"
    }

    assert rerank_env
    assert set(rerank_env) <= known_env, f"unknown variables: {sorted(set(rerank_env) - known_env)}"
    config = parse_config([], environ=rerank_env)
    assert config.host == "0.0.0.0"
    assert config.port == GRPC_PORT


# --- container health check script ---------------------------------------------------


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    """Serve grpc.health.v1 on a free 127.0.0.1 port and yield the port and servicer."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(None)


def run_health_check(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTH_CHECK_SCRIPT), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_health_check_serving_exits_0(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    result = run_health_check("--address", f"127.0.0.1:{port}")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"health check on 127.0.0.1:{port}: SERVING\n"


def test_health_check_not_serving_exits_1(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)

    result = run_health_check("--address", f"127.0.0.1:{port}")

    assert result.returncode == 1
    assert result.stdout == f"health check on 127.0.0.1:{port}: NOT_SERVING\n"


def test_health_check_unknown_service_exits_1(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)

    result = run_health_check("--address", f"127.0.0.1:{port}", "--service", "no.such.Service")

    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr


def test_health_check_reads_rerank_port(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    env = {**os.environ, "RERANK_PORT": str(port)}

    result = run_health_check(env=env)

    assert result.returncode == 0, result.stderr
    assert f"127.0.0.1:{port}" in result.stdout


def test_health_check_no_server_exits_1() -> None:
    # Bind and close a socket to get a port with no listener. Another process could
    # take the port in between, which is unlikely within this test.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    result = run_health_check("--address", f"127.0.0.1:{port}", "--timeout", "2")

    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr
