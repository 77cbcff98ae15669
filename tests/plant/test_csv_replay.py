"""CSV replay: SKAB preset on the real files, bad rows reported and skipped, pacing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from plantcrew.plant.csv_replay import (
    ColumnMap,
    CsvReplayError,
    CsvReplaySource,
    CsvSourceSpec,
    skab_preset,
)
from tests.conftest import require_shared_data


def spec_for(path, **kw):
    base = dict(
        path=path,
        sep=";",
        timestamp_column="time",
        timestamp_format="%Y-%m-%d %H:%M:%S",
        columns={
            "Flow": ColumnMap(device_id="pump1", sensor="flow_rate", unit="L/min"),
            "T": ColumnMap(device_id="hx1", sensor="fluid_temperature", unit="°C"),
        },
    )
    base.update(kw)
    return CsvSourceSpec(**base)


def test_skab_file_replays_every_row_with_canonical_sensors():
    path = require_shared_data() / "skab" / "valve1" / "0.csv"
    source = CsvReplaySource(skab_preset(path))
    batches = list(source)
    lines = path.read_bytes().count(b"\r\n")
    assert len(batches) == lines - 1 and source.skipped == 0
    assert [b.row for b in batches[:3]] == [0, 1, 2]
    first = batches[0]
    assert first.device_id == "pump1" and first.readings[0].ts == 0.0
    sensors = {r.sensor: r for r in first.readings}
    assert set(sensors) == {
        "vibration_1",
        "vibration_2",
        "current",
        "pressure",
        "motor_temperature",
        "fluid_temperature",
        "voltage",
        "flow_rate",
    }
    assert sensors["flow_rate"].unit == "L/min" and sensors["flow_rate"].value == 32.0
    ts = [b.readings[0].ts for b in batches]
    assert ts == sorted(ts) and ts[1] == 1.0


def test_bad_rows_are_reported_and_skipped(tmp_path):
    p = tmp_path / "plant.csv"
    p.write_bytes(
        b"time;Flow;T;extra\r\n"
        b"2024-01-01 00:00:00;10.5;20.0;x\r\n"
        b"2024-01-01 00:00:01;oops;20.1;x\r\n"
        b"not-a-time;10.7;20.2;x\r\n"
        b"2024-01-01 00:00:03;10.8\r\n"
        b"2024-01-01 00:00:04;10.9;nan;x\r\n"
        b"2024-01-01 00:00:05;11.0;20.5;x\r\n"
    )
    source = CsvReplaySource(spec_for(p))
    batches = list(source)
    assert [(b.row, b.device_id) for b in batches] == [
        (0, "pump1"),
        (0, "hx1"),
        (5, "pump1"),
        (5, "hx1"),
    ]
    assert batches[2].readings[0].ts == 5.0
    assert source.skipped == 4
    problems = {pr.row: pr for pr in source.problems}
    assert problems[1].column == "Flow" and problems[1].line == 3 and "oops" in problems[1].reason
    assert problems[2].column == "time"
    assert problems[3].column is None and "fields" in problems[3].reason
    assert problems[4].column == "T"
    assert str(problems[1]).startswith(f"{p}:3 (row 1) column 'Flow'")


def test_missing_file_and_column_are_clear_errors(tmp_path):
    with pytest.raises(CsvReplayError, match="cannot open"):
        list(CsvReplaySource(spec_for(tmp_path / "nope.csv")))
    p = tmp_path / "plant.csv"
    p.write_text("time;Flow\n2024-01-01 00:00:00;1\n")
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p)))
    assert "'T'" in str(err.value) and err.value.line == 1


def test_rows_without_timestamps_use_the_sample_period(tmp_path):
    p = tmp_path / "plant.csv"
    p.write_text("Flow,T\n1,2\n3,4\n")
    spec = spec_for(p, sep=",", timestamp_column=None, sample_period_s=0.5)
    assert [b.readings[0].ts for b in CsvReplaySource(spec)][::2] == [0.0, 0.5]


@pytest.mark.parametrize(
    ("speed", "waits"), [("realtime", [0, 2.0, 1.0]), (2.0, [0, 1.0, 0.5]), ("max", [0, 0, 0])]
)
async def test_replay_paces_by_speed(tmp_path, speed, waits):
    p = tmp_path / "plant.csv"
    p.write_text(
        "time;Flow;T\n2024-01-01 00:00:00;1;2\n2024-01-01 00:00:02;1;2\n2024-01-01 00:00:03;1;2\n"
    )
    spec = spec_for(
        p, columns={"Flow": ColumnMap(device_id="pump1", sensor="flow_rate")}, speed=speed
    )
    slept: list[float] = []
    got = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async def emit(b) -> None:
        got.append(b.row)

    assert await CsvReplaySource(spec).replay(emit, sleep=sleep) == 3
    assert got == [0, 1, 2] and slept == waits


def test_speed_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        spec_for(tmp_path / "x.csv", speed=-1.0)


def test_a_row_older_than_the_row_before_it_is_reported_and_skipped(tmp_path):
    # a historian export out of order (or a clock set back): time never runs backwards in a
    # replay, so the late row is a problem with its file line, and the rows after it flow
    p = tmp_path / "plant.csv"
    p.write_text(
        "time;Flow;T\n"
        "2024-01-01 00:00:00;1;2\n"
        "2024-01-01 00:00:05;1;2\n"
        "2024-01-01 00:00:03;1;2\n"
        "2024-01-01 00:00:05;1;2\n"
        "2024-01-01 00:00:06;1;2\n"
    )
    spec = spec_for(p, columns={"Flow": ColumnMap(device_id="pump1", sensor="flow_rate")})
    source = CsvReplaySource(spec)
    assert [(b.row, b.readings[0].ts) for b in source] == [(0, 0.0), (1, 5.0), (3, 5.0), (4, 6.0)]
    [problem] = source.problems
    assert (problem.row, problem.line, problem.column) == (2, 4, "time")
    assert "before the previous row" in problem.reason and "00:00:05" in problem.reason


def test_problem_lines_count_the_lines_of_quoted_multi_line_fields(tmp_path):
    p = tmp_path / "plant.csv"
    p.write_text('time,Flow,note\n2024-01-01 00:00:00,1,"two\nlines"\n2024-01-01 00:00:01,bad,x\n')
    spec = spec_for(p, sep=",", columns={"Flow": ColumnMap(device_id="pump1", sensor="flow_rate")})
    source = CsvReplaySource(spec)
    assert [b.row for b in source] == [0]
    [problem] = source.problems
    assert (problem.row, problem.line) == (1, 4)
    assert str(problem).startswith(f"{p}:4 (row 1) column 'Flow'")


def test_a_decimal_comma_export_replays_its_values(tmp_path):
    # German/French historian exports: ';' between fields, ',' in the numbers
    p = tmp_path / "plant.csv"
    p.write_text("time;Flow;T\n2024-01-01 00:00:00;10,5;-0,25\n2024-01-01 00:00:01;11;1.5\n")
    source = CsvReplaySource(spec_for(p, decimal=","))
    batches = list(source)
    assert [(r.sensor, r.value) for b in batches for r in b.readings] == [
        ("flow_rate", 10.5),
        ("fluid_temperature", -0.25),
    ]
    # '1.5' in a decimal-comma file is not read as one and a half (nor as fifteen)
    [problem] = source.problems
    assert (problem.line, problem.column) == (3, "T") and "'1.5'" in problem.reason


def test_the_decimal_mark_cannot_be_the_separator(tmp_path):
    with pytest.raises(ValueError, match="decimal mark ',' cannot also be the separator"):
        spec_for(tmp_path / "x.csv", sep=",", decimal=",")


def test_local_times_across_the_autumn_dst_change_replay_in_order_in_utc(tmp_path):
    # Europe/Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET, so 02:00-02:59 occurs
    # twice. A local-time export across it replays in order: the second 02:00 is 01:00 UTC
    # (it was read as 00:00 UTC, before the row before it, and the hour was dead-lettered)
    p = tmp_path / "plant.csv"
    stamps = [
        "2026-10-25 01:59:30",  # CEST, 23:59:30 UTC the day before
        "2026-10-25 02:00:00",  # CEST, 00:00 UTC
        "2026-10-25 02:30:00",  # CEST, 00:30 UTC
        "2026-10-25 02:59:30",  # CEST, 00:59:30 UTC
        "2026-10-25 02:00:00",  # CET (the hour again), 01:00 UTC
        "2026-10-25 02:30:00",  # CET, 01:30 UTC
        "2026-10-25 02:59:30",  # CET, 01:59:30 UTC
        "2026-10-25 03:00:00",  # CET, 02:00 UTC
    ]
    p.write_text("time;Flow\n" + "".join(f"{s};1\n" for s in stamps))
    columns = {"Flow": ColumnMap(device_id="pump1", sensor="flow_rate")}
    source = CsvReplaySource(spec_for(p, columns=columns, timezone="Europe/Berlin"))
    ts = [b.readings[0].ts for b in source]
    assert source.problems == []
    assert ts == [0.0, 30.0, 1830.0, 3600.0, 3630.0, 5430.0, 7200.0, 7230.0]
    # the first row, 01:59:30 CEST, is 23:59:30 UTC the day before
    assert source.origin == datetime(2026, 10, 24, 23, 59, 30, tzinfo=UTC).timestamp()


def test_a_local_time_in_the_spring_dst_gap_is_a_bad_row(tmp_path):
    # 2026-03-29 02:00-02:59 does not exist in Berlin (the clocks jump from 02:00 to 03:00)
    p = tmp_path / "plant.csv"
    p.write_text("time;Flow\n2026-03-29 01:59:00;1\n2026-03-29 02:30:00;1\n2026-03-29 03:00:00;1\n")
    columns = {"Flow": ColumnMap(device_id="pump1", sensor="flow_rate")}
    source = CsvReplaySource(spec_for(p, columns=columns, timezone="Europe/Berlin"))
    assert [b.readings[0].ts for b in source] == [0.0, 60.0]
    [problem] = source.problems
    assert problem.line == 3 and "does not exist in Europe/Berlin" in problem.reason


def test_naive_timestamps_without_a_timezone_stay_utc(tmp_path):
    p = tmp_path / "plant.csv"
    p.write_text("time;Flow\n2026-10-25 02:00:00;1\n2026-10-25 03:00:00;1\n")
    columns = {"Flow": ColumnMap(device_id="pump1", sensor="flow_rate")}
    source = CsvReplaySource(spec_for(p, columns=columns))
    assert [b.readings[0].ts for b in source] == [0.0, 3600.0]
    assert source.origin == datetime(2026, 10, 25, 2, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"timezone": "Europe/Berlln"}, "unknown time zone 'Europe/Berlln'"),
        ({"timezone": "UTC", "timestamp_format": "epoch"}, "epoch timestamps are UTC"),
    ],
)
def test_a_bad_timezone_is_refused_naming_the_field(tmp_path, kw, says):
    with pytest.raises(ValidationError) as err:
        spec_for(tmp_path / "x.csv", **kw)
    [error] = err.value.errors()
    assert error["loc"] == ("timezone",) and says in error["msg"]


def test_a_timestamp_format_that_matches_no_row_names_the_first_row_and_the_format(tmp_path):
    # every row was skipped as bad, one by one, and the run ended saying only "no data row"
    p = tmp_path / "plant.csv"
    p.write_text("time;Flow;T\n\n25.10.2026 01:00:00;1;2\n25.10.2026 01:00:01;1;2\n")
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p)))
    assert (err.value.source, err.value.line, err.value.field) == (
        str(p),
        3,
        "timestamp_format",
    )
    assert "'%Y-%m-%d %H:%M:%S' matches no row" in str(err.value)
    assert "'25.10.2026 01:00:00'" in str(err.value)
