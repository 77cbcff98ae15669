"""DeviceMonitor on telemetry as a real plant historian sends it: sensors missing from some
batches, absurd (finite) values such as a sentinel of float max."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import numpy as np
import pytest
from structlog.testing import capture_logs

from plantcrew.agents import Monitor
from plantcrew.bus import connect
from plantcrew.detect import DeviceMonitor, MonitorState
from plantcrew.messages import (
    AnomalyCleared,
    AnomalyDetected,
    DeadLetter,
    Message,
    Subjects,
    TelemetryBatch,
)
from plantcrew.plant.clock import SimClock
from tests.detect.helpers import NOMINAL, batch


def values(rng: np.random.Generator, shift: dict[str, float] | None = None) -> dict[str, float]:
    out = {s: mu + sd * rng.standard_normal() for s, (mu, sd) in NOMINAL.items()}
    for s, k in (shift or {}).items():
        out[s] += k * NOMINAL[s][1]
    return out


def calibrated(seed: int) -> tuple[DeviceMonitor, np.random.Generator]:
    m = DeviceMonitor("pump1")
    rng = np.random.default_rng(seed)
    for i in range(500):
        m.update(batch(float(i), values(rng)))
    assert m.calibrated
    return m, rng


def test_a_sensor_missing_from_batches_is_not_stuck():
    """A sensor the historian leaves out of a stretch of batches keeps its last value; that
    is no evidence it is stuck, so no episode (incident) opens for the gap."""
    m, rng = calibrated(seed=11)
    verdicts = []
    for i in range(500, 2500):
        v = values(rng)
        if (i // 100) % 2:  # pressure absent from every other stretch of 100 batches
            del v["pressure"]
        verdicts.append(m.update(batch(float(i), v)))
    assert [v.event for v in verdicts if v.event] == []
    assert not any(v.flag for v in verdicts)
    assert all(0.0 <= v.score < 0.5 for v in verdicts)


@pytest.mark.parametrize("absurd", [1e200, 1.7976931348623157e308, -1.7976931348623157e308])
def test_an_absurd_finite_reading_keeps_scores_in_the_unit_interval(absurd):
    """One finite but absurd reading (a historian's bad-value sentinel) is an anomaly; the
    score stays a number in [0, 1], the anomaly survives the bus (no NaN/inf in it), and
    the episode clears when the readings are normal again."""
    m, rng = calibrated(seed=12)
    verdicts = [m.update(batch(float(i), values(rng))) for i in range(500, 1000)]
    bad = values(rng)
    bad["flow_rate"] = absurd
    verdicts.append(m.update(batch(1000.0, bad)))
    verdicts += [m.update(batch(float(i), values(rng))) for i in range(1001, 3000)]
    scores = np.array([v.score for v in verdicts])
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    events = [v.event for v in verdicts if v.event]
    assert [type(e) for e in events] == [AnomalyDetected, AnomalyCleared]
    wire = events[0].model_dump_json()
    assert AnomalyDetected.model_validate_json(wire) == events[0]
    assert not verdicts[-1].flag


def test_an_absurd_reading_inside_calibration_does_not_break_the_device():
    """An absurd reading among the calibration readings neither raises (which would lose
    every later reading of the device) nor poisons the scores; a later fault is found."""
    m = DeviceMonitor("pump1")
    rng = np.random.default_rng(13)
    verdicts = []
    for i in range(3000):
        v = values(rng, {"flow_rate": -8, "pressure": 8} if 2000 <= i < 2300 else None)
        if i == 100:
            v["flow_rate"] = 1e200
        verdicts.append(m.update(batch(float(i), v)))
    scores = np.array([v.score for v in verdicts])
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    detected = [v for v in verdicts if isinstance(v.event, AnomalyDetected)]
    assert len(detected) == 1 and 2000 <= detected[0].ts <= 2060


FAULT = {"flow_rate": -8, "pressure": 8}


def test_a_clock_reset_while_an_episode_is_summarised_still_reports_it():
    """The clock jumps back (a reset, a DST fall-back in a historian's local times) in the
    seconds between an episode's opening and its report: it is still reported summary_s
    later, not once the new clock has caught up with the old one."""
    m, rng = calibrated(seed=14)
    for i in range(500, 5000):
        m.update(batch(float(i), values(rng)))
    opened = [m.update(batch(float(i), values(rng, FAULT))) for i in range(5000, 5012)]
    assert opened[-1].flag and not any(v.event for v in opened)
    after = [m.update(batch(float(i), values(rng, FAULT))) for i in range(0, 300)]
    detected = [v for v in after if isinstance(v.event, AnomalyDetected)]
    assert len(detected) == 1 and detected[0].ts <= m.config.summary_s + 5


def test_a_clock_reset_during_cooldown_does_not_stretch_it():
    """After an episode clears no new one opens for cooldown_s; a clock reset in that
    minute does not stretch it to the time the old clock had left."""
    m, rng = calibrated(seed=15)
    verdicts = [m.update(batch(float(i), values(rng))) for i in range(500, 5000)]
    verdicts += [m.update(batch(float(i), values(rng, FAULT))) for i in range(5000, 5200)]
    t = 5200
    while not isinstance(verdicts[-1].event, AnomalyCleared):
        verdicts.append(m.update(batch(float(t), values(rng))))
        t += 1
    after = [m.update(batch(float(i), values(rng))) for i in range(0, 300)]
    after += [m.update(batch(float(i), values(rng, FAULT))) for i in range(300, 600)]
    detected = [v for v in after if isinstance(v.event, AnomalyDetected)]
    assert len(detected) == 1 and 300 <= detected[0].ts <= 360


@dataclass
class AgentRun:
    """What a Monitor agent did with a stream: the agent, its log entries, the events it
    published on ``crew.events`` and the dead letters on ``crew.dlq``."""

    monitor: Monitor
    logs: list[dict[str, object]]
    events: list[Message]
    dead: list[Message]


def agent_run(batches: list[TelemetryBatch]) -> AgentRun:
    """A Monitor agent on an in-process bus fed ``batches`` as telemetry messages."""

    async def go() -> AgentRun:
        bus = await connect("memory://historian")
        monitor = Monitor("monitor-1", bus, SimClock())
        out = AgentRun(monitor, [], [], [])

        async def on_event(msg: Message) -> None:
            out.events.append(msg)

        async def on_dead(msg: Message) -> None:
            out.dead.append(msg)

        await bus.consume(Subjects.EVENTS, on_event, group="test-events")
        await bus.consume(Subjects.DLQ, on_dead, group="test-dlq")
        with capture_logs() as logs:
            for b in batches:
                await monitor._on_telemetry(
                    Message.new(b, source="t", subject=Subjects.telemetry(b.device_id))
                )
        await bus.quiesce()
        await bus.close()
        out.logs = logs
        return out

    return asyncio.run(go())


def agent_on(readings: list[dict[str, float]]) -> tuple[Monitor, list[dict[str, object]]]:
    """A Monitor agent fed ``readings`` of pump1 (one batch each, 1 s apart) as bus messages;
    the agent and the log entries it made."""
    out = agent_run([batch(float(i), v) for i, v in enumerate(readings)])
    return out.monitor, out.logs


def test_a_sensor_first_seen_after_calibration_began_is_named_and_warned_about():
    """A source that sends a sensor only from some point on (or one sensor per batch): the
    sensor set is fixed at the first calibration reading, so the late sensor is not
    monitored; the device says so (once), and the Monitor agent logs a warning naming it."""
    rng = np.random.default_rng(13)
    first = values(rng)
    late = first.pop("pressure")
    monitor, logs = agent_on([first, {**first, "pressure": late}, {"pressure": late}])
    mon = monitor.devices["pump1"]
    assert mon.unmonitored == ["pressure"] and "pressure" not in mon.sensors
    warned = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["device"], e["sensor"]) for e in warned] == [("pump1", "pressure")]


def test_a_sensor_constant_over_calibration_is_named_and_warned_about():
    """A sensor that does not move over calibration (a dead transmitter, a held value) has no
    noise scale and is not scored afterwards: the device names it and the Monitor agent logs
    a warning once, when calibration ends."""
    rng = np.random.default_rng(14)
    monitor, logs = agent_on([{**values(rng), "pressure": 0.05} for _ in range(600)])
    assert monitor.devices["pump1"].constant == ["pressure"]
    warned = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["device"], e["sensors"]) for e in warned] == [("pump1", ["pressure"])]


HOURS = 3 * 3600.0


def test_a_gap_of_hours_ends_the_open_episode_and_recalibrates():
    """The historian was down (or the plant stopped) for hours while an episode was open. The
    first reading after the gap ends it (AnomalyCleared at that reading) instead of carrying
    it over, and the device recalibrates on the readings after the gap, the old calibration
    scoring them meanwhile. The plant came back at a new level (an instrument replaced:
    pressure +8 noise sd): the old calibration reports that change, the new one learns it,
    so that incident clears and the device ends calm on its new calibration."""
    m, rng = calibrated(seed=16)
    for i in range(500, 1000):
        m.update(batch(float(i), values(rng)))
    before = [m.update(batch(float(i), values(rng, FAULT))) for i in range(1000, 1100)]
    assert [type(v.event) for v in before if v.event] == [AnomalyDetected]
    old = m.calibration
    t0 = 1100 + HOURS
    after = [m.update(batch(t0 + i, values(rng, {"pressure": 8}))) for i in range(1500)]
    assert isinstance(after[0].event, AnomalyCleared) and after[0].event.ts == t0
    assert m.calibration is not None and m.calibration is not old
    assert [type(v.event) for v in after[1:] if v.event] == [AnomalyDetected, AnomalyCleared]
    assert not any(v.flag for v in after[-500:]) and m.state is MonitorState.NORMAL


def test_a_gap_up_to_resume_gap_s_keeps_the_calibration():
    """A pause of ``resume_gap_s`` or less (dropped minutes) is no restart: the calibration
    stays; a second more is one."""
    m, rng = calibrated(seed=17)
    old = m.calibration
    m.update(batch(499 + m.config.resume_gap_s, values(rng)))
    assert m.calibration is old and m.restarts == 0
    m.update(batch(499 + 2 * m.config.resume_gap_s + 1, values(rng)))
    assert m.calibration is None and m.restarts == 1 and m.last_gap_s == 1801


def test_the_monitor_agent_logs_each_gap_once_and_publishes_the_episode_end():
    """Through the Monitor agent on a bus: the open episode's end after a gap is published as
    anomaly.cleared, and each gap is logged once (device, its length in plant seconds)."""
    rng = np.random.default_rng(18)
    times = [float(i) for i in range(1100)]
    times += [1100 + HOURS + i for i in range(600)]
    times += [1700 + 3 * HOURS + i for i in range(10)]
    readings = [values(rng, FAULT if 1000 <= i < 1100 else None) for i in range(len(times))]
    out = agent_run([batch(t, v) for t, v in zip(times, readings, strict=True)])
    assert [type(m.payload) for m in out.events] == [AnomalyDetected, AnomalyCleared]
    assert out.events[1].payload.ts == 1100 + HOURS
    gaps = [e for e in out.logs if e["event"].startswith("readings resumed")]
    assert [(e["device"], e["gap_s"]) for e in gaps] == [
        ("pump1", HOURS + 1),
        ("pump1", 2 * HOURS + 1),
    ]


def test_the_monitor_agent_logs_each_pause_once_and_what_it_did():
    """A pause of more than ``gap_s`` up to ``resume_gap_s`` keeps the calibration: the
    Monitor agent logs it once (device, its length, the action: calibration kept, and
    whether an episode is open across it), as it logs a gap (action: recalibrate); before,
    it logged nothing for a pause."""
    rng = np.random.default_rng(19)
    times = [float(i) for i in range(1100)]
    times += [1400.0 + i for i in range(100)]  # a 301 s pause, the fault still there
    times += [1500.0 + HOURS + i for i in range(10)]
    readings = [values(rng, FAULT if 1000 <= i < 1200 else None) for i in range(len(times))]
    out = agent_run([batch(t, v) for t, v in zip(times, readings, strict=True)])
    warned = [e for e in out.logs if e["log_level"] == "warning"]
    assert [(e["device"], e.get("pause_s", e.get("gap_s")), e["action"]) for e in warned] == [
        ("pump1", 301.0, "keep_calibration"),
        ("pump1", HOURS + 1, "recalibrate"),
    ]
    assert warned[0]["episode_open"] is True
    assert out.monitor.devices["pump1"].pauses == 1


UNITS = {"flow_rate": "m3/h", "pressure": "bar"}


def test_a_reading_in_another_unit_is_dead_lettered_not_scored():
    """The historian starts sending pressure in kPa (x100) instead of the bar it was
    calibrated in. Those readings are not scored against the bar baseline (which opened an
    incident that never cleared): each batch's are dead-lettered, the reason naming device,
    sensor, the unit expected and the unit seen, and the warning is logged once. The other
    sensors are still watched: a flow fault meanwhile opens one incident, which clears."""
    rng = np.random.default_rng(19)
    batches = []
    for i in range(2000):
        v = values(rng, {"flow_rate": -8} if 1200 <= i < 1300 else None)
        units = dict(UNITS)
        if 800 <= i < 1600:
            v["pressure"] *= 100
            units["pressure"] = "kPa"
        batches.append(batch(float(i), v, units=units))
    out = agent_run(batches)
    kinds = [type(m.payload) for m in out.events]
    assert kinds == [AnomalyDetected, AnomalyCleared]
    detected = out.events[0].payload
    assert 1200 <= detected.ts <= 1230 and detected.deviations[0].sensor == "flow_rate"
    assert len(out.dead) == 800
    letter = out.dead[0].payload
    assert isinstance(letter, DeadLetter) and letter.original_subject == "telemetry.pump1"
    for word in ("pump1", "pressure", "'bar'", "'kPa'"):
        assert word in letter.reason
    assert json.loads(letter.raw) == [batches[800].readings[1].model_dump(mode="json")]
    warned = [e for e in out.logs if e["event"].startswith("reading in another unit")]
    assert [(e["device"], e["sensor"], e["expected"], e["seen"]) for e in warned] == [
        ("pump1", "pressure", "bar", "kPa")
    ]


def test_device_monitor_names_readings_in_another_unit():
    """DeviceMonitor on its own: a reading whose unit differs from the one the sensor was
    calibrated in is left out of the scoring and returned in the verdict's ``rejected``; a
    batch with no other reading changes nothing."""
    m = DeviceMonitor("pump1")
    rng = np.random.default_rng(20)
    for i in range(500):
        m.update(batch(float(i), values(rng), units=UNITS))
    v = values(rng)
    v["pressure"] *= 100
    verdict = m.update(batch(500.0, v, units={**UNITS, "pressure": "kPa"}))
    assert [(r.reading.sensor, r.expected, r.reading.unit) for r in verdict.rejected] == [
        ("pressure", "bar", "kPa")
    ]
    assert verdict.score < 0.5
    alone = m.update(batch(501.0, {"pressure": v["pressure"]}, units={"pressure": "kPa"}))
    assert len(alone.rejected) == 1 and not alone.rejected[0].first
    assert (alone.score, alone.state, alone.ts) == (verdict.score, verdict.state, 501.0)
