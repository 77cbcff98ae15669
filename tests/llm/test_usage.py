"""litellm's per-minute usage counts: kept for a deployment with a limit, as litellm keeps them;
skipped, without building its model information on every call, for one without."""

from __future__ import annotations

from typing import Any

from plantcrew.llm import ModelRouter, models_config_from_dict
from plantcrew.llm.convert import response_format_for
from plantcrew.llm.usage import UsageRouter
from tests.llm.payloads import DIAGNOSE, DiagnosisOut, user_message

MESSAGES = [{"role": "system", "content": "Diagnose."}, user_message(DIAGNOSE)]
CALLS = 3


def playbook_router(**playbook: Any) -> ModelRouter:
    cfg = models_config_from_dict({
        "groups": {"triage": {"deployments": [
            {"model": "playbook/default", "name": "triage-playbook", **playbook},
        ]}},
        "router": {"num_retries": 0},
    })  # fmt: skip
    return ModelRouter(cfg)


async def counted(router: ModelRouter) -> tuple[list[Any], int]:
    """``CALLS`` calls through the Router: the usage increments litellm made (cache pipeline
    operations) and the times it built the deployment's model information."""
    cache: Any = router.router.cache
    increments: list[Any] = []
    model_infos = 0
    pipeline, info = cache.async_increment_cache_pipeline, router.router.get_router_model_info

    async def count_increments(increment_list: list[Any], **kw: Any) -> Any:
        increments.extend(op["key"] for op in increment_list)
        return await pipeline(increment_list=increment_list, **kw)

    def count_infos(*args: Any, **kw: Any) -> Any:
        nonlocal model_infos
        model_infos += 1
        return info(*args, **kw)

    cache.async_increment_cache_pipeline = count_increments
    router.router.get_router_model_info = count_infos  # type: ignore[method-assign]
    fmt = response_format_for(DiagnosisOut)
    for _ in range(CALLS):
        routed = await router.acompletion("triage", MESSAGES, response_format=fmt)
        assert routed.info.deployment == "triage-playbook" and routed.info.ok
    return increments, model_infos


async def test_a_deployment_without_limits_is_not_counted_nor_looked_up_per_call() -> None:
    router = playbook_router()
    assert isinstance(router.router, UsageRouter)
    increments, model_infos = await counted(router)
    assert increments == []
    assert model_infos <= 1  # once for the deployment (before: twice per call)


async def test_a_deployment_with_a_limit_is_counted_as_litellm_counts_it() -> None:
    increments, _ = await counted(playbook_router(rpm=10_000))
    # tokens and requests of the minute, each call: as litellm's Router counts them
    kinds = sorted(key.split(":")[-2] for key in increments if "triage-playbook" in key)
    assert kinds == ["rpm"] * CALLS + ["tpm"] * CALLS
