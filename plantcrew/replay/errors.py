"""Errors of reading a run back: replay, verify, re-run and diff."""

from __future__ import annotations

from plantcrew.errors import ScenarioError


class ReplayError(ScenarioError):
    """A run cannot be verified, re-run or compared as asked.

    Raised, for example, for a run that is not a scenario run (live operation has no seed
    and plant to re-run), a fork point that is not a message of the run, or a change that
    names an unknown role or model group.
    """


__all__ = ["ReplayError"]
