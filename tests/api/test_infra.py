"""The Grafana dashboard and the Prometheus rules use only metrics plantcrew exposes, and the
alert rules fire when they should (promtool, when installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import yaml
from fastapi.testclient import TestClient

from plantcrew.api import ApiSettings, create_app
from plantcrew.store import Store
from tests.api.conftest import ROOT, FinishedRun

DASHBOARD = ROOT / "infra" / "grafana" / "plantcrew-dashboard.json"
RULES = ROOT / "infra" / "prometheus" / "plantcrew-rules.yaml"
RULE_TESTS = ROOT / "infra" / "prometheus" / "plantcrew-rules.test.yaml"
NAME = re.compile(r"\bplantcrew[_:][a-z0-9_:]+")


@pytest.fixture
def exposed(finished_run: FinishedRun, model_router: object) -> Iterator[set[str]]:
    """Every metric name /metrics shows after a scenario run (HELP/TYPE and samples)."""
    store = Store(finished_run.db_url)
    app = create_app(ApiSettings(), store=store, bus_url="memory://infra", router=model_router)
    with TestClient(app) as client:
        text = client.get("/metrics").text
    names = set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    yield names


def _recorded() -> set[str]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def _known(name: str, exposed: set[str], recorded: set[str]) -> bool:
    if name in exposed or name in recorded:
        return True
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: -len(suffix)] in exposed:
            return True
    return False


def test_dashboard_queries_use_exposed_metrics(exposed: set[str]) -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    recorded = _recorded()
    unknown = {n for e in exprs for n in NAME.findall(e) if not _known(n, exposed, recorded)}
    assert not unknown
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_rules_use_exposed_metrics(exposed: set[str]) -> None:
    rules = yaml.safe_load(RULES.read_text())
    recorded = _recorded()
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    unknown = {n for e in exprs for n in NAME.findall(e) if not _known(n, exposed, recorded)}
    assert not unknown
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "PlantcrewHandlerErrorBudgetFastBurn",
        "PlantcrewTimeToDetectSLO",
        "PlantcrewApprovalWaiting",
    } <= alerts


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        msg = "promtool not found (apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        res = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
