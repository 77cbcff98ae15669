"""Fixtures of the replay tests: recorded scenario runs in temporary databases."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from plantcrew.scenarios.runner import run_scenario
from plantcrew.settings import get_settings

HERE = Path(__file__).resolve().parent
SHORT = HERE / "short-bearing.yaml"


def record(scenario: Path, db_url: str, config_dir: Path | None = None) -> str:
    """Run ``scenario`` into ``db_url`` (outside any event loop); returns the run id."""
    result = asyncio.run(run_scenario(scenario, db_url=db_url, config_dir=config_dir))
    return result.run_id


def json_of(output: str) -> Any:
    """The JSON document a command printed (log lines before it, if any, are skipped)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line in ("{", "[", "[]"))
    return json.loads("\n".join(lines[start:]))


def config_copy(dest: Path) -> Path:
    """A copy of the shipped config folder at ``dest`` (to change for a test)."""
    shutil.copytree(get_settings().config_dir, dest)
    return dest


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``(db_url, run_id)`` of one recorded run of the short bearing scenario."""
    db = tmp_path_factory.mktemp("short") / "run.db"
    url = f"sqlite:///{db}"
    return url, record(SHORT, url)
