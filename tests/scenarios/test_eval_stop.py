"""``plantcrew eval skab --jobs 2`` on SIGTERM (to it alone, as ``kill`` or a supervisor sends
it): its worker processes end with it and leave no temporary file; it exits 143 without a
traceback.

Before, SIGTERM killed the parent alone: its two workers went on replaying their files as
orphans (each with a temporary SQLite database), and stayed, blocked, once done.

The real CLI in a subprocess on three SKAB files of the shared data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_shared_data

START_S = 240.0  # to the workers' start, on a loaded 2-core machine
STOP_S = 60.0


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (a zombie has ended)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.fixture
def files(tmp_path: Path) -> Path:
    src = require_shared_data() / "skab" / "valve1"
    dest = tmp_path / "valve1"
    dest.mkdir()
    for name in ("0.csv", "1.csv", "2.csv"):
        shutil.copy(src / name, dest / name)
    return dest


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Commands started in sessions of their own: killed at the end with any worker left."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_sigterm_ends_the_workers_and_leaves_no_file(
    files: Path, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    err = tmp_path / "eval.err"
    with err.open("w") as err_f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plantcrew.cli", "eval", "skab", str(files), "--jobs", "2"],
            cwd=ROOT, env={**os.environ, "TMPDIR": str(scratch)},
            stdout=subprocess.DEVNULL, stderr=err_f, text=True, start_new_session=True,
        )  # fmt: skip
    procs.append(proc)
    deadline = time.monotonic() + START_S
    while len(workers := _children(proc.pid)) < 2:
        assert proc.poll() is None, err.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no two workers in {START_S:g} s"
        time.sleep(0.2)
    # the workers' files: each replays a file into a database of its own
    while not list(scratch.rglob("*.db")):
        assert proc.poll() is None, err.read_text()[-3000:]
        assert time.monotonic() < deadline, "no worker database"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOP_S) == 143, err.read_text()[-3000:]
    deadline = time.monotonic() + STOP_S
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(workers), "workers outlived the command"
    assert "Traceback" not in err.read_text(), err.read_text()[-3000:]
    assert list(scratch.iterdir()) == []
