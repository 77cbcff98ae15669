"""Run the Monitor's detector on Numenta Anomaly Benchmark files and write NAB results.

NAB (github.com/numenta/NAB) data files are univariate CSVs ``timestamp,value`` under
``data/<category>/<file>.csv``. For a detector named ``<det>`` (no underscore) NAB's scorer
reads ``results/<det>/<category>/<det>_<file>.csv`` with columns
``timestamp,value,anomaly_score``: one row per input row, in input order, score in [0, 1].

Each file gets a fresh :class:`DeviceMonitor` over one sensor ``value``. NAB lets a detector
learn during the first 15 % of a file (its probationary period), so that is the calibration
length; the monitor's times and rates, designed for readings at 1 Hz, are scaled by the
file's median sampling period (:meth:`MonitorConfig.for_sampling_period`) so every filter and
wait spans the same number of readings on any file.
"""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from datetime import datetime
from pathlib import Path

from plantcrew.detect.config import MonitorConfig
from plantcrew.detect.monitor import DeviceMonitor, ReadingVerdict
from plantcrew.errors import ConfigError
from plantcrew.messages import Reading, TelemetryBatch

PROBATION = 0.15


def check_detector_name(name: str) -> str:
    """``name`` if it can name NAB results (``results/<name>/<category>/<name>_<file>.csv``).

    Raises ConfigError when it has an underscore (NAB's scorer takes the detector's name
    from a results file's name up to its first '_') or is not one folder name (empty,
    ``.``, ``..``, a path separator).
    """
    if "_" in name:
        raise ConfigError(
            f"NAB detector name {name!r}: may not contain '_' (NAB's results files are "
            "named <detector>_<file>.csv)"
        )
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ConfigError(
            f"NAB detector name {name!r}: must be one folder name "
            "(results/<detector>/<category>/<detector>_<file>.csv)"
        )
    return name


def _read_rows(path: Path) -> list[list[str]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise ConfigError(
            "not a text CSV file (cannot decode as UTF-8)", source=str(path), line=1
        ) from None
    if not rows or [h.strip() for h in rows[0][:2]] != ["timestamp", "value"]:
        raise ConfigError("expected a NAB header 'timestamp,value'", source=str(path), line=1)
    return rows[1:]


def _seconds(raw: str) -> float | None:
    try:
        dt = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    return dt.timestamp() if dt.tzinfo else (dt - datetime(1970, 1, 1)).total_seconds()


def _value(raw: str) -> float | None:
    try:
        v = float(raw)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def replay_nab_file(path: Path, config: MonitorConfig | None = None) -> list[ReadingVerdict | None]:
    """The Monitor's verdict on each data row of the NAB file at ``path`` (None for a row
    with a bad timestamp or value, or one older than the last, which is not scored).

    ``config`` (default: MonitorConfig()) is for 1 Hz readings: it calibrates on the
    file's probation period, its times and rates scaled by the file's median sampling period.
    Raises ConfigError for a file that is not NAB's.
    """
    base = config or MonitorConfig()
    rows = _read_rows(path)
    parsed = [(_seconds(r[0]), _value(r[1])) if len(r) >= 2 else (None, None) for r in rows]
    times = [t for t, v in parsed if t is not None and v is not None]
    steps = [b - a for a, b in itertools.pairwise(times) if b > a]
    period = statistics.median(steps) if steps else 1.0
    calibration = max(30, int(PROBATION * len(rows)))
    config = base.for_sampling_period(period).model_copy(
        update={
            "calibration_readings": calibration,
            "debounce_readings": min(base.debounce_readings, calibration - 1),
        }
    )
    monitor = DeviceMonitor("nab", config)
    verdicts: list[ReadingVerdict | None] = [None] * len(rows)
    t0 = times[0] if times else 0.0
    last = t0
    for i, (t, v) in enumerate(parsed):
        if t is None or v is None or t < last:
            continue
        last = t
        reading = Reading(device_id="nab", sensor="value", value=v, ts=t - t0)
        verdicts[i] = monitor.update(TelemetryBatch(device_id="nab", readings=[reading], row=i))
    return verdicts


def score_nab_file(path: Path, config: MonitorConfig | None = None) -> list[float]:
    """Anomaly scores in [0, 1], one per data row of the NAB file at ``path``
    (:func:`replay_nab_file`'s verdicts; a row not scored gets 0).

    Raises ConfigError for a file that is not NAB's.
    """
    return [v.score if v is not None else 0.0 for v in replay_nab_file(path, config)]


def detect_nab(
    data_dir: Path | str,
    out_dir: Path | str,
    detector: str = "plantcrew",
    config: MonitorConfig | None = None,
) -> list[Path]:
    """Score every ``<category>/<file>.csv`` under ``data_dir``; write NAB results files.

    ``detector`` names the results, not the detector (always the Monitor's): returns the
    written paths (``out_dir/<detector>/<category>/<detector>_<file>.csv``).
    Raises ConfigError, before writing anything, for a name that cannot name them
    (:func:`check_detector_name`), a missing folder, a folder with no
    ``<category>/<file>.csv`` (naming its ``data`` subfolder when it has one, as NAB's own
    root does) or a file that is not NAB's.
    """
    check_detector_name(detector)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise ConfigError("no such folder", source=str(data_dir))
    paths = sorted(p for p in data_dir.glob("*/*.csv") if p.is_file())
    if not paths:
        hint = data_dir / "data"
        raise ConfigError(
            "no <category>/<file>.csv in this folder"
            + (f"; did you mean {hint} (NAB's data folder)?" if hint.is_dir() else ""),
            source=str(data_dir),
        )
    written = []
    for path in paths:
        rows = _read_rows(path)
        scores = score_nab_file(path, config)
        target = out_dir / detector / path.parent.name / f"{detector}_{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["timestamp", "value", "anomaly_score"])
            for row, score in zip(rows, scores, strict=True):
                writer.writerow([row[0], row[1] if len(row) > 1 else "", f"{score:.6f}"])
        written.append(target)
    return written
