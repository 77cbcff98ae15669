"""How a long-running plantcrew process stops: on SIGTERM (the normal stop of Kubernetes,
compose and systemd) or SIGINT (Ctrl-C) it stops taking work, finishes what is in flight,
closes the bus and the database, and exits; a Ctrl-C after that exits at once.

Used by ``plantcrew coordinator``, ``worker`` and ``up`` (``plantcrew/cli_processes.py``),
``plantcrew serve`` (``plantcrew/cli_serve.py``), which exit 0, and ``plantcrew run``
(``plantcrew/cli.py``), which records its run ``interrupted`` and exits 128 + the signal's
number (130 for SIGINT, 143 for SIGTERM), as a shell reports a command a signal ended::

    async def main() -> None:
        stop = stop_on_signals()
        ...  # start
        await stop.wait()
        ...  # stop taking work, drain within the grace period, close bus and database

    asyncio.run(main())
    exit_stopped()

Before the handlers are installed (while the command imports its modules) the console
script's own handler (``plantcrew/__main__.py``) makes SIGTERM unwind the command as Ctrl-C
does: it exits 143 (130 for Ctrl-C) with the one line ``interrupted by SIGTERM``, no traceback.

``plantcrew eval skab``, which has no run to record, uses :func:`sigterm_as_ctrl_c` instead:
SIGTERM unwinds it as Ctrl-C does (its worker processes stop, their files go) and it exits 143.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import NoReturn

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopEvent(asyncio.Event):
    """The event :func:`stop_on_signals` returns; ``signal`` is the number of the first stop
    signal received (None until one is, or when the event was set by other code)."""

    def __init__(self) -> None:
        super().__init__()
        self.signal: int | None = None


def stop_on_signals() -> StopEvent:
    """An event that SIGTERM or SIGINT sets, from now on, instead of ending the process.

    Call it from a coroutine running on the main thread's loop (``asyncio.run``); the handlers
    go when that loop closes. A SIGINT after the first signal (a person's second Ctrl-C) ends
    the process at once, with one line on standard error and exit code 130, without finishing
    what is in flight. A repeated SIGTERM changes nothing: supervisors may send it more than
    once, and their way to force a stop is SIGKILL after their grace period. Raises
    RuntimeError outside a running loop or off the main thread.
    """
    stop = StopEvent()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, _on_signal, stop, sig)
    return stop


def _on_signal(stop: StopEvent, sig: int) -> None:
    if stop.signal is not None and sig == signal.SIGINT:
        sys.stderr.write("Ctrl-C while stopping: exiting at once, work in flight left unfinished\n")
        exit_stopped(signal_exit_code(sig))
    if stop.signal is None:
        stop.signal = sig
    stop.set()


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within it SIGTERM interrupts the main thread as Ctrl-C does (KeyboardInterrupt), so that
    a command that unwinds on Ctrl-C (its worker processes, temporary files) does on SIGTERM
    too; the interrupt leaves it as ``SystemExit(143)``, not Ctrl-C's 130. For commands with no
    run to record (``plantcrew eval``). Main thread only (ValueError elsewhere).
    """
    got: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        got.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except KeyboardInterrupt:
        if got:
            raise SystemExit(signal_exit_code(signal.SIGTERM)) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def signal_exit_code(sig: int) -> int:
    """128 + the signal's number (130 for SIGINT, 143 for SIGTERM): what a shell reports for a
    command a signal ended, and what ``plantcrew run`` exits with when one interrupted it."""
    return 128 + int(sig)


def exit_stopped(code: int = 0) -> NoReturn:
    """Exit with ``code`` (0: a process stopped cleanly, bus and database closed) at once.

    Only the standard streams are flushed: the interpreter's teardown of litellm's and
    scikit-learn's module graph, which takes seconds of a container's termination grace
    period, is skipped.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = [
    "STOP_SIGNALS",
    "StopEvent",
    "exit_stopped",
    "signal_exit_code",
    "sigterm_as_ctrl_c",
    "stop_on_signals",
]
