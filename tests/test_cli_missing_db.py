"""Commands that only read an existing store refuse a SQLite path that does not exist: one
line naming the path, exit 2, and no empty database file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from plantcrew.cli import app
from plantcrew.store import Store

MISSING = "sqlite:///typo.db"

READERS = [
    ["feedback", "inc-1", "--root-cause", "cavitation", "--db", MISSING],
    ["replay", "run-1", "--db", MISSING],
    ["rerun", "run-1", "--from", "#1", "--db", MISSING],
    ["diff", "run-a", "run-b", "--db", MISSING],
    ["costs", "--db", MISSING],
    ["audit", "verify", "--db", MISSING],
    ["approvals", "list", "--db", MISSING],
    ["approvals", "show", "ap-1", "--db", MISSING],
    ["approvals", "approve", "ap-1", "--as", "ann", "--role", "shift_supervisor", "--db", MISSING],
    ["approvals", "reject", "ap-1", "--as", "ann", "--role", "shift_supervisor", "--db", MISSING],
    ["tokens", "list", "--db", MISSING],
    ["agents", "--db", MISSING],
    ["tokens", "revoke", "tok-1", "--db", MISSING],
    ["run", "scenario.yaml", "--resume", "run-1", "--db", MISSING],
]


@pytest.mark.parametrize("args", READERS, ids=lambda a: " ".join(a[:2]))
def test_a_reading_command_refuses_a_sqlite_path_that_does_not_exist(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "no database at typo.db" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_diff_refuses_a_second_database_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Store("sqlite:///runs.db").dispose()
    res = CliRunner().invoke(
        app, ["diff", "a", "b", "--db", "sqlite:///runs.db", "--db-b", MISSING]
    )
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "no database at typo.db" in res.stderr
    assert not (tmp_path / "typo.db").exists()


def test_a_reading_command_opens_a_database_that_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Store("sqlite:///plant.db").dispose()
    res = CliRunner().invoke(app, ["audit", "verify", "--db", "sqlite:///plant.db"])
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "audit log intact" in res.stdout


def test_creating_a_token_still_creates_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(
        app, ["tokens", "create", "--name", "ann", "--role", "viewer", "--db", MISSING]
    )
    assert res.exit_code == 0, res.stdout + res.stderr
    assert (tmp_path / "typo.db").exists()
