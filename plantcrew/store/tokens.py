"""Approval tokens: one token allows one actuation of one exact command.

A token is HMAC-SHA256 (RFC 2104) over ``approval_id|action_id|device_id|command|params``
(params as canonical JSON), keyed by ``PLANTCREW_APPROVAL_SECRET``. It names the action,
device and parameters, so it cannot be reused for another command; the store consumes it in
the transaction that records the command, so it cannot be used twice.

The key. Without ``PLANTCREW_APPROVAL_SECRET`` tokens are keyed by :data:`DEV_SECRET`, which
is in this public source. That is safe only where nobody else reaches the tokens: on the
in-process bus (``memory://``) the Coordinator that issues a token and the Operator and plant
that check it share one process, so ``plantcrew run scenarios/...`` needs no secret. It is a
fixed key, not a random one per process, because a run's tokens outlive the process that
issued them: ``plantcrew run --resume`` continues a run whose approved actions carry tokens
already stored in the database and the outbox. On a broker bus (``nats://``, ``redis://``)
anyone who can publish there could compute a valid token with the public key and forge an
actuation, so every process that issues or checks tokens on one calls
:func:`require_approval_secret` before it starts, and refuses to without a strong secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

import structlog

from plantcrew.errors import ApprovalError, ConfigError

log = structlog.get_logger("plantcrew.tokens")

SECRET_ENV = "PLANTCREW_APPROVAL_SECRET"
DEV_SECRET = "plantcrew-dev-secret-change-me"
"""The key without ``PLANTCREW_APPROVAL_SECRET``: public, for the in-process bus only."""
MIN_SECRET_CHARS = 32
"""The shortest secret accepted on a broker bus, in characters. RFC 2104 (section 3) advises
a key no shorter than the hash's output, 32 bytes for SHA-256, as a shorter one weakens the
HMAC; 32 characters is that, and still 128 bits when they are hex digits. ``openssl rand -hex
32`` makes 64 (256 bits)."""
MIN_DISTINCT_CHARS = 8
"""A secret of fewer distinct characters (``aaaa...``, ``0000...``) is refused as weak."""
_PLACEHOLDERS = ("change-me", "changeme", "change_me")


def _secret() -> bytes:
    return (os.environ.get("PLANTCREW_APPROVAL_SECRET") or DEV_SECRET).encode()


def secret_problem(secret: str | None) -> str | None:
    """What makes ``secret`` no key for approval tokens on a broker bus (e.g. ``"is not
    set"``, ``"is too short (12 characters; at least 32)"``), or None when it is fine. The
    answer never contains the secret."""
    if not secret:
        return "is not set"
    if secret == DEV_SECRET or any(p in secret.lower() for p in _PLACEHOLDERS):
        return "is a placeholder, not a secret"
    if len(secret) < MIN_SECRET_CHARS:
        return f"is too short ({len(secret)} characters; at least {MIN_SECRET_CHARS})"
    distinct = len(set(secret))
    if distinct < MIN_DISTINCT_CHARS:
        return f"is too weak ({distinct} distinct characters; at least {MIN_DISTINCT_CHARS})"
    return None


def require_approval_secret(bus_url: str, who: str) -> None:
    """Refuse to issue or check approval tokens on a broker bus with a missing or weak key.

    ``bus_url`` is the bus the caller will use (``memory://...`` needs no secret: module doc);
    ``who`` names the caller in the error (e.g. ``"plantcrew coordinator"``). Raises
    ConfigError, one line naming ``PLANTCREW_APPROVAL_SECRET``, what is wrong with it, why it
    matters and how to make one.
    """
    if bus_url.startswith("memory:"):
        return
    problem = secret_problem(os.environ.get("PLANTCREW_APPROVAL_SECRET"))
    if problem is None:
        return
    scheme = bus_url.split(":", 1)[0]
    raise ConfigError(
        f"{SECRET_ENV} {problem}: {who} issues or checks approval tokens on a {scheme}:// bus, "
        "where anyone who can publish could forge one unless the key is a secret only the "
        f"crew holds; make one with `openssl rand -hex 32` and set {SECRET_ENV} to that same "
        "value in every crew process on the bus"
    )


def _canonical(
    approval_id: str, action_id: str, device_id: str, command: str, parameters: dict[str, Any]
) -> bytes:
    params = json.dumps(parameters, sort_keys=True, separators=(",", ":"), default=str)
    return f"{approval_id}|{action_id}|{device_id}|{command}|{params}".encode()


def issue_token(
    approval_id: str, action_id: str, device_id: str, command: str, parameters: dict[str, Any]
) -> str:
    """The token for exactly this approval and command (hex string)."""
    msg = _canonical(approval_id, action_id, device_id, command, parameters)
    return hmac.new(_secret(), msg, hashlib.sha256).hexdigest()


def check_token(
    token: str,
    approval_id: str,
    action_id: str,
    device_id: str,
    command: str,
    parameters: dict[str, Any],
) -> None:
    """Raise ApprovalError unless ``token`` was issued for exactly this command."""
    expected = issue_token(approval_id, action_id, device_id, command, parameters)
    if not hmac.compare_digest(expected, token or ""):
        raise ApprovalError(
            f"approval token does not match approval {approval_id} for action {action_id} "
            f"({command} on {device_id}): forged or issued for another command"
        )
