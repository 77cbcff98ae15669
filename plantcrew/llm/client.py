"""``LiteLLMChatCompletionClient``: an AutoGen ``ChatCompletionClient`` over one router group.

AutoGen messages become OpenAI chat messages (:mod:`plantcrew.llm.convert`), the call goes
through :class:`~plantcrew.llm.router.ModelRouter` (retries, fallbacks, timeouts, playbook last
resort), and the answer comes back as a ``CreateResult``. ``json_output=True`` asks for JSON
mode (``response_format={"type": "json_object"}``); a pydantic model class asks for structured
output (``response_format`` of type ``json_schema`` with the model's JSON schema).

Every call, successful or not, is recorded as a :class:`~plantcrew.messages.ModelCallInfo`
(prompt messages and response text included); :meth:`drain_calls` hands them over and clears
the list. A call cancelled through its ``CancellationToken`` raises ``asyncio.CancelledError``
and is recorded with ``error="cancelled"``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from autogen_core import CancellationToken, FunctionCall
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from plantcrew.llm.convert import (
    finish_reason,
    response_format_for,
    to_openai_messages,
    to_openai_tool_choice,
    to_openai_tools,
)
from plantcrew.llm.router import ModelRouter
from plantcrew.messages import ModelCallInfo

COUNT_MODEL = "gpt-4o-mini"


class LiteLLMChatCompletionClient(ChatCompletionClient):
    """AutoGen model client for the ``group`` of a :class:`ModelRouter`.

    ``model_info`` overrides what is derived from the group's first deployment ``caps``;
    ``create_args`` are OpenAI parameters sent with every call (e.g. ``temperature``).
    """

    def __init__(
        self,
        router: ModelRouter,
        group: str,
        *,
        model_info: ModelInfo | None = None,
        create_args: Mapping[str, Any] | None = None,
    ) -> None:
        router.check_group(group)
        self._router = router
        self._group = group
        self._create_args = dict(create_args or {})
        deps = router.deployments(group)
        primary = deps[0].caps if deps else None
        self._context_window = primary.context_window if primary else 128_000
        self._count_model = next((d.model for d in deps if not d.is_playbook), COUNT_MODEL)
        self._model_info: ModelInfo = model_info or ModelInfo(
            vision=primary.vision if primary else False,
            function_calling=primary.function_calling if primary else True,
            json_output=primary.json_output if primary else True,
            structured_output=primary.structured_output if primary else True,
            family=primary.family if primary else "unknown",
            multiple_system_messages=True,
        )
        self._calls: list[ModelCallInfo] = []
        self._total = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._actual = RequestUsage(prompt_tokens=0, completion_tokens=0)

    @property
    def group(self) -> str:
        """The router group this client calls."""
        return self._group

    def drain_calls(self) -> list[ModelCallInfo]:
        """The calls recorded since the last drain, oldest first; clears the list."""
        calls, self._calls = self._calls, []
        return calls

    def _record(self, info: ModelCallInfo) -> None:
        self._calls.append(info)
        usage = RequestUsage(
            prompt_tokens=info.prompt_tokens, completion_tokens=info.completion_tokens
        )
        self._actual = usage
        self._total = RequestUsage(
            prompt_tokens=self._total.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total.completion_tokens + usage.completion_tokens,
        )

    def _kwargs(
        self,
        tools: Sequence[Tool | ToolSchema],
        tool_choice: Tool | Literal["auto", "required", "none"],
        json_output: bool | type[BaseModel] | None,
        extra_create_args: Mapping[str, Any],
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {**self._create_args, **extra_create_args}
        if tools:
            kwargs["tools"] = to_openai_tools(tools)
            kwargs["tool_choice"] = to_openai_tool_choice(tool_choice)
        response_format = response_format_for(json_output)
        if response_format is not None:
            kwargs["response_format"] = response_format
        return kwargs

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """One completion through the router (see class docs); raises litellm's error when
        every deployment failed, ``asyncio.CancelledError`` when cancelled."""
        oai = to_openai_messages(messages)
        kwargs = self._kwargs(tools, tool_choice, json_output, extra_create_args)
        start = time.perf_counter()
        future = asyncio.ensure_future(self._router.acompletion(self._group, oai, **kwargs))
        if cancellation_token is not None:
            cancellation_token.link_future(future)
        try:
            routed = await future
        except asyncio.CancelledError:
            self._record(
                self._router.failure_info(
                    self._group, oai, _Cancelled("cancelled"), time.perf_counter() - start
                ).model_copy(update={"error": "cancelled"})
            )
            raise
        except Exception as exc:
            info = getattr(exc, "plantcrew_call", None)
            self._record(
                info
                if isinstance(info, ModelCallInfo)
                else self._router.failure_info(self._group, oai, exc, time.perf_counter() - start)
            )
            raise
        self._record(routed.info)
        choice = routed.response.choices[0]
        content: str | list[FunctionCall]
        thought: str | None = getattr(choice.message, "reasoning_content", None) or None
        tool_calls = getattr(choice.message, "tool_calls", None)
        if tool_calls:
            content = [
                FunctionCall(
                    id=tc.id or "",
                    name=tc.function.name or "",
                    arguments=tc.function.arguments or "{}",
                )
                for tc in tool_calls
            ]
            thought = choice.message.content or thought
            reason = "function_calls"
        else:
            content = choice.message.content or ""
            reason = finish_reason(choice.finish_reason)
        return CreateResult(
            finish_reason=reason,
            content=content,
            usage=RequestUsage(
                prompt_tokens=routed.info.prompt_tokens,
                completion_tokens=routed.info.completion_tokens,
            ),
            cached=False,
            thought=thought,
        )

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Yield text chunks as they arrive, then one ``CreateResult`` (see :meth:`create`)."""
        oai = to_openai_messages(messages)
        kwargs = self._kwargs(tools, tool_choice, json_output, extra_create_args)
        start = time.perf_counter()
        text: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        reason_raw: str | None = None
        usage: Any = None
        stream: Any = None
        attempts: list[tuple[str, str]] = []
        try:
            opening = asyncio.ensure_future(self._router.astream(self._group, oai, **kwargs))
            if cancellation_token is not None:
                cancellation_token.link_future(opening)
            stream, attempts = await opening
            async for chunk in stream:
                if cancellation_token is not None and cancellation_token.is_cancelled():
                    raise asyncio.CancelledError()
                usage = getattr(chunk, "usage", None) or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                reason_raw = choice.finish_reason or reason_raw
                delta = choice.delta
                if delta.content:
                    text.append(delta.content)
                    yield delta.content
                for tc in getattr(delta, "tool_calls", None) or []:
                    slot = calls.setdefault(tc.index or 0, {"id": "", "name": "", "arguments": ""})
                    slot["id"] = tc.id or slot["id"]
                    if tc.function is not None:
                        slot["name"] += tc.function.name or ""
                        slot["arguments"] += tc.function.arguments or ""
        except asyncio.CancelledError:
            self._record(
                self._router.failure_info(
                    self._group, oai, _Cancelled("cancelled"), time.perf_counter() - start
                ).model_copy(update={"error": "cancelled"})
            )
            raise
        except Exception as exc:
            info = getattr(exc, "plantcrew_call", None)
            self._record(
                info
                if isinstance(info, ModelCallInfo)
                else self._router.failure_info(self._group, oai, exc, time.perf_counter() - start)
            )
            raise
        body = "".join(text)
        content: str | list[FunctionCall] = body
        if calls:
            content = [
                FunctionCall(id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
                for _, c in sorted(calls.items())
            ]
        name, model, fallback = self._router.served_by(stream)
        fallback = fallback or self._router.failed_before(name, attempts)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        info = ModelCallInfo(
            model_group=self._group,
            deployment=name,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=round((time.perf_counter() - start) * 1000, 3),
            cost_usd=self._router.cost_of_tokens(name, model, prompt_tokens, completion_tokens),
            fallback=fallback,
            ok=True,
            error=self._router.attempts_text(attempts),
            degraded_reason=self._router.degraded_reason(self._group, name, attempts),
            prompt=[dict(m) for m in oai],
            response=body if not calls else json.dumps(list(calls.values())),
        )
        self._record(info)
        yield CreateResult(
            finish_reason="function_calls" if calls else finish_reason(reason_raw),
            content=content,
            usage=RequestUsage(
                prompt_tokens=info.prompt_tokens, completion_tokens=info.completion_tokens
            ),
            cached=False,
            thought=body if calls and body else None,
        )

    async def close(self) -> None:
        """Nothing to release: the router owns the HTTP clients."""

    def actual_usage(self) -> RequestUsage:
        """Usage of the latest call."""
        return self._actual

    def total_usage(self) -> RequestUsage:
        """Usage summed over every call of this client."""
        return self._total

    def count_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        """Prompt tokens of ``messages`` (and ``tools``) by litellm's local tokenizer."""
        import litellm

        oai = to_openai_messages(messages)
        count = litellm.token_counter(model=self._count_model, messages=oai)
        if tools:
            count += litellm.token_counter(
                model=self._count_model, text=json.dumps(to_openai_tools(tools))
            )
        return int(count)

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        """The primary deployment's context window minus :meth:`count_tokens`."""
        return self._context_window - self.count_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        """Deprecated AutoGen view of :attr:`model_info`."""
        return ModelCapabilities(
            vision=self._model_info["vision"],
            function_calling=self._model_info["function_calling"],
            json_output=self._model_info["json_output"],
        )

    @property
    def model_info(self) -> ModelInfo:
        """What the group's primary deployment can do (from its ``caps`` in models.yaml)."""
        return self._model_info


class _Cancelled(Exception):
    pass
