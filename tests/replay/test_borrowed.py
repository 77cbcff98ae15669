"""Replay of a run whose reasoning call a *borrowed* deployment served: reasoning's model failed
and its fallback group triage's model answered from within reasoning's chain (litellm id
``reasoning>triage-stub``). The record names the deployment (``triage-stub``); the replay must
serve the recorded answer from that deployment and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import col, select

from plantcrew.replay.rerun import rerun
from plantcrew.replay.sandbox import Changes
from plantcrew.replay.timeline import load_timeline
from plantcrew.replay.verify import verify_run
from plantcrew.store import Store
from plantcrew.store.tables import ModelCall
from tests.llm.openai_stub import OpenAIStub, Reply
from tests.replay.conftest import SHORT, config_copy, record
from tests.replay.test_verify import PROPOSAL, STUB_KEY_ENV


def _stub(stub: OpenAIStub, model: str, name: str) -> dict[str, Any]:
    return {
        "model": f"openai/{model}",
        "name": name,
        "api_base": stub.base_url,
        "api_key_env": STUB_KEY_ENV,
        "max_retries": 0,
        "timeout_s": 10,
    }


def _borrowing_config(cfg: Path, stub: OpenAIStub) -> None:
    """models.yaml: reasoning [reasoning-stub, reasoning-playbook], triage [triage-stub,
    triage-playbook], ``fallbacks: {reasoning: [triage]}`` (no role reasons with triage)."""
    path = cfg / "models.yaml"
    data = yaml.safe_load(path.read_text())
    data["groups"]["reasoning"]["deployments"] = [
        _stub(stub, "stub-reasoning", "reasoning-stub"),
        {"model": "playbook/default", "name": "reasoning-playbook"},
    ]
    data["groups"]["triage"]["deployments"] = [
        _stub(stub, "stub-triage", "triage-stub"),
        {"model": "playbook/default", "name": "triage-playbook"},
    ]
    data["router"].update(num_retries=0, cooldown_time_s=0, fallbacks={"reasoning": ["triage"]})
    path.write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def borrowed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, int]:
    """``(db_url, run_id, stub requests)`` of a short run in which reasoning's stub fails every
    call; triage's stub fails the diagnosis (the playbook answers it, degraded) and answers
    the proposal (served by the borrowed deployment)."""
    base = tmp_path_factory.mktemp("borrowed")
    cfg = config_copy(base / "config")
    db_url = f"sqlite:///{base / 'run.db'}"
    with pytest.MonkeyPatch.context() as mp, OpenAIStub() as stub:
        mp.setenv(STUB_KEY_ENV, "sk-test-replay-0000")
        stub.script("stub-reasoning", Reply.error(500))
        stub.script("stub-triage", Reply.error(500), Reply.json(PROPOSAL))
        _borrowing_config(cfg, stub)
        run_id = record(SHORT, db_url, config_dir=cfg)
        asked = len(stub.requests)
    return db_url, run_id, asked


def _calls(db_url: str, run_id: str) -> list[dict[str, Any]]:
    steps = load_timeline(Store(db_url), run_id).steps
    return [c for s in steps for c in s.model_calls]


def test_the_record_names_the_borrowed_deployment(borrowed_run: tuple[str, str, int]) -> None:
    db_url, run_id, asked = borrowed_run
    diagnosis, proposal, review = _calls(db_url, run_id)
    assert (diagnosis["deployment"], diagnosis["model_group"]) == (
        "reasoning-playbook",
        "reasoning",
    )
    assert diagnosis["error"] == (
        "reasoning-stub: InternalServerError (500); triage-stub: InternalServerError (500)"
    )
    assert (proposal["model_group"], proposal["deployment"], proposal["model"]) == (
        "reasoning",
        "triage-stub",
        "openai/stub-triage",
    )
    assert (proposal["fallback"], proposal["degraded_reason"]) == (True, None)
    assert proposal["error"] == "reasoning-stub: InternalServerError (500)"
    assert review["model_group"] == "review"
    with Store(db_url).tx() as s:  # the store's model_call rows name the deployment too
        rows = s.exec(select(ModelCall.deployment).where(col(ModelCall.run_id) == run_id)).all()
    assert "triage-stub" in rows and not any(">" in r for r in rows)
    assert asked == 4  # reasoning x2, triage x2


def test_a_call_a_borrowed_deployment_served_verifies_from_the_record(
    borrowed_run: tuple[str, str, int],
) -> None:
    db_url, run_id, _ = borrowed_run
    # no stub runs now: a call not served from the record fails (and the playbook would
    # answer the proposal otherwise); verify compares every message with its model calls
    # (group, deployment, model, error, response, tokens, flags)
    report = verify_run(db_url, run_id)
    assert report.ok, [d.describe() for d in report.divergences]
    assert report.reexecution.served == 1  # the proposal, by triage-stub
    assert report.reexecution.live == 0 and report.reexecution.unrecorded == []


def test_a_fork_after_the_borrowed_call_replays_it_as_recorded(
    borrowed_run: tuple[str, str, int],
) -> None:
    db_url, run_id, _ = borrowed_run
    steps = load_timeline(Store(db_url), run_id).steps
    reviewed = next(s for s in steps if s.type == "review.completed")
    fork = rerun(db_url, run_id, f"#{reviewed.seq}", Changes())
    assert fork.prefix is None, fork.prefix.describe()
    proposal = _calls(db_url, run_id)[1]
    replayed = _calls(db_url, fork.run_id)[1]
    assert (replayed["deployment"], replayed["response"]) == (
        proposal["deployment"],
        proposal["response"],
    )
