"""The ``recorded`` model provider: model answers served from a run's record.

While a run is re-executed (:mod:`plantcrew.replay.sandbox`), the deployments of
``models.yaml`` are rewritten to ``recorded/<their model>`` with ``api_base:
recorded://<session id>``; this litellm custom provider then answers each call from the
:class:`ReplaySession` of that id, so no hosted model is called. Playbook deployments served
from the record keep their ``playbook/...`` model and get the session's ``api_base``; while a
session is open the playbook provider is :class:`RecordedPlaybookLLM`, which answers those
from the session and every other playbook call as the playbook does.

Matching: each recorded model call belongs to the task whose result message carried it
(``payload.task_id`` and ``payload.model_calls`` of the original log) and has a position
among that task's calls. A new call is attributed to its task by
:func:`~plantcrew.replay.caller.current_caller`; the first time the router tries a deployment
for a call (one ``plantcrew_call`` metadata tag per router call) the task's next recorded call
is taken for it. The router then tries deployments in order, as it did in the original run:
the deployment the record names gets the recorded answer (content, token counts); every other
deployment fails with a 503, as far as the original run is concerned it had failed or was not
reached; a recorded call that failed everywhere (deployment ``none``) fails everywhere again.

Modes (per session): *strict* (``--verify``) serves only recorded answers and fails a call
that has none; *fork* (``rerun``) serves the record for tasks before the fork point and calls
the deployment's real model (:class:`Upstream`) for later or new tasks, optionally with a
role's system prompt replaced. When the record names a deployment the current group does not
have (the fork changed a role's model group), the fork serves the recorded answer from the
first deployment the router tries.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import plantcrew.settings  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP before litellm)
from plantcrew.llm.config import CHAIN_SEP
from plantcrew.llm.playbook import PROVIDER as PLAYBOOK_PROVIDER
from plantcrew.llm.playbook import PlaybookLLM, register_playbook_provider
from plantcrew.replay.caller import Caller, current_caller
from plantcrew.replay.canon import RECORDED_PREFIX, Canon

import litellm  # isort: skip
from litellm import CustomLLM  # isort: skip
from litellm.llms.custom_llm import CustomLLMError  # isort: skip
from litellm.types.utils import GenericStreamingChunk, ModelResponse, Usage  # isort: skip

PROVIDER = "recorded"
SCHEME = "recorded://"
DATA_RULES_MARK = "\n\nThe user message carries the step's data"
_lock = threading.Lock()


@dataclass(frozen=True)
class RecordedAnswer:
    """One model call of the original run: ``task`` (canonical task id), its position ``n``
    among the task's calls, the agent and log row (``message_seq``) it came with, and the
    call as recorded (``ModelCallInfo`` JSON)."""

    task: str
    n: int
    agent: str
    message_seq: int
    message_type: str
    info: dict[str, Any]

    @property
    def deployment(self) -> str:
        return str(self.info.get("deployment") or "none")


@dataclass(frozen=True)
class Upstream:
    """How a deployment is called for real: litellm ``model``, ``api_base``, the environment
    variable holding its key, a timeout (s) and extra litellm parameters."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    timeout_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Tally:
    served: int = 0
    live: int = 0
    refused: int = 0
    unrecorded: list[str] = field(default_factory=list)


_MISSING = object()
_LIVE = object()


class ReplaySession:
    """The recorded answers of one run and how to serve them (see module doc).

    ``answers``: canonical task id → its recorded calls in order. ``run_id_of_new`` returns
    the id of the run being executed (its task ids are made canonical with it; recorded
    answers that name ``run_id_of_record``'s ids are given the new run's names).
    ``live_task``: None for strict mode, else a predicate telling whether a canonical task
    id is answered live (fork mode). ``upstream``: deployment name → its real model (``""``:
    the model of direct playbook calls, made outside the router).
    ``group_deployments``: group → the deployment names of its chain (its own and those it
    takes in from its fallback groups). ``prompts``: role → system prompt text replacing the
    role's own in live calls.
    """

    def __init__(
        self,
        answers: dict[str, list[RecordedAnswer]],
        *,
        run_id_of_new: Callable[[], str],
        run_id_of_record: str = "",
        live_task: Callable[[str], bool] | None = None,
        upstream: dict[str, Upstream] | None = None,
        group_deployments: dict[str, set[str]] | None = None,
        prompts: dict[str, str] | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.answers = answers
        self.live_task = live_task
        self.upstream = dict(upstream or {})
        self.group_deployments = dict(group_deployments or {})
        self.prompts = dict(prompts or {})
        self.tally = _Tally()
        self._run_id_of_new = run_id_of_new
        self._recorded_run = run_id_of_record
        self._canon: Canon | None = None
        self._new_run: str | None = None
        self._cursor: dict[str, int] = {}
        self._assigned: dict[str, object] = {}

    @property
    def api_base(self) -> str:
        """The ``api_base`` that routes a deployment to this session."""
        return f"{SCHEME}{self.id}"

    def _new(self) -> str:
        if self._new_run is None:
            self._new_run = self._run_id_of_new()
            self._canon = Canon(self._new_run)
        return self._new_run

    def task_key(self, task_id: str) -> str:
        """The canonical form of a task id of the run being executed."""
        self._new()
        assert self._canon is not None
        return self._canon.text(task_id)

    def translate(self, text: str) -> str:
        """A recorded text with the recorded run's names (its id and the 8-character suffix
        its incident ids carry) replaced by those of the run being executed."""
        old, new = self._recorded_run, self._new()
        if not old or not new or old == new:
            return text
        text = text.replace(old, new)
        if len(old) >= 12 and len(new) >= 12:
            text = text.replace(old[-8:], new[-8:])
        return text

    def unused(self) -> list[RecordedAnswer]:
        """Recorded calls no new call was matched with (strict mode: a divergence)."""
        out = []
        for key, answers in self.answers.items():
            out.extend(answers[self._cursor.get(key, 0) :])
        return out

    def _take(self, tag: str | None, caller: Caller | None) -> object:
        if tag is not None and tag in self._assigned:
            return self._assigned[tag]
        key = self.task_key(caller.task_id) if caller is not None else None
        answers = self.answers.get(key, []) if key is not None else []
        pos = self._cursor.get(key, 0) if key is not None else 0
        chosen: object
        if key is not None and self.live_task is not None and self.live_task(key):
            chosen = _LIVE
        elif pos < len(answers):
            chosen = answers[pos]
            self._cursor[key or ""] = pos + 1
        elif self.live_task is not None:
            chosen = _LIVE
        else:
            chosen = _MISSING
            self.tally.unrecorded.append(f"{key or 'a call outside any task'} call {pos + 1}")
        if tag is not None:
            self._assigned[tag] = chosen
        return chosen

    def decide(
        self, tag: str | None, deployment: str, group: str, caller: Caller | None
    ) -> RecordedAnswer | str:
        """The recorded answer to give, ``"live"``, or the reason to fail this attempt."""
        chosen = self._take(tag, caller)
        if chosen is _LIVE:
            return "live"
        if chosen is _MISSING:
            return "no recorded answer for this call"
        assert isinstance(chosen, RecordedAnswer)
        if chosen.deployment == deployment or not deployment:
            return chosen  # (no deployment: a direct call, not through the router)
        if chosen.deployment == "none":
            return "the recorded call failed on every deployment"
        known = self.group_deployments.get(group, set())
        if self.live_task is not None and chosen.deployment not in known:
            return chosen  # fork with another model group: serve the answer here
        return f"the record says {chosen.deployment} answered"

    def system_prompt(
        self, caller: Caller | None, messages: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """``messages`` with the caller's role prompt replaced (live fork calls only)."""
        text = self.prompts.get(caller.role) if caller is not None else None
        if text is None or not messages or messages[0].get("role") != "system":
            return messages
        content = str(messages[0].get("content") or "")
        at = content.find(DATA_RULES_MARK)
        rest = content[at:] if at >= 0 else ""
        return [{**messages[0], "content": text.strip() + rest}, *messages[1:]]


_sessions: dict[str, ReplaySession] = {}


@contextmanager
def open_session(session: ReplaySession) -> Iterator[ReplaySession]:
    """Make ``session`` answer calls to ``recorded://<session.id>`` for the block (both the
    ``recorded`` provider and, in place of the playbook provider, :class:`RecordedPlaybookLLM`
    are installed; the playbook provider is put back when the last session closes)."""
    register_recorded_provider()
    with _lock:
        _sessions[session.id] = session
        if len(_sessions) == 1:
            _swap_playbook(install=True)
    try:
        yield session
    finally:
        with _lock:
            _sessions.pop(session.id, None)
            if not _sessions:
                _swap_playbook(install=False)


_saved_playbook: list[Any] = []


def _swap_playbook(*, install: bool) -> None:
    """Put :class:`RecordedPlaybookLLM` in place of the playbook provider, or put it back
    (called under ``_lock``)."""
    entries = list(litellm.custom_provider_map)
    current = next((i for i in entries if i["provider"] == PLAYBOOK_PROVIDER), None)
    if install:
        if current is not None and isinstance(current["custom_handler"], RecordedPlaybookLLM):
            return
        _saved_playbook[:] = [current["custom_handler"]] if current else []
        handler: Any = RecordedPlaybookLLM()
    else:
        handler = _saved_playbook[0] if _saved_playbook else None
        _saved_playbook.clear()
    rest = [i for i in entries if i["provider"] != PLAYBOOK_PROVIDER]
    litellm.custom_provider_map = rest + (
        [{"provider": PLAYBOOK_PROVIDER, "custom_handler": handler}] if handler else []
    )


def _session_of(api_base: str | None) -> ReplaySession:
    sid = (api_base or "").removeprefix(SCHEME).strip("/")
    with _lock:
        session = _sessions.get(sid)
    if session is None:
        raise CustomLLMError(status_code=500, message=f"recorded: no replay session {sid!r}")
    return session


def _where(kwargs: dict[str, Any]) -> tuple[str | None, str, str]:
    params = kwargs.get("litellm_params") or {}
    meta = params.get("metadata") or {}
    info = params.get("model_info") or meta.get("model_info") or {}
    # a deployment in another group's chain has the litellm id "<group>><name>"
    deployment = str(info.get("id") or "").rpartition(CHAIN_SEP)[2]
    return meta.get("plantcrew_call"), deployment, str(meta.get("model_group") or "")


async def _answer(
    model: str,
    messages: list[dict[str, Any]],
    api_base: str | None,
    model_response: ModelResponse,
    kwargs: dict[str, Any],
) -> ModelResponse:
    """Answer one call routed to a session (see module doc)."""
    session = _session_of(api_base)
    tag, deployment, group = _where(kwargs)
    caller = current_caller()
    decision = session.decide(tag, deployment, group, caller)
    if decision == "live":
        return await _live(session, deployment, caller, messages, kwargs)
    if isinstance(decision, str):
        session.tally.refused += 1
        raise CustomLLMError(status_code=503, message=f"recorded: {decision}")
    session.tally.served += 1
    info = decision.info
    model_response.choices[0].message.content = session.translate(str(info.get("response") or ""))
    model_response.choices[0].finish_reason = "stop"
    model_response.model = str(info.get("model") or model).removeprefix(RECORDED_PREFIX)
    model_response.created = int(time.time())
    prompt_tokens = int(info.get("prompt_tokens") or 0)
    completion_tokens = int(info.get("completion_tokens") or 0)
    usage = Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    setattr(model_response, "usage", usage)  # noqa: B010  (not declared on the class)
    return model_response


async def _live(
    session: ReplaySession,
    deployment: str,
    caller: Caller | None,
    messages: list[dict[str, Any]],
    kwargs: dict[str, Any],
) -> ModelResponse:
    up = session.upstream.get(deployment)
    if up is None:
        session.tally.refused += 1
        raise CustomLLMError(status_code=503, message=f"recorded: {deployment} has no live model")
    session.tally.live += 1
    optional = {
        k: v
        for k, v in (kwargs.get("optional_params") or {}).items()
        if k not in ("stream", "stream_options", "max_retries")
    }
    call: dict[str, Any] = {**up.extra, **optional}
    if up.api_base:
        call["api_base"] = up.api_base
    if up.api_key_env:
        call["api_key"] = os.environ.get(up.api_key_env, "")
    if up.timeout_s:
        call["timeout"] = up.timeout_s
    response: ModelResponse = await litellm.acompletion(
        model=up.model, messages=session.system_prompt(caller, messages), **call
    )
    return response


async def _stream_of(response: ModelResponse) -> AsyncIterator[GenericStreamingChunk]:
    text = response.choices[0].message.content or ""
    usage = getattr(response, "usage", None)
    yield GenericStreamingChunk(
        text=text,
        is_finished=True,
        finish_reason="stop",
        index=0,
        tool_use=None,
        usage={
            "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
            "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
            "total_tokens": int(getattr(usage, "total_tokens", 0) or 0),
        },
    )


class RecordedLLM(CustomLLM):
    """litellm ``CustomLLM`` serving ``recorded/<model>`` from replay sessions."""

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
        return await _answer(model, messages, api_base, model_response, kwargs)

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
        response = await _answer(model, messages, api_base, model_response, kwargs)
        async for chunk in _stream_of(response):
            yield chunk


class RecordedPlaybookLLM(PlaybookLLM):
    """The playbook provider, except for deployments routed to a replay session
    (``api_base: recorded://...``), which it answers like :class:`RecordedLLM`. Installed in
    place of the playbook provider while such a session is open, so a playbook deployment
    served from the record keeps its ``playbook/...`` model (and the crew's accounting of
    playbook calls: no cost, degraded when hosted deployments failed)."""

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
        if (api_base or "").startswith(SCHEME):
            return await _answer(model, messages, api_base, model_response, kwargs)
        return await super().acompletion(
            model, messages, api_base, custom_prompt_dict, model_response, *args, **kwargs
        )

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
        if (api_base or "").startswith(SCHEME):
            response = await _answer(model, messages, api_base, model_response, kwargs)
            async for chunk in _stream_of(response):
                yield chunk
            return
        async for chunk in super().astreaming(
            model, messages, api_base, custom_prompt_dict, model_response, *args, **kwargs
        ):
            yield chunk


_provider: RecordedLLM | None = None


def register_recorded_provider() -> RecordedLLM:
    """Register the ``recorded`` provider in ``litellm.custom_provider_map`` (idempotent)."""
    global _provider
    register_playbook_provider()
    with _lock:
        for item in litellm.custom_provider_map:
            if item["provider"] == PROVIDER and isinstance(item["custom_handler"], RecordedLLM):
                _provider = item["custom_handler"]
                return _provider
        _provider = _provider or RecordedLLM()
        litellm.custom_provider_map = [
            *[i for i in litellm.custom_provider_map if i["provider"] != PROVIDER],
            {"provider": PROVIDER, "custom_handler": _provider},
        ]
        return _provider


def answers_of(
    records: list[tuple[int, str, dict[str, Any]]], run_id: str
) -> dict[str, list[RecordedAnswer]]:
    """Recorded model calls by canonical task id, from ``(seq, source, body)`` log rows.

    Calls are read from each result message's ``payload.model_calls`` (the store's
    ``model_call`` table holds only those the Coordinator accepted)."""
    canon = Canon(run_id)
    out: dict[str, list[RecordedAnswer]] = {}
    for seq, source, body in records:
        payload = body.get("payload") or {}
        calls = payload.get("model_calls") or []
        task_id = payload.get("task_id")
        if not calls or not isinstance(task_id, str):
            continue
        key = canon.text(task_id)
        bucket = out.setdefault(key, [])
        for c in calls:
            bucket.append(
                RecordedAnswer(
                    key, len(bucket), source, seq, str(body.get("type")), json.loads(json.dumps(c))
                )
            )
    return out


__all__ = [
    "PROVIDER",
    "RecordedAnswer",
    "RecordedLLM",
    "RecordedPlaybookLLM",
    "ReplaySession",
    "Upstream",
    "answers_of",
    "open_session",
    "register_recorded_provider",
]
