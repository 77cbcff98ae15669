"""The Message envelope: validation names field paths, JSON round-trips, invariants hold."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from plantcrew.errors import MessageValidationError
from plantcrew.messages import (
    ActionProposal,
    Capability,
    Message,
    Reading,
    Subjects,
    Task,
    TelemetryBatch,
)


def batch() -> TelemetryBatch:
    r = Reading(device_id="pump1", sensor="flow_rate", value=125.3, unit="L/min", ts=12.0)
    return TelemetryBatch(device_id="pump1", readings=[r])


def test_json_round_trip_keeps_every_field() -> None:
    msg = Message.new(
        Task(task_id="t1", incident_id="i1", capability=Capability.DIAGNOSE, input={"a": [1]}),
        source="coordinator",
        subject=Subjects.tasks("diagnose"),
        run_id="r1",
        correlation_id="i1",
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )
    back = Message.from_bytes(msg.to_bytes())
    assert back == msg
    assert back.type == "task.assigned" and isinstance(back.payload, Task)


def test_ids_are_time_ordered_uuid7() -> None:
    ids = [Message.new(batch(), source="plant", subject="telemetry.pump1").id for _ in range(50)]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids)


def test_invalid_message_names_the_field_path() -> None:
    bad = json.loads(Message.new(batch(), source="plant", subject="telemetry.pump1").to_bytes())
    bad["payload"]["readings"][0]["value"] = "high"
    del bad["source"]
    with pytest.raises(MessageValidationError) as info:
        Message.from_bytes(json.dumps(bad))
    paths = [p for p, _ in info.value.errors]
    assert "source" in paths
    assert "payload.telemetry.reading.readings.0.value" in paths
    assert "payload.telemetry.reading.readings.0.value" in str(info.value)


def test_type_must_match_payload_kind() -> None:
    raw = json.loads(Message.new(batch(), source="plant", subject="telemetry.pump1").to_bytes())
    raw["type"] = "anomaly.detected"
    with pytest.raises(MessageValidationError, match="does not match payload kind"):
        Message.from_bytes(json.dumps(raw))


def test_naive_time_and_bad_traceparent_are_refused() -> None:
    with pytest.raises(MessageValidationError, match="timezone"):
        Message.new(batch(), source="p", subject="telemetry.pump1", time=datetime(2026, 1, 1))
    with pytest.raises(MessageValidationError, match="traceparent"):
        Message.new(batch(), source="p", subject="telemetry.pump1", traceparent="nope")


def test_a_traceparent_with_a_trailing_newline_is_refused() -> None:
    # the pattern has Python-style anchors; pydantic-core's Rust regex (the default engine)
    # matches `$` at the very end only, where Python's re also matches before a final "\n"
    tp = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    msg = Message.new(batch(), source="p", subject="telemetry.pump1", traceparent=tp)
    with pytest.raises(MessageValidationError, match="traceparent"):
        Message.new(batch(), source="p", subject="telemetry.pump1", traceparent=tp + "\n")
    raw = json.loads(msg.to_bytes())
    raw["traceparent"] = tp + "\n"
    with pytest.raises(MessageValidationError, match="traceparent"):
        Message.from_bytes(json.dumps(raw))


def test_messages_are_frozen_and_reply_links_cause() -> None:
    cause = Message.new(
        batch(), source="plant", subject="telemetry.pump1", run_id="r1", correlation_id="r1"
    )
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        cause.source = "x"  # type: ignore[misc]
    reply = cause.reply(
        ActionProposal(
            task_id="t",
            incident_id="i",
            agent_id="op",
            action_id="a",
            device_id="pump1",
            command="set_speed",
            parameters={"speed_pct": 80},
        ),
        source="operator-1",
        subject=Subjects.EVENTS,
    )
    assert reply.causation_id == cause.id and reply.run_id == "r1"
    assert reply.correlation_id == "r1" and reply.id != cause.id


def test_non_finite_readings_are_invalid() -> None:
    with pytest.raises(ValueError):
        Reading(device_id="p", sensor="s", value=float("nan"), ts=0)


def test_wire_bytes_are_made_once_and_remade_after_a_change() -> None:
    msg = Message.new(batch(), source="plant", subject="telemetry.pump1")
    wire = msg.to_bytes()
    assert msg.to_bytes() is wire and json.loads(wire)["id"] == str(msg.id)
    tp = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    traced = msg.model_copy(update={"traceparent": tp})
    assert json.loads(traced.to_bytes())["traceparent"] == tp
    assert msg.model_copy().to_bytes() == wire
    assert "_wire" not in msg.model_dump() and "_wire" not in repr(msg)


def test_wire_bytes_are_the_kept_ones_else_made_without_keeping() -> None:
    msg = Message.new(batch(), source="plant", subject="telemetry.pump1")
    sent = msg.wire_bytes()  # what a bus publishes: the message does not keep a copy
    assert "_wire" not in vars(msg) and sent == msg.to_bytes()
    assert msg.wire_bytes() is msg.to_bytes()  # once kept (e.g. stored), they are reused
    received = Message.from_bytes(sent)
    assert received.wire_bytes() is sent  # a relay sends what it read


def test_received_bytes_are_relayed_as_they_are_only_when_complete() -> None:
    msg = Message.new(batch(), source="plant", subject="telemetry.pump1")
    spaced = json.dumps(json.loads(msg.to_bytes()), indent=1).encode()
    back = Message.from_bytes(spaced)
    assert back.to_bytes() is spaced and back == msg and msg == back
    partial = json.loads(msg.to_bytes())
    del partial["id"], partial["run_id"]  # a foreign producer leaves defaults out
    first = Message.from_bytes(json.dumps(partial).encode())
    # made anew, so every receiver of the relayed bytes sees the same (generated) id
    assert json.loads(first.to_bytes())["id"] == str(first.id)
