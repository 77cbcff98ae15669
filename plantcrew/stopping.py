"""How a long-running plantcrew process stops: on SIGTERM (the normal stop of Kubernetes and
compose) or SIGINT (Ctrl-C) it finishes what is in flight within its grace period, closes the
bus and the database, and exits 0.

Used by ``plantcrew coordinator``, ``worker`` and ``up`` (``plantcrew/cli_processes.py``) and
by ``plantcrew serve`` (``plantcrew/cli_serve.py``)::

    async def main() -> None:
        stop = stop_on_signals()
        ...  # start
        await stop.wait()
        ...  # stop taking work, drain within the grace period, close bus and database

    asyncio.run(main())
    exit_stopped()
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import NoReturn

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets, from now on, instead of ending the process.

    Call it from a coroutine running on the main thread's loop (``asyncio.run``); the handlers
    go when that loop closes. A second signal sets the event again and does nothing more: the
    process is bounded by its own grace period, and the container's by SIGKILL after its own.
    Raises RuntimeError outside a running loop or off the main thread.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    return stop


def exit_stopped() -> NoReturn:
    """Exit 0 at once, after a process stopped cleanly (bus and database closed).

    Only the standard streams are flushed: the interpreter's teardown of litellm's and
    scikit-learn's module graph, which takes seconds of a container's termination grace
    period, is skipped.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


__all__ = ["STOP_SIGNALS", "exit_stopped", "stop_on_signals"]
