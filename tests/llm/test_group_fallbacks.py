"""A group's fallback groups come before the playbook (DESIGN.md: the playbook is the last
fallback), through litellm's HTTP path against loopback OpenAI servers."""

from __future__ import annotations

import socket
from typing import Any

from autogen_core.models import CreateResult, UserMessage

from plantcrew.llm import ModelRouter, models_config_from_dict
from plantcrew.llm.protocol import render_data_block
from tests.llm.conftest import stub_deployment
from tests.llm.openai_stub import OpenAIStub, Reply
from tests.llm.payloads import DIAGNOSE, user_message

MESSAGES = [user_message(DIAGNOSE)]


def two_groups(
    stub: OpenAIStub, reasoning: dict[str, Any], *, num_retries: int = 0, **router: Any
) -> ModelRouter:
    """reasoning: [``reasoning``] then its fallback group triage: [t1 on model ``small``];
    each group ends with the playbook (playbook_last_resort, the default)."""
    cfg = models_config_from_dict(
        {
            "groups": {
                "reasoning": {"deployments": [reasoning]},
                "triage": {"deployments": [stub_deployment(stub, "small", "t1")]},
            },
            "router": {
                "num_retries": num_retries,
                "cooldown_time_s": 0,
                "fallbacks": {"reasoning": ["triage"]},
                **router,
            },
        }
    )
    return ModelRouter(cfg)


def refused_base_url() -> str:
    """An OpenAI base URL on loopback where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def test_a_failing_group_falls_back_to_its_fallback_group_before_the_playbook(
    stub: OpenAIStub,
) -> None:
    stub.script("large", Reply.error(500))
    stub.script("small", Reply.json({"from": "triage"}))
    router = two_groups(stub, stub_deployment(stub, "large", "r1"))
    info = (await router.acompletion("reasoning", MESSAGES)).info
    assert (info.model_group, info.deployment, info.model) == ("reasoning", "t1", "openai/small")
    assert (info.fallback, info.degraded_reason, info.ok) == (True, None, True)
    assert info.error == "r1: InternalServerError (500)"
    assert info.response == '{"from": "triage"}'
    assert (stub.count("large"), stub.count("small")) == (1, 1)


async def test_a_refused_connection_falls_back_to_the_fallback_group_and_says_so(
    stub: OpenAIStub,
) -> None:
    stub.script("small", Reply.json({"from": "triage"}))
    down = {**stub_deployment(stub, "large", "r1"), "api_base": refused_base_url()}
    router = two_groups(stub, down)
    info = (await router.acompletion("reasoning", MESSAGES)).info
    assert (info.deployment, info.fallback, info.degraded_reason) == ("t1", True, None)
    assert info.error == "r1: connection refused"


async def test_when_the_fallback_group_fails_too_the_playbook_answers_degraded(
    stub: OpenAIStub,
) -> None:
    stub.script("large", Reply.error(500))
    stub.script("small", Reply.error(503))
    router = two_groups(stub, stub_deployment(stub, "large", "r1"))
    info = (await router.acompletion("reasoning", MESSAGES)).info
    assert (info.deployment, info.model, info.fallback) == (
        "reasoning-playbook",
        "playbook/default",
        True,
    )
    assert info.degraded_reason == (
        "no model answered (r1: InternalServerError (500); t1: ServiceUnavailableError (503))"
    )
    assert (stub.count("large"), stub.count("small")) == (1, 1)


async def test_a_refused_connection_everywhere_is_named_in_the_degraded_reason(
    stub: OpenAIStub,
) -> None:
    cfg = models_config_from_dict(
        {
            "groups": {
                "triage": {
                    "deployments": [
                        {**stub_deployment(stub, "small", "t1"), "api_base": refused_base_url()}
                    ]
                }
            },
            "router": {"num_retries": 0, "cooldown_time_s": 0},
        }
    )
    info = (await ModelRouter(cfg).acompletion("triage", MESSAGES)).info
    assert info.deployment == "triage-playbook"
    assert info.degraded_reason == "no model answered (t1: connection refused)"


async def test_the_group_tries_its_own_order_levels_before_the_fallback_group(
    stub: OpenAIStub,
) -> None:
    stub.script("large", Reply.error(500))
    stub.script("medium", Reply.json({"from": "r2"}))
    stub.script("small", Reply.json({"from": "triage"}))
    cfg = models_config_from_dict(
        {
            "groups": {
                "reasoning": {
                    "deployments": [
                        stub_deployment(stub, "large", "r1"),
                        stub_deployment(stub, "medium", "r2"),
                    ]
                },
                "triage": {"deployments": [stub_deployment(stub, "small", "t1")]},
            },
            "router": {
                "num_retries": 0,
                "cooldown_time_s": 0,
                "fallbacks": {"reasoning": ["triage"]},
            },
        }
    )
    info = (await ModelRouter(cfg).acompletion("reasoning", MESSAGES)).info
    assert (info.deployment, info.fallback, info.degraded_reason) == ("r2", True, None)
    assert stub.count("small") == 0


async def test_a_429_moves_on_to_the_fallback_group(stub: OpenAIStub) -> None:
    stub.script("large", Reply.error(429, retry_after=30))
    stub.script("small", Reply.json({"from": "triage"}))
    router = two_groups(stub, stub_deployment(stub, "large", "r1"), num_retries=2)
    info = (await router.acompletion("reasoning", MESSAGES)).info
    assert (info.deployment, info.fallback, info.degraded_reason) == ("t1", True, None)
    assert info.error is not None and info.error.startswith("r1: RateLimitError (429)")


async def test_the_circuit_breaker_skips_a_failing_deployment_of_the_chain(
    stub: OpenAIStub,
) -> None:
    stub.script("large", Reply.error(500))
    stub.script("small", Reply.json({"from": "triage"}))
    router = two_groups(
        stub, stub_deployment(stub, "large", "r1", allowed_fails=0), cooldown_time_s=30
    )
    first = (await router.acompletion("reasoning", MESSAGES)).info
    assert (first.deployment, first.error) == ("t1", "r1: InternalServerError (500)")
    assert router.cooling_down() == ["r1"]
    info = (await router.acompletion("reasoning", MESSAGES)).info
    assert (info.deployment, info.fallback, info.error) == ("t1", True, "r1: cooling down")
    assert stub.count("large") == 1


async def test_a_streamed_call_falls_back_to_the_fallback_group(stub: OpenAIStub) -> None:
    stub.script("large", Reply.error(500))
    stub.script("small", Reply.json({"from": "triage"}))
    client = two_groups(stub, stub_deployment(stub, "large", "r1")).client("reasoning")
    msg = UserMessage(content=f"Do the task.\n{render_data_block(DIAGNOSE)}", source="user")
    items = [item async for item in client.create_stream([msg])]
    assert isinstance(items[-1], CreateResult) and items[-1].content == '{"from": "triage"}'
    [info] = client.drain_calls()
    assert (info.deployment, info.fallback, info.degraded_reason) == ("t1", True, None)
    assert info.error == "r1: InternalServerError (500)"


def test_the_chain_takes_in_fallback_groups_depth_first_and_ends_on_the_playbook() -> None:
    def group(*names: str) -> dict[str, Any]:
        return {"deployments": [{"model": f"openai/{n}", "name": n} for n in names]}

    data: dict[str, Any] = {
        "groups": {
            "a": group("a1", "a2"),
            "b": group("b1"),
            "c": group("c1"),
            "d": {"deployments": [{"model": "playbook/default", "name": "d-book"}]},
        },
        "router": {"fallbacks": {"a": ["b", "d", "c"], "b": ["c", "a"], "d": ["a"]}},
    }
    cfg = models_config_from_dict(data)
    assert [(d.name, level) for d, level in cfg.chain("a")] == [
        ("a1", 1),
        ("a2", 2),
        ("b1", 3),
        ("c1", 4),
        ("a-playbook", 5),
    ]
    assert cfg.fallback_groups("a") == ["b", "c", "d"]
    # a group served by the playbook alone keeps it as its model
    assert [d.name for d, _ in cfg.chain("d")] == ["d-book"]
    data["router"]["max_fallbacks"] = 1
    assert [d.name for d, _ in models_config_from_dict(data).chain("a")] == [
        "a1",
        "a2",
        "b1",
        "a-playbook",
    ]
