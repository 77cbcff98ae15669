"""``plantcrew eval skab`` shows its progress lines, its warnings and its table, not the crews'
info logs: the crews it runs log at warning level and above, in its own process (one file, or
``--jobs 1``) and in its worker processes (``--jobs 2``); their warnings still show.

Before, the crews' info lines (``[info ] every capability heard agent=reviewer-1 ...``) came
between the progress lines: the command logged at PLANTCREW_LOG_LEVEL (INFO), and so did the
workers it forked.

The real command in a subprocess on SKAB files of the shared data, one of them with a bad
reading (a crew warning: the row is dead-lettered), PLANTCREW_LOG_LEVEL unset; and the worker
pool under the ``spawn`` start method (Python 3.14's default on Linux is ``forkserver``),
whose workers inherit nothing: before, they logged every level, to stdout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from tests.conftest import ROOT, require_shared_data

RUN_S = 300.0  # two small files through the crew, on a loaded 2-core machine
PROGRESS = re.compile(r"^\[\d/\d\] skab/\d+\.csv done \(\d+ s\)$")
OWN_WARNING = re.compile(r"^warning: no root-cause truth for ")
CREW_WARNING = re.compile(r"^\S+Z \[warning\s*\] ")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """skab/2.csv, whose row 599 has 'n/a' for a temperature, and skab/14.csv as it is."""
    src = require_shared_data() / "skab" / "other"
    dest = tmp_path / "skab"
    dest.mkdir()
    lines = (src / "2.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    fields = lines[600].split(";")
    fields[5] = "n/a"  # Temperature
    lines[600] = ";".join(fields)
    (dest / "2.csv").write_text("".join(lines), encoding="utf-8")
    shutil.copy(src / "14.csv", dest / "14.csv")
    return dest


@pytest.mark.parametrize(
    ("names", "jobs"),
    [(["2.csv"], "1"), (["2.csv", "14.csv"], "2")],
    ids=["in its own process", "in worker processes"],
)
def test_the_crews_info_logs_stay_off_the_terminal(
    folder: Path, names: list[str], jobs: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PLANTCREW_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-m", "plantcrew", "eval", "skab", "--jobs", jobs,
         *(str(folder / name) for name in names)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    shown = [
        line
        for line in lines
        if not (PROGRESS.match(line) or OWN_WARNING.match(line) or CREW_WARNING.match(line))
    ]
    assert shown == [], done.stderr[-3000:]
    assert "every capability heard" not in done.stderr + done.stdout
    assert any(CREW_WARNING.match(line) and "csv row dead-lettered" in line for line in lines)
    assert sum(bool(PROGRESS.match(line)) for line in lines) == len(names)
    assert "SKAB outlier detection" in done.stdout
    assert "[info" not in done.stdout


SPAWNED = """
import multiprocessing
from plantcrew.logs import at_least, configure
from plantcrew.scenarios.workers import worker_pool
from tests.scenarios.test_eval_logs import say

multiprocessing.set_start_method("spawn")
configure("INFO")
at_least("WARNING")
with worker_pool(1) as pool:
    pool.submit(say).result()
"""


def say() -> None:
    """Log once at info and once at warning (in a worker)."""
    log = structlog.get_logger("plantcrew.test")
    log.info("info from a worker")
    log.warning("warning from a worker")


def test_spawned_workers_log_as_their_caller() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SPAWNED],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == ""
    assert "info from a worker" not in done.stderr
    assert CREW_WARNING.match(done.stderr) and "warning from a worker" in done.stderr
