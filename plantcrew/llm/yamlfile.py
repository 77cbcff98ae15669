"""Load a YAML file and validate it with pydantic, keeping line marks for error messages.

Every mapping key and sequence item is remembered with the 1-based line it was written on, so
a validation error is reported as :class:`~plantcrew.errors.ConfigError` naming the file, the
line and the dotted field path (e.g. ``groups.triage.deployments.0.timeout_s``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from plantcrew.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


def _mark_lines(node: yaml.Node, path: Loc, lines: dict[Loc, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _mark_lines(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _mark_lines(item, (*path, i), lines)


def load_yaml(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse ``path`` with the safe loader; return ``(data, lines)``.

    ``lines`` maps a key path (``("groups", "triage")``) to its 1-based line. Raises
    ConfigError (with the line of a syntax error) when the file is missing or not YAML.
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=source) from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(f"invalid YAML: {exc.problem}", source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None
    lines: dict[Loc, int] = {}
    if node is not None:
        _mark_lines(node, (), lines)
    return ({} if data is None else data), lines


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of ``loc``, or of its nearest ancestor written in the file."""
    for end in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None


def validate_yaml(model: type[M], path: Path) -> M:
    """Load ``path`` and validate it as ``model``; raise ConfigError at the first bad field."""
    data, lines = load_yaml(path)
    return validate_data(model, data, lines, source=str(path))


def validate_data(model: type[M], data: Any, lines: dict[Loc, int], *, source: str) -> M:
    """Validate already-loaded ``data``; ConfigError names ``source``, line and field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        err = errors[0]
        # pydantic adds union/validator tags (e.g. "function-after[...]") that are not in the file
        loc: Loc = tuple(
            p for p in err["loc"] if isinstance(p, int) or ("[" not in p and "," not in p)
        )
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(
            f"{err['msg']}{more}",
            source=source,
            line=line_of(lines, loc),
            field=".".join(str(p) for p in loc) or None,
        ) from None
