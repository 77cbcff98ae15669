"""The ``plantcrew`` console script (and ``python -m plantcrew``).

A person's Ctrl-C or a supervisor's SIGTERM may come while a command is still starting:
importing the package, then litellm, autogen and scikit-learn, takes seconds. :func:`main`
therefore installs its handlers before anything but the standard library is imported, and
only then imports the command (``plantcrew.cli``). Until a command installs handlers of its
own (:mod:`plantcrew.stopping`: ``run``, ``serve``, ``coordinator``, ``worker`` and ``up``
once started, ``eval skab``'s SIGTERM), SIGINT and SIGTERM end the command with one line on
standard error, ``interrupted by SIGINT`` (or SIGTERM), and exit 128 + the signal's number
(130, 143), never with a traceback:

- in the middle of an import (the command's start), at once: an import holds nothing to
  release, and CPython drops a KeyboardInterrupt raised in some places of its import
  machinery (a module lock's weakref callback, a lazy module ``__getattr__`` that C code
  calls), so that the command printed a traceback and went on, or just went on;
- elsewhere, or while the command has worker processes, by a KeyboardInterrupt, as Ctrl-C
  always did: ``finally`` blocks run, worker processes end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

REDELIVER_S = 0.05  # an interrupt Python dropped is sent again after this (see below)
IMPORTLIB = "<frozen importlib._bootstrap"  # the code of the import machinery


def main() -> None:
    """Entry point of the ``plantcrew`` console script: the command (``plantcrew.cli``) run
    :func:`interruptible`, imported only once the handlers are in place."""

    def command() -> None:
        from plantcrew.cli import main as cli_main

        cli_main()

    interruptible(command)


def interruptible(command: Callable[[], object]) -> None:
    """Run ``command`` with the SIGINT and SIGTERM handlers of the module docstring. If the
    command ends in a KeyboardInterrupt, or exits 130 (typer's exit for one) or 143
    (:func:`plantcrew.stopping.sigterm_as_ctrl_c`'s) because of one, the process says
    ``interrupted by SIGINT`` (or SIGTERM) on standard error and exits 130 (or 143) at once.
    Any other exit goes through unchanged. An interrupt Python drops elsewhere (raised in a
    ``__del__``) is sent again (:func:`_redeliver_interrupts`). Main thread only (ValueError
    elsewhere)."""
    got: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        got.append(signum)
        if _importing(frame) and not _has_workers():
            _interrupted(signal.Signals(signum))
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    sys.unraisablehook = _redeliver_interrupts(sys.unraisablehook)
    try:
        command()
    except KeyboardInterrupt:
        _interrupted(signal.Signals(got[0]) if got else signal.SIGINT)
    except SystemExit as exc:
        if exc.code not in (130, 143) or not _from_interrupt(exc):
            raise
        _interrupted(
            signal.Signals(got[0])
            if got
            else (signal.SIGTERM if exc.code == 143 else signal.SIGINT)
        )


def _importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` (where a signal found the main thread) runs within an import."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(IMPORTLIB):
            return True
        frame = frame.f_back
    return False


def _has_workers() -> bool:
    """Whether this process has worker processes running (``eval skab --jobs``)."""
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and bool(multiprocessing.active_children())


def _redeliver_interrupts(
    previous: Callable[[Any], object],
) -> Callable[[Any], object]:
    """An unraisable hook that sends again, a moment later, the signal of a KeyboardInterrupt
    that Python could not raise, and passes anything else to ``previous``.

    A signal's handler runs wherever the main thread is: raised in a ``__del__`` or a weakref
    callback, a KeyboardInterrupt is printed as "Exception ignored in ..." with its traceback
    and dropped, and the command went on as if never interrupted. Sent again, from another
    thread, it interrupts the main thread at its next step (a signal handler that raised it
    names it ``signum``; else SIGINT)."""

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)
            return
        tb = unraisable.exc_traceback
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        signum = tb.tb_frame.f_locals.get("signum") if tb is not None else None
        sig = signum if isinstance(signum, int) else signal.SIGINT
        again = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), sig))
        again.daemon = True
        again.start()

    return hook


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
    now (or it was importing, and holds nothing), and the interpreter's teardown of litellm's
    module graph takes seconds."""
    for each in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C no longer interrupts this
        signal.signal(each, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # a reader gone (a closed pipe) changes nothing
        sys.stdout.flush()
        sys.stderr.write(f"interrupted by {sig.name}\n")
        sys.stderr.flush()
    os._exit(128 + sig)


if __name__ == "__main__":
    main()
