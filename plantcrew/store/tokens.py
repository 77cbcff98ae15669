"""Approval tokens: one token allows one actuation of one exact command.

A token is HMAC-SHA256 (RFC 2104) over ``approval_id|action_id|device_id|command|params``
(params as canonical JSON), keyed by ``PLANTCREW_APPROVAL_SECRET``. It names the action,
device and parameters, so it cannot be reused for another command; the store consumes it in
the transaction that records the command, so it cannot be used twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

import structlog

from plantcrew.errors import ApprovalError

log = structlog.get_logger("plantcrew.tokens")
_DEV_SECRET = "plantcrew-dev-secret-change-me"


def _secret() -> bytes:
    secret = os.environ.get("PLANTCREW_APPROVAL_SECRET")
    if not secret:
        return _DEV_SECRET.encode()
    return secret.encode()


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
