"""The role agents: Monitor, Diagnostic, Operator, Safety Officer, Reviewer.

Agents know nothing of the Coordinator: they see only messages on the bus.
"""

from plantcrew.agents.base import Agent
from plantcrew.agents.diagnostic import Diagnostic
from plantcrew.agents.monitor import Monitor
from plantcrew.agents.operator import Operator
from plantcrew.agents.policy import Asset, Policies, judge
from plantcrew.agents.reviewer import Reviewer
from plantcrew.agents.safety import SafetyOfficer

__all__ = [
    "Agent",
    "Asset",
    "Diagnostic",
    "Monitor",
    "Operator",
    "Policies",
    "Reviewer",
    "SafetyOfficer",
    "judge",
]
