"""Load YAML into a pydantic model with errors that name the file, line and field.

PyYAML's composer keeps each node's start mark; we walk the node tree once to map every
dotted field path to its 1-based line, then validate the plain data with pydantic and turn
the first validation error into a :class:`~plantcrew.errors.ConfigError` located there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from plantcrew.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _line_map(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    lines: dict[str, int] = {}
    if node is None:
        return lines
    lines[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            lines[path] = key.start_mark.line + 1
            lines.update({k: v for k, v in _line_map(value, path).items() if k != path})
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_map(item, f"{prefix}.{i}" if prefix else str(i)))
    return lines


def read_yaml(path: Path | str) -> tuple[Any, dict[str, int]]:
    """Parse ``path``; return ``(data, lines)`` where ``lines`` maps dotted paths to lines.

    Raises ConfigError (with the line) for a missing file or invalid YAML syntax.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=str(path)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(f"invalid YAML: {exc.problem}", source=str(path), line=line) from None
    return data, _line_map(node)


def validate_at(
    model: type[M], data: Any, *, source: str, lines: dict[str, int], prefix: str = ""
) -> M:
    """Validate ``data`` as ``model``; a failure raises ConfigError naming line and field."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        full = f"{prefix}.{field}" if prefix and field else (prefix or field)
        line = _nearest_line(lines, full)
        raise ConfigError(err["msg"], source=source, line=line, field=full or None) from None


def _nearest_line(lines: dict[str, int], path: str) -> int | None:
    while True:
        if path in lines:
            return lines[path]
        if "." not in path:
            return lines.get(path) or lines.get("")
        path = path.rsplit(".", 1)[0]


def load_yaml_model(path: Path | str, model: type[M], *, section: str | None = None) -> M:
    """Read ``path`` (optionally only its top-level ``section``) and validate it as ``model``.

    Raises ConfigError naming the file, the line and the field of the first problem.
    """
    data, lines = read_yaml(path)
    if section is not None:
        if not isinstance(data, dict):
            raise ConfigError("top level must be a mapping", source=str(path), line=1)
        data = data.get(section)
    return validate_at(model, data, source=str(path), lines=lines, prefix=section or "")
