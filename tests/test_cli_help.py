"""Every command's ``--help`` shows its whole help text, word for word.

typer's default help rendering read help strings as rich markup and kept a docstring's line
breaks; its Markdown mode reflows but drops anything in angle brackets, so ``detect --help``
showed ``RESULTS_DIR/NAME//NAME_.csv`` for ``RESULTS_DIR/NAME/<category>/NAME_<file>.csv``.
Each command is asked for its help through the real ``plantcrew`` app (CliRunner).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from plantcrew.cli import app


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, command in group.commands.items():
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def _words(text: str) -> str:
    return " ".join(text.split())


def test_every_command_is_listed() -> None:
    assert {"run", "eval skab", "detect", "replay", "worker", "serve"} <= {
        " ".join(p) for p, _ in COMMANDS
    }


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_shows_every_word_of_the_docstring_and_options(
    path: tuple[str, ...], command: Any
) -> None:
    res = CliRunner().invoke(app, [*path, "--help"], terminal_width=100)
    assert res.exit_code == 0, res.output
    shown = _words(res.output)
    doc = inspect.cleandoc(command.help or "").partition("\f")[0]
    for paragraph in doc.split("\n\n"):
        assert _words(paragraph) in shown
    for param in command.params:
        if getattr(param, "help", None):
            assert _words(param.help) in shown, param.name
