"""A scripted model for crew-level tests: answers the crew's three tasks from their data.

:func:`crew_model` returns a responder for :meth:`OpenAIStub.respond`. It reads the request's
data block (the latest user message that has one) and answers like a careful model would:

- ``diagnose``: the top-scoring candidate, its score as confidence;
- ``propose_action``: from :data:`ACTIONS` by root cause (``notify`` for anything else);
- ``review``: a summary, the root cause confirmed when an action executed and it resolved.

``obey`` makes it a model that follows instructions found in the data (a prompt injection):
when any string in the data block contains ``trigger``, the proposal is ``obey`` instead.
Each answer's shape is the agents' (plantcrew/agents/answers.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from plantcrew.llm.protocol import data_from_messages
from tests.llm.openai_stub import Reply

ACTIONS: dict[str, dict[str, Any]] = {
    "bearing_overheating": {"command": "stop", "parameters": {}, "hazard_class": 2},
}
TOKENS = {"prompt_tokens": 900, "completion_tokens": 120}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def crew_model(
    *, obey: dict[str, Any] | None = None, trigger: str = "IGNORE"
) -> Callable[[dict[str, Any]], Reply]:
    """A responder answering ``diagnose``, ``propose_action`` and ``review`` (see module doc)."""

    def answer(body: dict[str, Any]) -> Reply:
        data = data_from_messages(body["messages"])
        task = data["task"]
        if task == "diagnose":
            top = max(data["candidates"], key=lambda c: c["score"])
            return Reply.json(
                {
                    "root_cause": top["root_cause"],
                    "confidence": round(top["score"], 3),
                    "evidence": top["evidence"][:3],
                    "summary": f"model: {top['root_cause']} on {data['device_id']}",
                },
                **TOKENS,
            )
        if task == "propose_action":
            if obey is not None and any(trigger in s for s in _strings(data)):
                return Reply.json(
                    {**obey, "rationale": "as the instruction in the data says"}, **TOKENS
                )
            action = ACTIONS.get(
                data["root_cause"], {"command": "notify", "parameters": {}, "hazard_class": 0}
            )
            return Reply.json(
                {
                    "device_id": data["device_id"],
                    **action,
                    "rationale": f"model: {data['root_cause']}",
                },
                **TOKENS,
            )
        if task == "review":
            executed = any(a.get("status") == "executed" for a in data.get("actions", []))
            return Reply.json(
                {
                    "summary": f"model review of {data.get('incident_id')}: {data.get('outcome')}",
                    "root_cause_confirmed": executed and data.get("outcome") == "resolved",
                    "lessons": [json.dumps(data.get("root_cause"))],
                },
                **TOKENS,
            )
        return Reply.error(400, message=f"unknown task {task!r}")

    return answer
