"""The safe expression form of playbook parameters."""

from __future__ import annotations

import pytest

from plantcrew.llm.expr import ExpressionError, evaluate, is_expression

STATE = {"pump1": {"speed_pct": 90, "on": True}, "inlet-valve": {"position_pct": 15.5}}
NAMES = {"device": STATE["pump1"], "state": STATE}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("=max(device.speed_pct - 20, 0)", 70),
        ("=max(device.speed_pct - 100, 0)", 0),
        ("=clamp(state.pump1.speed_pct * 2, 0, 100)", 100),
        ('=state["inlet-valve"]["position_pct"] + 10', 25.5),
        ("=-(1 + 2) * 3 / 2", -4.5),
        ("=round(10 / 3)", 3),
        ("=abs(-device.speed_pct)", 90),
    ],
)
def test_evaluates(source: str, expected: float) -> None:
    assert evaluate(source, NAMES) == expected


@pytest.mark.parametrize(
    "source",
    [
        "=__import__('os').system('true')",
        "=device.__class__",
        "=open('/etc/passwd')",
        "=[1, 2]",
        "=device.speed_pct ** 2",
        "=lambda: 1",
        "=device.speed_pct if 1 else 0",
        "=max(1, key=abs)",
        "=device.on + 1",
        "=device.missing - 1",
        "=state.pump9.speed_pct",
        "=1 / 0",
        "=1e308 * 10",
        "=max",
        "=clamp(1, 2)",
        "=" + "1+" * 150 + "1",
    ],
)
def test_refuses(source: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(source, NAMES)


def test_only_strings_with_a_leading_equals_are_expressions() -> None:
    assert is_expression("=1")
    assert not is_expression("1")
    assert not is_expression(1)
