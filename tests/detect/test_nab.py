"""NAB results writer: format, one row per input row, scores in [0, 1]."""

from __future__ import annotations

import csv
import math
from datetime import datetime, timedelta

import pytest
from typer.testing import CliRunner

from plantcrew.cli import app
from plantcrew.detect import detect_nab
from plantcrew.detect.nab import score_nab_file
from plantcrew.errors import ConfigError


def write_series(path, n=600, spike_at=450, step_s=1):
    """A sine with a 20-row spike at ``spike_at``, one row every ``step_s`` seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        for i in range(n):
            v = 10 + math.sin(i / 7.0) + (25 if spike_at <= i < spike_at + 20 else 0)
            w.writerow([datetime(2020, 1, 1) + timedelta(seconds=i * step_s), v])


def test_writes_nab_results_layout(tmp_path):
    data = tmp_path / "data"
    write_series(data / "artificialWithAnomaly" / "spike.csv")
    written = detect_nab(data, tmp_path / "results")
    assert written == [tmp_path / "results/plantcrew/artificialWithAnomaly/plantcrew_spike.csv"]
    with written[0].open() as fh:
        rows = list(csv.DictReader(fh))
    with (data / "artificialWithAnomaly" / "spike.csv").open() as fh:
        src = list(csv.DictReader(fh))
    assert [r["timestamp"] for r in rows] == [r["timestamp"] for r in src]
    scores = [float(r["anomaly_score"]) for r in rows]
    assert all(0 <= s <= 1 for s in scores)
    assert max(scores[450:470]) > 0.5 > max(scores[100:440])


def test_rejects_bad_detector_and_folder(tmp_path):
    with pytest.raises(ConfigError):
        detect_nab(tmp_path, tmp_path / "r", detector="my_det")
    with pytest.raises(ConfigError):
        detect_nab(tmp_path / "missing", tmp_path / "r")


def test_scores_do_not_depend_on_the_sampling_period(tmp_path):
    # Every time of the monitor is scaled by the file's sampling period, including gap_s
    # (the pause that interrupts calibration): on 5-minute data an unscaled 60 s gap made
    # every sample spacing a pause, so an early detector fitted on the first 60 readings
    # scored the rest of the probation period and the calibration lost them.
    each_second, five_minutes = tmp_path / "1s.csv", tmp_path / "300s.csv"
    write_series(each_second)
    write_series(five_minutes, step_s=300)
    assert score_nab_file(five_minutes) == pytest.approx(score_nab_file(each_second), abs=1e-9)


def test_detector_names_the_results_folder_and_file_prefix(tmp_path):
    # --detector names the results (NAB's results/<det>/<category>/<det>_<file>.csv), the
    # detector being plantcrew's; any name but 'plantcrew' was refused as unknown.
    write_series(tmp_path / "data" / "realTweets" / "x.csv")
    res = CliRunner().invoke(
        app, ["detect", str(tmp_path / "data"), "--out", str(tmp_path / "r"), "--detector", "mine"]
    )
    assert res.exit_code == 0, res.stdout + res.stderr
    assert (tmp_path / "r" / "mine" / "realTweets" / "mine_x.csv").is_file()


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("my_det", "may not contain '_'"),
        ("", "one folder name"),
        ("a/b", "one folder name"),
        ("..", "one folder name"),
    ],
)
def test_a_detector_name_that_cannot_name_nab_results_is_refused(tmp_path, name, says):
    write_series(tmp_path / "data" / "realTweets" / "x.csv")
    res = CliRunner().invoke(
        app, ["detect", str(tmp_path / "data"), "--out", str(tmp_path / "r"), "--detector", name]
    )
    assert res.exit_code == 2, res.stdout + res.stderr
    assert f"NAB detector name {name!r}" in res.stderr and says in res.stderr
    assert not (tmp_path / "r").exists()
