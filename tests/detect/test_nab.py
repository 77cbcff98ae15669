"""NAB results writer: format, one row per input row, scores in [0, 1]."""

from __future__ import annotations

import csv
import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from typer.testing import CliRunner

from plantcrew.cli import app
from plantcrew.detect import detect_nab
from plantcrew.detect.config import MonitorConfig
from plantcrew.detect.nab import replay_nab_file, score_nab_file
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


def write_step(path, step_s, n=600, step_at=450, step=2.5):
    """Seeded white noise (sd 1) around 10 that steps up by ``step`` at row ``step_at``,
    one row every ``step_s`` seconds."""
    rng = np.random.default_rng(3)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        for i in range(n):
            v = 10 + rng.standard_normal() + (step if i >= step_at else 0)
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


@pytest.mark.parametrize(
    "config",
    [MonitorConfig(), MonitorConfig(thermal_sensors=["value"])],
    ids=["fast", "thermal"],
)
def test_verdicts_do_not_depend_on_the_sampling_period(tmp_path, config):
    # Not only the scores: the change alarms' flags (change_tau_s, the CUSUM reference's time
    # constant, was left at 120 s, so on 5-minute data the reference was the last reading
    # and a 2.5 sd step never flagged) and a thermal sensor's scores (thermal_drift_per_s, a
    # rate, was left per second, so its wander floor was 300 times wider).
    each_second, five_minutes = tmp_path / "1s.csv", tmp_path / "300s.csv"
    write_step(each_second, step_s=1)
    write_step(five_minutes, step_s=300)

    def seen(path):
        return [
            (v.score, v.flag, v.change, v.state) if v else None
            for v in replay_nab_file(path, config)
        ]

    fast, slow = seen(each_second), seen(five_minutes)
    assert [v[1:] if v else None for v in slow] == [v[1:] if v else None for v in fast]
    assert [v[0] if v else None for v in slow] == pytest.approx(
        [v[0] if v else None for v in fast], abs=1e-9
    )
    if "value" not in config.thermal_sensors:  # change alarms watch fast sensors only
        assert any(v and v[2] for v in fast), "no change alarm: the test would not see one"


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
