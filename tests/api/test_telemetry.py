"""Telemetry ingest: valid batches go on the bus, invalid ones are reported per item and
dead-lettered with their reason."""

from __future__ import annotations

from plantcrew.messages import DeadLetter, Message, TelemetryBatch
from tests.api.conftest import Api


def reading(
    device: str = "pump1", sensor: str = "motor_temperature", value: float = 70.0, ts: float = 1.0
) -> dict[str, object]:
    return {"device_id": device, "sensor": sensor, "value": value, "unit": "°C", "ts": ts}


def collect(api: Api, subject: str, *, durable: bool) -> list[Message]:
    seen: list[Message] = []

    async def on(msg: Message) -> None:
        seen.append(msg)

    bus = api.ctx.bus
    assert bus is not None
    if durable:
        api.client.portal.call(lambda: bus.consume(subject, on, group="test"))
    else:
        api.client.portal.call(bus.subscribe, subject, on)
    return seen


def test_valid_batches_are_published_invalid_ones_reported_and_dead_lettered(api: Api) -> None:
    tel = collect(api, "telemetry.>", durable=False)
    dlq = collect(api, "crew.dlq", durable=True)
    batches = [
        {"device_id": "pump1", "readings": [reading(), reading(sensor="current", value=2.5)]},
        {"device_id": "pump1", "readings": []},
        {"device_id": "pump2", "readings": [reading(device="pump2", value=float("nan"))]},
        {"device_id": "pump.3", "readings": [reading(device="pump.3")]},
        {"device_id": "pump1", "readings": [reading(device="pump9")]},
        "not an object",
        {"device_id": "valve1", "readings": [reading(device="valve1", sensor="position_pct")]},
    ]
    # NaN is not JSON: send it as the string the client would have produced
    import json

    body = json.dumps({"batches": batches, "run_id": "run-live"}).replace("NaN", '"NaN"')
    r = api.client.post(
        "/api/v1/telemetry",
        headers=api.h("operator", **{"Content-Type": "application/json"}),
        content=body,
    )
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["accepted"] == 2
    rejected = {item["index"]: item for item in out["rejected"]}
    assert sorted(rejected) == [1, 2, 3, 4, 5]
    assert rejected[1]["errors"][0]["field"] == "readings"
    assert rejected[2]["errors"][0]["field"] == "readings.0.value"
    assert rejected[3]["errors"][0]["field"] == "device_id"
    assert rejected[4]["errors"][0]["field"] == "readings.0.device_id"
    assert rejected[5]["errors"][0]["field"] == ""
    api.client.portal.call(api.ctx.bus.quiesce)  # type: ignore[union-attr]
    assert sorted(m.subject for m in tel) == ["telemetry.pump1", "telemetry.valve1"]
    assert all(isinstance(m.payload, TelemetryBatch) and m.run_id == "run-live" for m in tel)
    assert all(m.source.startswith("api:") for m in tel)
    letters = {str(m.id): m.payload for m in dlq}
    assert set(letters) == {item["dead_letter_id"] for item in out["rejected"]}
    for item in out["rejected"]:
        letter = letters[item["dead_letter_id"]]
        assert isinstance(letter, DeadLetter) and letter.quarantined
        for err in item["errors"]:
            assert err["field"] in letter.reason
    assert letters[rejected[2]["dead_letter_id"]].original_subject == "telemetry.pump2"  # type: ignore[union-attr]


def test_too_many_batches_and_bad_bodies(api: Api) -> None:
    api.ctx.settings.max_batches = 2
    one = {"device_id": "pump1", "readings": [reading()]}
    r = api.client.post(
        "/api/v1/telemetry", headers=api.h("operator"), json={"batches": [one, one, one]}
    )
    assert r.status_code == 413
    r = api.client.post("/api/v1/telemetry", headers=api.h("operator"), json={"batches": []})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"].endswith("batches")
    r = api.client.post(
        "/api/v1/telemetry", headers=api.h("operator"), json={"batches": [one], "extra": 1}
    )
    assert r.status_code == 422


def test_a_device_id_ending_in_a_newline_is_rejected_per_item(api: Api) -> None:
    # '$' also matches before a final newline: 'pump1\n' passed the device check, and the bus
    # refused the subject, failing the whole request with 503 (and on NATS, before the bus
    # checked it, the newline broke the connection's protocol)
    batches = [
        {"device_id": "pump1\n", "readings": [reading(device="pump1\n")]},
        {"device_id": "pump1", "readings": [reading()]},
    ]
    r = api.client.post("/api/v1/telemetry", headers=api.h("operator"), json={"batches": batches})
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["accepted"] == 1
    assert [(i["index"], i["errors"][0]["field"]) for i in out["rejected"]] == [(0, "device_id")]
