"""A group served by the playbook alone answers without litellm's Router, with the same answer
and the same model call record as through the Router; a request the playbook refuses still
goes through the Router (its failure accounting)."""

from __future__ import annotations

from typing import Any

import pytest

from plantcrew.llm import ModelRouter, models_config_from_dict
from plantcrew.llm.convert import response_format_for
from plantcrew.llm.direct import DirectPlaybook
from tests.llm.payloads import DIAGNOSE, DiagnosisOut, user_message

MESSAGES = [{"role": "system", "content": "Diagnose."}, user_message(DIAGNOSE)]


def playbook_router(**playbook: Any) -> ModelRouter:
    cfg = models_config_from_dict({
        "groups": {"triage": {"deployments": [
            {"model": "playbook/default", "name": "triage-playbook", **playbook},
        ]}},
        "router": {"num_retries": 0, "playbook_direct": True},
    })  # fmt: skip
    return ModelRouter(cfg)


def test_only_a_lone_plain_playbook_takes_the_direct_route(router: ModelRouter) -> None:
    assert not router._direct  # the shipped config: off, offline runs take litellm's path
    shipped = router.config.model_copy(
        update={"router": router.config.router.model_copy(update={"playbook_direct": True})}
    )
    assert set(ModelRouter(shipped)._direct) == set(router.groups)
    assert not playbook_router(rpm=600)._direct  # limits are the Router's to apply
    assert not playbook_router(extra={"temperature": 0})._direct
    hosted = models_config_from_dict({"groups": {"triage": {"deployments": [
        {"model": "openai/gpt-4o-mini", "name": "mini"},
    ]}}, "router": {"playbook_direct": True}})  # fmt: skip
    assert not ModelRouter(hosted)._direct


async def test_direct_route_records_the_same_call_as_the_router() -> None:
    direct, routed = playbook_router(), playbook_router(rpm=10_000)
    assert isinstance(direct._direct["triage"], DirectPlaybook)
    fmt = response_format_for(DiagnosisOut)
    a = await direct.acompletion("triage", MESSAGES, response_format=fmt)
    b = await routed.acompletion("triage", MESSAGES, response_format=fmt)
    assert a.info.model_dump(exclude={"latency_ms"}) == b.info.model_dump(exclude={"latency_ms"})
    assert a.info.deployment == "triage-playbook" and a.info.model == "playbook/default"
    assert (a.info.fallback, a.info.degraded_reason, a.info.cost_usd) == (False, None, 0.0)
    DiagnosisOut.model_validate_json(a.info.response)
    assert a.response.choices[0].finish_reason == b.response.choices[0].finish_reason == "stop"
    assert a.response.usage.prompt_tokens == b.response.usage.prompt_tokens


async def test_a_refused_request_goes_through_the_router_and_is_recorded() -> None:
    router = playbook_router()
    with pytest.raises(Exception) as caught:  # litellm's error type, after the Router's turn
        await router.acompletion("triage", [{"role": "user", "content": "no data block"}])
    info = caught.value.plantcrew_call  # type: ignore[attr-defined]
    assert info.ok is False and info.model_group == "triage"
    assert "triage-playbook" in (info.error or "")
