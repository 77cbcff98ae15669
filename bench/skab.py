"""Benchmark: plantcrew's Monitor and Diagnostic on the shared SKAB files.

Runs the evaluation twice with the Monitor and the root-cause ranking alone (no memory, then
leave-one-out memory) and, with ``--crew``, once more through the whole crew (``plantcrew
eval skab``'s pipeline, ``--jobs`` files at once, default 2). Prints SKAB's outlier metrics (F1,
FAR, MAR over rows 400+, pooled), incidents per file, diagnosis right/wrong, median detection
delay, wall time and the load average, with the command that produced them.

    python bench/skab.py [SKAB_DIR] [--json OUT_PREFIX] [--crew] [--jobs N]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from rich.console import Console

from plantcrew.logs import configure as configure_logs
from plantcrew.scenarios.skab_crew import run_skab_file_crew
from plantcrew.scenarios.skab_eval import FilePipeline, evaluate_skab, render_report, run_skab_file

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT.parent / "shared" / "data" / "skab"


def main(argv: list[str]) -> int:
    json_prefix = argv[argv.index("--json") + 1] if "--json" in argv else None
    jobs = int(argv[argv.index("--jobs") + 1]) if "--jobs" in argv else 2
    values = {json_prefix, str(jobs)}
    args = [a for a in argv if not a.startswith("--") and a not in values]
    data = Path(args[0]) if args else DEFAULT_DIR
    if not data.is_dir():
        print(f"SKAB data not found at {data}")
        return 2
    configure_logs("WARNING")  # the crew's runs log to stderr, warnings only
    console = Console(width=160)
    console.print(f"command: python bench/skab.py {' '.join(argv)}".rstrip())
    runs: list[tuple[str, bool, FilePipeline, int]] = [
        ("monitor-only", False, run_skab_file, 1),
        ("monitor-only", True, run_skab_file, 1),
    ]
    if "--crew" in argv:
        runs.append(("crew", False, run_skab_file_crew, jobs))
    for name, loo, pipeline, n in runs:
        out = f"{json_prefix}-{name}-{'loo' if loo else 'plain'}.json" if json_prefix else None
        cpu0 = time.process_time() + _children_cpu()
        report = evaluate_skab([data], leave_one_out=loo, json_out=out, pipeline=pipeline, jobs=n)
        cpu = time.process_time() + _children_cpu() - cpu0
        render_report(report, console)
        o = report.overall
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        console.print(
            f"figures: pipeline={name} jobs={n} memory={'leave-one-out' if loo else 'none'} "
            f"F1={o.f1:.3f} FAR={o.far:.2f}% MAR={o.mar:.2f}% "
            f"median_delay_s={report.median_delay_s} "
            f"(event emitted: {report.median_report_delay_s}) "
            f"diagnosis={report.diagnosed_right}/{report.diagnosed_total} "
            f"incidents={[f.incidents_opened for f in report.files]} "
            f"wall_s={report.wall_s:.2f} cpu_s={cpu:.1f} load_avg=({load})"
        )
    return 0


def _children_cpu() -> float:
    """CPU seconds of finished worker processes (the ``--jobs`` pool)."""
    t = os.times()
    return t.children_user + t.children_system


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
