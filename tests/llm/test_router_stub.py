"""The router against a loopback server speaking the real OpenAI HTTP API."""

from __future__ import annotations

import logging

import pytest

from tests.llm.conftest import STUB_KEY, stub_deployment, stub_router
from tests.llm.openai_stub import OpenAIStub, Reply
from tests.llm.payloads import DIAGNOSE, user_message

MESSAGES = [user_message(DIAGNOSE)]


async def test_a_failing_deployment_falls_back_to_the_next(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.error(500))
    stub.script("gpt-4o", Reply.json({"root_cause": "cavitation"}))
    router = stub_router(
        stub,
        stub_deployment(stub, "gpt-4o-mini", "primary"),
        stub_deployment(stub, "gpt-4o", "secondary"),
    )
    routed = await router.acompletion("triage", MESSAGES)
    info = routed.info
    assert (info.deployment, info.model) == ("secondary", "openai/gpt-4o")
    assert info.fallback is True and info.ok is True
    assert info.error is not None and info.error.startswith("primary: InternalServerError (500)")
    assert info.response == '{"root_cause": "cavitation"}'
    assert (info.prompt_tokens, info.completion_tokens) == (11, 7)
    assert info.cost_usd > 0  # litellm's local price of gpt-4o
    assert stub.count("gpt-4o-mini") == 1 and stub.count("gpt-4o") == 1


async def test_the_first_deployment_serves_when_healthy(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.json({"ok": True}))
    router = stub_router(
        stub,
        stub_deployment(stub, "gpt-4o-mini", "primary"),
        stub_deployment(stub, "gpt-4o", "secondary"),
    )
    info = (await router.acompletion("triage", MESSAGES)).info
    assert (info.deployment, info.fallback, info.error) == ("primary", False, None)
    assert stub.count("gpt-4o") == 0


async def test_every_hosted_deployment_failing_ends_on_the_playbook(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.error(500))
    stub.script("gpt-4o", Reply.text("not json", status=503))
    router = stub_router(
        stub,
        stub_deployment(stub, "gpt-4o-mini", "primary"),
        stub_deployment(stub, "gpt-4o", "secondary"),
    )
    info = (await router.acompletion("triage", MESSAGES)).info
    assert (info.deployment, info.model, info.fallback) == (
        "triage-playbook",
        "playbook/default",
        True,
    )
    assert info.cost_usd == 0.0
    assert "primary" in (info.error or "") and "secondary" in (info.error or "")


async def test_the_timeout_cuts_a_slow_deployment(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.json({"late": True}, delay_s=5))
    stub.script("gpt-4o", Reply.json({"on_time": True}))
    router = stub_router(
        stub,
        stub_deployment(stub, "gpt-4o-mini", "slow", timeout_s=0.3),
        stub_deployment(stub, "gpt-4o", "fast"),
    )
    info = (await router.acompletion("triage", MESSAGES)).info
    assert info.deployment == "fast" and info.fallback is True
    assert info.error is not None and "slow: Timeout" in info.error


async def test_429_with_retry_after_is_retried_on_the_same_deployment(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.error(429, retry_after=1), Reply.json({"second": True}))
    router = stub_router(
        stub,
        stub_deployment(stub, "gpt-4o-mini", "only"),
        num_retries=2,
        playbook_last_resort=False,
    )
    routed = await router.acompletion("triage", MESSAGES)
    assert routed.info.deployment == "only" and routed.info.fallback is False
    assert routed.info.response == '{"second": true}'
    assert stub.count("gpt-4o-mini") == 2
    headers = routed.response._hidden_params["additional_headers"]
    assert headers["x-litellm-attempted-retries"] == 1


async def test_429_with_a_fallback_available_moves_on(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.error(429, retry_after=30))
    router = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "limited"), num_retries=2)
    info = (await router.acompletion("triage", MESSAGES)).info
    assert info.deployment == "triage-playbook"
    assert info.error is not None and "limited: RateLimitError (429)" in info.error


async def test_a_call_failing_everywhere_raises_with_its_record(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.error(500))
    router = stub_router(
        stub, stub_deployment(stub, "gpt-4o-mini", "only"), playbook_last_resort=False
    )
    with pytest.raises(Exception) as err:
        await router.acompletion("triage", MESSAGES)
    info = err.value.plantcrew_call  # type: ignore[attr-defined]
    assert info.ok is False and info.deployment == "none"
    assert "only: InternalServerError (500)" in info.error


async def test_group_fallbacks_reach_another_group(stub: OpenAIStub) -> None:
    from plantcrew.llm import ModelRouter, models_config_from_dict

    stub.script("gpt-4o-mini", Reply.error(500))
    stub.script("gpt-4o", Reply.json({"from": "reasoning"}))
    cfg = models_config_from_dict(
        {
            "groups": {
                "triage": {"deployments": [stub_deployment(stub, "gpt-4o-mini", "t1")]},
                "reasoning": {"deployments": [stub_deployment(stub, "gpt-4o", "r1")]},
            },
            "router": {
                "num_retries": 0,
                "playbook_last_resort": False,
                "fallbacks": {"triage": ["reasoning"]},
            },
        }
    )
    info = (await ModelRouter(cfg).acompletion("triage", MESSAGES)).info
    assert (info.model_group, info.deployment, info.fallback) == ("triage", "r1", True)


async def test_the_api_key_is_sent_but_never_recorded_or_logged(
    stub: OpenAIStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stub.script("gpt-4o-mini", Reply.error(401))
    router = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "primary"))
    info = (await router.acompletion("triage", MESSAGES)).info
    assert STUB_KEY not in info.model_dump_json()
    assert STUB_KEY not in caplog.text
    assert stub.authorizations == [f"Bearer {STUB_KEY}"]
