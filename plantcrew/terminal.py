"""The command line's shared terminal output: its two consoles (``out``: standard output,
``err``: standard error), the one error printer of every ``plantcrew`` command, and
:func:`plain` for text shown as it is.

rich reads ``[word]`` in a printed string as a style tag: a historian column such as
'P-101 Durchfluss [m³/h]' was shown as 'P-101 Durchfluss ', and a closing tag such as
'[/x]' in a run id stopped the command with a MarkupError traceback. Text that comes from data
or from a person (names, ids, paths, exception messages) is therefore never put inside a
markup string: errors go through :func:`fail` (or :func:`print_error`), table cells, titles
and lines through :func:`plain` or ``Text.assemble``.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

# piped output gets wide consoles so tables and lines stay readable in logs and CI
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def command_group(**kwargs: Any) -> typer.Typer:
    """A ``typer.Typer`` for a group of ``plantcrew`` commands (``kwargs`` as typer's).

    Help is rendered by click, as plain text: paragraphs reflowed to the terminal's width,
    every character of a help string shown. typer's rich rendering kept a docstring's line
    breaks (help came out in ragged lines) and read ``[word]`` as a style tag; its Markdown
    rendering dropped ``<category>`` and the like (``tests/test_cli_help.py``)."""
    kwargs.setdefault("rich_markup_mode", None)
    return typer.Typer(**kwargs)


def plain(text: object) -> Text:
    """``str(text)`` as a renderable shown character for character: no markup, no
    highlighting. For table cells, titles and lines built from data."""
    return Text(str(text))


def print_error(message: str) -> None:
    """Print ``error: <message>`` on standard error as one line (soft-wrapped), the message
    exactly as given."""
    err.print(Text.assemble(("error:", "red bold"), " ", message), soft_wrap=True)


def fail(code: int, message: str) -> typer.Exit:
    """Print ``message`` as :func:`print_error` does and return the ``typer.Exit`` with exit
    status ``code`` for the command to raise: ``raise fail(2, str(exc)) from None``."""
    print_error(message)
    return typer.Exit(code)


__all__ = ["err", "fail", "out", "plain", "print_error"]
