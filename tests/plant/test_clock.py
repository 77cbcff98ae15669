"""Clocks: simulated time moves only when told; wall time is UTC and monotonic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from plantcrew.plant import DEFAULT_START, Clock, ClockError, SimClock, WallClock


def test_sim_clock_runs_an_hour_without_waiting() -> None:
    clock = SimClock()
    assert clock.start == datetime(2026, 1, 1, tzinfo=UTC) == DEFAULT_START
    for _ in range(3600):
        clock.advance(1.0)
    assert clock.t == 3600.0
    assert clock.now() == datetime(2026, 1, 1, 1, tzinfo=UTC)
    assert isinstance(clock, Clock)


def test_sim_clock_converts_its_start_to_utc_and_refuses_going_back() -> None:
    clock = SimClock(datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert clock.now() == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert clock.now().utcoffset() == timedelta(0)
    clock.advance_to(5)
    with pytest.raises(ClockError):
        clock.advance_to(4)
    with pytest.raises(ClockError):
        clock.advance(-1)
    with pytest.raises(ClockError):
        clock.advance(float("nan"))
    with pytest.raises(ClockError):
        SimClock(datetime(2026, 1, 1))


def test_wall_clock_is_utc_and_monotonic() -> None:
    clock = WallClock()
    first = clock.t
    assert clock.t >= first >= 0
    assert clock.now().tzinfo is not None and clock.now().utcoffset() == timedelta(0)
    assert isinstance(clock, Clock)
