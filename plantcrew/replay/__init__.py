"""Reading a run back: its timeline, exact replay, counterfactual re-runs, diffs and exports.

- :mod:`timeline`: a run as recorded (messages, model calls, actions, approvals, audit);
- :mod:`verify`: re-execute a run with the recorded model answers and compare every agent's
  messages (``plantcrew replay RUN --verify``);
- :mod:`rerun`: fork a run at a message with one thing changed (``plantcrew rerun``);
- :mod:`diff`: two runs aligned and compared (``plantcrew diff``);
- :mod:`export`: JSON lines and a self-contained HTML report;
- :mod:`viewer`: the terminal step-through viewer and ``--follow``.

Public names are imported lazily, so reading a run back does not load the model layer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plantcrew.replay.compare import Divergence, FieldDiff
    from plantcrew.replay.diff import RunDiff, diff_runs
    from plantcrew.replay.errors import ReplayError
    from plantcrew.replay.export import to_html, to_jsonl
    from plantcrew.replay.rerun import ForkReport, rerun, rerun_async
    from plantcrew.replay.sandbox import Changes
    from plantcrew.replay.timeline import Step, Timeline, Usage, load_timeline
    from plantcrew.replay.verify import VerifyReport, verify_run, verify_run_async
    from plantcrew.replay.viewer import Stepper, follow

_WHERE = {
    "Divergence": "compare",
    "FieldDiff": "compare",
    "RunDiff": "diff",
    "diff_runs": "diff",
    "ReplayError": "errors",
    "to_html": "export",
    "to_jsonl": "export",
    "ForkReport": "rerun",
    "rerun": "rerun",
    "rerun_async": "rerun",
    "Changes": "sandbox",
    "Step": "timeline",
    "Timeline": "timeline",
    "Usage": "timeline",
    "load_timeline": "timeline",
    "VerifyReport": "verify",
    "verify_run": "verify",
    "verify_run_async": "verify",
    "Stepper": "viewer",
    "follow": "viewer",
}

__all__ = [
    "Changes",
    "Divergence",
    "FieldDiff",
    "ForkReport",
    "ReplayError",
    "RunDiff",
    "Step",
    "Stepper",
    "Timeline",
    "Usage",
    "VerifyReport",
    "diff_runs",
    "follow",
    "load_timeline",
    "rerun",
    "rerun_async",
    "to_html",
    "to_jsonl",
    "verify_run",
    "verify_run_async",
]
assert sorted(__all__) == sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'plantcrew.replay' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"plantcrew.replay.{module}"), name)
    globals()[name] = value
    return value
