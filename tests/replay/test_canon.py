"""Canonical forms and comparison: what counts as the same message in two runs."""

from __future__ import annotations

import json
from dataclasses import dataclass

from plantcrew.crews.config import ROLES
from plantcrew.replay.canon import (
    ROLE_NAMES,
    Canon,
    error_form,
    failed_deployments,
    normalise_log,
    role_of,
)
from plantcrew.replay.compare import compare_logs, field_diffs

RUN_A, RUN_B = "run-0123456789ab", "run-ba9876543210"


@dataclass
class Row:
    id: str
    seq: int
    source: str
    type: str
    plant_time: float
    body: str


def msg(
    run: str,
    mid: str,
    source: str,
    type_: str,
    payload: dict,
    cause: str | None = None,
    t: float = 10.0,
) -> dict:
    return {
        "id": mid,
        "type": type_,
        "source": source,
        "subject": "crew.events",
        "time": "2026-01-01T00:00:10Z",
        "run_id": run,
        "correlation_id": run,
        "causation_id": cause,
        "payload": {"kind": type_, **payload},
        "t": t,
    }


def rows(msgs: list[dict]) -> list[Row]:
    return [
        Row(m["id"], i + 1, m["source"], m["type"], m.pop("t"), json.dumps(m))
        for i, m in enumerate(msgs)
    ]


def test_run_names_uuids_tokens_and_call_timings_are_made_canonical() -> None:
    a, b = Canon(RUN_A), Canon(RUN_B)
    call = {
        "model_group": "reasoning",
        "deployment": "d",
        "model": "openai/x",
        "latency_ms": 12.5,
        "cost_usd": 0.01,
        "prompt": [{"role": "user", "content": f"inc-{RUN_A[-8:]}-1"}],
        "response": "ok",
        "error": None,
    }
    va = a.value(
        {
            "incident_id": f"inc-{RUN_A[-8:]}-1",
            "token": "abc",
            "ref": "01a1fdcf-c50d-7e6f-8dda-ebc4e047932a",
            "model_calls": [call],
        }
    )
    vb = b.value(
        {
            "incident_id": f"inc-{RUN_B[-8:]}-1",
            "token": "xyz",
            "ref": "01a1fdd7-945c-7670-b145-11934725c5fe",
            "model_calls": [
                {
                    **call,
                    "latency_ms": 99.0,
                    "model": "recorded/openai/x",
                    "prompt": [{"role": "user", "content": f"inc-{RUN_B[-8:]}-1"}],
                }
            ],
        }
    )
    assert va == vb
    assert va["incident_id"] == "inc-<run>-1" and va["token"] == "<token>"
    assert "latency_ms" not in va["model_calls"][0]
    # but what a model said is kept
    other = b.value({"model_calls": [{**call, "response": "no"}]})
    assert other["model_calls"][0]["response"] != va["model_calls"][0]["response"]


def test_routing_errors_keep_which_deployments_failed_not_how() -> None:
    assert (
        error_form("a: RateLimitError (429) x2; b: Timeout (no answer within 20 s)")
        == (error_form("a: ServiceUnavailableError (503); b: InternalServerError (500)"))
        == ("a: failed; b: failed")
    )
    assert error_form("a: RateLimitError (429)") != error_form("b: RateLimitError (429)")
    assert error_form("APIError: boom [tried a: X; b: Y]") == "failed [tried a: failed; b: failed]"
    assert error_form("no model answered (a: InternalServerError (500))") == (
        "no model answered (a: failed)"
    )
    assert error_form("a: cooling down") == "a: cooling down"
    assert error_form("invalid output: root_cause: missing") == (
        "invalid output: root_cause: missing"
    )
    assert error_form(None) is None
    assert failed_deployments("a: RateLimitError (429); b: cooling down") == ["a", "b"]
    assert failed_deployments("invalid output: root_cause: Field required") == []


def test_causes_are_named_by_sender_and_position_not_by_id() -> None:
    a = rows(
        [
            msg(
                RUN_A,
                "00000000-0000-7000-8000-000000000001",
                "monitor-1",
                "anomaly.detected",
                {"device_id": "pump1"},
            ),
            msg(
                RUN_A,
                "00000000-0000-7000-8000-000000000002",
                "coordinator",
                "task.assigned",
                {"task_id": f"inc-{RUN_A[-8:]}-1-diagnose-1"},
                cause="00000000-0000-7000-8000-000000000001",
            ),
        ]
    )
    b = rows(
        [
            msg(
                RUN_B,
                "11111111-0000-7000-8000-000000000001",
                "monitor-1",
                "anomaly.detected",
                {"device_id": "pump1"},
            ),
            msg(
                RUN_B,
                "11111111-0000-7000-8000-000000000002",
                "coordinator",
                "task.assigned",
                {"task_id": f"inc-{RUN_B[-8:]}-1-diagnose-1"},
                cause="11111111-0000-7000-8000-000000000001",
            ),
        ]
    )
    na, nb = normalise_log(a, RUN_A), normalise_log(b, RUN_B)
    assert na[1].form["cause"] == "monitor-1#0"
    assert [m.form for m in na] == [m.form for m in nb]
    assert compare_logs(na, nb) == []


def test_compare_reports_changed_missing_and_extra_per_agent_earliest_first() -> None:
    base = [
        msg(
            RUN_A,
            "00000000-0000-7000-8000-00000000000a",
            "monitor-1",
            "anomaly.detected",
            {"device_id": "pump1"},
            t=10,
        ),
        msg(
            RUN_A,
            "00000000-0000-7000-8000-00000000000b",
            "operator-1",
            "action.proposed",
            {"command": "stop"},
            t=20,
        ),
        msg(
            RUN_A,
            "00000000-0000-7000-8000-00000000000c",
            "reviewer-1",
            "review.completed",
            {"summary": "ok"},
            t=30,
        ),
    ]
    changed = json.loads(json.dumps(base))
    changed[1]["payload"]["command"] = "set_speed"
    del changed[2]
    changed.append(
        msg(
            RUN_A,
            "00000000-0000-7000-8000-00000000000d",
            "safety-1",
            "safety.decided",
            {"verdict": "approved"},
            t=25,
        )
    )
    found = compare_logs(
        normalise_log(rows(json.loads(json.dumps(base))), RUN_A),
        normalise_log(rows(changed), RUN_A),
    )
    assert [(d.agent, d.kind) for d in found] == [
        ("operator-1", "changed"),
        ("safety-1", "extra"),
        ("reviewer-1", "missing"),
    ]
    first = found[0]
    assert first.seq == 2 and first.plant_time == 20 and first.type == "action.proposed"
    assert [(f.path, f.original, f.replayed) for f in first.differences] == [
        ("payload.command", "stop", "set_speed")
    ]
    assert "operator-1's message 1 (action.proposed) differs" in first.describe()


def test_field_diffs_cut_long_text_around_the_first_difference() -> None:
    a = "x" * 500 + "ALPHA" + "y" * 500
    b = "x" * 500 + "BRAVO" + "y" * 500
    [d] = field_diffs({"p": a}, {"p": b})
    assert d.path == "p" and "ALPHA" in d.original and "BRAVO" in d.replayed
    assert len(d.original) < 200


def test_worker_processes_compare_with_in_process_agents_by_role() -> None:
    assert set(ROLE_NAMES) == {*ROLES, "coordinator"}
    assert role_of("operator-1") == role_of("operator-plant-host-4242") == "operator"
    assert role_of("person:shift_supervisor:alice") == "person:shift_supervisor:alice"
    assert role_of("operator") == "operator"

    def log(run: str, agent: str) -> list[Row]:
        return rows(
            [
                msg(
                    run,
                    "00000000-0000-7000-8000-0000000000a1",
                    agent,
                    "action.proposed",
                    {"agent_id": agent, "command": "stop"},
                )
            ]
        )

    local = normalise_log(log(RUN_A, "operator-1"), RUN_A, by_role=True)
    remote = normalise_log(log(RUN_B, "operator-host-99"), RUN_B, by_role=True)
    assert local[0].source == remote[0].source == "operator"
    assert compare_logs(local, remote) == []
    strict = compare_logs(
        normalise_log(log(RUN_A, "operator-1"), RUN_A),
        normalise_log(log(RUN_B, "operator-host-99"), RUN_B),
    )
    assert strict  # by agent id they differ
