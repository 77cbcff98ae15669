"""``plantcrew.stopping``: the first SIGTERM or SIGINT sets the stop event; a Ctrl-C while the
process is stopping ends it at once (exit 130, one line, no traceback); a repeated SIGTERM
changes nothing (supervisors may send it more than once and force with SIGKILL).

Before, every signal after the first was ignored: a stop that hung could only be killed.

A real process whose stop never ends (it sleeps after the event is set), so that the second
signal always arrives while it is stopping.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT

STOPPING = """
import asyncio
from plantcrew.stopping import stop_on_signals

async def main():
    stop = stop_on_signals()
    print("ready", flush=True)
    await stop.wait()
    print("stopping", stop.signal, flush=True)
    await asyncio.sleep(3600)  # a stop that never ends

asyncio.run(main())
"""
WAIT_S = 60.0


@pytest.fixture
def stopping() -> Iterator[subprocess.Popen[str]]:
    """The process above, after its first SIGTERM: it is stopping, and will never finish."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPING],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", proc.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == f"stopping {int(signal.SIGTERM)}\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_a_ctrl_c_while_stopping_exits_at_once(stopping: subprocess.Popen[str]) -> None:
    stopping.send_signal(signal.SIGINT)
    _, err = stopping.communicate(timeout=WAIT_S)
    assert stopping.returncode == 130, err
    assert err == "Ctrl-C while stopping: exiting at once, work in flight left unfinished\n"


def test_a_repeated_sigterm_does_not_cut_the_stop_short(
    stopping: subprocess.Popen[str],
) -> None:
    stopping.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2.0  # the line it would print, and its exit, take ms
    while time.monotonic() < deadline and stopping.poll() is None:
        time.sleep(0.05)
    assert stopping.poll() is None  # still stopping
