"""The Coordinator (capability registry, routing, incident state machine) and crew assembly."""

from plantcrew.crews.config import CrewConfig
from plantcrew.crews.coordinator import Coordinator, CoordinatorSettings
from plantcrew.crews.crew import Crew, CrewParts, make_agent
from plantcrew.crews.registry import CapabilityRegistry

__all__ = [
    "CapabilityRegistry",
    "Coordinator",
    "CoordinatorSettings",
    "Crew",
    "CrewConfig",
    "CrewParts",
    "make_agent",
]
