"""The ``plantcrew`` console script (and ``python -m plantcrew``).

A person's Ctrl-C or a supervisor's SIGTERM may come while a command is still starting:
importing the package, then litellm, autogen and scikit-learn, takes seconds. :func:`main`
therefore installs its SIGTERM handler before anything but the standard library is imported,
and only then imports the command (``plantcrew.cli``). Until a command installs handlers of
its own (:mod:`plantcrew.stopping`: ``run``, ``serve``, ``coordinator``, ``worker`` and ``up``
once started, ``eval skab``'s SIGTERM), SIGTERM unwinds the command as Ctrl-C does (a
KeyboardInterrupt: ``finally`` blocks run, worker processes end), and an interrupted command
exits 128 + the signal's number (130 for SIGINT, 143 for SIGTERM) with one line on standard
error, ``interrupted by SIGINT``, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn


def main() -> None:
    """Entry point of the ``plantcrew`` console script: the command (``plantcrew.cli``) run
    :func:`interruptible`, imported only once the handler is in place."""

    def command() -> None:
        from plantcrew.cli import main as cli_main

        cli_main()

    interruptible(command)


def interruptible(command: Callable[[], object]) -> None:
    """Run ``command`` with SIGTERM raising KeyboardInterrupt, as SIGINT does (Python's own
    handler is kept: ``asyncio.run`` relies on it). If the command ends in a KeyboardInterrupt,
    or exits 130 (typer's exit for one) or 143 (:func:`plantcrew.stopping.sigterm_as_ctrl_c`'s)
    because of one, the process says ``interrupted by SIGINT`` (or SIGTERM) on standard error
    and exits 130 (or 143) at once. Any other exit goes through unchanged. Main thread only
    (ValueError elsewhere)."""
    termed: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        termed.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        command()
    except KeyboardInterrupt:
        _interrupted(signal.SIGTERM if termed else signal.SIGINT)
    except SystemExit as exc:
        if exc.code not in (130, 143) or not _from_interrupt(exc):
            raise
        _interrupted(signal.SIGTERM if termed or exc.code == 143 else signal.SIGINT)


def _from_interrupt(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is among the exceptions ``exc`` was raised in handling."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _interrupted(sig: signal.Signals) -> NoReturn:
    """One line on stderr, exit 128 + ``sig`` at once: what the command held is released by
    now, and the interpreter's teardown of litellm's module graph takes seconds."""
    for each in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C no longer interrupts this
        signal.signal(each, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # a reader gone (a closed pipe) changes nothing
        sys.stdout.flush()
        sys.stderr.write(f"interrupted by {sig.name}\n")
        sys.stderr.flush()
    os._exit(128 + sig)


if __name__ == "__main__":
    main()
