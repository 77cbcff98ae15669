"""The model layer: litellm Router from ``config/models.yaml``, the offline playbook model,
and the AutoGen model client.

Public names are imported lazily (on first attribute access) so that ``import plantcrew.llm``
does not pay litellm's import time (about 5 s) until a model is actually used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import plantcrew.settings  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP before litellm)

if TYPE_CHECKING:
    from plantcrew.llm.budget import Budgets, BudgetStatus, budget_of
    from plantcrew.llm.check import DeploymentCheck, check_deployments
    from plantcrew.llm.client import LiteLLMChatCompletionClient
    from plantcrew.llm.config import (
        Deployment,
        ModelGroup,
        ModelsConfig,
        RouterSettings,
        load_models_config,
        models_config_from_dict,
    )
    from plantcrew.llm.playbook import PlaybookLLM, register_playbook_provider
    from plantcrew.llm.playbook_rules import PlaybookRules, PlaybooksConfig
    from plantcrew.llm.protocol import DataBlockError, find_data_block, render_data_block
    from plantcrew.llm.reason import reason
    from plantcrew.llm.router import ModelRouter, RoutedCall, UnknownGroupError

_WHERE = {
    "Budgets": "budget",
    "BudgetStatus": "budget",
    "budget_of": "budget",
    "DeploymentCheck": "check",
    "check_deployments": "check",
    "LiteLLMChatCompletionClient": "client",
    "Deployment": "config",
    "ModelGroup": "config",
    "ModelsConfig": "config",
    "RouterSettings": "config",
    "load_models_config": "config",
    "models_config_from_dict": "config",
    "PlaybookLLM": "playbook",
    "register_playbook_provider": "playbook",
    "PlaybookRules": "playbook_rules",
    "PlaybooksConfig": "playbook_rules",
    "DataBlockError": "protocol",
    "find_data_block": "protocol",
    "render_data_block": "protocol",
    "reason": "reason",
    "ModelRouter": "router",
    "RoutedCall": "router",
    "UnknownGroupError": "router",
}

__all__ = [
    "BudgetStatus",
    "Budgets",
    "DataBlockError",
    "Deployment",
    "DeploymentCheck",
    "LiteLLMChatCompletionClient",
    "ModelGroup",
    "ModelRouter",
    "ModelsConfig",
    "PlaybookLLM",
    "PlaybookRules",
    "PlaybooksConfig",
    "RoutedCall",
    "RouterSettings",
    "UnknownGroupError",
    "budget_of",
    "check_deployments",
    "find_data_block",
    "load_models_config",
    "models_config_from_dict",
    "reason",
    "register_playbook_provider",
    "render_data_block",
]
assert sorted(__all__) == sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'plantcrew.llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"plantcrew.llm.{module}"), name)
    globals()[name] = value
    return value
