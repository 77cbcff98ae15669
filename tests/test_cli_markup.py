"""Text from data or from a person is printed as it is, never read as rich markup.

rich takes ``[word]`` in a printed string for a style tag: a historian column such as
'P-101 Durchfluss [m³/h]' lost its '[m³/h]', and a closing tag such as '[/x]' stopped the
command with a MarkupError traceback. Every command module prints its errors through the one
printer of :mod:`plantcrew.terminal`; names, ids and paths in tables and lines are shown as
they are. Each case runs the real ``plantcrew`` command (CliRunner) on a real SQLite file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plantcrew.cli import app
from plantcrew.store import AgentRecord, Store
from tests.api.conftest import seed_pending_approval

HERE = Path(__file__).resolve().parent
SHORT = HERE / "replay" / "short-bearing.yaml"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty plantcrew database in a temporary folder (also the working directory)."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'plant.db'}"
    Store(url).dispose()
    return url


def invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


# one command of each module whose error names a bracketed value, and the line it must print
ERRORS = [
    (  # plantcrew/cli.py
        ["approvals", "show", "ap-[night]"],
        "error: no approval 'ap-[night]'",
    ),
    (  # plantcrew/cli_models.py
        ["costs", "--since", "2026-[m³/h]"],
        "error: not a day (YYYY-MM-DD): '2026-[m³/h]'",
    ),
    (  # plantcrew/cli_processes.py (refused before any connection is tried)
        ["worker", "--role", "cook [night]", "--bus", "nats://127.0.0.1:4222"],
        "error: unknown role(s) ['cook [night]']; roles are monitor, diagnostic, operator, "
        "safety, reviewer",
    ),
    (  # plantcrew/cli_replay.py
        ["replay", "run-[night]"],
        "error: no run 'run-[night]' in {db}",
    ),
    (  # a closing tag: rich raised MarkupError (a traceback, exit 1)
        ["diff", "run-[/x]", "run-b"],
        "error: no run 'run-[/x]' in {db}",
    ),
    (  # plantcrew/cli_serve.py
        ["tokens", "revoke", "tok-[night]"],
        "error: no token 'tok-[night]'",
    ),
]


@pytest.mark.parametrize(
    "args, line", ERRORS, ids=lambda v: " ".join(v[:2]) if isinstance(v, list) else ""
)
def test_an_error_naming_a_bracketed_value_prints_it_whole(
    args: list[str], line: str, db: str
) -> None:
    needs_db = args[0] not in ("worker",)
    code, out, err = invoke(*args, *(["--db", db] if needs_db else []))
    assert code == 2, out + err
    assert err.splitlines() == [line.format(db=db)]


def test_an_error_naming_a_bracketed_path_prints_it_whole(db: str, tmp_path: Path) -> None:
    folder = tmp_path / "cfg [night]"
    code, out, err = invoke("agents", "--db", db, "--config-dir", str(folder))  # cli_processes
    assert code == 2, out + err
    assert err.splitlines() == [
        f"error: {folder}/crew.yaml: cannot read: No such file or directory"
    ]
    scenario = tmp_path / "pump [test].yaml"
    code, out, err = invoke("serve", "--scenario", str(scenario))  # cli_serve
    assert code == 2, out + err
    assert err.splitlines() == [f"error: {scenario}: cannot read: No such file or directory"]


def test_a_token_holders_bracketed_name_is_shown_whole(db: str) -> None:
    code, out, err = invoke("tokens", "create", "--name", "Ann [night]", "--role", "viewer",
                            "--db", db)  # fmt: skip
    assert code == 0, out + err
    assert "for Ann [night] (role viewer)" in err
    code, out, err = invoke("tokens", "list", "--db", db)
    assert code == 0 and "Ann [night]" in out, out + err
    token_id = out.split("Ann [night]")[0].split()[-2]
    code, out, err = invoke("tokens", "revoke", token_id, "--db", db)
    assert (code, out.strip()) == (0, f"token {token_id} of Ann [night] revoked"), out + err


def test_an_approvers_bracketed_name_is_shown_whole(db: str) -> None:
    store = Store(db)
    approval = seed_pending_approval(store)
    store.dispose()
    code, out, err = invoke("approvals", "approve", approval.id, "--as", "Ann [night]",
                            "--role", "shift_supervisor", "--db", db)  # fmt: skip
    assert code == 0, out + err
    assert f"approval of {approval.id} by Ann [night] (shift_supervisor) recorded" in out


def test_an_agents_bracketed_id_is_shown_whole(db: str) -> None:
    store = Store(db)
    store.record_agents([
        AgentRecord(agent_id="monitor-[night]-7", role="monitor", capabilities=["detect"],
                    last_seen=datetime.now(UTC))
    ])  # fmt: skip
    store.dispose()
    code, out, err = invoke("agents", "--db", db)
    assert code == 0, out + err
    assert "monitor-[night]-7" in out


def test_a_scenarios_bracketed_name_heads_its_summary(db: str, tmp_path: Path) -> None:
    text = SHORT.read_text(encoding="utf-8").replace(
        "name: short-bearing", 'name: "short [night] bearing"', 1
    )
    scenario = tmp_path / "short.yaml"
    scenario.write_text(text, encoding="utf-8")
    code, out, err = invoke("run", str(scenario), "--db", db)
    assert code == 0, out + err
    assert ": short [night] bearing " in out  # the summary's rule: run <id>: <scenario>
