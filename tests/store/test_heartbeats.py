"""The ``agent`` table's writes (plantcrew.store.heartbeats) on SQLite and PostgreSQL: the
newest heartbeat of an agent stays whoever writes last, two writers never deadlock, and
agents silent too long are forgotten."""

from __future__ import annotations

import threading
from datetime import timedelta

from plantcrew.store import AgentRecord, Store
from tests.store.conftest import NOW


def row(agent_id: str, s: float, *, role: str = "operator", stopping: bool = False) -> AgentRecord:
    return AgentRecord(
        agent_id=agent_id,
        role=role,
        capabilities=["propose_action", "actuate"],
        last_seen=NOW + timedelta(seconds=s),
        stopping=stopping,
    )


def test_the_newest_heartbeat_of_an_agent_stays(store: Store) -> None:
    store.record_agents([row("op-1", 10.0), row("dg-1", 5.0, role="diagnostic")])
    store.record_agents([row("op-1", 20.0, stopping=True)])
    store.record_agents([row("op-1", 15.0)])  # late: another Coordinator's older heartbeat
    got = {r.agent_id: r for r in store.agents()}
    assert [r.agent_id for r in store.agents()] == ["dg-1", "op-1"]  # by role, then id
    assert (got["op-1"].last_seen, got["op-1"].stopping) == (NOW + timedelta(seconds=20), True)
    assert got["op-1"].capabilities == ["propose_action", "actuate"]
    assert got["dg-1"].last_seen == NOW + timedelta(seconds=5)


def test_two_writers_of_the_same_agents_keep_the_newest_and_never_deadlock(
    store: Store, db_url: str
) -> None:
    other = Store(db_url)  # a second Coordinator process: its own connections
    ids = [f"agent-{i:02d}" for i in range(20)]
    errors: list[Exception] = []

    def write(st: Store, order: list[str], offset: float) -> None:
        try:
            for n in range(30):
                st.record_agents([row(a, n + offset) for a in order])
        except Exception as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(store, ids, 0.5)),
        threading.Thread(target=write, args=(other, ids[::-1], 0.0)),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        rows = store.agents()
        assert len(rows) == len(ids)
        assert {r.last_seen for r in rows} == {NOW + timedelta(seconds=29.5)}
    finally:
        other.dispose()


def test_agents_silent_too_long_are_forgotten(store: Store) -> None:
    store.record_agents([row("old", 0.0), row("new", 100.0)])
    store.record_agents([], forget_before=NOW + timedelta(seconds=50))
    assert [r.agent_id for r in store.agents()] == ["new"]
