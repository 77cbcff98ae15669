"""Clocks of crew processes that do not own the plant.

A scenario's plant time lives in the runner's ``SimClock``; a Coordinator or worker in another
process cannot read it. They take plant time from the messages instead:

- :class:`TaskClock` (workers): the time of the task being handled (``current_message``), so an
  agent answers at the time of the task it answers and records an execution at that task's
  plant time; outside a task, the wall clock.
- :class:`RunClock` (a Coordinator serving a simulated run from its own process): the latest
  time of the run's messages it has seen (:meth:`RunClock.observe`): events, and the runner's
  clock beacons on ``crew.clock`` (see ``plantcrew.crews.host``). It never goes back.
- :class:`LiveClock` (a live run): the wall clock, with plant time 0 at the run's start.

Plant time ``t`` is seconds since the run's start (the ``Run`` row's ``started_at``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from plantcrew.messages import Message, utcnow


def is_live(run_config: Mapping[str, Any]) -> bool:
    """True when a run with this ``Run.config`` is live operation (no scenario): its plant
    time is the wall clock since its start (:class:`LiveClock`), not a simulation's."""
    return "scenario" not in run_config


def run_plant_time(
    started_at: datetime, run_config: Mapping[str, Any], checkpoint: float, seen: float = 0.0
) -> float:
    """The plant seconds a run has surely reached, from outside its processes: a live run's
    wall seconds since ``started_at``; a scenario's ``checkpoint`` (``Run.plant_time``) or
    ``seen`` (the latest plant time recorded for it), whichever is greater. Never ahead of
    the clock of the run's Coordinator."""
    if is_live(run_config):
        return LiveClock(started_at).t
    return max(checkpoint, seen)


def as_utc(when: datetime) -> datetime:
    """``when`` as an aware UTC datetime (a naive one is taken to be UTC)."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class TaskClock:
    """The plant time of the task being handled in this context (see module doc).

    ``run_start(run_id)`` gives a run's start instant (None when unknown: ``t`` is then 0).
    Outside a task ``now()`` is the wall clock and ``t`` the seconds since this clock was made.
    """

    def __init__(
        self,
        current: ContextVar[Message | None],
        run_start: Callable[[str | None], datetime | None],
    ) -> None:
        self.current, self.run_start = current, run_start
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        msg = self.current.get()
        return msg.time if msg is not None else utcnow()

    @property
    def t(self) -> float:
        msg = self.current.get()
        if msg is None:
            return time.monotonic() - self._t0
        start = self.run_start(msg.run_id)
        if start is None:
            return 0.0
        return max(0.0, (msg.time - as_utc(start)).total_seconds())


class RunClock:
    """One simulated run's plant time as far as this process has seen it (never goes back)."""

    def __init__(self, start: datetime) -> None:
        self.start = as_utc(start)
        self._now = self.start

    def observe(self, when: datetime) -> bool:
        """Move to ``when`` if it is later; True when the clock moved."""
        when = as_utc(when)
        if when > self._now:
            self._now = when
            return True
        return False

    def now(self) -> datetime:
        return self._now

    @property
    def t(self) -> float:
        return (self._now - self.start).total_seconds()


class LiveClock:
    """A live run's clock: wall time; ``t`` counts from the run's start."""

    def __init__(self, start: datetime) -> None:
        self.start = as_utc(start)

    def observe(self, when: datetime) -> bool:
        """Nothing to learn from messages: the wall clock moves by itself."""
        return False

    def now(self) -> datetime:
        return utcnow()

    @property
    def t(self) -> float:
        return max(0.0, (utcnow() - self.start).total_seconds())


__all__ = ["LiveClock", "RunClock", "TaskClock", "as_utc", "is_live", "run_plant_time"]
