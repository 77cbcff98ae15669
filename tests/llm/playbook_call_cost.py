"""Cost of one playbook call through the shipped ModelRouter (the Router path), per call.

Not a test (pytest does not collect it) and no wall-clock figure: ``--callgrind`` counts
instructions, the default counts Python function calls with cProfile. The router of the shipped
``config/models.yaml`` answers 30 unmeasured calls (imports, caches), then ``--calls`` measured
ones, each followed by the litellm logging it started (its logging worker's queue is drained
inside the measured part).

Run (from the repository root):
  python -m tests.llm.playbook_call_cost [--calls 200]
  PYTHONHASHSEED=0 valgrind --tool=callgrind --instr-atstart=no \\
      --callgrind-out-file=/tmp/pb.out python -m tests.llm.playbook_call_cost --callgrind \\
      --calls 100 && grep ^totals /tmp/pb.out     # instructions of the measured calls
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import logging
import pstats
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from plantcrew.llm import ModelRouter
from plantcrew.llm.convert import response_format_for
from tests.llm.payloads import DIAGNOSE, DiagnosisOut, user_message

from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER  # isort: skip

MESSAGES = [{"role": "system", "content": "Diagnose."}, user_message(DIAGNOSE)]
REGION_C = """#include <valgrind/callgrind.h>
void start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""


async def drained() -> None:
    """Let the logging tasks litellm started for the calls so far finish."""
    for _ in range(20):
        await asyncio.sleep(0)
    worker: Any = GLOBAL_LOGGING_WORKER
    if worker._queue is not None and worker._bound_loop is asyncio.get_running_loop():
        await worker._queue.join()


def callgrind_region(workdir: Path) -> Any:
    """``start()``/``stop()`` of callgrind's instrumentation (a small C library built here)."""
    src, lib = workdir / "region.c", workdir / "region.so"
    src.write_text(REGION_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--callgrind", action="store_true", help="run under callgrind (see doc)")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    router = ModelRouter.from_file()
    group = "triage" if "triage" in router.groups else router.groups[0]
    fmt = response_format_for(DiagnosisOut)
    call: Callable[[], Awaitable[Any]] = lambda: router.acompletion(  # noqa: E731
        group, MESSAGES, response_format=fmt
    )
    for _ in range(30):
        routed = await call()
    assert routed.info.ok and routed.info.deployment.endswith("playbook"), routed.info
    await drained()

    async def measured() -> None:
        for _ in range(args.calls):
            await call()
        await drained()

    if args.callgrind:
        with tempfile.TemporaryDirectory() as tmp:
            region = callgrind_region(Path(tmp))
            region.start()
            await measured()
            region.stop()
        print(f"{args.calls} calls measured: see callgrind's totals")
        return
    profile = cProfile.Profile()
    profile.enable()
    await measured()
    profile.disable()
    stats: Any = pstats.Stats(profile)
    print(f"group {group}: {stats.total_calls / args.calls:.0f} Python function calls per call")
    stats.sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    asyncio.run(main())
