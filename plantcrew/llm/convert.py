"""Conversions between AutoGen's model types and OpenAI chat-completions shapes.

- ``SystemMessage`` -> ``{"role": "system"}``; ``UserMessage`` -> ``{"role": "user"}`` (text, or
  content parts with ``image_url`` data URIs for images);
- ``AssistantMessage`` -> ``{"role": "assistant"}`` with ``tool_calls`` for function calls;
- ``FunctionExecutionResultMessage`` -> one ``{"role": "tool", "tool_call_id"}`` per result;
- tools -> ``{"type": "function", "function": {name, description, parameters, strict?}}``;
- ``json_output`` -> ``response_format`` (JSON mode, or ``json_schema`` from a pydantic type);
- OpenAI finish reasons -> AutoGen's (``tool_calls`` -> ``function_calls``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any, Literal

from autogen_core import Image
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "function_calls",
    "function_call": "function_calls",
    "content_filter": "content_filter",
}


def to_openai_messages(messages: Sequence[LLMMessage]) -> list[dict[str, Any]]:
    """OpenAI chat messages for AutoGen ``messages`` (order kept; tool results expanded)."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        if isinstance(msg, SystemMessage):
            out.append({"role": "system", "content": msg.content})
        elif isinstance(msg, UserMessage):
            out.append({"role": "user", "content": _user_content(msg.content)})
        elif isinstance(msg, AssistantMessage):
            if isinstance(msg.content, str):
                out.append({"role": "assistant", "content": msg.content})
            else:
                out.append(
                    {
                        "role": "assistant",
                        "content": msg.thought,
                        "tool_calls": [
                            {
                                "id": fc.id,
                                "type": "function",
                                "function": {"name": fc.name, "arguments": fc.arguments},
                            }
                            for fc in msg.content
                        ],
                    }
                )
        elif isinstance(msg, FunctionExecutionResultMessage):
            out.extend(
                {"role": "tool", "tool_call_id": r.call_id, "content": r.content}
                for r in msg.content
            )
        else:  # pragma: no cover - LLMMessage is a closed union
            raise TypeError(f"unsupported message type {type(msg).__name__}")
    return out


def _user_content(content: str | list[str | Image]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
        else:
            parts.append({"type": "image_url", "image_url": {"url": part.data_uri}})
    return parts


def _schema_of(tool: Tool | ToolSchema) -> ToolSchema:
    return tool.schema if isinstance(tool, Tool) else tool


def to_openai_tools(tools: Sequence[Tool | ToolSchema]) -> list[dict[str, Any]]:
    """OpenAI ``tools`` entries for AutoGen tools or tool schemas."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        schema = _schema_of(tool)
        fn: dict[str, Any] = {"name": schema["name"]}
        if schema.get("description"):
            fn["description"] = schema["description"]
        fn["parameters"] = dict(schema.get("parameters") or {"type": "object", "properties": {}})
        if schema.get("strict"):
            fn["strict"] = True
        out.append({"type": "function", "function": fn})
    return out


def to_openai_tool_choice(choice: Tool | Literal["auto", "required", "none"]) -> Any:
    """OpenAI ``tool_choice`` for AutoGen's (a Tool forces that function)."""
    if isinstance(choice, str):
        return choice
    return {"type": "function", "function": {"name": choice.schema["name"]}}


@functools.cache
def _schema_json(model: type[BaseModel]) -> str:
    """``model``'s JSON schema as text, made once per class (callers get a fresh copy)."""
    return json.dumps(model.model_json_schema())


def response_format_for(json_output: bool | type[BaseModel] | None) -> dict[str, Any] | None:
    """``response_format`` for AutoGen's ``json_output`` (None when no JSON was asked for)."""
    if json_output is None or json_output is False:
        return None
    if json_output is True:
        return {"type": "json_object"}
    if isinstance(json_output, type) and issubclass(json_output, BaseModel):
        return {
            "type": "json_schema",
            "json_schema": {
                "name": json_output.__name__,
                "schema": json.loads(_schema_json(json_output)),
                "strict": False,
            },
        }
    raise TypeError(f"json_output must be a bool or a pydantic model class, got {json_output!r}")


def finish_reason(raw: str | None) -> str:
    """AutoGen's finish reason for an OpenAI one (``unknown`` when unmapped)."""
    return _FINISH.get(raw or "", "unknown")
