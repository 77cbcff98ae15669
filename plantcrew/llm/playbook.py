"""The offline ``playbook`` model: a litellm custom provider, deterministic, no network.

Register it once with :func:`register_playbook_provider`; then ``litellm.acompletion(
model="playbook/default", messages=...)`` (or a Router deployment with that model) answers from
the rules in ``playbooks.yaml`` (:mod:`plantcrew.llm.playbook_rules`). The request's latest
user message with a ``<<<DATA ... DATA>>>`` block (:mod:`plantcrew.llm.protocol`) is the
input; when ``response_format`` carries a JSON schema the answer is fitted to it
(:mod:`plantcrew.llm.schema_fit`). The answer is one JSON object as the message content,
``finish_reason="stop"``. Token counts are estimates (characters / 4, rounded up); cost is 0,
and the response says so (``_hidden_params["response_cost"] = 0.0``, which litellm takes as the
call's cost instead of running its cost calculation: a lookup of a model its price list does
not have, a tenth of a Router call). The Router, its callbacks and the record are as before.
An async answer is not logged by litellm (its success-logging task, standard payload and
callbacks: a seventh of a Router call) when that logging would reach nothing but the router's
deployment counts (:func:`plantcrew.llm.usage.success_log_read`): the playbook has no limit
and is never cooled down, and plantcrew's record is made from the response. Its failures are
logged as before.

``api_base`` of a playbook deployment may name the rules file (a path or ``file://`` URL);
without it the provider reads ``<settings.config_dir>/playbooks.yaml``. Rules files are
re-read when their modification time changes.

A request without a data block, or with an unknown ``task``, fails with
``CustomLLMError(status_code=400)``: that is a programming error of the caller.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import plantcrew.settings  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP before litellm)
from plantcrew.errors import ConfigError
from plantcrew.llm.playbook_rules import PlaybookRules
from plantcrew.llm.protocol import DataBlockError, data_from_messages
from plantcrew.llm.schema_fit import fit
from plantcrew.llm.usage import success_log_read
from plantcrew.settings import get_settings

import litellm  # isort: skip
from litellm import CustomLLM  # isort: skip
from litellm.llms.custom_llm import CustomLLMError  # isort: skip
from litellm.types.utils import GenericStreamingChunk, ModelResponse, Usage  # isort: skip

PROVIDER = "playbook"
STREAM_CHUNK_CHARS = 48
_lock = threading.Lock()


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate: characters / 4, rounded up."""
    return math.ceil(len(text) / 4)


def _rules_path(api_base: str | None) -> Path:
    if api_base:
        return Path(api_base.removeprefix("file://"))
    return get_settings().config_dir / "playbooks.yaml"


def _schema_of(optional_params: dict[str, Any]) -> dict[str, Any] | None:
    rf = optional_params.get("response_format")
    if isinstance(rf, dict) and rf.get("type") == "json_schema":
        js = rf.get("json_schema") or {}
        schema = js.get("schema") if isinstance(js, dict) else None
        return schema if isinstance(schema, dict) else None
    return None


class PlaybookLLM(CustomLLM):
    """litellm ``CustomLLM`` serving ``playbook/<name>`` from playbook rules (see module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[Path, tuple[float, PlaybookRules]] = {}

    def rules(self, api_base: str | None = None) -> PlaybookRules:
        """The rules for ``api_base`` (path) or the default file; ConfigError when invalid."""
        path = _rules_path(api_base)
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror or exc}", source=str(path)) from None
        with _lock:
            hit = self._cache.get(path)
            if hit and hit[0] == mtime:
                return hit[1]
        rules = PlaybookRules.from_file(path)
        with _lock:
            self._cache[path] = (mtime, rules)
        return rules

    def answer_text(
        self,
        messages: list[dict[str, Any]],
        optional_params: dict[str, Any],
        api_base: str | None = None,
    ) -> str:
        """The answer content for a request; raises CustomLLMError(400) for a bad request."""
        try:
            data = data_from_messages(messages)
            answer = self.rules(api_base).answer(data)
        except DataBlockError as exc:
            raise CustomLLMError(status_code=400, message=f"playbook: {exc}") from None
        except ConfigError as exc:
            raise CustomLLMError(status_code=500, message=f"playbook rules: {exc}") from None
        return json.dumps(fit(answer, _schema_of(optional_params)), ensure_ascii=False)

    def respond(
        self,
        model: str,
        messages: list[dict[str, Any]],
        model_response: ModelResponse,
        optional_params: dict[str, Any],
        api_base: str | None,
    ) -> ModelResponse:
        """Fill ``model_response`` with the answer to a request for ``playbook/<model>``
        (content, ``finish_reason="stop"``, estimated usage); raises CustomLLMError(400) for a
        bad request. ``optional_params`` are the request's OpenAI parameters."""
        text = self.answer_text(messages, optional_params, api_base)
        prompt_tokens = estimate_tokens(json.dumps(messages, default=str))
        completion_tokens = estimate_tokens(text)
        model_response.choices[0].message.content = text
        model_response.choices[0].finish_reason = "stop"
        model_response.model = f"{PROVIDER}/{model}"
        model_response.created = int(time.time())
        usage = Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        setattr(model_response, "usage", usage)  # noqa: B010  (not declared on the class)
        model_response._hidden_params["response_cost"] = 0.0  # litellm skips its cost lookup
        return model_response

    def completion(
        self,
        model: str,
        messages: list,
        api_base: str,
        custom_prompt_dict: dict,
        model_response: ModelResponse,
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        return self.respond(
            model, messages, model_response, kwargs.get("optional_params") or {}, api_base
        )

    async def acompletion(
        self,
        model: str,
        messages: list,
        api_base: str,
        custom_prompt_dict: dict,
        model_response: ModelResponse,
        *args: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        response = self.respond(
            model, messages, model_response, kwargs.get("optional_params") or {}, api_base
        )
        logging_obj = kwargs.get("logging_obj")
        if logging_obj is not None and not success_log_read(
            kwargs.get("litellm_params"), logging_obj
        ):
            # litellm parks the success log of a call whose logging is deferred (its proxy
            # runs it later) and nothing here runs it: no task, payload or callbacks
            logging_obj._defer_async_logging = True
        return response

    def _chunks(
        self, messages: list[dict[str, Any]], optional_params: dict[str, Any], api_base: str | None
    ) -> list[GenericStreamingChunk]:
        text = self.answer_text(messages, optional_params, api_base)
        pieces = [text[i : i + STREAM_CHUNK_CHARS] for i in range(0, len(text), STREAM_CHUNK_CHARS)]
        prompt_tokens = estimate_tokens(json.dumps(messages, default=str))
        completion_tokens = estimate_tokens(text)
        out: list[GenericStreamingChunk] = []
        for i, piece in enumerate(pieces or [""]):
            last = i == len(pieces or [""]) - 1
            out.append(
                GenericStreamingChunk(
                    text=piece,
                    is_finished=last,
                    finish_reason="stop" if last else "",
                    index=0,
                    tool_use=None,
                    usage={
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    }
                    if last
                    else None,
                )
            )
        return out

    def streaming(
        self,
        model: str,
        messages: list,
        api_base: str,
        custom_prompt_dict: dict,
        model_response: ModelResponse,
        *args: Any,
        **kwargs: Any,
    ) -> Iterator[GenericStreamingChunk]:
        yield from self._chunks(messages, kwargs.get("optional_params") or {}, api_base)

    async def astreaming(  # type: ignore[override]
        self,
        model: str,
        messages: list,
        api_base: str,
        custom_prompt_dict: dict,
        model_response: ModelResponse,
        *args: Any,
        **kwargs: Any,
    ) -> AsyncIterator[GenericStreamingChunk]:
        for chunk in self._chunks(messages, kwargs.get("optional_params") or {}, api_base):
            yield chunk


_provider: PlaybookLLM | None = None


def register_playbook_provider() -> PlaybookLLM:
    """Register the ``playbook`` provider in ``litellm.custom_provider_map`` (idempotent).

    Returns the registered handler. Safe to call from several routers and threads.
    """
    global _provider
    with _lock:
        for item in litellm.custom_provider_map:
            if item["provider"] == PROVIDER and isinstance(item["custom_handler"], PlaybookLLM):
                _provider = item["custom_handler"]
                return _provider
        litellm.suppress_debug_info = True  # no "Give Feedback" banner on errors
        _provider = _provider or PlaybookLLM()
        litellm.custom_provider_map = [
            *[i for i in litellm.custom_provider_map if i["provider"] != PROVIDER],
            {"provider": PROVIDER, "custom_handler": _provider},
        ]
        return _provider
