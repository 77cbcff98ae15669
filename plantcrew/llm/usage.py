"""litellm's ``Router`` without the per-call usage bookkeeping of deployments that have no limit.

After every successful call litellm's Router counts the deployment's tokens and requests of the
current minute (``Router._increment_deployment_usage``), twice: from its success callback and
from the response. Each time it first builds the deployment's model information
(``get_router_model_info``: the provider lookup and a deep copy of the model map's entry, over a
hundred keys), and then counts nothing when the deployment has no limit: no ``tpm``/``rpm`` in
its parameters, its ``model_info`` or the model map, and no input/output token limits. In an
offline crew every call pays that twice for nothing (a sixth of a worker's CPU per task).

:class:`UsageRouter` asks once per deployment whether it has a limit, by the same test, and
skips the bookkeeping of a deployment that has none. A deployment with a limit is counted as
before. The answer is kept per deployment id and model group: a deployment replaced under the
same id (not done by :class:`~plantcrew.llm.router.ModelRouter`) keeps its first answer.
"""

from __future__ import annotations

from typing import Any

import plantcrew.settings  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP before litellm)

import litellm  # isort: skip
from litellm.router_utils.pre_call_checks.io_token_rate_limit_check import (  # isort: skip
    deployment_has_io_token_limits,
)


class UsageRouter(litellm.Router):
    """A litellm ``Router`` that keeps no usage counts for deployments without limits (see
    module doc); otherwise litellm's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._limited: dict[tuple[str, str], bool] = {}
        super().__init__(*args, **kwargs)

    def has_limits(self, deployment_id: str, model_group: str) -> bool:
        """Whether litellm counts the usage of ``deployment_id`` (a ``tpm``/``rpm`` limit in its
        parameters, model info or the model map, or input/output token limits); True for an
        unknown deployment (litellm decides)."""
        known = self._limited.get((deployment_id, model_group))
        if known is not None:
            return known
        deployment = self.get_deployment(model_id=deployment_id)
        if deployment is None:
            return True
        info = self.get_router_model_info(deployment=deployment, received_model_name=model_group)
        limits = (
            deployment.get("tpm", None),
            deployment.get("rpm", None),
            deployment.litellm_params.tpm,
            deployment.litellm_params.rpm,
            info.get("tpm", None),
            info.get("rpm", None),
        )
        limited = any(limit is not None for limit in limits) or deployment_has_io_token_limits(
            deployment.model_dump()
        )
        self._limited[deployment_id, model_group] = limited
        return limited

    async def _increment_deployment_usage(
        self, *, deployment_id: str, model_group: str, **kwargs: Any
    ) -> str | None:
        if not self.has_limits(deployment_id, model_group):
            return None  # what litellm returns for it, after building its model info
        return await super()._increment_deployment_usage(
            deployment_id=deployment_id, model_group=model_group, **kwargs
        )


__all__ = ["UsageRouter"]
