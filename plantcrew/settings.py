"""Settings from the environment (``PLANTCREW_*``) and ``config/``, via pydantic-settings.

Importing this module sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (unless already set) so that
litellm never tries to download its model cost map: plantcrew starts fast and offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from plantcrew.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

PACKAGE_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG_DIR = PACKAGE_ROOT.parent / "config"


class Settings(BaseSettings):
    """Process-wide settings.

    Every field can be set from the environment as ``PLANTCREW_<FIELD>``, e.g.
    ``PLANTCREW_BUS_URL=nats://127.0.0.1:4222``.
    """

    model_config = SettingsConfigDict(env_prefix="PLANTCREW_", extra="ignore")

    bus_url: str = Field("memory://", description="memory://, nats://host:4222, redis://host:6379")
    db_url: str = Field("sqlite:///plantcrew.db", description="sqlite:///path or postgresql://...")
    config_dir: Path = Field(
        DEFAULT_CONFIG_DIR, description="folder with crew/models/policies/playbooks YAML"
    )
    log_level: str = "INFO"
    log_json: bool = False


def get_settings() -> Settings:
    """Read settings fresh from the environment (cheap; not cached, so tests can change env)."""
    return Settings()


def redacted_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (``redis://:***@host:6379/0``), for
    messages, logs, probes and the run records; a URL without a password is returned as is.

    Every place that shows or stores a bus or database URL uses this one function.
    """
    parts = urlsplit(url)
    try:
        password = parts.password
    except ValueError:  # an unparsable netloc (e.g. a bad port): keep nothing after '@'
        password = "?"
    if not password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _node_at(node: yaml.Node | None, path: tuple[Any, ...]) -> yaml.Node | None:
    """The deepest YAML node along ``path`` (mapping keys and sequence indexes)."""
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    node = value
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def line_of(text: str, field: str) -> int | None:
    """The 1-based line of the dotted ``field`` path (e.g. ``faults.0.device``) in YAML text."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    path = tuple(int(p) if p.isdigit() else p for p in field.split(".") if p)
    node = _node_at(root, path)
    return node.start_mark.line + 1 if node is not None else None


def load_yaml_model(source: str | Path, model: type[M], *, text: str | None = None) -> M:
    """Load a YAML file and validate it as ``model`` (a pydantic model class).

    Raises ConfigError naming the file, the 1-based line and the dotted field path of the
    first problem (all problems are listed in the message): YAML syntax errors, a top level
    that is not a mapping, and every validation error.
    """
    name = str(source)
    if text is None:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", source=name) from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(f"YAML syntax: {exc.problem}", source=name, line=line) from None
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping", source=name, line=1)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source=name, text=text) from None


def config_error(
    exc: ValidationError, *, source: str, text: str, at: tuple[Any, ...] = ()
) -> ConfigError:
    """The ConfigError for a validation error of the YAML ``text`` of ``source``, or of the
    part of it at path ``at``: the first problem's message, dotted field path and 1-based
    line, and up to three more problems in the message."""
    errors = exc.errors()
    first = errors[0]
    loc = tuple(p for p in (*at, *first["loc"]) if not (isinstance(p, str) and "[" in p))
    node = _node_at(yaml.compose(text, Loader=yaml.SafeLoader), loc)
    line = node.start_mark.line + 1 if node is not None else None

    def path(e: Any) -> str:
        return ".".join(str(p) for p in (*at, *e["loc"]))

    more = (
        ""
        if len(errors) == 1
        else f" (and {len(errors) - 1} more: "
        + "; ".join(path(e) + ": " + e["msg"] for e in errors[1:4])
        + ")"
    )
    return ConfigError(first["msg"] + more, source=source, line=line, field=path(first))
