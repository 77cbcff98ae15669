"""The circuit breaker (cooldown) and the special fallbacks, through litellm's HTTP path."""

from __future__ import annotations

import asyncio

from plantcrew.llm import ModelRouter, models_config_from_dict
from plantcrew.llm.router import RoutedCall
from tests.llm.conftest import stub_deployment, stub_router
from tests.llm.openai_stub import OpenAIStub, Reply
from tests.llm.payloads import DIAGNOSE, user_message

MESSAGES = [user_message(DIAGNOSE)]


async def call(router: ModelRouter, group: str = "triage") -> RoutedCall:
    return await router.acompletion(group, MESSAGES)


async def test_the_circuit_opens_after_repeated_failures_and_closes_after_recovery(
    stub: OpenAIStub,
) -> None:
    stub.script("flaky", Reply.error(500))
    stub.script("steady", Reply.json({"from": "steady"}))
    router = stub_router(
        stub,
        # 3 s: the checks of the open circuit below must run before it ends, on a loaded
        # machine too (0.5 s failed there: the cooldown had ended by the first check)
        stub_deployment(stub, "flaky", "primary", allowed_fails=1, cooldown_s=3.0),
        stub_deployment(stub, "steady", "secondary"),
    )
    # closed: each call tries the primary first; the second failure (> allowed_fails) opens it
    for n in (1, 2):
        info = (await call(router)).info
        assert (info.deployment, stub.count("flaky")) == ("secondary", n)
        assert info.error is not None and "primary: InternalServerError (500)" in info.error
    assert router.cooling_down() == ["primary"]
    # open: the router skips the primary, and the record says why
    for _ in range(3):
        info = (await call(router)).info
        assert (info.deployment, info.fallback) == ("secondary", True)
        assert info.error == "primary: cooling down"
    assert stub.count("flaky") == 2
    # the primary recovers; once the cooldown ends the router tries it again and it serves
    stub.script("flaky", Reply.json({"from": "primary"}))
    for _ in range(400):  # at most 20 s; the cooldown is 3 s
        if not router.cooling_down():
            break
        await asyncio.sleep(0.05)
    info = (await call(router)).info
    assert (info.deployment, info.fallback, info.error) == ("primary", False, None)
    assert stub.count("flaky") == 3


async def test_the_router_wide_allowed_fails_applies_to_every_deployment(stub: OpenAIStub) -> None:
    """litellm ignores a router-wide allowed_fails equal to its own default (3); ours holds."""
    stub.script("flaky", Reply.error(503))
    stub.script("steady", Reply.json({"ok": True}))
    router = stub_router(
        stub,
        stub_deployment(stub, "flaky", "primary"),
        stub_deployment(stub, "steady", "secondary"),
        allowed_fails=3,
        cooldown_time_s=30,
    )
    for _ in range(6):
        await call(router)
    assert stub.count("flaky") == 4  # 3 allowed failures, the 4th opens the circuit
    assert router.cooling_down() == ["primary"]


async def test_the_playbook_last_resort_is_never_cooled_down(stub: OpenAIStub) -> None:
    stub.script("down", Reply.error(500))
    router = stub_router(
        stub, stub_deployment(stub, "down", "primary", allowed_fails=0), cooldown_time_s=30
    )
    for _ in range(3):
        info = (await call(router)).info
        assert info.deployment == "triage-playbook"
    assert router.cooling_down() == ["primary"]
    assert info.degraded_reason == "no model answered (primary: cooling down)"


async def test_a_prompt_too_long_goes_to_the_context_window_fallback(stub: OpenAIStub) -> None:
    stub.script(
        "small",
        Reply.error(
            400,
            message="This model's maximum context length is 8192 tokens. However, your "
            "messages resulted in 9000 tokens.",
            error_type="invalid_request_error",
            code="context_length_exceeded",
        ),
    )
    stub.script("large", Reply.json({"from": "large"}))
    stub.script("other", Reply.json({"from": "other"}))
    cfg = models_config_from_dict(
        {
            "groups": {
                "triage": {"deployments": [stub_deployment(stub, "small", "small")]},
                "reasoning": {"deployments": [stub_deployment(stub, "large", "large")]},
                "review": {"deployments": [stub_deployment(stub, "other", "other")]},
            },
            "router": {
                "num_retries": 0,
                "playbook_last_resort": False,
                "fallbacks": {"triage": ["review"]},
                "context_window_fallbacks": {"triage": ["reasoning"]},
            },
        }
    )
    info = (await call(ModelRouter(cfg))).info
    assert (info.deployment, info.fallback) == ("large", True)
    assert info.error is not None and info.error.startswith("small: ContextWindowExceededError")
    assert stub.count("other") == 0


async def test_a_refused_prompt_goes_to_the_content_policy_fallback(stub: OpenAIStub) -> None:
    stub.script(
        "strict",
        Reply.error(
            400,
            message="Your request was rejected as a result of our safety system.",
            error_type="invalid_request_error",
            code="content_policy_violation",
        ),
    )
    stub.script("lenient", Reply.json({"from": "lenient"}))
    cfg = models_config_from_dict(
        {
            "groups": {
                "triage": {"deployments": [stub_deployment(stub, "strict", "strict")]},
                "reasoning": {"deployments": [stub_deployment(stub, "lenient", "lenient")]},
            },
            "router": {
                "num_retries": 0,
                "playbook_last_resort": False,
                "content_policy_fallbacks": {"triage": ["reasoning"]},
            },
        }
    )
    info = (await call(ModelRouter(cfg))).info
    assert (info.deployment, info.fallback) == ("lenient", True)
    assert info.error is not None and "strict: ContentPolicyViolationError" in info.error


async def test_a_timeout_names_the_limit_that_cut_the_call(stub: OpenAIStub) -> None:
    stub.script("slow", Reply.json({"late": True}, delay_s=5))
    router = stub_router(stub, stub_deployment(stub, "slow", "slow", timeout_s=0.3))
    info = (await call(router)).info
    assert info.deployment == "triage-playbook"
    assert info.error == "slow: Timeout (no answer within 0.3 s)"
    assert info.degraded_reason == "no model answered (slow: Timeout (no answer within 0.3 s))"


async def test_a_peer_skipped_by_the_breaker_does_not_make_a_call_a_fallback(
    stub: OpenAIStub,
) -> None:
    stub.script("flaky", Reply.error(500))
    stub.script("steady", Reply.json({"ok": True}))
    router = stub_router(
        stub,
        stub_deployment(stub, "flaky", "a", order=1, allowed_fails=0),
        stub_deployment(stub, "steady", "b", order=1),
        cooldown_time_s=30,
    )
    for _ in range(50):  # the load balancer picks either; the first failure opens a's circuit
        await call(router)
        if router.cooling_down():
            break
    assert router.cooling_down() == ["a"]
    info = (await call(router)).info
    assert (info.deployment, info.fallback, info.error) == ("b", False, "a: cooling down")
