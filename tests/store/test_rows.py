"""Table objects made without SQLModel's ``__init__`` (plantcrew.store.rows): the same rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import SQLModel

from plantcrew.store import Action, Approval, Incident, Lesson, ModelCall, Store, TaskRecord
from plantcrew.store.rows import insert_rows, new_row, row_of, values_of

# each table the Coordinator writes rows of, with its fields that have no default
REQUIRED: list[tuple[type[SQLModel], dict[str, Any]]] = [
    (Incident, {"id": "i1", "run_id": "r1", "device_id": "pump1"}),
    (TaskRecord, {"id": "t1", "incident_id": "i1", "capability": "diagnose", "message_id": "m"}),
    (Action, {"id": "a1", "run_id": "r1", "incident_id": "i1", "device_id": "valve1",
              "command": "set_position", "idempotency_key": "i1:a1"}),
    (Approval, {"id": "apr-a1", "run_id": "r1", "incident_id": "i1", "action_id": "a1"}),
    (Lesson, {"root_cause": "leak"}),
    (ModelCall, {}),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "values"), REQUIRED, ids=lambda v: getattr(v, "__name__", ""))
def test_a_new_row_is_what_the_constructor_makes(
    cls: type[SQLModel], values: dict[str, Any]
) -> None:
    made, built = new_row(cls, **values), cls(**values)
    assert row_of(made) == row_of(built)
    # a default factory is called for each object: no two rows share a mutable default
    other = new_row(cls, **values)
    for name, value in row_of(made).items():
        if isinstance(value, dict | list):
            assert getattr(other, name) is not value, name


def test_a_new_row_without_a_required_field_names_it() -> None:
    with pytest.raises(TypeError, match="TaskRecord: field 'capability' has no default"):
        new_row(TaskRecord, id="t1", incident_id="i1", message_id="m")


def test_new_rows_are_inserted_and_read_back(db_url: str) -> None:
    store = Store(db_url)
    try:
        with store.tx() as s:
            insert_rows(s, [new_row(Action, **REQUIRED[2][1], parameters={"position_pct": 40})])
            insert_rows(s, [new_row(Incident, **REQUIRED[0][1], data={"a": 1})])
        (action,) = store.actions()
        assert (action.status, action.parameters, action.rule_ids) == (
            "proposed", {"position_pct": 40}, []
        )  # fmt: skip
        incident = store.get_incident("i1")
        assert (incident.status, incident.version, incident.data) == ("open", 1, {"a": 1})
    finally:
        store.dispose()


def test_rows_work_in_a_process_that_made_no_table_object_before(tmp_path: Path) -> None:
    # SQLAlchemy configures the mappers on the first table object made through __init__ (or
    # the first ORM query); before that an object made by new_row or detached had attributes
    # that could not be read ('NoneType' object has no attribute 'supports_population')
    script = f"""
from plantcrew.store import Incident, Store, read_incident
from plantcrew.store.rows import insert_rows, new_row
store = Store("sqlite:///{tmp_path / "crew.db"}")
with store.tx() as s:
    insert_rows(s, [new_row(Incident, id="i1", run_id="r1", device_id="pump1")])
    print(read_incident(s, "i1").status)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["open"]


def test_values_are_read_as_the_orm_has_them_loaded_or_not(db_url: str) -> None:
    store = Store(db_url)
    try:
        with store.tx() as s:
            insert_rows(s, [new_row(Incident, **REQUIRED[0][1], status="diagnosing")])
        with store.tx() as s:
            inc = s.get(Incident, "i1")
            assert inc is not None
            s.expire(inc, ["status"])  # not in the object: read through the ORM, loaded
            assert values_of(inc, ["status", "device_id"]) == {
                "status": "diagnosing", "device_id": "pump1"
            }  # fmt: skip
            assert row_of(inc)["status"] == "diagnosing"
    finally:
        store.dispose()
