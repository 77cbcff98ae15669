"""Reading a run back: the replay command's outputs, the step-through viewer, following."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from plantcrew.cli_replay import app
from plantcrew.replay.timeline import Step, load_timeline
from plantcrew.replay.viewer import Stepper, follow, interactive
from plantcrew.scenarios.runner import run_scenario
from plantcrew.store import Store
from tests.replay.conftest import SHORT, json_of

runner = CliRunner()


def text_of(renderable: object) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_json_lists_every_message_in_log_order_with_plant_time(short_run: tuple[str, str]) -> None:
    db_url, run_id = short_run
    res = runner.invoke(app, ["replay", run_id, "--db", db_url, "--json"])
    assert res.exit_code == 0, res.output
    messages = json_of(res.output)
    records = Store(db_url).messages(run_id)
    assert [m["id"] for m in messages] == [r.id for r in records]
    assert [m["plant_time"] for m in messages] == [r.plant_time for r in records]
    assert {
        "anomaly.detected",
        "diagnosis.made",
        "action.proposed",
        "safety.decided",
        "approval.requested",
        "approval.decided",
        "action.executed",
        "review.completed",
    } <= {m["type"] for m in messages}


def test_filters_by_agent_type_and_incident(short_run: tuple[str, str]) -> None:
    db_url, run_id = short_run
    timeline = load_timeline(Store(db_url), run_id)
    [incident] = timeline.incidents

    def ids(*args: str) -> list[str]:
        res = runner.invoke(app, ["replay", run_id, "--db", db_url, "--json", *args])
        assert res.exit_code == 0, res.output
        return [m["id"] for m in json_of(res.output)]

    assert ids("--agent", "operator-1") == [
        s.id for s in timeline.steps if s.source == "operator-1"
    ]
    assert ids("--type", "task.*") == [s.id for s in timeline.steps if s.type == "task.assigned"]
    assert ids("--type", "diagnosis.made", "--type", "review.completed") == [
        s.id for s in timeline.steps if s.type in ("diagnosis.made", "review.completed")
    ]
    by_incident = ids("--incident", "1")
    assert by_incident == ids("--incident", incident.id)
    expected = [
        s.id
        for s in timeline.steps
        if s.correlation_id == incident.id or s.type.startswith("anomaly.")
    ]
    assert by_incident == expected
    bad = runner.invoke(app, ["replay", run_id, "--db", db_url, "--incident", "7"])
    assert bad.exit_code == 2 and "no single incident" in bad.output
    missing = runner.invoke(app, ["replay", "run-nope", "--db", db_url])
    assert missing.exit_code == 2


def test_table_output_when_not_on_a_terminal(short_run: tuple[str, str]) -> None:
    db_url, run_id = short_run
    res = runner.invoke(app, ["replay", run_id, "--db", db_url, "--agent", "safety-1"])
    assert res.exit_code == 0, res.output
    assert "safety.decided" in res.output and "1 messages" in res.output


def test_jsonl_export_holds_run_messages_calls_and_rows(
    short_run: tuple[str, str], tmp_path: Path
) -> None:
    db_url, run_id = short_run
    out = tmp_path / "run.jsonl"
    res = runner.invoke(
        app, ["replay", run_id, "--db", db_url, "--format", "jsonl", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [line["record"] for line in lines]
    timeline = load_timeline(Store(db_url), run_id)
    assert kinds[0] == "run" and lines[0]["id"] == run_id
    assert kinds.count("message") == len(timeline.steps)
    assert kinds.count("model_call") == 3
    assert kinds.count("incident") == 1 and kinds.count("action") == 1
    assert kinds.count("approval") == 1 and kinds.count("audit") == len(timeline.audit)
    action = next(line for line in lines if line["record"] == "action")
    assert action["receipt"]["status"] == "executed"


def test_stepper_moves_jumps_and_shows_payload_and_model_calls(short_run: tuple[str, str]) -> None:
    db_url, run_id = short_run
    timeline = load_timeline(Store(db_url), run_id)
    st = Stepper(timeline)
    first = st.current
    assert first is not None
    st.handle("p")
    assert st.current is first and "first message" in st.note
    st.handle("n")
    assert st.current is timeline.steps[1]
    diagnosis = next(s for s in timeline.steps if s.type == "diagnosis.made")
    st.handle("g", f"#{diagnosis.seq}")
    assert st.current is diagnosis
    st.handle("m")
    shown = text_of(st.render())
    call = diagnosis.model_calls[0]
    assert call["deployment"] in shown and "You are the Diagnostic" in shown
    assert f"{call['prompt_tokens']}+{call['completion_tokens']} tokens" in shown
    st.handle("s")
    assert diagnosis.payload["root_cause"] in text_of(st.render())
    executed = next(s for s in timeline.steps if s.type == "action.executed")
    st.handle("g", str(executed.seq))
    st.handle("t")
    summary = text_of(st.render())
    assert "receipt" in summary and "executed" in summary
    st.handle("j", "1")
    assert st.current is not None and st.current.incident_id == timeline.incidents[0].id
    st.handle("j", "9")
    assert "no single incident" in st.note
    assert st.handle("q") is False


def test_the_stepper_shows_an_actions_status_in_its_brackets(short_run: tuple[str, str]) -> None:
    """The summary's action row is 'stop pump1 {} [executed] class 2': rich took '[executed]'
    for a style tag and showed 'stop pump1 {}  class 2'."""
    db_url, run_id = short_run
    timeline = load_timeline(Store(db_url), run_id)
    st = Stepper(timeline)
    executed = next(s for s in timeline.steps if s.type == "action.executed")
    st.handle("g", str(executed.seq))
    st.handle("t")
    assert "stop pump1 {} [executed] class 2" in text_of(st.render())


def test_interactive_loop_reads_keys_until_q(short_run: tuple[str, str]) -> None:
    db_url, run_id = short_run
    timeline = load_timeline(Store(db_url), run_id)
    keys = iter(["n", "n", "j", "m", "q"])
    console = Console(record=True, width=160, color_system=None)
    st = Stepper(timeline, timeline.filter(agent="coordinator"))
    interactive(console, st, key=lambda: next(keys), ask=lambda prompt: "1")
    assert st.view == "model" and st.current is not None
    assert st.current.source == "coordinator" and st.current.incident_id is not None


def test_follow_prints_a_live_run_as_it_happens(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'live.db'}"
    store = Store(db_url)
    done = threading.Event()

    def run() -> None:
        try:
            asyncio.run(run_scenario(SHORT, db_url=db_url, pace=400.0))
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        while not store.runs(1) and not done.is_set():
            done.wait(0.05)
        run_id = store.runs(1)[0].id
        seen: list[Step] = []
        statuses: list[str] = []

        def emit(step: Step) -> None:
            seen.append(step)
            statuses.append(store.get_run(run_id).status)

        n = follow(store, run_id, emit, poll_s=0.05)
    finally:
        thread.join(timeout=120)
    assert n == len(seen) > 10
    assert [s.id for s in seen] == [r.id for r in store.messages(run_id)]
    assert "running" in statuses  # messages were printed while the run was going on
    assert store.get_run(run_id).status != "running"
