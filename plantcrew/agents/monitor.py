"""The Monitor: streaming anomaly detection on telemetry, one episode → one event.

It subscribes to ``telemetry.>`` in the ``monitor`` queue group and runs one
``plantcrew.detect.DeviceMonitor`` per device (calibrated on the first readings of the
stream). When an episode opens it publishes ``anomaly.detected`` on ``crew.events``; when the
device is back to normal (or its readings resume after more than ``resume_gap_s``: a
restart, logged once per gap, see ``DeviceMonitor``), ``anomaly.cleared``. A shorter pause,
of more than ``gap_s``, keeps the calibration and is logged once too. Detector state is
rebuilt from the stream after a restart (``warm``), so nothing a restart would lose is held
only here. A reading in another unit than its sensor was calibrated in is not scored: the
batch's such readings go to ``crew.dlq`` in one dead letter naming device, sensor, the unit
expected and the unit seen (a warning is logged the first time per sensor and unit).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import structlog

from plantcrew import metrics
from plantcrew.agents.base import Agent
from plantcrew.bus import Bus, Subscription
from plantcrew.bus.base import dead_letter
from plantcrew.detect import DeviceMonitor, MonitorConfig, MonitorState, UnitMismatch
from plantcrew.messages import Capability, Message, Subjects, TelemetryBatch
from plantcrew.plant.clock import Clock

log = structlog.get_logger("plantcrew.agents.monitor")


class Monitor(Agent):
    """Detects anomalies in telemetry (capability ``detect``)."""

    role: ClassVar[str] = "monitor"
    capabilities: ClassVar[tuple[Capability, ...]] = (Capability.DETECT,)

    def __init__(
        self,
        agent_id: str,
        bus: Bus,
        clock: Clock,
        *,
        config: MonitorConfig | None = None,
        run_id: str | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(agent_id, bus, clock, **kw)
        self.config = config or MonitorConfig()
        self.run_id = run_id
        self.devices: dict[str, DeviceMonitor] = {}
        self.last_score: dict[str, float] = {}
        self._telemetry: Subscription | None = None

    async def start(self) -> None:
        self._telemetry = await self.bus.subscribe(
            Subjects.TELEMETRY_ALL, self._on_telemetry, queue="monitor"
        )
        await super().start()

    async def stop(self) -> None:
        if self._telemetry is not None:
            await self._telemetry.unsubscribe()
            self._telemetry = None
        await super().stop()

    def _device(self, device_id: str) -> DeviceMonitor:
        mon = self.devices.get(device_id)
        if mon is None:
            mon = self.devices[device_id] = DeviceMonitor(device_id, self.config)
        return mon

    def warm(self, batch: TelemetryBatch) -> None:
        """Feed a batch without publishing (rebuilding detector state after a restart)."""
        self._device(batch.device_id).update(batch)

    async def _on_telemetry(self, msg: Message) -> None:
        batch = msg.payload
        if not isinstance(batch, TelemetryBatch):
            return
        mon = self._device(batch.device_id)
        known, calibrated = len(mon.unmonitored), mon.calibrated
        restarts, pauses = mon.restarts, mon.pauses
        verdict = mon.update(batch)
        if mon.restarts != restarts:
            log.warning(
                "readings resumed after a gap: the device recalibrates, an open episode ended",
                device=batch.device_id,
                gap_s=mon.last_gap_s,
                resume_gap_s=mon.config.resume_gap_s,
                action="recalibrate",
                episode_ended=verdict.event is not None,
            )
        if mon.pauses != pauses:
            log.warning(
                "readings resumed after a pause: calibration kept, smoothing restarted, "
                "thermal sensors settle",
                device=batch.device_id,
                pause_s=mon.last_pause_s,
                gap_s=mon.config.gap_s,
                resume_gap_s=mon.config.resume_gap_s,
                action="keep_calibration",
                episode_open=verdict.state is MonitorState.ANOMALOUS,
            )
        if mon.calibrated and not calibrated and mon.constant:
            log.warning(
                "sensors not scored: they did not change over the device's calibration",
                device=batch.device_id,
                sensors=mon.constant,
            )
        for sensor in mon.unmonitored[known:]:
            log.warning(
                "sensor not monitored: it first arrived after the device's calibration began",
                device=batch.device_id,
                sensor=sensor,
                monitored=mon.sensors,
            )
        if verdict.rejected:
            await self._dead_letter(msg, verdict.rejected)
        self.last_score[batch.device_id] = verdict.score
        if verdict.event is not None:
            event = Message.new(
                verdict.event,
                source=self.agent_id,
                subject=Subjects.EVENTS,
                time=msg.time,
                run_id=msg.run_id or self.run_id,
                correlation_id=msg.run_id or self.run_id,
                causation_id=msg.id,
                traceparent=msg.traceparent,
            )
            await self.bus.publish(event)

    async def _dead_letter(self, msg: Message, rejected: tuple[UnitMismatch, ...]) -> None:
        """Publish the readings of ``msg`` set aside for their unit as one dead letter."""
        for r in rejected:
            if r.first:
                log.warning(
                    "reading in another unit than the sensor's calibration: dead-lettered",
                    device=r.reading.device_id,
                    sensor=r.reading.sensor,
                    expected=r.expected,
                    seen=r.reading.unit,
                )
        letter = dead_letter(
            subject=msg.subject,
            reason="; ".join(r.reason for r in rejected),
            raw=json.dumps([r.reading.model_dump(mode="json") for r in rejected]),
            attempts=0,
            quarantined=True,
            original=msg,
            source=self.agent_id,
            run_id=msg.run_id or self.run_id,
            correlation_id=msg.run_id or self.run_id,
        )
        metrics.dead_lettered(msg.subject, quarantined=True)
        await self.bus.publish(letter)
