"""The Kubernetes manifests (infra/k8s): a Deployment per role with the probes the processes
serve, an HPA per task role, configuration and secrets from the environment, and command lines
the CLI accepts."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from plantcrew.crews.config import EVENT_CONSUMERS, ROLES
from plantcrew.store.tokens import secret_problem
from tests.infra.support import INFRA, drain_s, env_read, parse_command, provider_keys

K8S = INFRA / "k8s"
TASK_ROLES = ("diagnostic", "operator", "safety", "reviewer")


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def deployments() -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"].removeprefix("plantcrew-"): d
        for d in documents()
        if d["kind"] == "Deployment"
    }


def test_every_role_the_coordinator_and_the_api_have_a_deployment() -> None:
    assert set(deployments()) == {*ROLES, "coordinator", "api"}


def _container(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod spec of Deployment plantcrew-NAME and its one container."""
    spec = deployments()[name]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment from the ConfigMap plantcrew-env and its own ``env``."""
    (config,) = [d for d in documents() if d["kind"] == "ConfigMap"]
    env = {k: str(v) for k, v in config["data"].items()}
    env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
    return env


def _probes_on(container: dict[str, Any], port: int) -> None:
    """The container serves its probes on ``port`` (named ``probes``), the paths plantcrew's
    processes answer (plantcrew/api/worker_probes.py, plantcrew/api/app.py)."""
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    assert container["startupProbe"]["httpGet"] == {"path": "/startupz", "port": "probes"}
    assert {"name": "probes", "containerPort": port} in container["ports"]
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"configMapRef": "plantcrew-env", "secretRef": "plantcrew-secrets"}


@pytest.mark.parametrize("name", [*ROLES, "coordinator"])
def test_deployment_probes_config_and_command(name: str) -> None:
    spec, container = _container(name)
    args = container["args"]
    # the CLI accepts the command line (raises naming the option or value it does not)
    params = parse_command(args)
    assert args[0] == ("coordinator" if name == "coordinator" else "worker")
    if name != "coordinator":
        assert params["role"] == [name]
    assert params["probe_host"] == "0.0.0.0"
    _probes_on(container, params["probe_port"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    drain = drain_s(args, _env(container))
    if drain is not None:  # the drain ends before the kubelet's SIGKILL
        assert drain < spec["terminationGracePeriodSeconds"]


def test_the_api_service_is_deployed_and_reachable() -> None:
    """``plantcrew serve`` is the only process that exposes the crew's figures from the
    database (incidents, approvals pending and their wait, time to detect, recorded dead
    letters, model calls: plantcrew/api/store_metrics.py) and the live agents; the alert rules
    and the dashboard need it, and people approve through it."""
    spec, container = _container("api")
    params = parse_command(container["args"])
    assert container["args"][0] == "serve"
    assert params["host"] == "0.0.0.0"  # its default, 127.0.0.1, is unreachable from the pod
    assert params["scenario"] is None  # the crew on the bus, not one in-process scenario
    _probes_on(container, params["port"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    # on SIGTERM it drains (requests in flight, event streams) before the kubelet's SIGKILL
    drain = drain_s(container["args"], _env(container))
    assert drain is not None and drain < spec["terminationGracePeriodSeconds"]
    annotations = deployments()["api"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(params["port"])
    (service,) = [d for d in documents() if d["kind"] == "Service"]
    labels = deployments()["api"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {params["port"], "probes"}


def test_scrape_annotations_name_the_probe_port() -> None:
    for name, dep in deployments().items():
        meta = dep["spec"]["template"]["metadata"]
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        ports = {p["containerPort"] for p in container["ports"]}
        assert int(meta["annotations"]["prometheus.io/port"]) in ports, name
        assert meta["annotations"]["prometheus.io/path"] == "/metrics", name


def test_selectors_match_the_pods_they_select() -> None:
    deps = deployments()
    for name, dep in deps.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deps.values()]
    for pdb in (d for d in documents() if d["kind"] == "PodDisruptionBudget"):
        wanted = pdb["spec"]["selector"]["matchLabels"].items()
        assert sum(wanted <= labels.items() for labels in pod_labels) == 1, pdb["metadata"]
    for hpa in (d for d in documents() if d["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]["name"].removeprefix("plantcrew-")
        (container,) = deps[target]["spec"]["template"]["spec"]["containers"]
        # CPU utilization is measured against the request: without one the HPA cannot scale
        for metric in hpa["spec"]["metrics"]:
            assert container["resources"]["requests"][metric["resource"]["name"]], target


def test_environment_names_are_ones_plantcrew_reads() -> None:
    """Every variable the ConfigMap sets, and every one the Secret is made with (the example
    and the command in kustomization.yaml), is read by plantcrew (a misspelt name is
    silently ignored: the process runs on its default)."""
    read = env_read()
    (cm,) = [d for d in documents() if d["kind"] == "ConfigMap"]
    assert set(cm["data"]) <= read
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert set(secret["stringData"]) <= read | provider_keys()
    literals = re.findall(r"--from-literal=(\w+)=", (K8S / "kustomization.yaml").read_text())
    assert literals
    assert set(literals) <= read
    assert {"PLANTCREW_DB_URL", "PLANTCREW_APPROVAL_SECRET"} <= set(literals)


def test_task_roles_scale_and_singletons_do_not() -> None:
    hpas = {
        d["spec"]["scaleTargetRef"]["name"]
        for d in documents()
        if d["kind"] == ("HorizontalPodAutoscaler")
    }
    assert hpas == {f"plantcrew-{r}" for r in TASK_ROLES}
    deps = deployments()
    # an autoscaled Deployment leaves its replica count to the HPA: with spec.replicas set,
    # every `kubectl apply` would scale the role back to that number
    for role in TASK_ROLES:
        assert "replicas" not in deps[role]["spec"], role
    for single in ("coordinator", "monitor"):
        assert deps[single]["spec"]["replicas"] == 1
        assert deps[single]["spec"]["strategy"]["type"] == "Recreate"


def test_settings_come_from_the_configmap_and_no_secret_is_committed() -> None:
    (cm,) = [d for d in documents() if d["kind"] == "ConfigMap"]
    assert cm["data"]["PLANTCREW_BUS_URL"].startswith(("nats://", "redis://"))
    assert "PLANTCREW_DB_URL" not in cm["data"]  # it carries a password: the Secret has it
    assert not [d for d in documents() if d["kind"] == "Secret"]


def test_every_pod_gets_the_approval_secret_and_the_example_cannot_be_used_as_is() -> None:
    """Each process on the broker bus refuses to start without a strong approval secret: every
    Deployment takes it from the Secret, the Secret's example holds a placeholder the crew
    refuses (applied as is, nothing starts) and kustomization.yaml makes a random one."""
    for name, dep in deployments().items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        refs = [e["secretRef"] for e in container.get("envFrom", []) if "secretRef" in e]
        assert {"name": "plantcrew-secrets"} in refs, name  # not optional
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    assert secret_problem(example["PLANTCREW_APPROVAL_SECRET"]) is not None
    command = '--from-literal=PLANTCREW_APPROVAL_SECRET="$(openssl rand -hex 32)"'
    assert command in (K8S / "kustomization.yaml").read_text()


def test_the_coordinator_takes_as_many_events_at_once_as_the_cli_default() -> None:
    """``--concurrency`` of ``plantcrew coordinator`` is how many crew.events are in flight
    at once, and so how many share a group commit (EVENT_CONSUMERS; the README's throughput
    figures use it). The manifest said 4, written when the default was 1 and left behind when
    it became 32: fewer events per transaction (8 consumers took 17 transactions per incident
    where 32 took 11), for no saving (consumers are coroutines; database threads are capped at
    DB_THREADS whatever the number)."""
    _, container = _container("coordinator")
    assert parse_command(container["args"])["concurrency"] == EVENT_CONSUMERS
