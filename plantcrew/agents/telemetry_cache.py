"""The latest reading of every sensor, kept by agents that judge the plant's current state."""

from __future__ import annotations

from plantcrew.bus import Bus, Subscription
from plantcrew.messages import Message, Subjects, TelemetryBatch


class TelemetryCache:
    """Subscribes to ``telemetry.>`` and keeps ``{device_id: {sensor: value}}``.

    Rebuilt from the stream after a restart (one batch per device is enough), so it holds
    nothing a restart would lose.
    """

    def __init__(self) -> None:
        self.state: dict[str, dict[str, float]] = {}
        self.last_ts: dict[str, float] = {}
        self._sub: Subscription | None = None

    async def start(self, bus: Bus) -> None:
        self._sub = await bus.subscribe(Subjects.TELEMETRY_ALL, self._on_batch)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_batch(self, msg: Message) -> None:
        if isinstance(msg.payload, TelemetryBatch):
            self.update(msg.payload)

    def update(self, batch: TelemetryBatch) -> None:
        """Fold one batch into the state."""
        dev = self.state.setdefault(batch.device_id, {})
        for r in batch.readings:
            dev[r.sensor] = r.value
        self.last_ts[batch.device_id] = max(r.ts for r in batch.readings)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """A copy of the latest state."""
        return {d: dict(v) for d, v in self.state.items()}
