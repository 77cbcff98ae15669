"""The Kubernetes manifests (infra/k8s): a Deployment per role with the probes the processes
serve, an HPA per task role, configuration and secrets from the environment, and command lines
the CLI accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from plantcrew.cli_processes import _dev
from plantcrew.crews.config import ROLES

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
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


def test_every_role_and_the_coordinator_has_a_deployment() -> None:
    assert set(deployments()) == {*ROLES, "coordinator"}


@pytest.mark.parametrize("name", [*ROLES, "coordinator"])
def test_deployment_probes_config_and_command(name: str) -> None:
    spec = deployments()[name]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = container["args"]
    assert args[:3] == ["worker", "--role", name] if name != "coordinator" else args[0] == name
    assert args[args.index("--probe-port") + 1] == "9100"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    assert container["startupProbe"]["httpGet"]["path"] == "/startupz"
    assert {"name": "probes", "containerPort": 9100} in container["ports"]
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {"configMapRef": "plantcrew-env", "secretRef": "plantcrew-secrets"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    # the CLI accepts every option the manifest passes
    command = typer.main.get_command(_dev).commands[args[0]]  # type: ignore[attr-defined]
    known = {o for p in command.params for o in p.opts}
    assert {a for a in args if a.startswith("--")} <= known
    if "--grace" in args:  # the drain ends before the kubelet's SIGKILL
        assert float(args[args.index("--grace") + 1]) < spec["terminationGracePeriodSeconds"]


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
