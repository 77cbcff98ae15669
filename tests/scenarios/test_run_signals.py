"""``plantcrew run`` on SIGTERM (how a Kubernetes Job, systemd or compose stop it) or Ctrl-C:
the run ends at the end of its step, is recorded ``interrupted``, stderr says how to resume
it, and the command exits 143 (SIGTERM) or 130 (SIGINT) without a traceback; ``--resume``
then completes it. (A Ctrl-C during that stop exits at once: ``tests/test_stopping.py``; a
signal while the command still imports: ``tests/test_cli_interrupt_starting.py``.)

Before, SIGTERM killed the command outright (exit -15, 143 in a shell) and Ctrl-C cancelled
the run mid-step: either way the run stayed ``running``, with what was in flight on the bus
lost.

The real CLI in a subprocess, the in-process (memory) bus and a SQLite file; the historian
CSV replay of scenarios/ at 10 plant s per wall second, stopped before its fault (540 s).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from plantcrew.store import Store
from tests.conftest import ROOT

HISTORIAN = ROOT / "scenarios" / "historian-export.yaml"
FIRST_LINE = re.compile(r"^run (run-[0-9a-f]{12}) \(historian-export\)", re.MULTILINE)
START_S = 240.0  # to the run's first checkpoint, on a loaded 2-core machine
STOP_S = 60.0  # from the signal to the exit: a step and the crew's stop


@dataclass
class Running:
    """A ``plantcrew run`` subprocess; its stderr goes to ``err``."""

    proc: subprocess.Popen[str]
    err: Path
    db_url: str

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def run_id(self) -> str:
        """The run's id, once the run is in the database (its first line on stderr)."""
        deadline = time.monotonic() + START_S
        while not (m := FIRST_LINE.search(self.stderr())):
            assert self.proc.poll() is None, self.stderr()[-3000:]
            assert time.monotonic() < deadline, f"no run id in {START_S:g} s"
            time.sleep(0.2)
        return m.group(1)

    def stepping(self, run_id: str) -> None:
        """Wait until the run has checkpointed a plant time: its loop is stepping."""
        deadline = time.monotonic() + START_S
        while _run(self.db_url, run_id)[1] <= 0:
            assert self.proc.poll() is None, self.stderr()[-3000:]
            assert time.monotonic() < deadline, f"no checkpoint in {START_S:g} s"
            time.sleep(0.2)

    def stopped(self) -> int:
        try:
            return self.proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_S:g} s after the signal:\n{self.stderr()[-3000:]}")


def _run(db_url: str, run_id: str) -> tuple[str, float]:
    store = Store(db_url, existing=True)
    try:
        run = store.get_run(run_id)
        return run.status, run.plant_time
    finally:
        store.dispose()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    """``start(*args)``: ``plantcrew run HISTORIAN --db ... ARGS`` in a subprocess of its own
    session; killed with its children at the end if still up."""
    procs: list[subprocess.Popen[str]] = []
    db_url = f"sqlite:///{tmp_path / 'run.db'}"

    def go(*args: str) -> Running:
        err = tmp_path / f"run-{len(procs)}.err"
        with err.open("w") as err_f:
            proc = subprocess.Popen(
                [sys.executable, "-m", "plantcrew.cli", "run", str(HISTORIAN), "--db", db_url,
                 *args],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=err_f, text=True,
                start_new_session=True,
            )  # fmt: skip
        procs.append(proc)
        return Running(proc, err, db_url)

    yield go
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_signal_interrupts_the_run_and_resume_completes_it(
    start: object, sig: signal.Signals, code: int
) -> None:
    run = start("--json", "--speed", "10")  # type: ignore[operator]
    run_id = run.run_id()
    run.stepping(run_id)
    run.proc.send_signal(sig)
    assert run.stopped() == code, run.stderr()[-3000:]
    assert run.proc.stdout is not None
    printed = json.loads(run.proc.stdout.read())
    stderr = run.stderr()
    assert "Traceback" not in stderr, stderr[-3000:]
    status, plant_time = _run(run.db_url, run_id)
    assert status == "interrupted", status
    assert 0 < plant_time < 540, plant_time  # stopped before the fault, as the test means
    assert printed["run_id"] == run_id and printed["status"] == "interrupted", printed
    hint = f"continue it with: plantcrew run {HISTORIAN} --resume {run_id} --db {run.db_url}"
    assert f"interrupted by {sig.name}" in stderr and hint in stderr, stderr[-3000:]
    if sig is signal.SIGINT:
        return  # resumed once, after SIGTERM, below
    again = start("--resume", run_id, "--json")  # type: ignore[operator]
    assert again.proc.wait(START_S) == 0, again.stderr()[-3000:]
    assert again.proc.stdout is not None
    resumed = json.loads(again.proc.stdout.read())
    assert resumed["run_id"] == run_id and resumed["status"] == "passed", resumed
    assert _run(run.db_url, run_id)[0] == "passed"
