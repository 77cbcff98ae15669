"""What the manifests in infra/ are checked against: the command lines the ``plantcrew`` CLI
accepts and the environment variables plantcrew reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
import typer.main

from plantcrew.api.config import ApiSettings
from plantcrew.cli import app
from plantcrew.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


def parse_command(args: list[str]) -> dict[str, Any]:
    """Parse ``plantcrew ARGS`` as the CLI does (subcommand, options, their values) and return
    the options' values by parameter name; raises the CLI's usage error (no such command or
    option, a bad value) naming what it does not accept."""
    cli = typer.main.get_command(app)
    name, *rest = args
    command = cli.get_command(typer.Context(cli), name)  # type: ignore[attr-defined]
    if command is None:
        raise ValueError(f"no such command: plantcrew {name}")
    params: dict[str, Any] = command.make_context(name, rest).params
    return params


def drain_s(args: list[str], env: dict[str, str]) -> float | None:
    """The longest ``plantcrew ARGS`` lets work in flight finish on SIGTERM (seconds) with
    ``env`` as its environment: its ``--grace``; for ``serve`` without one,
    ``PLANTCREW_API_SHUTDOWN_GRACE_S`` or its default. None for a process without a drain."""
    grace = parse_command(args).get("grace")
    if grace is None and args[0] == "serve":
        field = ApiSettings.model_fields["shutdown_grace_s"]
        return float(env.get("PLANTCREW_API_SHUTDOWN_GRACE_S", field.default))
    return None if grace is None else float(grace)


def env_read() -> set[str]:
    """Every ``PLANTCREW_*`` variable plantcrew reads: the fields of its two pydantic-settings
    classes and the names the package looks up with ``os.environ`` directly."""
    names = {f"PLANTCREW_{f.upper()}" for f in Settings.model_fields}
    names |= {f"PLANTCREW_API_{f.upper()}" for f in ApiSettings.model_fields}
    lookup = re.compile(r"""os\.environ(?:\.get\(|\[)\s*["'](PLANTCREW_\w+)["']""")
    for path in (ROOT / "plantcrew").rglob("*.py"):
        names |= set(lookup.findall(path.read_text(encoding="utf-8")))
    return names


def provider_keys() -> set[str]:
    """The variables config/models.yaml names for hosted models' API keys."""
    text = (ROOT / "config" / "models.yaml").read_text(encoding="utf-8")
    return set(re.findall(r"(?m)^\s*api_key_env:\s*(\w+)", text))
