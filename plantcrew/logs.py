"""Logging setup: structlog to standard error (never stdout, which carries ``--json`` output).

``configure(level, json=False)``: human-readable lines, or one JSON object per line with
``json=True`` (``PLANTCREW_LOG_JSON=true``), each with a timestamp, level and logger name.
A line logged while a bus handler runs carries the handled message's ids (run_id,
incident_id, message_id, message_type, trace_id; ``plantcrew.tracing.add_handling_ids``).
An error's traceback is logged (JSON: under ``exception``) without the frames' local
variables, which hold bearer and approval tokens.
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


def configure(level: str = "INFO", *, json: bool = False) -> None:
    """Route structlog (and the stdlib loggers of our dependencies) to stderr at ``level``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
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
