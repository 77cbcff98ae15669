"""Fit a playbook answer to the JSON schema a caller asked for through ``response_format``.

The playbook computes a fixed answer shape per task; a caller's schema (usually a pydantic
model's ``model_json_schema()``) may name fewer fields, forbid extra ones, bound numbers or
list allowed values. :func:`fit` keeps the answer's values where the schema has a place for
them, drops what the schema forbids, fills required fields the answer lacks with the neutral
value of their type (``""``, ``0``, ``false``, ``[]``, ``{}``, or ``default``), clamps numbers
to ``minimum``/``maximum``, and replaces a string outside an ``enum`` with ``"unknown"`` when
the enum allows it. Supported keywords: type, properties, required, additionalProperties,
items, enum, const, default, minimum, maximum, anyOf/oneOf, $ref into $defs/definitions.
"""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 32


def fit(value: Any, schema: dict[str, Any] | None) -> Any:
    """``value`` adjusted to ``schema`` (see module docstring); ``schema=None`` returns it as is."""
    if not schema:
        return value
    return _fit(value, schema, schema, 0)


def _resolve(schema: dict[str, Any], root: dict[str, Any], depth: int) -> dict[str, Any]:
    while "$ref" in schema and depth < _MAX_DEPTH:
        ref = str(schema["$ref"])
        if not ref.startswith("#/"):
            return {}
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        schema = node if isinstance(node, dict) else {}
        depth += 1
    return schema


def _types(schema: dict[str, Any]) -> list[str]:
    t = schema.get("type")
    if isinstance(t, list):
        return [str(x) for x in t]
    if isinstance(t, str):
        return [t]
    if "properties" in schema:
        return ["object"]
    return []


def _matches(value: Any, types: list[str]) -> bool:
    if not types:
        return True
    checks = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }
    return any(checks.get(t, False) for t in types)


def neutral(schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """The neutral value of a schema: its default, const, first enum value, or empty value."""
    schema = _resolve(schema, root or schema, depth)
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return "unknown" if "unknown" in schema["enum"] else schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            branches = schema[key]
            if any(_types(_resolve(b, root or schema, depth + 1)) == ["null"] for b in branches):
                return None
            return neutral(branches[0], root or schema, depth + 1)
    types = _types(schema)
    first = types[0] if types else "null"
    if first == "number" or first == "integer":
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        return lo if isinstance(lo, int | float) else 0
    empty: dict[str, Any] = {"string": "", "boolean": False, "array": [], "null": None}
    if first == "object":
        return fit({}, schema) if depth < _MAX_DEPTH else {}
    return empty.get(first)


def _fit(value: Any, schema: dict[str, Any], root: dict[str, Any], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return value
    schema = _resolve(schema, root, depth)
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            resolved = [_resolve(b, root, depth + 1) for b in branches if isinstance(b, dict)]
            for branch in resolved:
                if _matches(value, _types(branch)):
                    return _fit(value, branch, root, depth + 1)
            return _fit(value, resolved[0], root, depth + 1) if resolved else value
    types = _types(schema)
    if "object" in types and isinstance(value, dict):
        return _fit_object(value, schema, root, depth)
    if "array" in types and isinstance(value, list):
        items = schema.get("items")
        return (
            [_fit(v, items, root, depth + 1) for v in value] if isinstance(items, dict) else value
        )
    if ("number" in types or "integer" in types) and _matches(value, ["number"]):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if isinstance(lo, int | float):
            value = max(value, lo)
        if isinstance(hi, int | float):
            value = min(value, hi)
        if "integer" in types and "number" not in types and float(value).is_integer():
            value = int(value)
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum and "unknown" in enum:
        value = "unknown"
    if types and not _matches(value, types):
        return neutral(schema, root, depth + 1)
    return value


def _fit_object(
    value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any], depth: int
) -> dict[str, Any]:
    raw_props = schema.get("properties")
    props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
    extra_ok = schema.get("additionalProperties", True) is not False
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key in props:
            out[key] = _fit(v, props[key], root, depth + 1)
        elif extra_ok:
            out[key] = v
    for key in schema.get("required", []) or []:
        if key not in out and key in props:
            out[key] = neutral(props[key], root, depth + 1)
    return out
