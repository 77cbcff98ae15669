"""The direct route of a group whose only model is the offline playbook.

When a group's one active deployment is a playbook (every hosted deployment disabled or
without its key: the shipped offline configuration), litellm's Router has nothing to choose,
retry or fall back to on success; its machinery (deployment selection, usage tracking,
callbacks, logging objects) then costs more than the answer. :class:`DirectPlaybook` asks the
playbook provider (:class:`~plantcrew.llm.playbook.PlaybookLLM`) itself and returns a litellm
``ModelResponse`` shaped as the Router's: the same content, usage and finish reason, and the
hidden parameters the accounting reads (``model_id`` = the deployment's name, the model group,
no attempted fallbacks, cost 0), so the model call record is the one the Router path makes.

Only success takes this route. A request the playbook refuses raises here, and the caller
sends it through the Router instead, which applies the configured retries and fallbacks and
records the failure as before. A playbook deployment with ``extra`` parameters or ``rpm``/
``tpm`` limits always goes through the Router (those are the Router's to apply).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plantcrew.llm.config import Deployment
from plantcrew.llm.playbook import PROVIDER, register_playbook_provider

from litellm.types.utils import ModelResponse  # isort: skip


@dataclass(frozen=True)
class DirectPlaybook:
    """The playbook deployment that alone serves ``group`` (see module doc)."""

    group: str
    deployment: Deployment
    api_base: str

    @classmethod
    def of(
        cls, group: str, deployments: Sequence[Deployment], playbooks_path: str
    ) -> DirectPlaybook | None:
        """The direct route of ``group`` given its active ``deployments`` in order, or None
        when the Router must serve it (a model deployment, several deployments, or a playbook
        with parameters or limits the Router applies)."""
        if len(deployments) != 1:
            return None
        dep = deployments[0]
        if not dep.is_playbook or dep.extra or dep.rpm is not None or dep.tpm is not None:
            return None
        return cls(group, dep, dep.api_base or playbooks_path)

    def complete(self, messages: Sequence[dict[str, Any]], params: dict[str, Any]) -> Any:
        """The playbook's ``ModelResponse`` to ``messages`` with OpenAI ``params``
        (``response_format``...); raises the provider's ``CustomLLMError`` for a request it
        cannot answer."""
        optional = {"stream": False, **{k: v for k, v in params.items() if k != "metadata"}}
        response = register_playbook_provider().respond(
            self.deployment.model.removeprefix(f"{PROVIDER}/"),
            [dict(m) for m in messages],
            ModelResponse(),
            optional,
            self.api_base,
        )
        response._hidden_params = {
            "custom_llm_provider": PROVIDER,
            "model_id": self.deployment.name,
            "api_base": self.api_base,
            "litellm_model_name": self.deployment.model,
            "response_cost": 0.0,
            "additional_headers": {
                "x-litellm-model-group": self.group,
                "x-litellm-attempted-retries": 0,
                "x-litellm-attempted-fallbacks": 0,
            },
        }
        return response


__all__ = ["DirectPlaybook"]
