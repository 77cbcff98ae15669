"""``plantcrew models check`` and ``plantcrew costs`` (the typer commands, as mounted)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
import typer
import yaml
from typer.testing import CliRunner

from plantcrew.cli_models import costs, models_app
from plantcrew.messages import Diagnosis, Message, ModelCallInfo, Subjects
from plantcrew.store import Run, Store, record_model_calls
from tests.llm.conftest import STUB_KEY, stub_deployment
from tests.llm.openai_stub import OpenAIStub, Reply

app = typer.Typer()
app.add_typer(models_app, name="models")
app.command("costs")(costs)
runner = CliRunner()
CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(autouse=True)
def logs_off_stdout() -> Iterator[None]:
    """As `plantcrew` does (logs on stderr), so stdout carries only the JSON."""
    old = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=io.StringIO()))
    yield
    structlog.configure(**old)


def write_models(tmp_path: Path, groups: dict[str, Any], **extra: Any) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"groups": groups, **extra}))
    (tmp_path / "playbooks.yaml").write_text((CONFIG / "playbooks.yaml").read_text())
    return path


def check(path: Path, *args: str) -> tuple[int, Any]:
    result = runner.invoke(app, ["models", "check", "--config", str(path), "--json", *args])
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None


def test_check_says_which_deployments_answer(
    stub: OpenAIStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLANTCREW_TEST_UNSET", raising=False)
    stub.script("up", Reply.json({"ok": True}))
    stub.script("down", Reply.error(500))
    path = write_models(
        tmp_path,
        {
            "triage": {
                "deployments": [
                    stub_deployment(stub, "up", "up"),
                    stub_deployment(stub, "down", "down"),
                    {"model": "openai/gpt-4o", "name": "off", "enabled": False},
                    {
                        "model": "openai/gpt-4o",
                        "name": "nokey",
                        "api_key_env": "PLANTCREW_TEST_UNSET",
                    },
                ]
            }
        },
    )
    code, rows = check(path)
    assert code == 1  # one active deployment does not answer
    status = {r["deployment"]: (r["status"], r["error"]) for r in rows}
    assert status["up"] == ("ok", None)
    assert status["down"][0] == "failed" and "InternalServerError" in status["down"][1]
    assert status["off"] == ("skipped", "enabled: false")
    assert status["nokey"] == ("skipped", "environment variable PLANTCREW_TEST_UNSET is not set")
    assert status["triage-playbook"] == ("ok", None)  # the playbook always answers
    assert next(r for r in rows if r["deployment"] == "up")["prompt_tokens"] == 11
    assert stub.count("up") == 1 and stub.count("down") == 1  # no retries, no fallback
    assert STUB_KEY not in json.dumps(rows)


def test_check_passes_when_every_active_deployment_answers(
    stub: OpenAIStub, tmp_path: Path
) -> None:
    stub.script("up", Reply.json({"ok": True}))
    path = write_models(
        tmp_path,
        {
            "triage": {"deployments": [stub_deployment(stub, "up", "up")]},
            "review": {"deployments": [{"model": "playbook/default"}]},
        },
    )
    code, rows = check(path)
    assert code == 0 and [r["status"] for r in rows] == ["ok", "ok", "ok"]
    result = runner.invoke(app, ["models", "check", "--config", str(path)])
    assert result.exit_code == 0
    assert "3 of 3 active deployments answer" in result.stdout


def test_check_cuts_a_slow_deployment_off(stub: OpenAIStub, tmp_path: Path) -> None:
    stub.script("slow", Reply.json({"ok": True}, delay_s=5))
    path = write_models(
        tmp_path, {"triage": {"deployments": [stub_deployment(stub, "slow", "slow")]}}
    )
    code, rows = check(path, "--timeout", "0.3", "--group", "triage")
    assert code == 1
    assert rows[0]["error"] == "Timeout (no answer within 0.3 s)"


def test_check_refuses_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("groups: {triage: {deployments: [{model: nomodel}]}}\n")
    result = runner.invoke(app, ["models", "check", "--config", str(path)])
    assert result.exit_code == 2 and "nomodel" in result.stderr
    ok = write_models(tmp_path, {"triage": {"deployments": [{"model": "playbook/default"}]}})
    result = runner.invoke(app, ["models", "check", "--config", str(ok), "--group", "nope"])
    assert result.exit_code == 2 and "unknown model group" in result.stderr


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'costs.db'}"
    store = Store(url)
    when = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    store.create_run(
        Run(
            id="run-a",
            scenario="s",
            scenario_path="s.yaml",
            seed=1,
            bus_url="memory://",
            started_at=when,
        )
    )
    calls = [
        ModelCallInfo(
            model_group="reasoning",
            deployment="primary",
            model="openai/x",
            ok=False,
            error="primary: InternalServerError (500)",
        ),
        ModelCallInfo(
            model_group="reasoning",
            deployment="secondary",
            model="openai/y",
            prompt_tokens=1200,
            completion_tokens=300,
            cost_usd=0.0123,
            fallback=True,
        ),
    ]
    payload = Diagnosis(
        task_id="t1",
        incident_id="inc-a-1",
        agent_id="diagnostic-1",
        root_cause="cavitation",
        confidence=0.8,
        model_calls=calls,
    )
    msg = Message.new(
        payload,
        source="diagnostic-1",
        subject=Subjects.EVENTS,
        run_id="run-a",
        correlation_id="inc-a-1",
        time=when,
    )
    with store.tx() as s:
        record_model_calls(s, calls, msg=msg, agent="diagnostic-1", task_id="t1")
    return url


def test_costs_prints_tokens_and_cost_per_scope(db: str, tmp_path: Path) -> None:
    models = write_models(
        tmp_path,
        {"reasoning": {"deployments": [{"model": "playbook/default"}]}},
        budgets={"per_incident_usd": 0.05, "per_day_usd": 1.0},
    )
    result = runner.invoke(
        app, ["costs", "--run", "run-a", "--db", db, "--json", "--config", str(models)]
    )
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["total"]["tokens"] == 1500 and doc["total"]["cost_usd"] == 0.0123
    assert [(r["key"], r["fallback"], r["failed"]) for r in doc["by_deployment"]] == [
        ("primary", 0, 1),
        ("secondary", 1, 0),
    ]
    assert [r["key"] for r in doc["by_incident"]] == ["inc-a-1"]
    assert [r["key"] for r in doc["by_agent"]] == ["diagnostic-1"]
    assert [r["key"] for r in doc["by_day"]] == ["2026-01-01"]
    assert doc["budgets"]["per_incident_usd"] == 0.05
    table = runner.invoke(
        app,
        ["costs", "--run", "run-a", "--db", db, "--config", str(models)],
        env={"COLUMNS": "200"},
    )
    assert table.exit_code == 0
    for text in (
        "secondary",
        "inc-a-1",
        "diagnostic-1",
        "2026-01-01",
        "0.012300",
        "25% of $0.05",
        "1% of $1",
        "1200 prompt + 300 completion tokens",
    ):
        assert text in table.stdout, text


def test_costs_filters_and_bad_input(db: str) -> None:
    later = runner.invoke(app, ["costs", "--db", db, "--since", "2026-01-02", "--json"])
    assert later.exit_code == 0 and json.loads(later.stdout)["total"]["calls"] == 0
    empty = runner.invoke(app, ["costs", "--db", db, "--since", "2026-01-02"])
    assert "no model calls recorded" in empty.stdout
    assert runner.invoke(app, ["costs", "--db", db, "--since", "soon"]).exit_code == 2
    missing = runner.invoke(app, ["costs", "--db", db, "--run", "run-nope"])
    assert missing.exit_code == 2 and "run-nope" in missing.stderr
