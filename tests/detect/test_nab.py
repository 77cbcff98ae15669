"""NAB results writer: format, one row per input row, scores in [0, 1]."""

from __future__ import annotations

import csv
import math

import pytest

from plantcrew.detect import detect_nab
from plantcrew.errors import ConfigError


def write_series(path, n=600, spike_at=450):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        for i in range(n):
            v = 10 + math.sin(i / 7.0) + (25 if spike_at <= i < spike_at + 20 else 0)
            w.writerow([f"2020-01-01 {i // 60 // 60:02d}:{i // 60 % 60:02d}:{i % 60:02d}", v])


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
