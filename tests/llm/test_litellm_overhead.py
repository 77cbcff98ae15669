"""litellm's per-call work that plantcrew does not need is not done, and what plantcrew records
still is: the playbook tells litellm its cost (0), so litellm does not price it, while a model
litellm prices gets litellm's cost, computed once; the failed-attempt log is a failure callback
alone, and a failed attempt is still in the record."""

from __future__ import annotations

from typing import Any

import pytest

from plantcrew.llm import ModelRouter, models_config_from_dict
from plantcrew.llm.convert import response_format_for
from tests.llm.conftest import stub_deployment, stub_router
from tests.llm.openai_stub import OpenAIStub, Reply
from tests.llm.payloads import DIAGNOSE, DiagnosisOut, user_message
from tests.llm.playbook_call_cost import drained

import litellm  # isort: skip
import litellm.cost_calculator  # isort: skip
from litellm.integrations.custom_logger import CustomLogger  # isort: skip
from litellm.litellm_core_utils.litellm_logging import Logging  # isort: skip

MESSAGES = [{"role": "system", "content": "Diagnose."}, user_message(DIAGNOSE)]
GOOD = {"root_cause": "cavitation", "confidence": 0.7, "evidence": ["e"], "summary": "s"}
CALLS = 3


@pytest.fixture
def cost_runs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The models litellm's ``completion_cost`` was run for (it prices every response whose
    cost is not already known)."""
    runs: list[Any] = []
    real = litellm.cost_calculator.completion_cost

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(kwargs.get("model"))
        return real(*args, **kwargs)

    monkeypatch.setattr(litellm.cost_calculator, "completion_cost", counted)
    return runs


async def test_the_playbook_costs_nothing_without_litellm_pricing_it(
    cost_runs: list[Any],
) -> None:
    cfg = models_config_from_dict({
        "groups": {"triage": {"deployments": [
            {"model": "playbook/default", "name": "triage-playbook"},
        ]}},
        "router": {"num_retries": 0},
    })  # fmt: skip
    router = ModelRouter(cfg)
    fmt = response_format_for(DiagnosisOut)
    for _ in range(CALLS):
        routed = await router.acompletion("triage", MESSAGES, response_format=fmt)
        assert routed.info.deployment == "triage-playbook" and routed.info.ok
        assert routed.info.cost_usd == 0.0 and routed.info.prompt_tokens > 0
        assert routed.response._hidden_params["response_cost"] == 0.0
    assert cost_runs == []  # before: litellm priced each playbook answer (to 0)


async def test_a_model_litellm_prices_gets_litellm_cost(
    stub: OpenAIStub, cost_runs: list[Any]
) -> None:
    # a model of litellm's price list, no `price` configured: the record's cost is litellm's
    stub.script("gpt-4o-mini", Reply.json(GOOD))
    router = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "mini"))
    routed = await router.acompletion("triage", MESSAGES)
    prompt, completion = litellm.cost_per_token(
        model="gpt-4o-mini", prompt_tokens=11, completion_tokens=7
    )
    assert routed.info.deployment == "mini" and not routed.info.fallback
    assert (routed.info.prompt_tokens, routed.info.completion_tokens) == (11, 7)
    assert routed.info.cost_usd == pytest.approx(prompt + completion) and prompt > 0
    assert len(cost_runs) == 1  # priced once, by litellm, for the response and its logging


async def test_failed_attempts_are_learnt_from_failure_events_alone(stub: OpenAIStub) -> None:
    stub.script("gpt-4o-mini", Reply.error(500))
    stub.script("gpt-4o", Reply.json(GOOD))
    router = stub_router(
        stub, stub_deployment(stub, "gpt-4o-mini", "primary"), stub_deployment(stub, "gpt-4o", "b")
    )
    log = router._failures
    assert log in litellm._async_failure_callback
    for unused in (litellm.callbacks, litellm.input_callback, litellm.success_callback,
                   litellm._async_success_callback, litellm.failure_callback):  # fmt: skip
        assert log not in unused  # before: in each (run on every call's input and success)
    routed = await router.acompletion("triage", MESSAGES)
    assert routed.info.deployment == "b" and routed.info.fallback and routed.info.ok
    assert routed.info.error == "primary: InternalServerError (500)"
    assert routed.info.cost_usd > 0  # litellm's price of gpt-4o


@pytest.fixture
def success_logs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The models litellm ran its async success logging for (a task, a payload, callbacks)."""
    logs: list[Any] = []
    real = Logging.async_success_handler

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        logs.append(self.model)
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Logging, "async_success_handler", counted)
    return logs


def playbook_only(**router: Any) -> ModelRouter:
    cfg = models_config_from_dict({
        "groups": {"triage": {"deployments": [
            {"model": "playbook/default", "name": "triage-playbook"},
        ]}},
        "router": {"num_retries": 0, **router},
    })  # fmt: skip
    return ModelRouter(cfg)


async def test_a_playbook_answer_through_the_router_is_not_logged_by_litellm(
    success_logs: list[Any],
) -> None:
    router = playbook_only()
    fmt = response_format_for(DiagnosisOut)
    for _ in range(CALLS):
        routed = await router.acompletion("triage", MESSAGES, response_format=fmt)
        # the Router served it (no direct route), and the record is whole
        assert routed.response._hidden_params["model_id"] == "triage-playbook"
        assert (routed.info.deployment, routed.info.model) == (
            "triage-playbook",
            "playbook/default",
        )
        assert routed.info.ok and routed.info.cost_usd == 0.0 and routed.info.prompt_tokens > 0
        assert routed.info.completion_tokens > 0 and routed.info.response
    await drained()
    assert success_logs == []  # before: one success log (task, payload, callbacks) per call
    router.close()


async def test_a_model_answer_is_still_logged_by_litellm(
    stub: OpenAIStub, success_logs: list[Any]
) -> None:
    stub.script("gpt-4o-mini", Reply.json(GOOD))
    router = stub_router(stub, stub_deployment(stub, "gpt-4o-mini", "mini"))
    routed = await router.acompletion("triage", MESSAGES)
    assert routed.info.deployment == "mini"
    await drained()
    assert success_logs == ["gpt-4o-mini"]
    router.close()


class _Seen(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.models: list[Any] = []

    async def async_log_success_event(self, kwargs: Any, *args: Any, **kw: Any) -> None:
        self.models.append(kwargs.get("model"))


async def test_a_playbook_answer_is_logged_when_a_callback_would_see_it(
    monkeypatch: pytest.MonkeyPatch, success_logs: list[Any]
) -> None:
    seen = _Seen()
    monkeypatch.setattr(litellm, "callbacks", [*litellm.callbacks, seen])
    router = playbook_only()
    await router.acompletion("triage", MESSAGES)
    await drained()
    assert seen.models == ["default"] and len(success_logs) == 1
    router.close()


async def test_a_playbook_answer_is_logged_for_a_routing_strategy_that_reads_it(
    success_logs: list[Any],
) -> None:
    router = playbook_only(routing_strategy="latency-based-routing")
    await router.acompletion("triage", MESSAGES)
    await drained()
    assert len(success_logs) == 1
    router.close()
