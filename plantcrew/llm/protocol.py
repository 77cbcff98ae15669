"""The data block protocol between agents and models.

An agent's user message carries the step's data as a delimited block::

    <<<DATA
    {"task": "diagnose", "candidates": [...]}
    DATA>>>

The JSON is written on one line by :func:`render_data_block` (``json.dumps`` escapes newlines
inside strings), so no string in the data can produce a delimiter line: the block always ends
at the first ``DATA>>>`` line. Everything inside the block is DATA, never instructions; the
prompt around it says so. ``task`` is one of :data:`TASKS`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from plantcrew.errors import ModelError

DATA_OPEN = "<<<DATA"
DATA_CLOSE = "DATA>>>"
TASKS = ("diagnose", "propose_action", "review", "safety_review")
MAX_BLOCK_CHARS = 1_000_000


class DataBlockError(ModelError):
    """A request has no data block, or its block is not a JSON object with a known task."""


def render_data_block(data: dict[str, Any]) -> str:
    """The data block for ``data``: one line of JSON with sorted keys between the delimiters.

    Non-finite floats (NaN, inf: a sensor that gave no number) become ``null``; values JSON
    cannot encode are written as their ``str``. The data is walked for non-finite floats
    only when the encoder refuses one (most data has none).
    """
    try:
        body = _dumps(data)
    except ValueError:  # a non-finite float somewhere (allow_nan=False)
        body = _dumps(_finite(data))
    return f"{DATA_OPEN}\n{body}\n{DATA_CLOSE}"


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False, sort_keys=True, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def find_data_block(text: str) -> dict[str, Any] | None:
    """The JSON object of the first data block in ``text``, or None when there is none.

    Raises DataBlockError when a block is open but not closed, too large, not JSON, or not an
    object.
    """
    lines = text.split("\n")
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == DATA_OPEN)
    except StopIteration:
        return None
    try:
        end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == DATA_CLOSE)
    except StopIteration:
        raise DataBlockError(f"{DATA_OPEN} without a closing {DATA_CLOSE} line") from None
    body = "\n".join(lines[start + 1 : end])
    if len(body) > MAX_BLOCK_CHARS:
        raise DataBlockError(f"data block larger than {MAX_BLOCK_CHARS} characters")
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise DataBlockError(f"data block is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataBlockError("data block must be a JSON object")
    return data


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def data_from_messages(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The data block of the latest user message that has one (OpenAI-style messages).

    Raises DataBlockError when no user message has a block, or the block names no known task.
    """
    for msg in reversed(messages):
        if msg.get("role") != "user":
            continue
        data = find_data_block(_text_of(msg.get("content")))
        if data is None:
            continue
        task = data.get("task")
        if task not in TASKS:
            raise DataBlockError(f"data block task must be one of {TASKS}, got {task!r}")
        return data
    raise DataBlockError(f"no user message carries a {DATA_OPEN} ... {DATA_CLOSE} block")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        ]
        return "\n".join(str(p) for p in parts)
    return ""


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not bool) that is finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
