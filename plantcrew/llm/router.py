"""``ModelRouter``: a litellm ``Router`` built from :class:`~plantcrew.llm.config.ModelsConfig`.

Each group becomes one litellm model group (``model_name``) holding its *chain*
(:meth:`~plantcrew.llm.config.ModelsConfig.chain`), each deployment at its order level there,
so litellm itself fails over from one level to the next (order-based fallback): the group's
own deployments, then its ``fallbacks`` groups' model deployments, then its playbook, the last
fallback. (litellm tries every order level of a group before the group's fallback groups, so
a fallback group given to litellm as such would come after the playbook and never serve.) A
deployment another group's chain takes in is a second litellm deployment, with the id
``<group>><name>`` (:data:`CHAIN_SEP`): its circuit breaker and its ``rpm``/``tpm`` pacing
there are its own; records, cooldown lists and errors name the deployment. Only the groups
whose chain takes in nothing (a group served by the playbook alone) keep their ``fallbacks``
as litellm fallback groups. The playbook provider is registered once.

With ``router.playbook_direct`` (off by default), a group served by the playbook alone skips
the Router when the playbook answers (:mod:`plantcrew.llm.direct`); the accounting below is
the same.

Per-call accounting (:meth:`ModelRouter.acompletion` returns a :class:`RoutedCall`): the
deployment that served the call is read from the response's ``_hidden_params["model_id"]``
(litellm sets it to the deployment's ``model_info.id``, which is our deployment name); the call
counts as a fallback when that deployment is not on the group's first order level, belongs to
another group, or litellm reports ``x-litellm-attempted-fallbacks > 0``. Cost is litellm's
``response_cost`` (its local cost map; 0 for the playbook and for models it does not know).
Failed attempts (a deployment that errored before another served the call) are learnt from
a litellm failure callback (``async_log_failure_event``, awaited by litellm before it moves
on), matched to the call by a ``plantcrew_call`` metadata tag; they are listed in the
record's ``error`` as ``"<deployment>: <ErrorType>"`` even when the call succeeded (``ok``
tells success), with the deployments the circuit breaker skipped (``"<deployment>: cooling
down"``) and, for a timeout, the limit that cut the call. A call the playbook served although
the group has model deployments is degraded: its ``degraded_reason`` says ``"no model
answered (...)"``. Cost uses a deployment's configured ``price`` when it has one. Error texts
are scrubbed of configured API keys before they are kept.

The circuit breaker: each deployment carries ``allowed_fails`` and, when set, its own
``cooldown_time`` in litellm's ``model_info``; after more than ``allowed_fails`` failures
within the cooldown time litellm skips it for that long (the playbook is never skipped).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

import plantcrew.settings  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP before litellm)
from plantcrew.errors import ModelError
from plantcrew.llm.config import CHAIN_SEP, Deployment, ModelsConfig, load_models_config
from plantcrew.llm.direct import DirectPlaybook
from plantcrew.llm.playbook import register_playbook_provider
from plantcrew.llm.usage import UsageRouter
from plantcrew.messages import ModelCallInfo
from plantcrew.settings import get_settings

import litellm  # isort: skip
from litellm.integrations.custom_logger import CustomLogger  # isort: skip

if TYPE_CHECKING:
    from plantcrew.llm.client import LiteLLMChatCompletionClient

MAX_ERROR_CHARS = 500
COOLING = "cooling down"
log = structlog.get_logger("plantcrew.llm")


class UnknownGroupError(ModelError):
    """A caller asked for a model group the configuration does not define."""


class _FailureLog(CustomLogger):
    """Collects failed deployment attempts of tagged calls: tag -> [(deployment, error)]."""

    TAG = "plantcrew_call"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._open: dict[str, list[tuple[str, str]]] = {}

    def begin(self) -> str:
        tag = uuid.uuid4().hex
        with self._lock:
            self._open[tag] = []
        return tag

    def end(self, tag: str) -> list[tuple[str, str]]:
        with self._lock:
            attempts = self._open.pop(tag, [])
        out: list[tuple[str, str]] = []
        counts: list[int] = []
        for item in attempts:  # repeated attempts (retries) of one deployment are counted
            if out and out[-1] == item:
                counts[-1] += 1
            else:
                out.append(item)
                counts.append(1)
        return [(d, e if n == 1 else f"{e} x{n}") for (d, e), n in zip(out, counts, strict=True)]

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        params = kwargs.get("litellm_params") or {}
        tag = (params.get("metadata") or {}).get(self.TAG)
        if not tag:
            return
        error = error_label(kwargs.get("exception"))
        name = str((params.get("model_info") or {}).get("id") or "unknown")
        with self._lock:
            if tag in self._open:
                self._open[tag].append((name, error))


def error_label(exc: BaseException | None) -> str:
    """``"InternalServerError (500)"``: an attempt's error type and status; ``"connection
    refused"`` when the connection was refused (litellm reports that as a 500)."""
    seen: set[int] = set()
    cause = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    code = getattr(exc, "status_code", None)
    return type(exc).__name__ + (f" ({code})" if code else "")


_failures: _FailureLog | None = None
_failures_lock = threading.Lock()


def _failure_log() -> _FailureLog:
    global _failures
    with _failures_lock:
        if _failures is None:
            _failures = _FailureLog()
            # registered for the failure events it reads alone: in litellm.callbacks it was
            # also run (doing nothing) in every call's input and success logging
            litellm.logging_callback_manager.add_litellm_async_failure_callback(_failures)
        return _failures


@dataclass(frozen=True)
class RoutedCall:
    """One completed model call: litellm's response and its accounting."""

    response: Any
    info: ModelCallInfo


class ModelRouter:
    """litellm Router over the configured groups; hands out AutoGen clients per group.

    ``playbooks_path`` names the rules file of the playbook deployments that set no
    ``api_base`` (default ``<config_dir>/playbooks.yaml``).
    """

    def __init__(self, config: ModelsConfig, *, playbooks_path: Path | str | None = None) -> None:
        register_playbook_provider()
        self._failures = _failure_log()
        litellm.suppress_debug_info = True
        self.config = config
        self.playbooks_path = str(playbooks_path or get_settings().config_dir / "playbooks.yaml")
        self._deployments: dict[str, Deployment] = {}
        self._group_of: dict[str, str] = {}
        self._names: dict[str, str] = {}  # litellm deployment id -> deployment name
        self._chains: dict[str, list[str]] = {}  # group -> litellm ids of its chain
        self._secrets: list[str] = []
        for group in config.groups:
            for name, why in config.skipped(group):
                level = log.debug if why == "enabled: false" else log.info
                level("model deployment skipped", group=group, deployment=name, reason=why)
            for dep in config.active(group):
                assert dep.name is not None
                self._deployments[dep.name] = dep
                self._group_of[dep.name] = group
        model_list: list[dict[str, Any]] = []
        levels = 1  # order levels of the longest chain
        for group in config.groups:
            chain = config.chain(group)
            levels = max(levels, len({level for _, level in chain}))
            for dep, level in chain:
                assert dep.name is not None
                lid = (
                    dep.name
                    if self._group_of[dep.name] == group
                    else (f"{group}{CHAIN_SEP}{dep.name}")
                )
                self._names[lid] = dep.name
                self._chains.setdefault(group, []).append(lid)
                model_list.append(self._entry(group, dep, level=level, lid=lid))
        self._direct = {
            g: d
            for g in config.groups
            if config.router.playbook_direct
            and (d := DirectPlaybook.of(g, self.deployments(g), self.playbooks_path)) is not None
        }
        r = config.router
        compiled = {g for g in config.groups if self.borrowed(g)}
        self.router = UsageRouter(
            model_list=model_list,
            num_retries=r.num_retries,
            retry_after=r.retry_after_s,
            allowed_fails=r.allowed_fails,
            cooldown_time=r.cooldown_time_s,
            timeout=r.timeout_s,
            # litellm counts each order level it moves to as a fallback: a chain's levels
            # come on top of the group hops max_fallbacks allows
            max_fallbacks=r.max_fallbacks + levels,
            routing_strategy=r.routing_strategy,
            fallbacks=[{k: v} for k, v in r.fallbacks.items() if k not in compiled],
            context_window_fallbacks=[{k: v} for k, v in r.context_window_fallbacks.items()],
            content_policy_fallbacks=[{k: v} for k, v in r.content_policy_fallbacks.items()],
        )

    def close(self) -> None:
        """Take this router off litellm's global callback lists (:meth:`UsageRouter.close`);
        idempotent. A router nobody holds any more is taken off when it is collected; a
        closed router is not called again."""
        self.router.close()

    @classmethod
    def from_file(
        cls, path: Path | str | None = None, *, playbooks_path: Path | str | None = None
    ) -> ModelRouter:
        """Build from ``models.yaml`` (default ``<config_dir>/models.yaml``); ConfigError if bad."""
        return cls(load_models_config(path), playbooks_path=playbooks_path)

    def _entry(
        self, group: str, dep: Deployment, *, level: int | None = None, lid: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            **dep.extra,
            "model": dep.model,
            "order": level if level is not None else dep.order,
            "weight": dep.weight,
        }
        if dep.is_playbook:
            params["api_base"] = dep.api_base or self.playbooks_path
        elif dep.api_base:
            params["api_base"] = dep.api_base
        if dep.api_key_env:
            key = os.environ.get(dep.api_key_env, "")
            params["api_key"] = key
            if len(key) >= 4:
                self._secrets.append(key)
        for attr, name in (
            ("rpm", "rpm"),
            ("tpm", "tpm"),
            ("timeout_s", "timeout"),
            ("max_retries", "max_retries"),
        ):
            value = getattr(dep, attr)
            if value is not None:
                params[name] = value
        # The circuit breaker is set per deployment (litellm reads allowed_fails and
        # cooldown_time from model_info): litellm applies a router-wide allowed_fails only
        # when it differs from its own default, and otherwise cools a deployment down by
        # failure rate over a minute (1000 calls at 100 % failure), which never trips here.
        info: dict[str, Any] = {
            "id": lid or dep.name,
            "allowed_fails": (
                dep.allowed_fails
                if dep.allowed_fails is not None
                else self.config.router.allowed_fails
            ),
        }
        if dep.is_playbook:
            info["cooldown_time"] = 0  # the last resort is never skipped
        elif dep.cooldown_s is not None:
            info["cooldown_time"] = dep.cooldown_s
        if dep.price is not None:
            info["input_cost_per_token"] = dep.price.input_per_mtok / 1e6
            info["output_cost_per_token"] = dep.price.output_per_mtok / 1e6
        return {"model_name": group, "litellm_params": params, "model_info": info}

    # ---- lookup ---------------------------------------------------------------------------

    @property
    def groups(self) -> list[str]:
        """The configured group names."""
        return list(self.config.groups)

    def check_group(self, group: str) -> None:
        """Raise UnknownGroupError (a ModelError) when ``group`` is not configured."""
        if group not in self.config.groups:
            raise UnknownGroupError(f"unknown model group {group!r}; known: {self.groups}")

    def deployments(self, group: str) -> list[Deployment]:
        """The active deployments of ``group`` in order (names and orders filled in)."""
        self.check_group(group)
        return [d for n, d in self._deployments.items() if self._group_of[n] == group]

    def deployment(self, name: str) -> Deployment | None:
        """The active deployment called ``name``, or None."""
        return self._deployments.get(name)

    def borrowed(self, group: str) -> list[str]:
        """Names of the deployments of other groups that ``group``'s chain takes in (tried
        after its own, before its playbook), in order."""
        self.check_group(group)
        return [
            self._names[lid]
            for lid in self._chains.get(group, [])
            if self._group_of[self._names[lid]] != group
        ]

    def name_of(self, model_id: str) -> str:
        """The deployment name of a litellm deployment id (``<group>><name>`` for a
        deployment in another group's chain); an unknown id is returned as it is."""
        return self._names.get(model_id, model_id)

    def litellm_params(self, name: str) -> dict[str, Any]:
        """A copy of the litellm parameters of active deployment ``name`` (it holds the API
        key: never log it). Raises KeyError for an unknown name."""
        dep = self._deployments[name]
        return dict(self._entry(self._group_of[name], dep)["litellm_params"])

    def playbook_deployment(self, group: str) -> Deployment:
        """The playbook deployment of ``group`` (its last resort), or ``playbook/default``."""
        for dep in reversed(self.deployments(group)):
            if dep.is_playbook:
                return dep
        return Deployment(model="playbook/default", name=f"{group}-playbook")

    def client(self, group: str, **kwargs: Any) -> LiteLLMChatCompletionClient:
        """An AutoGen ``ChatCompletionClient`` for ``group``; UnknownGroupError if unknown."""
        from plantcrew.llm.client import LiteLLMChatCompletionClient

        self.check_group(group)
        return LiteLLMChatCompletionClient(self, group, **kwargs)

    # ---- calls ----------------------------------------------------------------------------

    async def acompletion(
        self, group: str, messages: Sequence[dict[str, Any]], **kwargs: Any
    ) -> RoutedCall:
        """One routed chat completion (not streamed) for ``group``, with its accounting.

        ``kwargs`` are OpenAI chat parameters (``tools``, ``response_format``...). Raises
        UnknownGroupError for an unknown group, and litellm's exception (its ``info`` is in
        ``exc.plantcrew_call``) when every deployment and fallback failed.
        """
        self.check_group(group)
        direct = self._direct.get(group)
        if direct is not None:  # the playbook alone serves the group: no Router machinery
            start = time.perf_counter()
            try:
                served = direct.complete(messages, kwargs)
            except Exception:  # the Router serves it: its retries, fallbacks and accounting
                served = None
            if served is not None:
                text = served.choices[0].message.content or ""
                latency = time.perf_counter() - start
                return RoutedCall(served, self.success_info(group, messages, served, latency, text))
        tag = self._failures.begin()
        metadata = {**(kwargs.pop("metadata", None) or {}), _FailureLog.TAG: tag}
        start = time.perf_counter()
        try:
            response: Any = await self.router.acompletion(
                model=group,
                messages=list(messages),  # type: ignore[arg-type]
                metadata=metadata,
                **kwargs,
            )
        except BaseException as exc:
            await asyncio.sleep(0)
            attempts = self.named(self._failures.end(tag))
            if isinstance(exc, Exception):
                info = self.failure_info(
                    group, messages, exc, time.perf_counter() - start, attempts
                )
                exc.plantcrew_call = info  # type: ignore[attr-defined]
                log.warning("model call failed on every deployment", group=group, error=info.error)
            raise
        latency = time.perf_counter() - start
        attempts = self.with_cooldowns(
            group, self.named(self._failures.end(tag)), served=self.served_by(response)[0]
        )
        choice = response.choices[0]
        text = choice.message.content or ""
        tool_calls = getattr(choice.message, "tool_calls", None)
        if tool_calls:
            text = text or json.dumps([tc.model_dump() for tc in tool_calls], default=str)
        info = self.success_info(group, messages, response, latency, text, attempts)
        if info.degraded_reason:
            log.warning(
                "model call degraded to the playbook",
                group=group,
                deployment=info.deployment,
                reason=info.degraded_reason,
            )
        elif info.fallback:
            log.warning(
                "model call served by a fallback",
                group=group,
                deployment=info.deployment,
                failed=info.error,
            )
        return RoutedCall(response, info)

    async def astream(
        self, group: str, messages: Sequence[dict[str, Any]], **kwargs: Any
    ) -> tuple[Any, list[tuple[str, str]]]:
        """Start a streamed completion: ``(litellm's async chunk iterator, failed attempts)``.

        Failures that happen once the stream has started are not retried by litellm. When
        every deployment failed, litellm's exception carries the call's record in
        ``exc.plantcrew_call`` (as :meth:`acompletion`'s does).
        """
        self.check_group(group)
        tag = self._failures.begin()
        metadata = {**(kwargs.pop("metadata", None) or {}), _FailureLog.TAG: tag}
        router: Any = self.router
        start = time.perf_counter()
        try:
            stream = await router.acompletion(
                model=group,
                messages=list(messages),
                stream=True,
                stream_options={"include_usage": True},
                metadata=metadata,
                **kwargs,
            )
        except Exception as exc:
            await asyncio.sleep(0)
            exc.plantcrew_call = self.failure_info(  # type: ignore[attr-defined]
                group,
                messages,
                exc,
                time.perf_counter() - start,
                self.named(self._failures.end(tag)),
            )
            raise
        finally:
            attempts = self.named(self._failures.end(tag))  # empty after the except clause
        return stream, self.with_cooldowns(group, attempts, served=self.served_by(stream)[0])

    async def aplaybook(
        self, group: str, messages: Sequence[dict[str, Any]], **kwargs: Any
    ) -> RoutedCall:
        """Call the group's playbook deployment directly (no router, no fallback)."""
        dep = self.playbook_deployment(group)
        start = time.perf_counter()
        response = await litellm.acompletion(
            model=dep.model,
            messages=list(messages),
            api_base=dep.api_base or self.playbooks_path,
            **kwargs,
        )
        info = self.success_info(
            group,
            messages,
            response,
            time.perf_counter() - start,
            response.choices[0].message.content or "",
        )
        return RoutedCall(
            response, info.model_copy(update={"deployment": dep.name, "model": dep.model})
        )

    # ---- circuit breaker ------------------------------------------------------------------

    def _cooling_ids(self) -> list[str]:
        active = self.router.cooldown_cache.get_active_cooldowns(
            model_ids=list(self._names), parent_otel_span=None
        )
        return [str(item[0]) for item in active or [] if isinstance(item, tuple)]

    def cooling_down(self) -> list[str]:
        """Names of the deployments the router skips now (their cooldown has not ended), in
        any group's chain."""
        return list(dict.fromkeys(self.name_of(lid) for lid in self._cooling_ids()))

    def with_cooldowns(
        self, group: str, attempts: Sequence[tuple[str, str]], served: str | None = None
    ) -> list[tuple[str, str]]:
        """``attempts`` plus ``(name, "cooling down")`` for the deployments of the group's
        chain the router skipped: its own, and the other groups' ones it takes in unless
        ``served`` (a deployment name) is one of its own models (the call never got there)."""
        own_model = (
            served is not None
            and self._group_of.get(served) == group
            and not (self._deployments[served].is_playbook)
        )
        tried = {name for name, _ in attempts}
        cooling = set(self._cooling_ids())
        skipped = [self._names[lid] for lid in self._chains.get(group, []) if lid in cooling]
        return [
            *attempts,
            *(
                (name, COOLING)
                for name in dict.fromkeys(skipped)
                if name not in tried and (not own_model or self._group_of[name] == group)
            ),
        ]

    def named(self, attempts: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """``attempts`` as ``(deployment name, error)``: litellm ids mapped to names."""
        return [(self.name_of(lid), error) for lid, error in attempts]

    # ---- accounting -----------------------------------------------------------------------

    def served_by(self, response: Any) -> tuple[str, str, bool]:
        """``(deployment name, model, fallback?)`` of a response or stream."""
        hidden = getattr(response, "_hidden_params", None) or {}
        name = self.name_of(str(hidden.get("model_id") or "unknown"))
        dep = self._deployments.get(name)
        model = dep.model if dep else str(hidden.get("litellm_model_name") or "unknown")
        headers = hidden.get("additional_headers") or {}
        attempted = headers.get("x-litellm-attempted-fallbacks") or 0
        fallback = bool(attempted)
        if dep is not None:
            group = self._group_of[name]
            first = min((d.order or 1) for d in self.deployments(group))
            requested = headers.get("x-litellm-model-group")
            fallback = (
                fallback
                or (dep.order or 1) > first
                or (isinstance(requested, str) and requested != group)
            )
        return name, model, fallback

    def success_info(
        self,
        group: str,
        messages: Sequence[dict[str, Any]],
        response: Any,
        latency_s: float,
        text: str,
        attempts: Sequence[tuple[str, str]] = (),
    ) -> ModelCallInfo:
        """The accounting record of a successful call (``attempts``: failed before it)."""
        name, model, fallback = self.served_by(response)
        fallback = fallback or self.failed_before(name, attempts)
        usage = getattr(response, "usage", None)
        return ModelCallInfo(
            degraded_reason=self.degraded_reason(group, name, attempts),
            model_group=group,
            deployment=name,
            model=model,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            latency_ms=round(latency_s * 1000, 3),
            cost_usd=self.cost_of(response, model, name),
            fallback=fallback,
            ok=True,
            error=self.attempts_text(attempts),
            prompt=[dict(m) for m in messages],
            response=text,
        )

    @staticmethod
    def failed_before(served: str, attempts: Sequence[tuple[str, str]]) -> bool:
        """True when another deployment failed before ``served`` answered (a deployment the
        circuit breaker skipped counts only through its order: see :meth:`served_by`)."""
        return any(dep != served and error != COOLING for dep, error in attempts)

    def degraded_reason(
        self, group: str, served: str, attempts: Sequence[tuple[str, str]]
    ) -> str | None:
        """Why the playbook served a call of ``group`` that has model deployments, else None.

        A group configured with the playbook only is not degraded: the playbook is its model.
        """
        dep = self._deployments.get(served)
        if dep is None or not dep.is_playbook:
            return None
        if not any(not d.is_playbook for d in self.deployments(group)):
            return None
        tried = self.attempts_text(attempts)
        return f"no model answered ({tried})" if tried else "no model answered"

    def attempts_text(self, attempts: Sequence[tuple[str, str]]) -> str | None:
        """``"a: RateLimitError (429); b: Timeout (no answer within 20 s)"`` for failed
        attempts, None for none."""
        parts = []
        for name, error in attempts:
            dep = self._deployments.get(name)
            if error.startswith("Timeout") and dep is not None:
                limit = dep.timeout_s or self.config.router.timeout_s
                error = error.replace("Timeout (408)", "Timeout", 1)
                error = f"{error} (no answer within {limit:g} s)"
            parts.append(f"{name}: {error}")
        return self.scrub("; ".join(parts)) or None

    def failure_info(
        self,
        group: str,
        messages: Sequence[dict[str, Any]],
        exc: BaseException,
        latency_s: float,
        attempts: Sequence[tuple[str, str]] = (),
    ) -> ModelCallInfo:
        """The accounting record of a call that failed on every deployment."""
        tried = self.attempts_text(attempts)
        return ModelCallInfo(
            model_group=group,
            deployment="none",
            model="none",
            latency_ms=round(latency_s * 1000, 3),
            ok=False,
            error=self.scrub(
                f"{type(exc).__name__}: {exc}" + (f" [tried {tried}]" if tried else "")
            ),
            prompt=[dict(m) for m in messages],
        )

    def cost_of_tokens(
        self, deployment: str, model: str, prompt_tokens: int, completion_tokens: int
    ) -> float:
        """USD for the tokens of a call served by ``deployment``: its configured ``price``,
        else litellm's price of ``model``; 0.0 for the playbook or an unknown price."""
        dep = self._deployments.get(deployment)
        if model.startswith("playbook/") or (dep is not None and dep.is_playbook):
            return 0.0
        if dep is not None and dep.price is not None:
            return (
                prompt_tokens * dep.price.input_per_mtok
                + completion_tokens * dep.price.output_per_mtok
            ) / 1e6
        try:
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
        except Exception:  # litellm raises for a model it has no price for
            return 0.0
        return float(prompt_cost + completion_cost)

    def cost_of(self, response: Any, model: str, deployment: str | None = None) -> float:
        """The cost of ``response`` in USD: by the serving deployment's ``price`` when it has
        one, else litellm's; 0.0 for the playbook or an unknown price."""
        if model.startswith("playbook/"):
            return 0.0
        dep = self._deployments.get(deployment or "")
        if dep is not None and dep.price is not None:
            usage = getattr(response, "usage", None)
            return self.cost_of_tokens(
                dep.name or "",
                model,
                int(getattr(usage, "prompt_tokens", 0) or 0),
                int(getattr(usage, "completion_tokens", 0) or 0),
            )
        hidden = getattr(response, "_hidden_params", None) or {}
        cost = hidden.get("response_cost")
        if cost is None:
            try:
                cost = litellm.completion_cost(completion_response=response)
            except Exception:  # litellm raises when the model has no price
                cost = 0.0
        return float(cost or 0.0)

    def scrub(self, text: str) -> str:
        """``text`` without configured API keys, cut to a readable length."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:MAX_ERROR_CHARS]
