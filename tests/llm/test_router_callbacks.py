"""Routers leave litellm's module-level callback lists as they found them: a process that
builds router after router (eval skab, a Coordinator host per run, tests) neither keeps the
old ones alive nor walks their callbacks on every call, and a call reports its usage and its
failures to the router that made it alone."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

from plantcrew.llm import ModelRouter, models_config_from_dict
from plantcrew.llm.usage import CALLBACK_LISTS
from tests.llm.conftest import stub_deployment, stub_router
from tests.llm.openai_stub import OpenAIStub, Reply
from tests.llm.payloads import DIAGNOSE, user_message

import litellm  # isort: skip
import litellm.litellm_core_utils.logging_callback_manager as callback_manager  # isort: skip
from litellm.router_utils.router_callbacks.track_deployment_metrics import (  # isort: skip
    get_deployment_failures_for_current_minute,
    get_deployment_successes_for_current_minute,
)

MESSAGES = [user_message(DIAGNOSE)]
BUILDS = 5


def lists() -> dict[str, list[Any]]:
    """A copy of each of litellm's global callback lists."""
    return {name: list(getattr(litellm, name)) for name in CALLBACK_LISTS}


def lengths() -> dict[str, int]:
    return {name: len(items) for name, items in lists().items()}


def held_routers() -> list[Any]:
    """The litellm Routers litellm's global lists hold (through bound methods or loggers)."""
    return [
        owner
        for items in lists().values()
        for item in items
        if isinstance(owner := getattr(item, "__self__", None), litellm.Router)
    ]


def playbook_router(strategy: str) -> ModelRouter:
    cfg = models_config_from_dict({
        "groups": {"triage": {"deployments": [{"model": "playbook/default", "name": "pb"}]}},
        "router": {"routing_strategy": strategy},
    })  # fmt: skip
    return ModelRouter(cfg)


STRATEGIES = ["simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_routers_built_and_closed_leave_the_callback_lists_as_they_were(strategy: str) -> None:
    playbook_router(strategy).close()  # the first router of a process may register once
    before = lengths()
    for _ in range(BUILDS):
        router = playbook_router(strategy)
        assert router.router not in held_routers()
        router.close()
        router.close()  # closing twice is harmless
    assert lengths() == before  # before: each router added 4 to 6 entries


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_routers_dropped_without_close_leave_nothing_once_collected(strategy: str) -> None:
    playbook_router(strategy).close()
    gc.collect()
    before = lengths()
    refs = []
    for _ in range(BUILDS):
        router = playbook_router(strategy)
        refs.append(weakref.ref(router.router))
        del router
    gc.collect()
    assert [ref() for ref in refs] == [None] * BUILDS  # before: litellm's lists held each
    assert lengths() == before


def stub_config(stub: OpenAIStub) -> tuple[dict[str, Any], ...]:
    return (
        stub_deployment(stub, "flaky", "primary", allowed_fails=0, cooldown_s=60.0),
        stub_deployment(stub, "steady", "secondary"),
    )


async def counts(router: ModelRouter, deployment: str) -> tuple[int, int]:
    """``(successes, failures)`` litellm's router callbacks counted this minute."""
    return (
        get_deployment_successes_for_current_minute(router.router, deployment),
        get_deployment_failures_for_current_minute(router.router, deployment),
    )


async def settled(router: ModelRouter, expected: dict[str, tuple[int, int]]) -> None:
    """Wait (at most 10 s) until litellm's logging (a task and a worker thread) has counted
    ``expected`` in ``router``."""
    for _ in range(200):
        if {name: await counts(router, name) for name in expected} == expected:
            return
        await asyncio.sleep(0.05)
    got = {name: await counts(router, name) for name in expected}
    raise AssertionError(f"counts {got}, expected {expected}")


async def test_a_call_reports_to_the_router_that_made_it_alone(stub: OpenAIStub) -> None:
    stub.script("flaky", Reply.error(500))
    stub.script("steady", Reply.json({"ok": True}))
    others = [stub_router(stub, *stub_config(stub)) for _ in range(3)]  # alive, not closed
    router = stub_router(stub, *stub_config(stub))
    routed = await router.acompletion("triage", MESSAGES)
    assert (routed.info.deployment, routed.info.ok) == ("secondary", True)
    assert routed.info.error == "primary: InternalServerError (500)"
    assert routed.info.cost_usd == 0.0  # a model litellm does not price
    await settled(router, {"primary": (0, 1), "secondary": (1, 0)})
    assert router.cooling_down() == ["primary"]
    for other in others:  # before: each counted the call and opened its own circuit
        assert await counts(other, "primary") == (0, 0)
        assert await counts(other, "secondary") == (0, 0)
        assert other.cooling_down() == []
    for r in (*others, router):
        r.close()


async def test_a_router_built_when_litellm_lists_are_full_still_counts_its_calls(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """litellm refuses a callback past ``MAX_CALLBACKS`` (100) entries in a list; 3 here."""
    stub.script("flaky", Reply.error(500))
    stub.script("steady", Reply.json({"ok": True}))
    stub_router(stub, *stub_config(stub)).close()
    monkeypatch.setattr(
        callback_manager, "MAX_CALLBACKS", max(len(v) for v in lists().values()) + 3
    )
    others = [stub_router(stub, *stub_config(stub)) for _ in range(4)]  # alive, not closed
    router = stub_router(stub, *stub_config(stub))
    routed = await router.acompletion("triage", MESSAGES)
    assert routed.info.deployment == "secondary"
    # before: the newest router's callbacks were refused, its circuit never opened
    await settled(router, {"primary": (0, 1), "secondary": (1, 0)})
    assert router.cooling_down() == ["primary"]
    for r in (*others, router):
        r.close()
