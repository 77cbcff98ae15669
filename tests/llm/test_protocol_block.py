"""The data block: non-finite floats become null wherever they are; finite data is written
without a walk over it first."""

from __future__ import annotations

import json
import math

import pytest

from plantcrew.llm import protocol
from plantcrew.llm.protocol import DATA_CLOSE, DATA_OPEN, render_data_block


def body(block: str) -> object:
    opening, text, closing = block.split("\n")
    assert (opening, closing) == (DATA_OPEN, DATA_CLOSE)
    return json.loads(text)


def test_non_finite_floats_become_null_at_any_depth() -> None:
    data = {"task": "diagnose", "x": math.nan, "deep": [{"y": (1.5, math.inf)}, -math.inf]}
    assert body(render_data_block(data)) == {
        "task": "diagnose", "x": None, "deep": [{"y": [1.5, None]}, None],
    }  # fmt: skip


def test_finite_data_is_written_as_it_is_without_a_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[object] = []
    finite = protocol._finite
    monkeypatch.setattr(protocol, "_finite", lambda v: walked.append(v) or finite(v))
    data = {"task": "review", "b": [1, 2.5, ("t", None)], "a": {"s": "ü\nDATA>>>"}, "o": object}
    block = render_data_block(data)
    assert walked == []
    assert block.split("\n")[1] == json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)
    assert body(block)["a"] == {"s": "ü\nDATA>>>"}
