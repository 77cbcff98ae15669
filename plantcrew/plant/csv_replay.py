"""Telemetry from a CSV export (a historian dump, a benchmark file), replayed row by row.

:class:`CsvSourceSpec` says how to read the file: separator, timestamp column and format, and
which column is which sensor of which device, in which unit. :class:`CsvReplaySource` yields
one :class:`~plantcrew.messages.TelemetryBatch` per device per data row, in file order, with
``ts`` the seconds since the first row's timestamp and ``row`` the 0-based data row index.
:meth:`CsvReplaySource.replay` paces them at plant speed, at a multiple of it, or as fast as
possible, through a ``sleep`` the caller chooses (``asyncio.sleep``, or a simulated clock's).

A row with a bad value or timestamp, or a timestamp before the previous row's (a replay's
time never runs backwards; equal timestamps are kept), is reported in
:attr:`CsvReplaySource.problems` (file, line, row, column, reason) and skipped;
:attr:`CsvReplaySource.skipped` counts them. These raise :class:`CsvReplayError` (its
``field`` names the spec field at fault): a missing file; a mapped column absent from the
header, or heading two columns or more (:mod:`plantcrew.plant.csv_header`; names match
without surrounding whitespace or a BOM); bytes the ``encoding`` cannot decode (checked
before the first row); a ``timestamp_format`` that matches no row of the file; a value
grouped by a thousands mark the layout does not name (``1,234.5`` without
``thousands: ","``) before any row was replayed (after one, it is a bad row whose reason
names the mark); with ``thousands`` equal to ``sep``, a row with more fields than the header
(field ``thousands``): a grouped value not quoted splits in two (``1,234.5`` reads as ``1``
and ``234.5``), and skipping such rows would drop every value of a thousand or more, and
only those.

Naive timestamps are UTC unless ``timezone`` names an IANA zone: they are then local times of
that zone, converted to UTC. In the autumn hour that repeats, a time is taken in its first
occurrence unless that would go back in time from the previous row, then in its second
(``fold=1``): a local-time export across the change replays in order. A local time that does
not exist (the spring gap) is a bad row.

:func:`skab_preset` maps the Skoltech Anomaly Benchmark's pump files (github.com/waico/SKAB:
``;``-separated, CRLF, ``datetime`` as ``%Y-%m-%d %H:%M:%S``) to the canonical pump sensors.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from plantcrew.errors import ConfigError
from plantcrew.messages import Reading, TelemetryBatch
from plantcrew.plant.csv_header import LayoutMismatch, check_encoding, column_index
from plantcrew.plant.csv_numbers import NotANumber, NumberFormat

Speed = Literal["realtime", "max"] | float
log = structlog.get_logger("plantcrew.plant.csv_replay")


class CsvReplayError(ConfigError):
    """A CSV file cannot be replayed as specified (missing file or column, bad header)."""


class ColumnMap(BaseModel):
    """Where one CSV column goes: ``device_id``'s ``sensor``, measured in ``unit``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str = Field(min_length=1)
    sensor: str = Field(min_length=1)
    unit: str = ""


class CsvLayout(BaseModel):
    """How a CSV file is laid out: the fields of :class:`CsvSourceSpec` that are not the file
    or the pace (a scenario's ``telemetry:`` takes the same ones).

    ``sep``: the field separator; ``decimal``: the decimal mark of the values (``","`` for a
    decimal comma, e.g. German or French exports; it cannot be the separator, and a value with
    a ``.`` in it is then a bad value, not a guess). ``thousands``: the mark between groups of
    three digits (``","`` in ``1,234.5``, ``"."`` in ``1.234,5``, ``" "``; default none); one
    character, not a digit, letter or sign, not the decimal mark. It may be the separator when
    the file quotes its grouped values (``2026-01-01 00:00:00,"1,234.5",17.2``, the usual US
    export): the CSV reader unquotes them; a row with more fields than the header is then
    refused (see module doc). Values are read strictly (:mod:`plantcrew.plant.csv_numbers`).
    ``timestamp_format`` is a ``strptime`` format, ``"iso"`` (ISO 8601) or ``"epoch"``
    (seconds since 1970, UTC); without ``timestamp_column`` rows are ``sample_period_s``
    seconds apart. ``timezone``: the IANA zone (``"Europe/Berlin"``) of naive timestamps (see
    module doc; default UTC). ``columns`` maps CSV column names to sensors; other columns are
    ignored.

    Raises ``pydantic.ValidationError`` for a separator used as the decimal mark, a thousands
    mark that is the decimal mark, a digit, a letter or a sign, an unknown time zone, or a time
    zone for epoch timestamps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sep: str = Field(",", min_length=1, max_length=1)
    decimal: Literal[".", ","] = "."
    thousands: str | None = Field(None, min_length=1, max_length=1)
    encoding: str = "utf-8-sig"
    timestamp_column: str | None = None
    timestamp_format: str = Field("iso", min_length=1)
    timezone: str | None = None
    sample_period_s: float = Field(1.0, gt=0)
    columns: dict[str, ColumnMap] = Field(min_length=1)

    @field_validator("decimal")
    @classmethod
    def _not_the_separator(cls, v: str, info: ValidationInfo) -> str:
        if v == info.data.get("sep"):
            raise ValueError(f"the decimal mark {v!r} cannot also be the separator (sep)")
        return v

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r} (e.g. 'utf-8-sig', 'cp1252')") from None
        return v

    @field_validator("thousands")
    @classmethod
    def _a_group_mark(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        if v.isalnum() or v in "+-":
            raise ValueError(f"the thousands mark {v!r} cannot be a digit, a letter or a sign")
        if v == info.data.get("decimal"):
            raise ValueError(
                f"the thousands mark {v!r} cannot also be the decimal mark (decimal); it may be "
                "the separator (sep) if the file quotes its grouped values"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        if info.data.get("timestamp_format") == "epoch":
            raise ValueError("epoch timestamps are UTC: a timezone applies to local times only")
        zone_of(v)
        return v


def zone_of(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``"Europe/Berlin"``); ValueError naming it if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name such as 'Europe/Berlin' or 'UTC')"
        ) from None


def local_seconds(naive: datetime, zone: ZoneInfo, after: float | None = None) -> float:
    """Seconds since 1970 (UTC) of the wall time ``naive`` in ``zone``.

    A wall time that occurs twice (the autumn DST change) is its first occurrence, unless that
    is before ``after`` (the previous row's seconds) and the second is not: then the second.
    Raises ValueError for a wall time that does not exist in ``zone`` (the spring gap).
    """
    first = naive.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise ValueError(f"local time {naive} does not exist in {zone.key} (a DST gap)")
    t = first.timestamp()
    if after is not None and t < after:
        second = naive.replace(tzinfo=zone, fold=1).timestamp()
        if second > t:
            return second
    return t


class CsvSourceSpec(CsvLayout):
    """How to read and replay one CSV file: ``path``, the layout (:class:`CsvLayout`), and
    ``speed``: ``"realtime"`` (plant speed), a float multiple of it (10.0 = ten times faster),
    or ``"max"`` (no waiting).
    """

    path: Path
    speed: Speed = "max"

    @field_validator("speed")
    @classmethod
    def _positive(cls, v: Speed) -> Speed:
        if isinstance(v, float) and not (v > 0 and math.isfinite(v)):
            raise ValueError("a speed multiple must be a positive number")
        return v


@dataclass(frozen=True)
class CsvRowProblem:
    """One skipped row: ``row`` is the 0-based data row index, ``line`` the file line,
    ``raw`` the row's fields joined by the separator (a field holding the separator or a
    quote quoted, as a CSV writer would)."""

    path: str
    row: int
    line: int
    column: str | None
    reason: str
    raw: str = ""

    def __str__(self) -> str:
        col = f" column {self.column!r}" if self.column else ""
        return f"{self.path}:{self.line} (row {self.row}){col}: {self.reason}"


class CsvReplaySource:
    """Iterate a CSV file as telemetry; see the module docstring for pacing and errors.

    After (or during) an iteration: ``problems`` (the rows skipped), ``warnings`` (about the
    header: a column name that is not mapped and heads two columns), ``rows_read`` and
    ``origin``, the seconds since 1970 (UTC) of the first replayed row's timestamp (the
    batches' ``ts`` count from it; 0 without a timestamp column).
    """

    def __init__(self, spec: CsvSourceSpec) -> None:
        self.spec = spec
        self.problems: list[CsvRowProblem] = []
        self.warnings: list[str] = []
        self.rows_read = 0
        self.origin: float | None = None
        self._zone = zone_of(spec.timezone) if spec.timezone else None
        self._numbers = NumberFormat(spec.decimal, spec.thousands, spec.sep)

    @property
    def skipped(self) -> int:
        """How many data rows were skipped as bad."""
        return len(self.problems)

    def __iter__(self) -> Iterator[TelemetryBatch]:
        spec = self.spec
        self.problems, self.warnings, self.rows_read, self.origin = [], [], 0, None
        src = str(spec.path)
        try:
            check_encoding(spec.path, spec.encoding)
            fh = spec.path.open(encoding=spec.encoding, newline="")
        except OSError as exc:
            raise CsvReplayError(f"cannot open: {exc.strerror or exc}", source=src) from None
        except LayoutMismatch as exc:
            raise CsvReplayError(exc.reason, source=src, line=exc.line, field=exc.field) from None
        with fh:
            reader = csv.reader(fh, delimiter=spec.sep)
            header = next(reader, None)
            if header is None:
                raise CsvReplayError("empty file (no header)", source=src, line=1)
            wanted = dict.fromkeys(spec.columns, "columns")
            if spec.timestamp_column is not None:
                wanted[spec.timestamp_column] = "timestamp_column"
            try:
                index, warnings = column_index(header, wanted, spec.sep)
            except LayoutMismatch as exc:
                raise CsvReplayError(exc.reason, source=src, line=1, field=exc.field) from None
            for warning in warnings:
                self.warnings.append(f"{src}:1: {warning}")
                log.warning("csv header", warning=warning, path=src)
            cols = [(index[name], name, m) for name, m in spec.columns.items()]
            ts_idx = None if spec.timestamp_column is None else index[spec.timestamp_column]
            t0: float | None = None
            replayed = False  # a row was: a grouped value is a bad row, no longer the layout
            last: tuple[float, str] | None = None  # the latest row's time and its text
            unparsed: tuple[int, str] | None = None  # the first bad timestamp's line, reason
            end = reader.line_num  # file lines read so far (a quoted field may span lines)
            for row, fields in enumerate(reader):
                line, end = end + 1, reader.line_num  # the row's first line
                self.rows_read += 1
                if not fields or all(not f.strip() for f in fields):
                    self._problem(row, line, None, "empty line", fields)
                    continue
                if len(fields) > len(header) and spec.thousands == spec.sep:
                    raise CsvReplayError(
                        self._split_group(len(fields), len(header)),
                        source=src,
                        line=line,
                        field="thousands",
                    )
                if len(fields) != len(header):
                    self._problem(
                        row, line, None, f"{len(fields)} fields, header has {len(header)}", fields
                    )
                    continue
                stamp = "" if ts_idx is None else fields[ts_idx].strip()
                if ts_idx is None:
                    t = row * spec.sample_period_s
                else:
                    try:
                        t = self._parse_ts(stamp, None if last is None else last[0])
                    except ValueError as exc:
                        self._problem(row, line, spec.timestamp_column, str(exc), fields)
                        if unparsed is None:
                            unparsed = (line, str(exc))
                        continue
                if t0 is None:
                    t0 = self.origin = t
                if last is not None and t < last[0]:
                    self._problem(
                        row,
                        line,
                        spec.timestamp_column,
                        f"timestamp {stamp!r} is before the previous row's {last[1]!r} "
                        "(a replay's time never runs backwards)",
                        fields,
                    )
                    continue
                last = (t, stamp)
                batches = self._row_batches(row, line, fields, cols, t - t0, replayed)
                if batches is not None:
                    replayed = True
                    yield from batches
            if t0 is None and unparsed is not None:
                raise CsvReplayError(
                    f"timestamp format {spec.timestamp_format!r} matches no row of column "
                    f"{spec.timestamp_column!r}; the first: {unparsed[1]}",
                    source=src,
                    line=unparsed[0],
                    field="timestamp_format",
                )

    def _row_batches(
        self,
        row: int,
        line: int,
        fields: list[str],
        cols: list[tuple[int, str, ColumnMap]],
        ts: float,
        replayed: bool,
    ) -> list[TelemetryBatch] | None:
        """The row's batches, or None if a value is bad (recorded as a problem). Raises
        CsvReplayError for a value grouped by a mark the layout does not name when no row
        was ``replayed`` yet: the layout, not the row, is wrong."""
        per_device: dict[str, list[Reading]] = {}
        for i, name, m in cols:
            raw = fields[i].strip()
            try:
                value = self._numbers.parse(raw)
            except NotANumber as exc:
                if exc.grouped_by is not None and not replayed:
                    raise CsvReplayError(
                        f"column {name!r}: {exc.reason.removeprefix('not a number: ')}; "
                        "no row before it could be replayed, so the layout is wrong, not the row",
                        source=str(self.spec.path),
                        line=line,
                        field="thousands",
                    ) from None
                self._problem(row, line, name, exc.reason, fields)
                return None
            if not math.isfinite(value):
                self._problem(row, line, name, f"not finite: {raw!r}", fields)
                return None
            per_device.setdefault(m.device_id, []).append(
                Reading(device_id=m.device_id, sensor=m.sensor, value=value, unit=m.unit, ts=ts)
            )
        return [TelemetryBatch(device_id=d, readings=rs, row=row) for d, rs in per_device.items()]

    def _split_group(self, got: int, want: int) -> str:
        """Why a row of ``got`` fields under ``want`` headers cannot be read when the thousands
        mark is the separator."""
        t, d = self.spec.sep, self.spec.decimal
        return (
            f"{got} fields, header has {want}: with thousands {t!r}, also the separator, a "
            f'grouped value must be quoted ("1{t}234{d}5"); unquoted, it splits into more '
            "columns. Export with grouped values quoted, or without grouping"
        )

    def _parse_ts(self, raw: str, after: float | None) -> float:
        """Seconds since 1970 (UTC) of timestamp ``raw``; ``after``: the previous row's."""
        fmt = self.spec.timestamp_format
        raw = raw.strip()
        if fmt == "epoch":
            try:
                value = self._numbers.parse(raw)
            except NotANumber:
                raise ValueError(f"timestamp {raw!r} is not epoch seconds") from None
            if not math.isfinite(value):
                raise ValueError(f"bad epoch timestamp {raw!r}")
            return value
        try:
            dt = datetime.fromisoformat(raw) if fmt == "iso" else datetime.strptime(raw, fmt)
        except ValueError:
            raise ValueError(f"timestamp {raw!r} does not match format {fmt!r}") from None
        if dt.tzinfo is not None:
            return dt.timestamp()
        if self._zone is not None:
            return local_seconds(dt, self._zone, after)
        return (dt - datetime(1970, 1, 1)).total_seconds()

    def _problem(
        self, row: int, line: int, column: str | None, reason: str, fields: list[str]
    ) -> None:
        out = io.StringIO()  # quoted as in the file: a field may hold the separator
        csv.writer(out, delimiter=self.spec.sep, lineterminator="").writerow(fields)
        raw = out.getvalue()
        self.problems.append(CsvRowProblem(str(self.spec.path), row, line, column, reason, raw))

    async def replay(
        self,
        emit: Callable[[TelemetryBatch], Awaitable[None]],
        *,
        sleep: Callable[[float], Awaitable[None]],
    ) -> int:
        """Send every batch to ``emit`` paced by ``spec.speed``; returns how many were sent.

        Waits ``Δts / multiple`` between rows through ``sleep`` (``"realtime"`` = multiple 1);
        ``"max"`` calls ``sleep(0)`` only, so other tasks still run.
        """
        multiple = 1.0 if self.spec.speed == "realtime" else self.spec.speed
        prev: float | None = None
        sent = 0
        for batch in self:
            ts = batch.readings[0].ts
            if multiple == "max" or prev is None:
                await sleep(0)
            elif ts > prev:
                await sleep((ts - prev) / float(multiple))
            prev = ts
            await emit(batch)
            sent += 1
        return sent


SKAB_COLUMNS: dict[str, tuple[str, str]] = {
    "Accelerometer1RMS": ("vibration_1", "g"),
    "Accelerometer2RMS": ("vibration_2", "g"),
    "Current": ("current", "A"),
    "Pressure": ("pressure", "bar"),
    "Temperature": ("motor_temperature", "°C"),
    "Thermocouple": ("fluid_temperature", "°C"),
    "Voltage": ("voltage", "V"),
    "Volume Flow RateRMS": ("flow_rate", "L/min"),
}


def skab_layout(device_id: str = "pump1") -> dict[str, Any]:
    """The :class:`CsvLayout` fields of a SKAB file: ``;``-separated, ``datetime`` column,
    eight pump sensors of ``device_id``. The ``anomaly`` and ``changepoint`` label columns are
    not telemetry and are not read."""
    return {
        "sep": ";",
        "timestamp_column": "datetime",
        "timestamp_format": "%Y-%m-%d %H:%M:%S",
        "columns": {
            col: ColumnMap(device_id=device_id, sensor=sensor, unit=unit)
            for col, (sensor, unit) in SKAB_COLUMNS.items()
        },
    }


PRESETS: dict[str, Callable[..., dict[str, Any]]] = {"skab": skab_layout}
"""Named layouts (the :class:`CsvLayout` fields as a dict): called with the device id of its
columns, or with nothing for the preset's own; a scenario's ``telemetry: {preset: NAME}``."""


def skab_preset(
    path: Path | str, *, device_id: str = "pump1", speed: Speed = "max"
) -> CsvSourceSpec:
    """The spec of one SKAB file (:func:`skab_layout`), replayed at ``speed``."""
    return CsvSourceSpec(path=Path(path), speed=speed, **skab_layout(device_id))
