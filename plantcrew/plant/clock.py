"""Clocks: plant time for a stepped simulation, and wall time for live operation.

Plant time ``t`` is seconds since the run started (``Reading.ts`` uses it); ``now()`` is the
matching absolute UTC instant. A :class:`SimClock` moves only when told to, so an hour of plant
time runs in as long as the computation takes (the simulation never sleeps). A
:class:`WallClock` follows the machine's clocks for live operation.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from plantcrew.errors import PlantcrewError

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
"""Where a simulated run's plant time 0 lies by default: 2026-01-01T00:00:00Z."""


class ClockError(PlantcrewError):
    """A clock was asked to go backwards, or given a naive or non-finite time."""


@runtime_checkable
class Clock(Protocol):
    """What every clock gives: plant seconds since start, and the matching UTC instant."""

    @property
    def t(self) -> float:
        """Seconds since the run started (>= 0)."""
        ...

    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class SimClock:
    """Plant time that advances only by :meth:`advance` / :meth:`advance_to`.

    ``start`` (timezone-aware) is the instant of plant time 0. ``now()`` is ``start + t``.
    Raises :class:`ClockError` for a naive ``start`` or a step backwards.
    """

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        if start.tzinfo is None:
            raise ClockError("SimClock start must be timezone-aware (UTC)")
        self._start = start.astimezone(UTC)
        self._t = 0.0

    @property
    def start(self) -> datetime:
        """The UTC instant of plant time 0."""
        return self._start

    @property
    def t(self) -> float:
        """Plant seconds since start."""
        return self._t

    def now(self) -> datetime:
        """``start + t`` as a UTC datetime."""
        return self._start + timedelta(seconds=self._t)

    def advance(self, dt: float) -> float:
        """Move plant time forward by ``dt`` seconds (>= 0, finite); returns the new ``t``."""
        if not math.isfinite(dt) or dt < 0:
            raise ClockError(f"cannot advance a SimClock by {dt!r} s (must be finite, >= 0)")
        self._t += dt
        return self._t

    def advance_to(self, t: float) -> float:
        """Set plant time to ``t`` seconds, which must not lie before the current ``t``."""
        if not math.isfinite(t) or t < self._t:
            raise ClockError(f"cannot move a SimClock from t={self._t} back to t={t!r}")
        self._t = t
        return self._t


class WallClock:
    """Real time: ``now()`` is the system's UTC time, ``t`` monotonic seconds since creation."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._start = datetime.now(UTC)

    @property
    def start(self) -> datetime:
        """The UTC instant this clock was created (its ``t = 0``)."""
        return self._start

    @property
    def t(self) -> float:
        """Monotonic seconds since this clock was created (never goes backwards)."""
        return time.monotonic() - self._t0

    def now(self) -> datetime:
        """The system's current UTC time."""
        return datetime.now(UTC)


class Pacer:
    """Holds a run to ``speed`` plant seconds per wall second (1.0: plant speed).

    :meth:`wait_for` sleeps until the wall instant that plant time ``t`` corresponds to,
    counted from the first call (whose ``t`` is the origin): time spent computing a step is
    part of its wait, gaps between steps (a CSV replay's rows) take their plant length, and
    a run that falls behind catches up without sleeping. ``sleep`` and ``monotonic`` are
    ``asyncio.sleep`` and ``time.monotonic`` unless given. Raises :class:`ClockError` for a
    speed that is not a finite number > 0.
    """

    def __init__(
        self,
        speed: float,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ClockError(
                f"a speed must be a finite number of plant s per wall s > 0, got {speed!r}"
            )
        self.speed = speed
        self._sleep, self._monotonic = sleep, monotonic
        self._origin: tuple[float, float] | None = None  # (plant t, wall monotonic s)

    async def wait_for(self, t: float) -> None:
        """Sleep until plant time ``t`` is due (the first call only sets the origin)."""
        if self._origin is None:
            self._origin = (t, self._monotonic())
            return
        t0, wall0 = self._origin
        delay = wall0 + (t - t0) / self.speed - self._monotonic()
        if delay > 0:
            await self._sleep(delay)


__all__ = ["DEFAULT_START", "Clock", "ClockError", "Pacer", "SimClock", "WallClock"]
