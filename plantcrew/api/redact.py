"""Keep approval tokens out of what the API serves.

An approval token allows one actuation; the crew passes it inside ``task.assigned`` inputs and
keeps it on the approval row. The API never shows it: every value under a key named in
``SECRET_KEYS`` is replaced by ``"[redacted]"``.
"""

from __future__ import annotations

from typing import Any

SECRET_KEYS = frozenset({"token", "approval_token", "api_key", "secret", "password"})
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    """A copy of ``value`` (JSON-like) with secret-named keys' values redacted."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if k in SECRET_KEYS and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
