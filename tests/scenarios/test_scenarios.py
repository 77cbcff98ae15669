"""Every scenario in scenarios/ passes; bad files are refused precisely; runs are repeatable."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from plantcrew.cli import app
from plantcrew.errors import PlantcrewError
from plantcrew.messages import TelemetryBatch
from plantcrew.plant import Pacer
from plantcrew.scenarios.runner import run_scenario
from plantcrew.scenarios.schema import load_scenario, resolve_data_path
from plantcrew.store import Store

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Ran:
    """Run the real ``plantcrew`` command in this process (CliRunner), as a user would."""
    res = CliRunner().invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Ran(res.exit_code, res.stdout, res.stderr)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_scenario_passes(path: Path, tmp_path: Path) -> None:
    spec = load_scenario(path)
    if spec.telemetry is not None:
        data = resolve_data_path(spec.telemetry.path, path)
        if not data.is_file():
            pytest.skip(f"{path.name} replays {data}, which is absent (set PLANTCREW_DATA_DIR)")
    result = await run_scenario(path, db_url=f"sqlite:///{tmp_path / 'run.db'}")
    failed = [f"{e.name}: {e.detail}" for e in result.expectations if not e.passed]
    assert result.passed, f"{path.name}: " + "; ".join(failed)
    assert result.expectations, "a scenario must expect something"


def test_at_least_six_scenarios_including_block_and_approval() -> None:
    assert len(SCENARIOS) >= 6
    texts = {p.stem: p.read_text() for p in SCENARIOS}
    assert any("actions_blocked: [{" in t for t in texts.values())
    assert any("decision: approve" in t for t in texts.values())


def test_bad_scenario_exits_2_naming_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: broken\nduration_s: 100\nfaults:\n"
        "  - {type: cavitation, device: pump1, at: 10}\n"
        "  - type: meltdown\n    device: pump1\n    at: 20\n"
    )
    proc = cli("run", str(bad), "--json")
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}:5" in proc.stderr and "faults.1.type" in proc.stderr


def test_fault_on_missing_device_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\nfaults:\n  - type: cavitation\n    device: pump7\n    at: 5\n")
    proc = cli("run", str(bad), "--json")
    assert proc.returncode == 2
    assert f"{bad}:4" in proc.stderr and "faults.0.device" in proc.stderr


@pytest.mark.parametrize(
    ("device", "line", "field"),
    [
        ("    - {type: valve, id: v2, role: inlet}\n", 8, "plant.devices.0.outlet_valve"),
        (
            "    - {type: valve, id: v2, role: outlet}\n"
            "    - type: centrifugal_pump\n      id: q\n      inlet_valve: v1\n"
            "      outlet_valve: v2\n      tank: nowhere\n",
            13,
            "plant.devices.3.inlet_valve",
        ),
    ],
    ids=["valve-role", "shared-valve"],
)
def test_a_broken_plant_reference_names_its_own_line_and_field(
    tmp_path: Path, device: str, line: int, field: str
) -> None:
    # it named 'plant.devices' and the line of the list, the real field only in the message
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: broken\nduration_s: 30\nplant:\n  devices:\n    - type: centrifugal_pump\n"
        "      id: p\n      inlet_valve: v1\n      outlet_valve: v2\n"
        "    - {type: valve, id: v1, role: inlet}\n" + device
    )
    proc = cli("run", str(bad), "--json", "--db", f"sqlite:///{tmp_path / 'b.db'}")
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}:{line} field '{field}'" in proc.stderr, proc.stderr


def test_bad_monitor_override_exits_2_naming_its_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: broken\nduration_s: 30\nmonitor:\n  alpha: 0.001\n  debounce_readingz: 3\n"
    )
    proc = cli("run", str(bad), "--json", "--db", f"sqlite:///{tmp_path / 'b.db'}")
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}:5" in proc.stderr and "monitor.debounce_readingz" in proc.stderr
    bad.write_text("name: broken\nduration_s: 30\nmonitor:\n  alpha: often\n")
    proc = cli("run", str(bad), "--json", "--db", f"sqlite:///{tmp_path / 'b.db'}")
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}:4" in proc.stderr and "monitor.alpha" in proc.stderr


@pytest.mark.parametrize(
    ("text", "line", "field", "says"),
    [
        # a fault that starts when the run is over is never injected: `incidents: 0` passed
        (
            "faults:\n  - {type: cavitation, device: pump1, at: 60}\nexpect:\n  incidents: 0\n",
            4,
            "faults.0.at",
            "after the run's end",
        ),
        (
            "faults:\n  - {type: cavitation, device: pump1, at: 5}\n"
            "  - type: rotor_imbalance\n    device: pump1\n    at: 30\n",
            7,
            "faults.1.at",
            "after the run's end",
        ),
        ("expect:\n  fault_at_s: 45\n  incidents: 1\n", 4, "expect.fault_at_s", "run's end"),
        # measured from a fault the scenario does not have: from t=0, "after the fault"
        (
            "expect:\n  incidents: 1\n  detected_within_s: 10\n",
            5,
            "expect.detected_within_s",
            "no fault",
        ),
        ("expect:\n  resolved_within_s: 10\n", 4, "expect.resolved_within_s", "no fault"),
        # expectations that can never hold together
        (
            "faults:\n  - {type: cavitation, device: pump1, at: 5}\n"
            "expect:\n  incidents: 0\n  root_cause: cavitation\n",
            7,
            "expect.root_cause",
            "incidents: 0",
        ),
        (
            "expect:\n  escalated: false\n  escalation_reason_contains: nobody\n",
            5,
            "expect.escalation_reason_contains",
            "escalated: false",
        ),
        # an empty text is in every reason: it passed whenever there was an incident
        (
            "expect:\n  escalation_reason_contains: ''\n",
            4,
            "expect.escalation_reason_contains",
            "at least 1 character",
        ),
    ],
    ids=[
        "fault-after-end",
        "second-fault-after-end",
        "fault_at_s-after-end",
        "detected-no-fault",
        "resolved-no-fault",
        "root-cause-no-incident",
        "reason-not-escalated",
        "empty-reason",
    ],
)
def test_an_expectation_that_cannot_be_checked_exits_2_naming_its_line(
    tmp_path: Path, text: str, line: int, field: str, says: str
) -> None:
    assert_refused(tmp_path, text, line, field, says)


def assert_refused(tmp_path: Path, text: str, line: int, field: str, says: str) -> None:
    """``plantcrew run`` of a scenario ``name: broken``, ``duration_s: 30`` and then ``text``
    exits 2 naming the file, ``line`` and ``field``, and saying ``says``."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\nduration_s: 30\n" + text)
    proc = cli("run", str(bad), "--json", "--db", f"sqlite:///{tmp_path / 'b.db'}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{bad}:{line} field '{field}'" in proc.stderr and says in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("telemetry:\n  source: csv\n  preset: skab\n  path: nope.csv\n", 6, "telemetry.path"),
        ("policies: nope.yaml\n", 3, "policies"),
    ],
)
def test_a_file_the_scenario_names_that_is_missing_exits_2_naming_its_line(
    tmp_path: Path, text: str, line: int, field: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\nduration_s: 30\n" + text)
    proc = cli("run", str(bad), "--json", "--db", f"sqlite:///{tmp_path / 'b.db'}")
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}:{line} field '{field}'" in proc.stderr
    assert f"{tmp_path / 'nope'}" in proc.stderr and "not found" in proc.stderr


SKAB_HEADER = (
    "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;"
    "Thermocouple;Voltage;Volume Flow RateRMS;anomaly;changepoint"
)


def skab_rows(seconds: list[int]) -> list[str]:
    """SKAB-format rows of a steady pump at these seconds after 2020-03-09 10:34:00."""
    row = "2020-03-09 10:34:{:02d};0.027;0.039;2.5;0.05;75.5;25.8;230;32.0;0;0"
    return [row.format(s) for s in seconds]


async def test_bad_csv_rows_are_dead_lettered_and_good_rows_flow(tmp_path: Path) -> None:
    header = SKAB_HEADER
    rows = skab_rows(list(range(30)))
    rows[5] = rows[5].replace(";2.5;", ";two;")
    rows[10] = "yesterday" + rows[10][len("2020-03-09 10:34:10") :]
    rows[15] = rows[15].replace(";32.0;", ";nan;")
    rows.append("2020-03-09 10:34:30;0.027")  # a short last row
    (tmp_path / "pump.csv").write_text("\n".join([header, *rows]) + "\n")
    scenario = tmp_path / "replay.yaml"
    scenario.write_text(
        "name: replay\nduration_s: 100\ntelemetry: {source: csv, preset: skab, path: pump.csv}\n"
    )
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    result = await run_scenario(scenario, db_url=db_url)
    assert result.plant_seconds == 29  # the rows after the bad ones were replayed
    store = Store(db_url)
    letters = store.dead_letters(result.run_id)
    store.dispose()
    assert [(d.original_subject, d.quarantined) for d in letters] == [("telemetry.pump1", True)] * 4
    where = [
        ("pump.csv:7 (row 5) column 'Current'", rows[5]),
        ("pump.csv:12 (row 10) column 'datetime'", rows[10]),
        ("pump.csv:17 (row 15) column 'Volume Flow RateRMS'", rows[15]),
        ("pump.csv:32 (row 30): 2 fields, header has 11", rows[30]),
    ]
    for letter, (expected, raw) in zip(letters, where, strict=True):
        assert expected in letter.reason
        assert letter.raw == raw


def test_a_csv_row_out_of_time_order_is_dead_lettered_not_a_crash(tmp_path: Path) -> None:
    # the replay's clock cannot go back: the run stopped with "cannot move a SimClock from
    # t=5.0 back to t=3.0" (exit 3, no file or line)
    rows = skab_rows([0, 1, 2, 5, 3, 6, 7])
    (tmp_path / "pump.csv").write_text("\n".join([SKAB_HEADER, *rows]) + "\n")
    scenario = tmp_path / "replay.yaml"
    scenario.write_text(
        "name: replay\nduration_s: 100\ntelemetry: {source: csv, preset: skab, path: pump.csv}\n"
        "expect:\n  incidents: 0\n"
    )
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    proc = cli("run", str(scenario), "--json", "--db", db_url)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["plant_seconds"] == 7
    store = Store(db_url)
    [letter] = store.dead_letters(json.loads(proc.stdout)["run_id"])
    store.dispose()
    assert "pump.csv:6 (row 4) column 'datetime'" in letter.reason
    assert "before the previous row" in letter.reason and letter.raw == rows[4]


def replay_scenario(tmp_path: Path, seconds: list[int], expect: str = "") -> Path:
    """A scenario replaying a SKAB-format pump.csv with rows at these seconds."""
    (tmp_path / "pump.csv").write_text("\n".join([SKAB_HEADER, *skab_rows(seconds)]) + "\n")
    scenario = tmp_path / "replay.yaml"
    scenario.write_text(
        "name: replay\nduration_s: 100\ntelemetry: {source: csv, preset: skab, path: pump.csv}\n"
        + expect
    )
    return scenario


@pytest.mark.parametrize("rows", ["", "2020-03-09 10:34:00;0.027;oops\n"], ids=["none", "bad"])
def test_a_csv_with_no_row_to_replay_exits_2_naming_the_file(tmp_path: Path, rows: str) -> None:
    # it replayed nothing and passed 'incidents: 0' in 0 plant seconds
    scenario = replay_scenario(tmp_path, [], "expect:\n  incidents: 0\n")
    (tmp_path / "pump.csv").write_text(SKAB_HEADER + "\n" + rows)
    proc = cli("run", str(scenario), "--json", "--db", f"sqlite:///{tmp_path / 'r.db'}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{tmp_path / 'pump.csv'}" in proc.stderr and "no data row" in proc.stderr


def test_a_replay_that_ends_before_its_fault_fails_saying_so(tmp_path: Path) -> None:
    # 30 rows, the fault expected at 60 s: 'incidents: 0' passed, having seen no fault
    expect = "expect:\n  fault_at_s: 60\n  incidents: 0\n"
    scenario = replay_scenario(tmp_path, list(range(30)), expect)
    proc = cli("run", str(scenario), "--json", "--db", f"sqlite:///{tmp_path / 'r.db'}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = {e["name"]: e for e in json.loads(proc.stdout)["expectations"]}
    assert results["incidents"]["passed"] and not results["fault_at_s"]["passed"]
    assert "ended at t=29 s, before the fault at 60 s" in results["fault_at_s"]["detail"]


async def test_speed_paces_a_replay_by_its_timestamps(tmp_path: Path) -> None:
    # --speed slept dt_s / speed per row whatever the rows' spacing: a 38 s gap in the data
    # passed in 0.1 s of wall time at speed 10. Time here is a counter the sleeps advance.
    scenario = replay_scenario(tmp_path, [0, 1, 2, 40, 41])
    wall = [0.0]
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(round(s, 6))
        wall[0] += s

    pacer = Pacer(10.0, sleep=sleep, monotonic=lambda: wall[0])
    await run_scenario(scenario, db_url=f"sqlite:///{tmp_path / 'r.db'}", pacer=pacer)
    assert waits == [0.1, 0.1, 3.8, 0.1]


class Steps:
    """A run observer that keeps every telemetry batch the run published."""

    def __init__(self) -> None:
        self.batches: list[TelemetryBatch] = []

    def on_step(self, t: float, batches: list[TelemetryBatch], scores: dict[str, float]) -> None:
        self.batches.extend(batches)

    def on_message(self, msg: object) -> None:
        pass


HISTORIAN_SCENARIO = """name: historian
duration_s: 100
telemetry:
  source: csv
  path: export.csv
  sep: ";"
  decimal: ","
  encoding: cp1252
  timestamp_column: Zeitstempel
  timestamp_format: "%d.%m.%Y %H:%M:%S"
  timezone: Europe/Berlin
  columns:
    "P-101 Förderdruck [bar]": {device_id: p101, sensor: pressure, unit: bar}
    "P-101 Durchfluss [m³/h]": {device_id: p101, sensor: flow_rate, unit: m3/h}
    "WT-1 Vorlauf [°C]": {device_id: hx1, sensor: fluid_temperature, unit: °C}
expect:
  incidents: 0
"""


async def test_a_scenario_replays_a_historian_export_by_its_own_mapping(tmp_path: Path) -> None:
    # a Windows-1252, decimal-comma, local-time export across the autumn DST change: the
    # scenario could only say `preset: skab`
    stamps = ["25.10.2026 02:59:58", "25.10.2026 02:59:59", "25.10.2026 02:00:00"]
    stamps += ["25.10.2026 02:00:01", "25.10.2026 02:00:02"]
    rows = [f"{s};4,{i};12,5;ok;6{i},25" for i, s in enumerate(stamps)]
    rows.append("25.10.2026 02:00:03;4,5;12,5;fault;Bad")  # a historian's quality text
    header = "Zeitstempel;P-101 Förderdruck [bar];P-101 Durchfluss [m³/h];Status;WT-1 Vorlauf [°C]"
    (tmp_path / "export.csv").write_text("\r\n".join([header, *rows]) + "\r\n", encoding="cp1252")
    scenario = tmp_path / "historian.yaml"
    scenario.write_text(HISTORIAN_SCENARIO, encoding="utf-8")
    steps = Steps()
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    result = await run_scenario(scenario, db_url=db_url, observer=steps)
    assert result.passed and result.plant_seconds == 4  # 02:59:59 CEST -> 02:00:00 CET is 1 s
    store = Store(db_url)
    [letter] = store.dead_letters(result.run_id)  # on the bad column's device
    store.dispose()
    assert letter.original_subject == "telemetry.hx1"
    assert "export.csv:7 (row 5) column 'WT-1 Vorlauf [°C]': not a number: 'Bad'" in letter.reason
    got = [
        (b.device_id, [(r.sensor, r.value, r.unit, r.ts) for r in b.readings])
        for b in steps.batches
    ]
    assert got[:2] == [
        ("p101", [("pressure", 4.0, "bar", 0.0), ("flow_rate", 12.5, "m3/h", 0.0)]),
        ("hx1", [("fluid_temperature", 60.25, "°C", 0.0)]),
    ]
    assert [b.readings[0].ts for b in steps.batches[::2]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert steps.batches[-1].readings[0].value == 64.25


HISTORIAN_HEADER = (
    "Zeitstempel;P-101 Förderdruck [bar];P-101 Durchfluss [m³/h];Status;WT-1 Vorlauf [°C]"
)


def grouped_export(tmp_path: Path, header: str = HISTORIAN_HEADER) -> Path:
    """A decimal-comma export whose flows are over a thousand, grouped by '.' (1.230,5)."""
    rows = [f"25.10.2026 01:00:0{i};4,{i};1.23{i},5;ok;60,25" for i in range(3)]
    path = tmp_path / "export.csv"
    path.write_text("\r\n".join([header, *rows]) + "\r\n", encoding="cp1252")
    return path


async def replayed_flows(scenario: Path) -> tuple[bool, list[float]]:
    """Run the CSV replay ``scenario`` (its database beside it): whether it passed, and the
    ``flow_rate`` values it published. Asserts that no row was dead-lettered."""
    steps = Steps()
    db_url = f"sqlite:///{scenario.parent / 'r.db'}"
    result = await run_scenario(scenario, db_url=db_url, observer=steps)
    store = Store(db_url)
    letters = store.dead_letters(result.run_id)
    store.dispose()
    assert letters == []
    flows = [r.value for b in steps.batches for r in b.readings if r.sensor == "flow_rate"]
    return result.passed, flows


async def test_a_historian_export_with_thousands_marks_replays_them(tmp_path: Path) -> None:
    # '1.230,5' was dead-lettered as 'not a number' and no layout field could read it
    grouped_export(tmp_path)
    scenario = tmp_path / "historian.yaml"
    text = HISTORIAN_SCENARIO.replace('  decimal: ","\n', '  decimal: ","\n  thousands: "."\n')
    scenario.write_text(text, encoding="utf-8")
    assert await replayed_flows(scenario) == (True, [1230.5, 1231.5, 1232.5])


def test_a_grouped_value_without_thousands_exits_2_naming_both_files(tmp_path: Path) -> None:
    export = grouped_export(tmp_path)
    scenario = tmp_path / "historian.yaml"
    scenario.write_text(HISTORIAN_SCENARIO, encoding="utf-8")
    proc = cli("run", str(scenario), "--json", "--db", f"sqlite:///{tmp_path / 'r.db'}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())  # the console wraps long lines
    assert f"{scenario}:" in err and "field 'telemetry.thousands'" in err, err
    assert f"{export}:2: column 'P-101 Durchfluss [m³/h]': '1.230,5'" in err, err
    assert "set thousands: '.'" in err, err


US_SCENARIO = """name: us-export
duration_s: 100
telemetry:
  source: csv
  path: export.csv
  thousands: ","
  timestamp_column: Timestamp
  timestamp_format: "%Y-%m-%d %H:%M:%S"
  columns:
    "P-101 Flow [gpm]": {device_id: p101, sensor: flow_rate, unit: gpm}
    "TT-1 [°F]": {device_id: p101, sensor: fluid_temperature, unit: °F}
expect:
  incidents: 0
"""


async def test_a_comma_separated_export_with_quoted_grouped_values_replays(
    tmp_path: Path,
) -> None:
    # thousands could not be the separator (default ','): this export had to be redone
    rows = ['2026-01-01 00:00:00,"1,234.5",17.2', "2026-01-01 00:00:01,999,17.3"]
    rows += ['2026-01-01 00:00:02,"1,001",17.4']
    (tmp_path / "export.csv").write_text(
        "\r\n".join(["Timestamp,P-101 Flow [gpm],TT-1 [°F]", *rows]) + "\r\n"
    )
    scenario = tmp_path / "us.yaml"
    scenario.write_text(US_SCENARIO, encoding="utf-8")
    assert await replayed_flows(scenario) == (True, [1234.5, 999.0, 1001.0])


def test_an_unquoted_value_grouped_by_the_separator_exits_2_naming_the_line(
    tmp_path: Path,
) -> None:
    rows = ["2026-01-01 00:00:00,999,17.2", "2026-01-01 00:00:01,1,234.5,17.3"]
    export = tmp_path / "export.csv"
    export.write_text("\n".join(["Timestamp,P-101 Flow [gpm],TT-1 [°F]", *rows]) + "\n")
    scenario = tmp_path / "us.yaml"
    scenario.write_text(US_SCENARIO, encoding="utf-8")
    proc = cli("run", str(scenario), "--json", "--db", f"sqlite:///{tmp_path / 'r.db'}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert f"{scenario}:" in err and "field 'telemetry.thousands'" in err, err
    assert f"{export}:3: 4 fields, header has 3" in err, err


def test_a_duplicated_mapped_header_exits_2_naming_both_positions(tmp_path: Path) -> None:
    # the second 'P-101 Durchfluss [m³/h]' (a status text) was read, the first ignored
    header = HISTORIAN_HEADER.replace("Status", "P-101 Durchfluss [m³/h]")
    export = grouped_export(tmp_path, header)
    scenario = tmp_path / "historian.yaml"
    scenario.write_text(HISTORIAN_SCENARIO, encoding="utf-8")
    proc = cli("run", str(scenario), "--json", "--db", f"sqlite:///{tmp_path / 'r.db'}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert f"{export}:1: 'P-101 Durchfluss [m³/h]' is the header of columns 3 and 4" in err, err
    assert "field 'telemetry.columns'" in err, err


async def test_a_preset_takes_overrides(tmp_path: Path) -> None:
    scenario = replay_scenario(tmp_path, [0, 1, 2])
    scenario.write_text(
        "name: replay\nduration_s: 100\ntelemetry:\n  source: csv\n  preset: skab\n"
        "  path: pump.csv\n  device_id: p7\n  timezone: Europe/Berlin\n"
    )
    steps = Steps()
    result = await run_scenario(scenario, db_url=f"sqlite:///{tmp_path / 'r.db'}", observer=steps)
    assert result.plant_seconds == 2
    assert {b.device_id for b in steps.batches} == {"p7"}
    assert len(steps.batches[0].readings) == 8  # the preset's eight columns, on p7
    # the run records the scenario as it was read, and that record loads again as it was
    recorded = Store(f"sqlite:///{tmp_path / 'r.db'}")
    [run] = recorded.runs()
    recorded.dispose()
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(run.config["scenario"]))
    assert load_scenario(again).telemetry == load_scenario(scenario).telemetry


@pytest.mark.parametrize(
    ("telemetry", "line", "field", "says"),
    [
        (
            "  columns:\n    Flow: {device_id: p1, unit: bar}\n",
            6,
            "telemetry.columns.Flow.sensor",
            "Field required",
        ),
        ("  preset: skap\n", 5, "telemetry.preset", "unknown preset 'skap'; known: skab"),
        (
            "  preset: skab\n  timezone: Europe/Berlln\n",
            6,
            "telemetry.timezone",
            "unknown time zone 'Europe/Berlln'",
        ),
        (
            "  preset: skab\n  sep: ','\n  decimal: ','\n",
            7,
            "telemetry.decimal",
            "cannot also be the separator",
        ),
        (
            "  device_id: p1\n  columns:\n    Flow: {device_id: p1, sensor: flow_rate}\n",
            5,
            "telemetry.device_id",
            "without a preset",
        ),
        ("  sep: ';'\n", 4, "telemetry.columns", "Field required"),
    ],
    ids=[
        "column-without-sensor",
        "unknown-preset",
        "unknown-zone",
        "decimal-is-sep",
        "device-without-preset",
        "no-columns-no-preset",
    ],
)
def test_a_bad_telemetry_field_exits_2_naming_its_line(
    tmp_path: Path, telemetry: str, line: int, field: str, says: str
) -> None:
    assert_refused(tmp_path, "telemetry:\n  path: plant.csv\n" + telemetry, line, field, says)


def test_a_timestamp_format_that_matches_no_row_exits_2_naming_both_files(
    tmp_path: Path,
) -> None:
    # every row was dead-lettered one by one, then 'no data row could be replayed'
    (tmp_path / "plant.csv").write_text("time,Flow\n2026-10-25T01:00:00,1\n2026-10-25T01:00:01,2\n")
    telemetry = (
        "telemetry:\n  path: plant.csv\n  timestamp_column: time\n"
        "  timestamp_format: '%d.%m.%Y %H:%M'\n  columns:\n"
        "    Flow: {device_id: p1, sensor: flow_rate}\n"
    )
    csv_line = f"{tmp_path / 'plant.csv'}:2: timestamp format '%d.%m.%Y %H:%M' matches no row"
    assert_refused(tmp_path, telemetry, 6, "telemetry.timestamp_format", csv_line)
    assert_refused(tmp_path, telemetry, 6, "telemetry.timestamp_format", "'2026-10-25T01:00:00'")


def config_with_unknown_model_group(tmp_path: Path) -> tuple[Path, str]:
    """A copy of config/ whose crew.yaml names model group ``reasonin`` for the diagnostic;
    returns the folder and where (``crew.yaml:LINE``) the mistake is."""
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    crew = config / "crew.yaml"
    text = crew.read_text()
    assert "diagnostic: {workers: 1, model_group: reasoning}" in text
    crew.write_text(text.replace("model_group: reasoning}", "model_group: reasonin}", 1))
    line = 1 + crew.read_text().split("model_group: reasonin}")[0].count("\n")
    return config, f"{crew}:{line}"


async def test_a_run_that_fails_midway_is_recorded_as_crashed_with_its_error(
    tmp_path: Path,
) -> None:
    # a CSV whose header lacks a column fails at its first read, after the run is created:
    # the run must not stay "running" for ever
    (tmp_path / "pump.csv").write_text("datetime;Current\n2020-03-09 10:34:00;2.5\n")
    scenario = tmp_path / "replay.yaml"
    scenario.write_text(
        "name: replay\nduration_s: 100\ntelemetry: {source: csv, preset: skab, path: pump.csv}\n"
    )
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    with pytest.raises(PlantcrewError) as err:
        await run_scenario(scenario, db_url=db_url)
    store = Store(db_url)
    [run] = store.runs()
    store.dispose()
    assert run.status == "crashed" and run.finished_at is not None
    assert str(err.value) in run.summary["error"] and "Accelerometer1RMS" in run.summary["error"]


def test_unknown_model_group_in_crew_yaml_exits_2_naming_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, where = config_with_unknown_model_group(tmp_path)
    scenario = tmp_path / "s.yaml"
    scenario.write_text("name: s\nduration_s: 5\n")
    monkeypatch.setenv("PLANTCREW_CONFIG_DIR", str(config))
    proc = cli("run", str(scenario), "--json", "--db", f"sqlite:///{tmp_path / 'm.db'}")
    assert proc.returncode == 2, proc.stderr
    assert where in proc.stderr
    assert "roles.diagnostic.model_group" in proc.stderr and "reasonin" in proc.stderr


def test_a_crew_process_refuses_to_start_with_an_unknown_model_group(tmp_path: Path) -> None:
    # else it would take the role's tasks and dead-letter every one of them (``up`` hosts the
    # role as ``worker`` does, on the in-process bus)
    config, where = config_with_unknown_model_group(tmp_path)
    argv = [sys.executable, "-m", "plantcrew.cli_processes", "up", "--role", "diagnostic"]
    argv += ["--bus", "memory://", "--db", f"sqlite:///{tmp_path / 'w.db'}", "--probe-port", "0"]
    env = {**os.environ, "PLANTCREW_CONFIG_DIR": str(config)}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert where in proc.stderr and "roles.diagnostic.model_group" in proc.stderr


def test_failed_expectation_exits_1_and_says_which(tmp_path: Path) -> None:
    text = (ROOT / "scenarios" / "sensor-drift.yaml").read_text()
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(text.replace("root_cause: sensor_drift", "root_cause: cavitation"))
    proc = cli("run", str(wrong), "--db", f"sqlite:///{tmp_path / 'w.db'}")
    assert proc.returncode == 1
    assert "expectation root_cause failed" in proc.stderr


def _conversation(db: Path) -> list[tuple[str, str, str]]:
    con = sqlite3.connect(db)
    run_id = con.execute("SELECT id FROM run").fetchone()[0]
    con.close()
    proc = cli("replay", run_id, "--db", f"sqlite:///{db}", "--json")
    assert proc.returncode == 0, proc.stderr
    return [(m["type"], m["source"], m["subject"]) for m in json.loads(proc.stdout)]


def test_same_seed_gives_the_same_conversation(tmp_path: Path) -> None:
    scenario = str(ROOT / "scenarios" / "bearing-overheating-approval.yaml")
    runs = []
    for name in ("a", "b"):
        db = tmp_path / f"{name}.db"
        proc = cli("run", scenario, "--db", f"sqlite:///{db}", "--json", "--seed", "42")
        assert proc.returncode == 0, proc.stderr
        runs.append(_conversation(db))
    assert runs[0] == runs[1]
    assert len(runs[0]) > 10


def test_sigkill_mid_incident_then_resume_executes_nothing_twice(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    scenario = str(ROOT / "scenarios" / "bearing-overheating-approval.yaml")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plantcrew.cli",
            "run",
            scenario,
            "--db",
            f"sqlite:///{db}",
            "--json",
            "--speed",
            "60",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    killed_in = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if not db.exists():
                continue
            try:
                con = sqlite3.connect(db, timeout=5)
                row = con.execute(
                    "SELECT i.status FROM action a JOIN incident i ON i.id = a.incident_id "
                    "WHERE a.status = 'executed'"
                ).fetchone()
                con.close()
            except sqlite3.OperationalError:
                continue
            if row is not None and row[0] not in ("resolved", "escalated"):
                os.killpg(proc.pid, signal.SIGKILL)
                killed_in = row[0]
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_in is not None, "the run was not caught in the middle of an incident"
    con = sqlite3.connect(db)
    run_id, status = con.execute("SELECT id, status FROM run").fetchone()
    con.close()
    assert status == "running"
    resumed = cli("run", scenario, "--db", f"sqlite:///{db}", "--resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    out = json.loads(resumed.stdout)
    assert out["run_id"] == run_id and out["passed"]
    inc = out["incidents"][0]
    assert inc["status"] == "resolved"
    con = sqlite3.connect(db)
    executed = con.execute("SELECT count(*) FROM action WHERE status = 'executed'").fetchone()[0]
    results = [
        json.loads(b)["payload"]["status"]
        for (b,) in con.execute("SELECT body FROM message WHERE type = 'action.executed'")
    ]
    con.close()
    assert executed == 1  # one command recorded, with its receipt
    # the actuator ran at most once: a task re-issued after the crash finds the command
    # recorded and answers already_executed instead of sending it again
    assert results.count("executed") <= 1
    assert set(results) <= {"executed", "already_executed"}
