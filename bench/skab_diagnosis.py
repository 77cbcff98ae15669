"""Benchmark: the Diagnostic's root cause on SKAB across evidence windows (detector-free).

The Monitor decides when an incident opens and which early window its deviations summarise;
this benchmark takes that out of the picture to show how robust the diagnosis is to it. Each
file is replayed through a DeviceMonitor (calibrated on rows 0-399); for every offset ``k``
(seconds after the fault's first changepoint in the test rows) the evidence is each sensor's
strongest smoothed deviation over ``[cp + k, cp + k + window]`` (as the Monitor's early
summary keeps it). Each cell is diagnosed with no memory and leave-one-out (lessons from the
other files' evidence at the same offset, with their true root cause).

    python bench/skab_diagnosis.py [SKAB_DIR] [--offsets 0,5,10,20,30] [--window 20]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from plantcrew.detect import (
    DeviceMonitor,
    Lesson,
    MonitorConfig,
    default_signatures_path,
    load_signatures,
    rank_root_causes,
    signature_of,
)
from plantcrew.messages import Deviation
from plantcrew.plant.csv_replay import CsvReplaySource, skab_preset
from plantcrew.scenarios.skab_eval import TEST_START_ROW, expand_paths, skab_truth

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT.parent / "shared" / "data" / "skab"


def first_changepoint(path: Path) -> int | None:
    """The first changepoint row at or after the test rows (0-based data row), or None."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = [h.strip() for h in lines[0].split(";")]
    if "changepoint" not in header:
        return None
    ci = header.index("changepoint")
    for i, line in enumerate(lines[1:]):
        fields = line.split(";")
        if i >= TEST_START_ROW and float(fields[ci]) >= 0.5:
            return i
    return None


def evidence(path: Path, starts: list[int], window: int) -> dict[int, list[Deviation]]:
    """Per start row: each sensor's strongest smoothed deviation over ``window`` rows."""
    monitor = DeviceMonitor("pump1", MonitorConfig())
    best: dict[int, dict[str, Deviation]] = {s: {} for s in starts}
    for row, batch in enumerate(CsvReplaySource(skab_preset(path))):
        monitor.update(batch)
        for s in starts:
            if s <= row < s + window:
                for d in monitor.deviations():
                    if d.sensor not in best[s] or abs(d.z) > abs(best[s][d.sensor].z):
                        best[s][d.sensor] = d
    return {s: list(b.values()) for s, b in best.items()}


def main(argv: list[str]) -> int:
    def opt(name: str, default: str) -> str:
        return argv[argv.index(name) + 1] if name in argv else default

    offsets = [int(x) for x in opt("--offsets", "0,5,10,15,20,30,45").split(",")]
    window = int(opt("--window", "20"))
    values = {opt("--offsets", ""), opt("--window", "")}
    args = [a for a in argv if not a.startswith("--") and a not in values]
    data = Path(args[0]) if args else DEFAULT_DIR
    if not data.is_dir():
        print(f"SKAB data not found at {data}")
        return 2
    started = time.perf_counter()
    book = load_signatures(default_signatures_path())
    files = [p for p in expand_paths([data]) if skab_truth(p) and first_changepoint(p)]
    ev: dict[str, dict[int, list[Deviation]]] = {}
    for p in files:
        cp = first_changepoint(p)
        assert cp is not None
        got = evidence(p, [cp + k for k in offsets], window)
        ev[str(p)] = {k: got[cp + k] for k in offsets}
    print(f"command: python bench/skab_diagnosis.py {' '.join(argv)}".rstrip())
    print(f"evidence window {window} s starting k s after the first test-row changepoint")
    head = "".join(f"{'k=' + str(k):>11}" for k in offsets)
    print(f"{'file':<14}{'truth':<24}{head}   (no memory / leave-one-out)")
    right = {k: [0, 0] for k in offsets}
    for p in files:
        truth = skab_truth(p)
        cells = []
        for k in offsets:
            plain = rank_root_causes(ev[str(p)][k], book, [])[0].root_cause
            lessons = [
                Lesson(root_cause=skab_truth(q) or "", signature=signature_of(ev[str(q)][k]))
                for q in files
                if q != p and signature_of(ev[str(q)][k])
            ]
            loo = rank_root_causes(ev[str(p)][k], book, lessons)[0].root_cause
            right[k][0] += plain == truth
            right[k][1] += loo == truth
            cells.append(
                f"{'✓' if plain == truth else '✗'}{'✓' if loo == truth else '✗'} {plain[:7]:>7}"
            )
        print(f"{p.parent.name + '/' + p.name:<14}{truth:<24}" + "".join(f"{c:>11}" for c in cells))
    total = len(files)
    print(f"{'right':<38}" + "".join(f"{f'{a}/{b} of {total}':>11}" for a, b in right.values()))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"wall_s={time.perf_counter() - started:.1f} load_average={load}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
