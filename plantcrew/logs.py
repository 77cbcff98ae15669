"""Logging setup: structlog to standard error (never stdout, which carries ``--json`` output).

``configure(level, json=False)``: human-readable lines, or one JSON object per line with
``json=True`` (``PLANTCREW_LOG_JSON=true``), each with a timestamp, level and logger name.
A line logged while a bus handler runs carries the handled message's ids (run_id,
incident_id, message_id, message_type, trace_id; ``plantcrew.tracing.add_handling_ids``).
An error's traceback is logged (JSON: under ``exception``) without the frames' local
variables, which hold bearer and approval tokens.

``at_least(level)`` raises the level a command logs at (``plantcrew eval skab``: warnings and
errors only); ``configured()`` is what ``configure`` set last, for worker processes to set the
same (``plantcrew.scenarios.workers``).
"""

from __future__ import annotations

import logging
import sys

import structlog

from plantcrew.tracing import add_handling_ids


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (a test runner may swap and close it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_configured: tuple[str, bool] | None = None  # (level, json) of the last configure()


def configure(level: str = "INFO", *, json: bool = False) -> None:
    """Route structlog (and the stdlib loggers of our dependencies) to stderr at ``level``
    (a logging level name; an unknown one is INFO)."""
    global _configured
    numeric = _numeric(level)
    _configured = (logging.getLevelName(numeric), json)
    # tracebacks without the frames' local variables: those hold bearer and approval tokens
    renderers: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if json
        else [
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(),
                exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
            )
        ]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_handling_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(stream=_Stderr(), level=max(numeric, logging.WARNING))
    for noisy in ("LiteLLM", "litellm", "httpx", "autogen_core", "autogen_agentchat"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


def configured() -> tuple[str, bool] | None:
    """``(level, json)`` as the last :func:`configure` in this process set them (the level as
    a name, e.g. ``"WARNING"``), or None before any."""
    return _configured


def at_least(level: str) -> None:
    """Log at ``level`` (a logging level name) from now on if a lower level was configured,
    in the same format; a higher one, and a process never configured, are left as they are."""
    if _configured is not None and _numeric(_configured[0]) < _numeric(level):
        configure(level, json=_configured[1])


def _numeric(level: str) -> int:
    """The number of a logging level name (``"warning"``: 30); INFO for an unknown name."""
    numeric = logging.getLevelName(level.upper())
    return numeric if isinstance(numeric, int) else logging.INFO
