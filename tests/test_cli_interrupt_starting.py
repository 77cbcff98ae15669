"""Ctrl-C or SIGTERM while a ``plantcrew`` command is still starting (importing the package,
then litellm, autogen and scikit-learn, which take seconds): the command exits 130 (SIGINT) or
143 (SIGTERM) with one line on standard error, ``interrupted by SIGINT``, and no traceback.

Before, a signal during the import of the package printed a KeyboardInterrupt traceback
(Ctrl-C) or killed the process outright (SIGTERM: exit -15, nothing said); one during the
command's own imports exited 130 without a word (typer turns the KeyboardInterrupt into
exit 130, for SIGTERM too, or SIGTERM's default action killed it).

The real console script (``plantcrew`` next to this interpreter) in a subprocess; the signal
comes 0.5 s (the package's import) and 1.5 s (the command's imports) after the start, long
before the command's first line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_shared_data

SCRIPT = Path(sys.executable).parent / "plantcrew"
STOP_S = 60.0  # from the signal to the exit


def _run_args(tmp_path: Path) -> list[str]:
    return ["run", "scenarios/pump-cavitation.yaml", "--db", f"sqlite:///{tmp_path / 'x.db'}"]


def _eval_args(tmp_path: Path) -> list[str]:
    return ["eval", "skab", str(require_shared_data() / "skab" / "valve2" / "0.csv")]


@pytest.mark.parametrize("after_s", [0.5, 1.5], ids=["package import", "command imports"])
@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
@pytest.mark.parametrize("args", [_run_args, _eval_args], ids=["run", "eval skab"])
def test_a_signal_while_starting_exits_quietly(
    tmp_path: Path,
    args: Callable[[Path], list[str]],
    sig: signal.Signals,
    code: int,
    after_s: float,
) -> None:
    assert SCRIPT.is_file(), f"no console script at {SCRIPT} (pip install -e .)"
    proc = subprocess.Popen(
        [str(SCRIPT), *args(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(after_s)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=STOP_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
    assert "Traceback" not in err, err[-3000:]
    assert (proc.returncode, out, err) == (code, "", f"interrupted by {sig.name}\n")
