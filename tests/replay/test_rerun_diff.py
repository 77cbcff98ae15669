"""Counterfactual re-runs stored as forks, and diffs of two runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlmodel import col, select
from typer.testing import CliRunner

from plantcrew.cli_replay import app
from plantcrew.replay.diff import diff_runs
from plantcrew.replay.timeline import load_timeline
from plantcrew.store import ModelSpend, Store
from plantcrew.store.costs import cost_rows
from tests.replay.conftest import SHORT, config_copy, json_of, record

runner = CliRunner()


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """A recorded short run with its own config folder: ``(db_url, run_id, config_dir)``."""
    base = tmp_path_factory.mktemp("fork")
    cfg = config_copy(base / "config")
    url = f"sqlite:///{base / 'run.db'}"
    return url, record(SHORT, url, config_dir=cfg), cfg


def test_rerun_with_another_model_group_stores_a_fork_that_diff_compares(
    original: tuple[str, str, Path],
) -> None:
    db_url, run_id, _ = original
    store = Store(db_url)
    before = load_timeline(store, run_id)
    diagnosis = next(s for s in before.steps if s.type == "diagnosis.made")
    lessons = len(store.lessons())

    res = runner.invoke(
        app,
        [
            "rerun",
            run_id,
            "--from",
            diagnosis.id[:13],
            "--db",
            db_url,
            "--model-group",
            "diagnostic=triage",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json_of(res.output)
    fork_id = report["run_id"]
    assert report["parent_run_id"] == run_id and report["fork_seq"] == diagnosis.seq
    assert report["prefix_as_recorded"] is True, report["prefix_divergence"]

    fork_run = store.get_run(fork_id)
    assert fork_run.parent_run_id == run_id and fork_run.fork_from_message_id == diagnosis.id
    assert fork_run.config["fork"]["model_groups"] == {"diagnostic": "triage"}
    fork = load_timeline(store, fork_id)
    calls = [c for s in fork.steps for c in s.model_calls]
    assert [c["model_group"] for c in calls] == ["triage", "reasoning", "review"]
    assert store.verify_audit() == []  # the fork's audit entries joined the chain intact
    assert len(store.lessons()) == lessons  # a counterfactual run teaches the memory nothing
    with store.tx() as s:  # the fork's model calls count in the running spend of their day
        per_day = {r.key: (r.calls, r.cost_usd) for r in cost_rows(s, "day")}
        spend = s.exec(select(ModelSpend).where(col(ModelSpend.scope) == "day")).all()
    assert {r.day: (r.calls, pytest.approx(r.usd)) for r in spend} == per_day

    res = runner.invoke(app, ["diff", run_id, fork_id, "--db", db_url, "--json"])
    assert res.exit_code == 1, res.output  # they differ
    d = json_of(res.output)
    assert "is a fork of" in d["relation"]
    differs = {(h["subject"], h["name"]) for h in d["highlights"] if h["differs"]}
    assert ("incident 1", "models") in differs
    assert ("incident 1", "root cause") not in differs
    changed = [r for r in d["rows"] if r["op"] != "same"]
    assert [r["a"]["type"] for r in changed] == ["diagnosis.made"]
    assert {f["path"] for f in changed[0]["differences"]} >= {
        "payload.model_calls[0].model_group",
        "payload.model_calls[0].deployment",
    }
    assert d["counts"]["same"] == len(before.steps) - 1


def _playbooks_changed(cfg: Path, dest: Path) -> Path:
    text = (cfg / "playbooks.yaml").read_text()
    text = re.sub(r"min_confidence: [0-9.]+", "min_confidence: 0.999", text, count=1)
    block = re.search(r"\n  bearing_overheating:\n(?:    .*\n)+", text)
    assert block is not None
    text = text.replace(block.group(0), block.group(0).replace("command: stop", "command: notify"))
    dest.write_text(text)
    return dest


def test_answers_before_the_fork_come_from_the_record_and_after_it_live(
    original: tuple[str, str, Path], tmp_path: Path
) -> None:
    db_url, run_id, cfg = original
    store = Store(db_url)
    before = load_timeline(store, run_id)
    propose_task = next(
        s
        for s in before.steps
        if s.type == "task.assigned" and s.payload["capability"] == "propose_action"
    )
    playbooks = _playbooks_changed(cfg, tmp_path / "playbooks.yaml")

    # fork after the diagnosis: the diagnosis is the recorded one (the changed playbook would
    # now say "unknown"), the proposal is the changed playbook's (notify, not stop)
    res = runner.invoke(
        app,
        [
            "rerun",
            run_id,
            "--from",
            f"#{propose_task.seq}",
            "--db",
            db_url,
            "--playbooks",
            str(playbooks),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    late = load_timeline(store, json_of(res.output)["run_id"])
    assert json_of(res.output)["prefix_as_recorded"] is True
    assert late.incidents[0].root_cause == "bearing_overheating"
    assert [s.payload["command"] for s in late.steps if s.type == "action.proposed"] == ["notify"]

    # fork from the start: the diagnosis is live too
    res = runner.invoke(
        app,
        [
            "rerun",
            run_id,
            "--from",
            f"#{before.steps[0].seq}",
            "--db",
            db_url,
            "--playbooks",
            str(playbooks),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    early = load_timeline(store, json_of(res.output)["run_id"])
    assert early.incidents[0].root_cause == "unknown"

    d = diff_runs(before, late)
    facts = {(h.subject, h.name): h for h in d.highlights}
    assert not facts[("incident 1", "root cause")].differs
    assert facts[("incident 1", "proposals")].differs
    assert facts[("incident 1", "actions")].differs
    assert "stop" in facts[("incident 1", "actions")].a
    assert "notify" in facts[("incident 1", "actions")].b
    first_change = next(r for r in d.rows if r.op != "same")
    assert first_change.a is not None and first_change.a.type == "action.proposed"


def test_rerun_with_other_policies_changes_the_safety_decision(
    original: tuple[str, str, Path], tmp_path: Path
) -> None:
    db_url, run_id, cfg = original
    store = Store(db_url)
    before = load_timeline(store, run_id)
    assess = next(
        s
        for s in before.steps
        if s.type == "task.assigned" and s.payload["capability"] == "assess_safety"
    )
    policies = tmp_path / "policies.yaml"
    text = (cfg / "policies.yaml").read_text()
    assert "stop: {hazard_class: 2}" in text
    policies.write_text(text.replace("stop: {hazard_class: 2}", "stop: {hazard_class: 3}"))

    res = runner.invoke(
        app,
        [
            "rerun",
            run_id,
            "--from",
            assess.id,
            "--db",
            db_url,
            "--policies",
            str(policies),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json_of(res.output)
    assert report["prefix_as_recorded"] is True and report["changes"]["policies"]
    fork = load_timeline(store, report["run_id"])
    [decided] = [s for s in fork.steps if s.type == "safety.decided"]
    assert decided.payload["hazard_class"] == 3 and decided.payload["approvers_required"] == 2
    # one person's approval is no longer enough: nothing is executed
    assert [a.status for a in fork.actions] != ["executed"]
    facts = {(h.subject, h.name): h for h in diff_runs(before, fork).highlights}
    assert facts[("incident 1", "safety verdicts")].differs
    assert facts[("incident 1", "approvals")].differs
    assert not facts[("incident 1", "root cause")].differs


def test_diff_of_a_run_with_itself_is_empty(original: tuple[str, str, Path]) -> None:
    db_url, run_id, _ = original
    res = runner.invoke(app, ["diff", run_id, run_id, "--db", db_url])
    assert res.exit_code == 0, res.output
    assert "0 changed, 0 removed, 0 added" in res.output


def test_rerun_refuses_unknown_messages_roles_and_groups(original: tuple[str, str, Path]) -> None:
    db_url, run_id, _ = original
    for args, said in (
        (["--from", "#9999"], "no message"),
        (["--from", "#1", "--model-group", "pilot=triage"], "unknown role"),
        (["--from", "#1", "--model-group", "diagnostic=nope"], "unknown model group"),
        (["--from", "#1", "--model-group", "diagnostic"], "ROLE=GROUP"),
    ):
        res = runner.invoke(app, ["rerun", run_id, "--db", db_url, *args])
        assert res.exit_code == 2, (args, res.output)
        assert said in res.output, (args, res.output)
