"""A Coordinator host opens each run once, off the event loop, however many events ask at once
(in-process bus, SQLite)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

from plantcrew.bus import connect
from plantcrew.crews.config import CrewConfig
from plantcrew.crews.host import CoordinatorHost
from plantcrew.settings import DEFAULT_CONFIG_DIR
from plantcrew.store import Run, Store


async def test_concurrent_events_of_a_new_run_read_it_once(tmp_path: Path) -> None:
    bus = await connect(f"memory://host-{tmp_path.name}")
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    store.create_run(Run(id="r1", started_at=datetime(2026, 1, 1, tzinfo=UTC), config={}))
    config = CrewConfig.load(DEFAULT_CONFIG_DIR / "crew.yaml")
    host = CoordinatorHost(bus, store, config=config, concurrency=2)
    reads: list[str] = []
    real = store.get_run

    def get_run(run_id: str) -> Run:
        reads.append(threading.current_thread().name)
        return real(run_id)

    store.get_run = get_run  # type: ignore[method-assign]
    try:
        coords = await asyncio.gather(*(host.coordinator_for("r1") for _ in range(5)))
        assert all(c is coords[0] for c in coords) and coords[0].run_id == "r1"
        assert len(reads) == 1 and reads[0].startswith("coordinator-db")
        assert await host.coordinator_for("r1") is coords[0] and len(reads) == 1
    finally:
        host.executor.shutdown(wait=True)
        store.dispose()
        await bus.close()
