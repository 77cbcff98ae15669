"""Which model deployments answer: one small request to each, directly (no router, no fallback).

:func:`check_deployments` sends every active deployment of every group (or of ``groups``) the
same probe, a user message with a ``diagnose`` data block and no candidates, capped at
``max_tokens`` and cut off after ``timeout_s`` (or the deployment's own, shorter, timeout),
with no retries. The playbook answers it from its rules, so its check also proves the rules
file loads; a hosted or local model answers anything. Deployments left out by the
configuration (``enabled: false``, key variable unset) are reported as ``skipped`` with the
reason. Error texts are scrubbed of API keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from plantcrew.llm.config import Deployment
from plantcrew.llm.protocol import render_data_block
from plantcrew.llm.router import ModelRouter

import litellm  # isort: skip

PROBE = [
    {
        "role": "user",
        "content": "Health check: answer with one short JSON object.\n\n"
        + render_data_block({"task": "diagnose", "candidates": []}),
    }
]
_ROUTER_ONLY = ("order", "weight", "rpm", "tpm")


@dataclass(frozen=True)
class DeploymentCheck:
    """The probe of one deployment: ``status`` ``ok`` (it answered), ``failed`` or
    ``skipped`` (not active in this configuration); latency in ms, tokens, USD, error text."""

    group: str
    deployment: str
    model: str
    status: Literal["ok", "failed", "skipped"]
    latency_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None


async def _probe(
    router: ModelRouter, group: str, dep: Deployment, timeout_s: float, max_tokens: int
) -> DeploymentCheck:
    assert dep.name is not None
    params = router.litellm_params(dep.name)
    for key in _ROUTER_ONLY:
        params.pop(key, None)
    limit = min(timeout_s, dep.timeout_s or timeout_s)
    params.update(timeout=limit, max_retries=0, num_retries=0)
    if not dep.is_playbook:
        params["max_tokens"] = max_tokens
    start = time.perf_counter()
    try:
        response = await asyncio.wait_for(
            litellm.acompletion(messages=list(PROBE), **params), timeout=limit + 1.0
        )
    except TimeoutError:
        return DeploymentCheck(
            group,
            dep.name,
            dep.model,
            "failed",
            round((time.perf_counter() - start) * 1000, 1),
            error=f"Timeout (no answer within {limit:g} s)",
        )
    except Exception as exc:  # any provider error is a failed check
        name = type(exc).__name__
        text = f"{name} (no answer within {limit:g} s)" if name == "Timeout" else f"{name}: {exc}"
        return DeploymentCheck(
            group,
            dep.name,
            dep.model,
            "failed",
            round((time.perf_counter() - start) * 1000, 1),
            error=router.scrub(text),
        )
    latency = round((time.perf_counter() - start) * 1000, 1)
    usage = getattr(response, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    return DeploymentCheck(
        group,
        dep.name,
        dep.model,
        "ok",
        latency,
        prompt,
        completion,
        router.cost_of_tokens(dep.name, dep.model, prompt, completion),
    )


async def check_deployments(
    router: ModelRouter,
    *,
    timeout_s: float = 15.0,
    groups: Sequence[str] | None = None,
    max_tokens: int = 16,
) -> list[DeploymentCheck]:
    """Probe every deployment of ``groups`` (default: all) at once.

    Results per group: the skipped deployments first, then the active ones in failover order.

    Raises UnknownGroupError for a group the configuration does not define; never raises for
    a deployment that fails (that is its result).
    """
    names = list(groups) if groups is not None else router.groups
    for group in names:
        router.check_group(group)
    slots: list[DeploymentCheck | asyncio.Future[DeploymentCheck]] = []
    for group in names:
        skipped = dict(router.config.skipped(group))
        active = {d.name: d for d in router.deployments(group)}
        listed = [
            dep.name or f"{group}-{i}"
            for i, dep in enumerate(router.config.groups[group].deployments)
        ]
        for i, name in enumerate(listed):
            if name in active:
                continue
            model = router.config.groups[group].deployments[i].model
            slots.append(
                DeploymentCheck(
                    group, name, model, "skipped", error=skipped.get(name, "not active")
                )
            )
        for dep in active.values():  # in order, the playbook last resort included
            slots.append(asyncio.ensure_future(_probe(router, group, dep, timeout_s, max_tokens)))
    futures = [s for s in slots if isinstance(s, asyncio.Future)]
    if futures:
        await asyncio.gather(*futures)
    return [s.result() if isinstance(s, asyncio.Future) else s for s in slots]


__all__ = ["PROBE", "DeploymentCheck", "check_deployments"]
