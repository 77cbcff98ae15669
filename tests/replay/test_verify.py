"""Exact replay: a recorded run re-executed through the current code with recorded answers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from plantcrew.cli_replay import app
from plantcrew.replay.rerun import rerun
from plantcrew.replay.sandbox import Changes
from plantcrew.replay.timeline import load_timeline
from plantcrew.replay.verify import verify_run, verify_run_async
from plantcrew.store import Store
from tests.llm.openai_stub import OpenAIStub, Reply
from tests.replay.conftest import SHORT, config_copy, json_of, record

STUB_KEY_ENV = "PLANTCREW_TEST_REPLAY_STUB_KEY"


def _step(db_url: str, run_id: str, type_: str) -> Any:
    timeline = load_timeline(Store(db_url), run_id)
    return next(s for s in timeline.steps if s.type == type_)


async def test_a_recorded_run_verifies_with_no_divergence(short_run: tuple[str, str]) -> None:
    db_url, run_id = short_run
    report = await verify_run_async(db_url, run_id)
    assert report.ok, [d.describe() for d in report.divergences]
    timeline = load_timeline(Store(db_url), run_id)
    assert report.compared == len(timeline.steps) == report.replayed
    assert {
        "coordinator",
        "monitor-1",
        "diagnostic-1",
        "operator-1",
        "safety-1",
        "reviewer-1",
    } <= set(report.agents)
    assert report.replay_run_id != run_id


def _change_bearing_rule(playbooks: Path) -> None:
    text = playbooks.read_text()
    block = re.search(r"\n  bearing_overheating:\n(?:    .*\n)+", text)
    assert block is not None and "command: stop" in block.group(0)
    playbooks.write_text(
        text.replace(block.group(0), block.group(0).replace("command: stop", "command: notify"))
    )


def test_a_changed_playbook_rule_is_reported_at_the_first_divergent_message(tmp_path: Path) -> None:
    cfg = config_copy(tmp_path / "config")
    db_url = f"sqlite:///{tmp_path / 'run.db'}"
    run_id = record(SHORT, db_url, config_dir=cfg)
    proposed = _step(db_url, run_id, "action.proposed")
    _change_bearing_rule(cfg / "playbooks.yaml")

    cli = CliRunner().invoke(app, ["replay", run_id, "--db", db_url, "--verify", "--json"])
    assert cli.exit_code == 1, cli.output
    out = json_of(cli.output)
    assert out["ok"] is False
    first = out["first_divergence"]
    assert (first["agent"], first["type"], first["kind"]) == (
        "operator-1",
        "action.proposed",
        "changed",
    )
    assert (first["seq"], first["plant_time"]) == (proposed.seq, proposed.plant_time)
    fields = {d["path"]: (d["original"], d["replayed"]) for d in first["differences"]}
    assert fields["payload.command"] == ("stop", "notify")

    # with every model answer (the playbook's too) served from the record, the rule change
    # is out of play and the run verifies
    calls = sum(len(s.model_calls) for s in load_timeline(Store(db_url), run_id).steps)
    report = verify_run(db_url, run_id, record_playbook=True)
    assert report.ok, [d.describe() for d in report.divergences]
    assert calls == 3 and report.reexecution.served == calls and report.reexecution.live == 0


async def test_a_changed_prompt_is_a_divergence_even_with_recorded_answers(
    short_run: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import plantcrew.agents.operator as operator

    db_url, run_id = short_run
    proposed = _step(db_url, run_id, "action.proposed")
    monkeypatch.setattr(operator, "SYSTEM", operator.SYSTEM + " Prefer notify.")
    report = await verify_run_async(db_url, run_id, record_playbook=True)
    assert report.first is not None and report.first.seq == proposed.seq
    paths = [d.path for d in report.first.differences]
    assert paths and all("prompt" in p for p in paths), paths
    assert "payload.model_calls[0].prompt[0].content" in paths


def _stub_config(cfg: Path, stub: OpenAIStub, **extra: Any) -> None:
    path = cfg / "models.yaml"
    data = yaml.safe_load(path.read_text())
    data["groups"]["reasoning"]["deployments"] = [
        {
            "model": "openai/stub-reasoning",
            "name": "reasoning-stub",
            "api_base": stub.base_url,
            "api_key_env": STUB_KEY_ENV,
            "max_retries": 0,
            "timeout_s": 10,
        },
        {"model": "playbook/default", "name": "reasoning-playbook"},
    ]
    data["router"].update(num_retries=0, cooldown_time_s=0)
    data.update(extra)
    path.write_text(yaml.safe_dump(data))


PROPOSAL = {
    "device_id": "pump1",
    "command": "stop",
    "parameters": {},
    "hazard_class": 2,
    "rationale": "the stub model says: stop the pump",
}


def test_hosted_model_answers_come_from_the_record_and_no_model_is_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STUB_KEY_ENV, "sk-test-replay-0000")
    proposal = PROPOSAL

    cfg = config_copy(tmp_path / "config")
    db_url = f"sqlite:///{tmp_path / 'run.db'}"
    with OpenAIStub() as stub:
        # the diagnosis asks first: the stub fails it and the router falls back to the
        # playbook; the proposal asks second and gets the stub's answer
        stub.script("stub-reasoning", Reply.error(500), Reply.json(proposal))
        _stub_config(cfg, stub)
        run_id = record(SHORT, db_url, config_dir=cfg)
        asked = len(stub.requests)
    diagnosis = _step(db_url, run_id, "diagnosis.made").model_calls[0]
    assert diagnosis["deployment"] == "reasoning-playbook" and diagnosis["fallback"]
    assert "reasoning-stub" in (diagnosis["error"] or "")
    proposed = _step(db_url, run_id, "action.proposed")
    assert proposed.model_calls[0]["deployment"] == "reasoning-stub"
    assert proposed.payload["rationale"] == proposal["rationale"]
    assert asked == 2 and [m for m, _ in stub.requests] == ["stub-reasoning"] * 2

    # the stub is gone: any model call that is not served from the record would fail
    report = verify_run(db_url, run_id)
    assert report.ok, [d.describe() for d in report.divergences]
    assert report.reexecution.served == 1  # the proposal
    assert report.reexecution.refused >= 1  # the stub failing the diagnosis, as recorded
    assert report.reexecution.live == 0
    assert len(stub.requests) == asked


def test_budgets_see_the_spend_of_earlier_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's budget was measured against what earlier runs of the day had spent; the
    re-execution's scratch database starts with that spend, so the budgets it sends agree."""
    monkeypatch.setenv(STUB_KEY_ENV, "sk-test-replay-0000")
    cfg = config_copy(tmp_path / "config")
    db_url = f"sqlite:///{tmp_path / 'run.db'}"
    with OpenAIStub() as stub:
        stub.script(
            "stub-reasoning",
            Reply.error(500),
            Reply.json(PROPOSAL),
            Reply.error(500),
            Reply.json(PROPOSAL),
        )
        _stub_config(
            cfg, stub, budgets={"per_day_usd": 1000.0, "per_agent_day_usd": {"operator": 500.0}}
        )
        data = yaml.safe_load((cfg / "models.yaml").read_text())
        data["groups"]["reasoning"]["deployments"][0]["price"] = {
            "input_per_mtok": 10000.0,
            "output_per_mtok": 30000.0,
        }
        (cfg / "models.yaml").write_text(yaml.safe_dump(data))
        record(SHORT, db_url, config_dir=cfg)  # spends on the stub's proposal
        second = record(SHORT, db_url, config_dir=cfg)
    budgets = [
        s.payload["input"].get("budget")
        for s in load_timeline(Store(db_url), second).steps
        if s.type == "task.assigned" and s.payload["capability"] == "propose_action"
    ]
    if not budgets or budgets[0] is None:
        pytest.skip("the crew sends no budget spend with its tasks")
    spent = {x["scope"]: x["spent_usd"] for x in budgets[0]["scopes"]}
    assert spent["day"] > 0 and spent["agent operator today"] > 0  # the first run's spend

    report = verify_run(db_url, second)
    assert report.ok, [d.describe() for d in report.divergences]


def test_a_run_a_person_approved_through_the_cli_verifies(tmp_path: Path) -> None:
    """Nobody is scripted to answer: a person approves the pending request with ``plantcrew
    approvals approve`` while the run goes on. The person's decision is part of the record
    (``approval.decided`` at its plant time); the re-execution must take it from there."""
    from plantcrew.cli import app as main_app
    from plantcrew.scenarios.runner import run_scenario

    data = yaml.safe_load(SHORT.read_text())
    data.pop("human")
    scenario = tmp_path / "person.yaml"
    scenario.write_text(yaml.safe_dump(data))
    db_url = f"sqlite:///{tmp_path / 'run.db'}"
    store = Store(db_url)

    def person(_t: float) -> None:
        for approval in store.approvals(status="pending"):
            cli = CliRunner().invoke(
                main_app,
                [
                    "approvals",
                    "approve",
                    approval.id,
                    "--as",
                    "alice",
                    "--role",
                    "shift_supervisor",
                    "--reason",
                    "seen it",
                    "--db",
                    db_url,
                ],
            )
            assert cli.exit_code == 0, cli.output

    result = asyncio.run(run_scenario(scenario, db_url=db_url, on_checkpoint=person))
    assert result.passed, result.to_json()
    decided = _step(db_url, result.run_id, "approval.decided")
    assert decided.source == "person:shift_supervisor:alice"

    report = verify_run(db_url, result.run_id)
    assert report.ok, [d.describe() for d in report.divergences] + report.action_differences
    assert report.compared == report.replayed

    # a fork after the person's vote re-runs the conversation before it as recorded
    reviewed = _step(db_url, result.run_id, "review.completed")
    fork = rerun(db_url, result.run_id, f"#{reviewed.seq}", Changes())
    assert fork.prefix is None, fork.prefix.describe()


def test_verify_report_says_no_divergence_only_when_the_run_verifies(tmp_path: Path) -> None:
    # the messages matched but a recorded answer was never asked for: verify fails (exit 1),
    # so its report must not say "no divergence"
    from rich.console import Console

    from plantcrew.replay.console import verify_report
    from plantcrew.replay.sandbox import Reexecution
    from plantcrew.replay.verify import VerifyReport

    def report(unused: list[str]) -> str:
        rx = Reexecution(
            db_url="sqlite://", run_id="r2", passed=True, served=2, live=0, refused=0,
            unrecorded=[], unused=unused, stop_at=None, wall_s=0.1, config_dir=tmp_path,
        )  # fmt: skip
        r = VerifyReport(
            run_id="r1", replay_run_id="r2", compared=9, replayed=9, agents=["diagnostic-1"],
            divergences=[], action_differences=[], reexecution=rx, wall_s=0.2,
        )  # fmt: skip
        console = Console(record=True, width=200)
        console.print(verify_report(r))
        assert r.ok == (not unused)
        return console.export_text()

    assert "no divergence" in report([])
    failed = report(["diagnostic-1 call #2 (gpt)"])
    assert "no divergence" not in failed
    assert "model calls differ from the record" in failed
    assert "recorded answer never asked for: diagnostic-1 call #2 (gpt)" in failed
