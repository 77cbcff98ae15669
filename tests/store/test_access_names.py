"""Names the access store checks are matched whole (Python's ``$`` matches before a final
newline)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from plantcrew.cli import app
from plantcrew.store import Store
from plantcrew.store.access import AccessStore


def test_a_plant_role_ending_in_a_newline_is_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'access.db'}"
    args = ["tokens", "create", "--name", "ann", "--role", "approver", "--db", db]
    res = CliRunner().invoke(app, [*args, "--approver-role", "shift_supervisor\n"])
    assert res.exit_code == 2, res.stdout + res.stderr
    assert "plant role 'shift_supervisor\\n'" in res.stderr
    assert AccessStore(Store(db)).tokens() == []
    res = CliRunner().invoke(app, [*args, "--approver-role", "shift_supervisor"])
    assert res.exit_code == 0, res.stdout + res.stderr
    assert [t.approver_role for t in AccessStore(Store(db)).tokens()] == ["shift_supervisor"]
