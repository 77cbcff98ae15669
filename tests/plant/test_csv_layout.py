"""CSV replay of real historian exports: thousands separators, duplicate and untidy headers,
encodings. Every test writes a real file and reads it through CsvReplaySource."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from plantcrew.plant.csv_replay import ColumnMap, CsvReplayError, CsvReplaySource, CsvSourceSpec

FLOW = {"Flow": ColumnMap(device_id="pump1", sensor="flow_rate", unit="m3/h")}


def spec_for(path, **kw):
    base = dict(path=path, sep=";", timestamp_column="time", columns=FLOW)
    base.update(kw)
    return CsvSourceSpec(**base)


def write(tmp_path, text: str, encoding: str = "utf-8"):
    p = tmp_path / "export.csv"
    p.write_text(text, encoding=encoding)
    return p


def flows(p, **kw) -> tuple[list[float], CsvReplaySource]:
    source = CsvReplaySource(spec_for(p, **kw))
    return [r.value for b in source for r in b.readings], source


def rows(*values: str, sep: str = ";") -> str:
    """A ``time``/``Flow`` export with one row per value, one second apart."""
    lines = [f"time{sep}Flow"]
    lines += [f"2026-01-01T00:00:{i:02d}{sep}{v}" for i, v in enumerate(values)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("layout", "values", "expected"),
    [
        (
            {"decimal": ".", "thousands": ","},
            ["1,234.5", "12.5", "-1,234,567", "999", "1234.25", "+2,000"],
            [1234.5, 12.5, -1234567.0, 999.0, 1234.25, 2000.0],
        ),
        (
            {"decimal": ",", "thousands": "."},
            ["1.234,5", "12,5", "1.000.000", "-0,5"],
            [1234.5, 12.5, 1e6, -0.5],
        ),
        ({"decimal": ",", "thousands": " "}, ["1 234,5", "12 345 678"], [1234.5, 12345678.0]),
        ({"decimal": ",", "thousands": "\u00a0"}, ["1\u00a0234,5"], [1234.5]),
        ({"decimal": ".", "thousands": "'"}, ["1'234.5"], [1234.5]),
    ],
    ids=["comma-groups", "dot-groups", "space-groups", "nbsp-groups", "swiss"],
)
def test_a_thousands_mark_in_the_layout_is_read(tmp_path, layout, values, expected):
    # '1,234.5' was dead-lettered as 'not a number' and there was no way to read it
    got, source = flows(write(tmp_path, rows(*values)), **layout)
    assert source.problems == [] and got == expected


US_EXPORT = (
    "time,Flow,Temp\n"
    '2026-01-01 00:00:00,"1,234.5",17.2\n'
    '2026-01-01 00:00:01,999,"1,017.25"\n'
    '2026-01-01 00:00:02,"-1,234,567",17.4\n'
    "2026-01-01 00:00:03,1234.25,17.5\n"
)
"""The commonest US historian/Excel export: comma-separated, grouped values quoted."""

TEMP = {"Temp": ColumnMap(device_id="pump1", sensor="fluid_temperature", unit="°C")}


def test_a_comma_separated_export_with_quoted_grouped_values_is_read(tmp_path):
    # thousands could not be the separator: such a file could only be re-exported
    source = CsvReplaySource(
        spec_for(write(tmp_path, US_EXPORT), sep=",", thousands=",", columns=FLOW | TEMP)
    )
    got = [[r.value for r in b.readings] for b in source]
    assert source.problems == []
    assert got == [[1234.5, 17.2], [999.0, 1017.25], [-1234567.0, 17.4], [1234.25, 17.5]]


def test_a_quoted_value_with_thousands_the_separator_must_still_group_by_three(tmp_path):
    text = 'time,Flow\n2026-01-01T00:00:00,"1,234"\n2026-01-01T00:00:01,"1,5"\n'
    got, source = flows(write(tmp_path, text), sep=",", thousands=",")
    assert got == [1234.0]
    [problem] = source.problems
    assert (problem.line, problem.column) == (3, "Flow")
    assert "groups of three digits" in problem.reason
    assert problem.raw == '2026-01-01T00:00:01,"1,5"'  # as in the file, not a third column


@pytest.mark.parametrize("good_rows", [0, 2], ids=["first-row", "after-good-rows"])
def test_an_unquoted_value_grouped_by_the_separator_is_an_error_naming_the_line(
    tmp_path, good_rows
):
    # unquoted, '1,234.5' splits into '1' and '234.5': a row of 4 fields under 3 headers;
    # dead-lettering such rows would drop every value over a thousand, and only those
    lines = ["time,Flow,Temp"]
    lines += [f"2026-01-01T00:00:0{i},{i},17.{i}" for i in range(good_rows)]
    lines += [f"2026-01-01T00:00:0{good_rows},1,234.5,17.2", "2026-01-01T00:00:09,5,17.9"]
    p = write(tmp_path, "\n".join(lines) + "\n")
    source = CsvReplaySource(spec_for(p, sep=",", thousands=",", columns=FLOW | TEMP))
    with pytest.raises(CsvReplayError) as err:
        list(source)
    line = good_rows + 2
    assert (err.value.source, err.value.line, err.value.field) == (str(p), line, "thousands")
    msg = str(err.value)
    assert "4 fields, header has 3" in msg and 'quoted ("1,234.5")' in msg, msg


def test_a_short_row_with_thousands_the_separator_is_still_a_bad_row(tmp_path):
    # fewer fields than the header is not a split grouped value
    text = "time,Flow\n2026-01-01T00:00:00,1\n2026-01-01T00:00:01\n2026-01-01T00:00:02,3\n"
    got, source = flows(write(tmp_path, text), sep=",", thousands=",")
    assert got == [1.0, 3.0]
    [problem] = source.problems
    assert problem.line == 3 and problem.reason == "1 fields, header has 2"


def test_a_quoted_value_grouped_by_the_separator_says_to_set_thousands(tmp_path):
    # it said the separator could not be the thousands mark: export without grouping
    p = write(tmp_path, 'time,Flow\n2026-01-01T00:00:00,7\n2026-01-01T00:00:01,"1,234.5"\n')
    got, source = flows(p, sep=",")
    assert got == [7.0]
    [problem] = source.problems
    assert (problem.line, problem.column) == (3, "Flow")
    assert "set thousands: ','" in problem.reason and "quoted" in problem.reason, problem.reason


def test_a_quoted_value_grouped_by_the_separator_in_the_first_row_is_a_layout_error(tmp_path):
    p = write(tmp_path, 'time,Flow\n2026-01-01T00:00:00,"1,234.5"\n2026-01-01T00:00:01,7\n')
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p, sep=",")))
    assert (err.value.line, err.value.field) == (2, "thousands")
    assert "set thousands: ','" in str(err.value)


@pytest.mark.parametrize("bad", ["1,5", "12,34.5", "1,2345", "1,234,5", ",123", "1,,234"])
def test_a_value_not_grouped_by_three_is_a_bad_value_naming_the_mark(tmp_path, bad):
    # stripping the mark would read a decimal comma '1,5' as fifteen
    got, source = flows(write(tmp_path, rows("1,234.5", bad, "2")), thousands=",")
    assert got == [1234.5, 2.0]
    [problem] = source.problems
    assert (problem.line, problem.column) == (3, "Flow")
    assert f"{bad!r}" in problem.reason and "groups of three digits" in problem.reason


@pytest.mark.parametrize(
    ("layout", "loc", "says"),
    [
        ({"decimal": ",", "thousands": ","}, "thousands", "cannot also be the decimal mark"),
        ({"sep": ",", "decimal": ".", "thousands": "."}, "thousands", "the decimal mark"),
        ({"thousands": "5"}, "thousands", "a digit"),
        ({"thousands": ", "}, "thousands", "at most 1 character"),
    ],
)
def test_a_thousands_mark_is_validated(tmp_path, layout, loc, says):
    with pytest.raises(ValidationError) as err:
        spec_for(tmp_path / "x.csv", **layout)
    [error] = err.value.errors()
    assert error["loc"] == (loc,) and says in error["msg"], error


@pytest.mark.parametrize(
    ("layout", "value", "says"),
    [
        ({}, "1,234.5", "set thousands: ','"),
        ({"decimal": ","}, "1.234,5", "set thousands: '.'"),
        ({"decimal": ","}, "1 234,5", "set thousands: ' '"),
        ({}, "1_234.5", "set thousands: '_'"),
        # a grouped number under another mark than the layout's
        ({"decimal": ",", "thousands": " "}, "1.234,5", "set thousands: '.'"),
    ],
)
def test_a_grouped_value_in_the_first_row_is_a_layout_error(tmp_path, layout, value, says):
    # without thousands, the first row's '1,234.5' was dead-lettered as 'not a number', and
    # so was every row after it, until 'no data row could be replayed'
    p = write(tmp_path, rows(value, "2"))
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p, **layout)))
    assert (err.value.source, err.value.line, err.value.field) == (str(p), 2, "thousands")
    assert f"column 'Flow': {value!r}" in str(err.value) and says in str(err.value)


def test_an_ambiguous_grouped_first_value_names_both_readings(tmp_path):
    # '1,234' is 1.234 with a decimal comma, or 1234 grouped: the layout must say which
    p = write(tmp_path, rows("1,234", "2"))
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p)))
    assert "set thousands: ','" in str(err.value) and "decimal: ','" in str(err.value)


@pytest.mark.parametrize(
    ("layout", "value", "says"),
    [
        ({}, "1,000.5", "thousands: ','"),
        ({"decimal": ","}, "1.000,5", "thousands: '.'"),
        ({"decimal": ","}, "1.5", "'.' is not the decimal mark ','"),
    ],
)
def test_a_grouped_value_after_good_rows_is_a_bad_row_saying_why(tmp_path, layout, value, says):
    # values under 1000 carry no mark: the first grouped one comes later in the file
    got, source = flows(write(tmp_path, rows("999", value, "3")), **layout)
    assert got == [999.0, 3.0]
    [problem] = source.problems
    assert (problem.line, problem.column) == (3, "Flow")
    assert f"{value!r}" in problem.reason and says in problem.reason


@pytest.mark.parametrize("value", ["1_234.5", "\u0661\u0662", "\uff11\uff12", " 1 2 "])
def test_what_python_float_accepts_but_a_csv_value_is_not_is_a_bad_value(tmp_path, value):
    # float() read '1_234.5' as 1234.5 and Arabic-Indic or full-width digits as numbers
    got, source = flows(write(tmp_path, rows("1", value, "3")))
    assert got == [1.0, 3.0]
    [problem] = source.problems
    assert problem.line == 3 and f"{value.strip()!r}" in problem.reason


def test_non_finite_values_still_say_so(tmp_path):
    got, source = flows(write(tmp_path, rows("1", "nan", "-inf", "4")))
    assert got == [1.0, 4.0]
    assert [p.reason for p in source.problems] == ["not finite: 'nan'", "not finite: '-inf'"]


def test_a_mapped_duplicate_header_is_an_error_naming_both_positions(tmp_path):
    # the last 'Flow' was replayed, silently
    p = write(tmp_path, "time;Flow;T;Flow\n2026-01-01T00:00:00;1;2;3\n")
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p)))
    assert (err.value.source, err.value.line, err.value.field) == (str(p), 1, "columns")
    assert "'Flow' is the header of columns 2 and 4" in str(err.value)


def test_a_duplicate_timestamp_header_is_an_error(tmp_path):
    p = write(tmp_path, "time;Flow;time\n2026-01-01T00:00:00;1;2026-01-01T00:00:00\n")
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p)))
    assert err.value.field == "timestamp_column"
    assert "'time' is the header of columns 1 and 3" in str(err.value)


def test_headers_equal_but_for_surrounding_spaces_are_duplicates(tmp_path):
    p = write(tmp_path, "time;Flow ;T; Flow\n2026-01-01T00:00:00;1;2;3\n")
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p)))
    assert "'Flow' is the header of columns 2 and 4 ('Flow ' and ' Flow')" in str(err.value)


def test_an_unmapped_duplicate_header_is_a_warning_and_the_replay_goes_on(tmp_path):
    p = write(tmp_path, "time;Status;Flow;Status\n2026-01-01T00:00:00;ok;1;ok\n")
    got, source = flows(p)
    assert got == [1.0]
    assert source.warnings == [
        f"{p}:1: 'Status' is the header of columns 2 and 4 (not mapped: ignored)"
    ]


def test_header_and_mapping_names_match_without_surrounding_spaces(tmp_path):
    p = write(tmp_path, " time ;  Flow\t\n2026-01-01T00:00:00;1\n")
    columns = {" Flow ": ColumnMap(device_id="pump1", sensor="flow_rate")}
    source = CsvReplaySource(spec_for(p, timestamp_column="time ", columns=columns))
    [batch] = list(source)
    assert batch.readings[0].value == 1.0
    assert source.problems == []


def test_a_byte_order_mark_read_as_utf8_is_not_part_of_the_first_header(tmp_path):
    # encoding: utf-8 (not utf-8-sig) kept the BOM: "timestamp column 'time' not in header
    # ['\ufefftime', 'Flow']"
    p = write(tmp_path, "\ufefftime;Flow\n2026-01-01T00:00:00;1\n")
    got, _ = flows(p, encoding="utf-8")
    assert got == [1.0]


def test_a_utf8_file_read_as_cp1252_is_an_encoding_error(tmp_path):
    # the BOM read as 'ï»¿' and 'Förder' as 'FÃ¶rder': "mapped column(s) not in header"
    p = write(tmp_path, "\ufefftime;Förder\n2026-01-01T00:00:00;1\n")
    columns = {"Förder": ColumnMap(device_id="pump1", sensor="pressure")}
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p, encoding="cp1252", columns=columns)))
    assert (err.value.source, err.value.line, err.value.field) == (str(p), 1, "encoding")
    assert "UTF-8 byte order mark" in str(err.value) and "'cp1252'" in str(err.value)


def test_a_file_not_in_its_encoding_is_an_error_naming_the_line(tmp_path):
    # a Windows-1252 export read as UTF-8 raised UnicodeDecodeError with a traceback
    p = tmp_path / "export.csv"
    p.write_bytes(b"time;Flow\n2026-01-01T00:00:00;1\n2026-01-01T00:00:01;1\nF\xf6rder;2\n")
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p)))
    assert (err.value.source, err.value.line, err.value.field) == (str(p), 4, "encoding")
    assert "not 'utf-8-sig'" in str(err.value) and "0xf6" in str(err.value)


def test_a_mapped_column_missing_names_it_and_lists_the_header(tmp_path):
    p = write(tmp_path, "time;flow;Pressure\n2026-01-01T00:00:00;1;2\n")
    columns = {**FLOW, "Pressure": ColumnMap(device_id="pump1", sensor="pressure")}
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p, columns=columns)))
    assert (err.value.line, err.value.field) == (1, "columns")
    msg = str(err.value)
    assert "mapped column 'Flow' is not in the header" in msg
    assert "the header's columns: 'time', 'flow', 'Pressure'" in msg
    assert "(did you mean 'flow' for 'Flow'?)" in msg


def test_an_unknown_encoding_is_refused_naming_the_field(tmp_path):
    # open() raised LookupError: 'unknown encoding: latin-9x', with a traceback
    with pytest.raises(ValidationError) as err:
        spec_for(tmp_path / "x.csv", encoding="latin-9x")
    [error] = err.value.errors()
    assert error["loc"] == ("encoding",) and "unknown encoding 'latin-9x'" in error["msg"]


def test_a_header_split_by_another_separator_says_so(tmp_path):
    p = write(tmp_path, "time,Flow\n2026-01-01T00:00:00,1\n")
    with pytest.raises(CsvReplayError) as err:
        list(CsvReplaySource(spec_for(p)))
    assert "one column 'time,Flow'" in str(err.value) and "sep: ','" in str(err.value)
