"""``plantcrew run`` names its run before the plant starts, so a run that is killed (SIGKILL
prints no summary) can be continued with ``--resume RUN_ID``, as the README says, without
reading the id out of the database. Before, the id appeared only in the final summary.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import ROOT
from tests.scenarios.test_scenarios import cli

SHORT = ROOT / "tests" / "distributed" / "scenarios" / "short-bearing.yaml"
FIRST_LINE = re.compile(r"^run (run-[0-9a-f]{12}) \(short-bearing\)")


def test_a_killed_run_is_resumed_by_the_id_it_printed_first(tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    url = f"sqlite:///{db}"
    args = ["run", str(SHORT), "--db", url, "--json", "--speed", "5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "plantcrew.cli", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    stderr = proc.stderr
    threading.Thread(target=lambda: [lines.put(x) for x in stderr], daemon=True).start()
    run_id, seen = None, []
    try:
        deadline = time.monotonic() + 180
        while run_id is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if m := FIRST_LINE.match(line):
                run_id = m.group(1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert run_id is not None, "no 'run RUN_ID' line on stderr:\n" + "".join(seen)

    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, status FROM run").fetchall()
    con.close()
    assert rows == [(run_id, "running")]  # killed before it finished

    resumed = cli("run", str(SHORT), "--db", url, "--resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    out = json.loads(resumed.stdout)
    assert out["run_id"] == run_id and out["passed"], out
    assert any(FIRST_LINE.match(x) for x in resumed.stderr.splitlines()), resumed.stderr
