"""The Coordinator (capability registry, routing, incident state machine) and crew assembly.

Names are imported on first use, so that importing a light piece (e.g. ``crews.config``) does
not import every agent, litellm and scikit-learn with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plantcrew.crews.config import CoordinatorSettings, CrewConfig
    from plantcrew.crews.coordinator import Coordinator
    from plantcrew.crews.crew import Crew, CrewParts, make_agent
    from plantcrew.crews.registry import CapabilityRegistry

_WHERE = {
    "CrewConfig": "config",
    "Coordinator": "coordinator",
    "CoordinatorSettings": "coordinator",
    "Crew": "crew",
    "CrewParts": "crew",
    "make_agent": "crew",
    "CapabilityRegistry": "registry",
}
__all__ = [
    "CapabilityRegistry",
    "Coordinator",
    "CoordinatorSettings",
    "Crew",
    "CrewConfig",
    "CrewParts",
    "make_agent",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'plantcrew.crews' has no attribute {name!r}")
    return getattr(importlib.import_module(f"plantcrew.crews.{where}"), name)
