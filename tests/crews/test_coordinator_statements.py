"""How many statements the Coordinator's events cost: on PostgreSQL each one is a round trip
and about 0.2 ms of the Coordinator's CPU, so a read or write that can be merged with another
one is."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event

from plantcrew.bus import connect
from plantcrew.plant.clock import SimClock
from plantcrew.store import Store
from tests.crews.test_approval_path import INC, anomaly, coordinator


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements ``store`` runs while inside, whitespace collapsed."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        seen.append(re.sub(r"\s+", " ", sql).strip())

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", before)


async def test_opening_an_incident_reads_the_run_once_and_writes_the_incident_once(
    db_url: str, tmp_path: Path
) -> None:
    bus, store, clock = await connect(f"memory://stmts-{tmp_path.name}"), Store(db_url), SimClock()
    try:
        coord = coordinator(bus, store, clock)
        with statements(store) as sql:
            assert coord.apply_event(anomaly(clock))
        on_incidents = [
            q.split(" ")[0] for q in sql if re.search(r"\b(FROM|INTO|UPDATE) incident\b", q)
        ]
        # its number in the run and the check for an active one on the device: one read; the
        # new incident as the event leaves it: one insert (no insert, then update)
        assert on_incidents == ["SELECT", "INSERT"]
        # the newest confirmed lessons and corrections: one read (none to decode here)
        assert len([q for q in sql if " FROM lesson " in q]) == 1
        stored = store.get_incident(INC)
        assert (stored.status, stored.version, stored.current_task_id) == (
            "diagnosing", 2, f"{INC}-diagnose-1"
        )  # fmt: skip
    finally:
        store.dispose()
        await bus.close()
