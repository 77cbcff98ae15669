"""Benchmark: plantcrew's Monitor and Diagnostic on the shared SKAB files.

Runs the evaluation twice (no memory, then leave-one-out memory) and prints SKAB's outlier
metrics (F1, FAR, MAR over rows 400+, pooled), incidents per file, diagnosis right/wrong,
median detection delay and wall time, with the command that produced them.

    python bench/skab.py [SKAB_DIR] [--json OUT_PREFIX]
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from plantcrew.scenarios.skab_eval import evaluate_skab, render_report

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT.parent / "shared" / "data" / "skab"


def main(argv: list[str]) -> int:
    json_prefix = argv[argv.index("--json") + 1] if "--json" in argv else None
    args = [a for a in argv if not a.startswith("--") and a != json_prefix]
    data = Path(args[0]) if args else DEFAULT_DIR
    if not data.is_dir():
        print(f"SKAB data not found at {data}")
        return 2
    console = Console(width=160)
    console.print(f"command: python bench/skab.py {' '.join(argv)}".rstrip())
    for loo in (False, True):
        out = f"{json_prefix}-{'loo' if loo else 'plain'}.json" if json_prefix else None
        report = evaluate_skab([data], leave_one_out=loo, json_out=out)
        render_report(report, console)
        o = report.overall
        console.print(
            f"figures: memory={'leave-one-out' if loo else 'none'} F1={o.f1:.3f} "
            f"FAR={o.far:.2f}% MAR={o.mar:.2f}% median_delay_s={report.median_delay_s} "
            f"(event emitted: {report.median_report_delay_s}) "
            f"diagnosis={report.diagnosed_right}/{report.diagnosed_total} "
            f"incidents={[f.incidents_opened for f in report.files]} wall_s={report.wall_s:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
