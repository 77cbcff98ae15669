"""Scenarios: the YAML schema, the runner, the scripted human and expectations."""

from plantcrew.scenarios.schema import Scenario, load_scenario

__all__ = ["Scenario", "load_scenario"]
