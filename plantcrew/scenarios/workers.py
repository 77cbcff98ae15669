"""Worker processes that never outlive the command that started them (``eval skab --jobs N``).

A ``ProcessPoolExecutor`` left on an exception waits for every file it was given, and when its
parent is killed (SIGTERM has no handler there) its workers go on as orphans, each with a
temporary database of its own. :func:`worker_pool` cancels, terminates and removes instead.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from plantcrew import logs

JOIN_S = 10.0  # a terminated worker's exit


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor`` of ``workers`` processes, whose temporary files go into a
    folder of the caller's (``tempfile.tempdir`` in each worker), removed on the way out.

    Left normally, it waits for the work submitted. Left on an exception (a failed file,
    Ctrl-C, or a SIGTERM that :func:`plantcrew.stopping.sigterm_as_ctrl_c` made an interrupt)
    it cancels the work not started, terminates the workers and removes their files before the
    exception goes on: no process and no file outlives the caller. Workers ignore SIGINT, which
    a terminal sends the whole process group: the caller decides. Workers log as the caller
    does (:func:`plantcrew.logs.configured`: level and format), whatever the start method.
    """
    before = set(multiprocessing.active_children())
    with tempfile.TemporaryDirectory(prefix="plantcrew-workers-") as scratch:
        pool = ProcessPoolExecutor(
            workers, initializer=_in_worker, initargs=(scratch, logs.configured())
        )
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            started = [p for p in multiprocessing.active_children() if p not in before]
            for p in started:
                p.terminate()
            for p in started:
                p.join(JOIN_S)
            raise
        pool.shutdown()


def _in_worker(scratch: str, log_setup: tuple[str, bool] | None) -> None:
    if log_setup is not None:
        level, as_json = log_setup
        logs.configure(level, json=as_json)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # terminate() ends it at once
    tempfile.tempdir = scratch


__all__ = ["worker_pool"]
