"""A tiny, safe arithmetic expression form for relative action parameters in playbooks.

A parameter value written as a string that starts with ``=`` is an expression, e.g.
``"=max(device.speed_pct - 20, 0)"``. It is parsed with :func:`ast.parse` and evaluated by
walking the tree; only these nodes are allowed (anything else is an :class:`ExpressionError`,
and nothing is ever passed to ``eval``):

- numbers (int, float), ``+ - * /``, unary ``-``/``+``, parentheses;
- ``min(a, b, ...)``, ``max(a, b, ...)``, ``clamp(x, lo, hi)``, ``abs(x)``, ``round(x)``;
- names bound by the caller: ``device`` (the target device's latest readings) and ``state``
  (all devices), read with attributes or string subscripts: ``device.speed_pct``,
  ``state.pump1.speed_pct``, ``state["inlet-valve"]["position_pct"]``.

Values read from the state must be finite numbers (bools are refused). The source is
limited to 200 characters.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from typing import Any

from plantcrew.errors import PlantcrewError

MAX_LEN = 200


class ExpressionError(PlantcrewError):
    """An expression is malformed, uses something not allowed, or reads a missing value."""


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


_FUNCS: dict[str, Callable[..., float]] = {
    "min": min,
    "max": max,
    "clamp": _clamp,
    "abs": abs,
    "round": round,
}
_ARITY = {"clamp": (3, 3), "abs": (1, 1), "round": (1, 1), "min": (2, 16), "max": (2, 16)}


def is_expression(value: object) -> bool:
    """True when ``value`` is a string written in the expression form (leading ``=``)."""
    return isinstance(value, str) and value.startswith("=")


def parse(source: str) -> ast.Expression:
    """Parse and check an expression (without the leading ``=``); raise ExpressionError."""
    if len(source) > MAX_LEN:
        raise ExpressionError(f"expression longer than {MAX_LEN} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {source!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(f"{type(node).__name__} is not allowed in {source!r}")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords
        ):
            raise ExpressionError(f"only {sorted(_FUNCS)} may be called in {source!r}")
        if isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, int | float | str)
        ):
            raise ExpressionError(f"constant {node.value!r} is not allowed in {source!r}")
    return tree


_ALLOWED = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.USub,
    ast.UAdd,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Subscript,
    ast.Call,
)


def evaluate(source: str, names: Mapping[str, Any]) -> float:
    """Evaluate ``source`` (with or without the leading ``=``) against ``names``.

    Returns a finite float, or an int when the result is integral. Raises ExpressionError for a
    bad expression, a missing or non-numeric value, or a division by zero.
    """
    text = source[1:] if source.startswith("=") else source
    value = _eval(parse(text).body, names, text)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ExpressionError(f"{text!r} did not give a finite number")
    return int(value) if float(value).is_integer() else float(value)


def _lookup(container: Any, key: Any, text: str) -> Any:
    if not isinstance(container, Mapping) or key not in container:
        raise ExpressionError(f"{text!r}: no value {key!r} in the state")
    return container[key]


def _eval(node: ast.AST, names: Mapping[str, Any], text: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _FUNCS:
            raise ExpressionError(f"{text!r}: {node.id} must be called")
        return _lookup(names, node.id, text)
    if isinstance(node, ast.Attribute):
        return _lookup(_eval(node.value, names, text), node.attr, text)
    if isinstance(node, ast.Subscript):
        key = _eval(node.slice, names, text)
        if not isinstance(key, str):
            raise ExpressionError(f"{text!r}: subscripts must be strings")
        return _lookup(_eval(node.value, names, text), key, text)
    if isinstance(node, ast.UnaryOp):
        operand = _number(_eval(node.operand, names, text), text)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left = _number(_eval(node.left, names, text), text)
        right = _number(_eval(node.right, names, text), text)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if right == 0:
            raise ExpressionError(f"{text!r}: division by zero")
        return left / right
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)  # checked in parse()
        name = node.func.id
        lo, hi = _ARITY[name]
        if not lo <= len(node.args) <= hi:
            raise ExpressionError(f"{text!r}: {name} takes {lo}..{hi} arguments")
        args = [_number(_eval(a, names, text), text) for a in node.args]
        return _FUNCS[name](*args)
    raise ExpressionError(f"{text!r}: {type(node).__name__} is not allowed")


def _number(value: Any, text: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExpressionError(f"{text!r}: {value!r} is not a number")
    if not math.isfinite(value):
        raise ExpressionError(f"{text!r}: {value!r} is not finite")
    return value
