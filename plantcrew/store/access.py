"""Access control: API tokens with roles, the permission table, and idempotency keys.

People and services reach the API with a bearer token ``pct_<id>_<secret>``. Only a SHA-256
hash of the secret is stored: the secret is 256 random bits (``secrets.token_urlsafe(32)``),
so a fast hash is enough; slow password hashes exist for low-entropy passwords (OWASP Password
Storage Cheat Sheet). A token has an access role (``viewer``, ``operator``, ``approver``,
``admin``) that grants permissions (:data:`ROLE_PERMISSIONS`), and, for people who decide on
approvals, a plant role (``approver_role``, e.g. ``shift_supervisor``) that the Coordinator
checks against the roles an approval allows.

Agents hold permissions too (:data:`AGENT_PERMISSIONS`): each tool they use needs one, and
each role gets the least it needs; only the Operator may actuate, and the actuator itself
still accepts only a command carrying a valid approval token for that very action.

Idempotency keys (:class:`IdempotencyRecord`) remember a POST's response per token and key,
so a retried request gets the first answer instead of doing the thing twice.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import Column, Text, delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select

from plantcrew.errors import NotFoundError, PlantcrewError, StoreError
from plantcrew.store.db import Database

TOKEN_PREFIX = "pct_"
_TOKEN = re.compile(r"^pct_([0-9a-f]{12})_([A-Za-z0-9_\-]{20,100})$")
_PLANT_ROLE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # fullmatch: `$` passes a final "\n"


class AccessError(PlantcrewError):
    """Access was refused: no valid credentials, or not the needed permission."""


class AuthenticationError(AccessError):
    """The token is missing, malformed, unknown, revoked or expired."""


class PermissionDenied(AccessError):
    """The caller is known but lacks the permission (or plant role) for this step."""


class Role(StrEnum):
    """Access roles of people and services using the API."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


class Permission(StrEnum):
    """What a caller may do. API permissions for people, tool permissions for agents."""

    # people and services, through the API
    INCIDENTS_READ = "incidents:read"
    APPROVALS_READ = "approvals:read"
    APPROVALS_DECIDE = "approvals:decide"
    RUNS_READ = "runs:read"
    RUNS_EXPORT = "runs:export"
    AGENTS_READ = "agents:read"
    TELEMETRY_WRITE = "telemetry:write"
    TOKENS_MANAGE = "tokens:manage"
    # agents' tools
    TELEMETRY_READ = "telemetry:read"
    ANOMALY_REPORT = "anomaly:report"
    MODEL_CALL = "model:call"
    MEMORY_READ = "memory:read"
    MEMORY_WRITE = "memory:write"
    ACTION_PROPOSE = "action:propose"
    POLICY_EVALUATE = "policy:evaluate"
    PLANT_ACTUATE = "plant:actuate"
    INCIDENTS_WRITE = "incidents:write"
    APPROVALS_ISSUE = "approvals:issue"


P = Permission
_VIEW = frozenset({P.INCIDENTS_READ, P.APPROVALS_READ, P.RUNS_READ, P.AGENTS_READ})
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEW,
    Role.OPERATOR: _VIEW | {P.TELEMETRY_WRITE, P.RUNS_EXPORT},
    Role.APPROVER: _VIEW | {P.APPROVALS_DECIDE, P.RUNS_EXPORT},
    Role.ADMIN: _VIEW | {P.TELEMETRY_WRITE, P.RUNS_EXPORT, P.APPROVALS_DECIDE, P.TOKENS_MANAGE},
}
"""Access role → permissions. Deciding on an approval also needs a plant role it allows."""

AGENT_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "monitor": frozenset({P.TELEMETRY_READ, P.ANOMALY_REPORT}),
    "diagnostic": frozenset({P.TELEMETRY_READ, P.MODEL_CALL, P.MEMORY_READ}),
    "operator": frozenset({P.TELEMETRY_READ, P.MODEL_CALL, P.ACTION_PROPOSE, P.PLANT_ACTUATE}),
    "safety": frozenset({P.TELEMETRY_READ, P.POLICY_EVALUATE}),
    "reviewer": frozenset({P.MODEL_CALL, P.MEMORY_WRITE}),
    "coordinator": frozenset({P.INCIDENTS_WRITE, P.APPROVALS_ISSUE, P.MEMORY_READ, P.MEMORY_WRITE}),
}
"""Agent role → the tools it may use (least privilege: only the Operator actuates)."""


def permissions_of(role: str) -> frozenset[Permission]:
    """The permissions of an access role; PermissionDenied for an unknown role."""
    try:
        return ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        raise PermissionDenied(f"unknown access role {role!r}") from None


def agent_may(agent_role: str, permission: Permission | str) -> bool:
    """True when agents of ``agent_role`` hold ``permission`` (unknown roles hold nothing)."""
    return Permission(permission) in AGENT_PERMISSIONS.get(agent_role, frozenset())


def require_agent(agent_role: str, permission: Permission | str) -> None:
    """Raise PermissionDenied unless agents of ``agent_role`` may use ``permission``."""
    if not agent_may(agent_role, permission):
        raise PermissionDenied(f"agent role {agent_role!r} may not use {Permission(permission)}")


class ApiToken(SQLModel, table=True):
    """An API token: who holds it, with which roles. Only the secret's SHA-256 is kept."""

    __tablename__ = "api_token"
    id: str = Field(primary_key=True)  # 12 hex, public (shown in lists and logs)
    name: str = Field(index=True)  # the person or service; an approval's approver
    role: str  # access role (Role)
    approver_role: str | None = None  # plant role for approvals, e.g. shift_supervisor
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    note: str = ""

    def may(self, permission: Permission | str) -> bool:
        """True when this token's role grants ``permission``."""
        try:
            return Permission(permission) in permissions_of(self.role)
        except PermissionDenied:
            return False


class IdempotencyRecord(SQLModel, table=True):
    """The first response to a POST with an ``Idempotency-Key``, per token and key."""

    __tablename__ = "idempotency_key"
    id: str = Field(primary_key=True)  # sha256(token_id | key)
    token_id: str = Field(index=True)
    key: str
    fingerprint: str  # sha256 of method, path and body
    status: str = "in_progress"  # in_progress | done
    response_status: int | None = None
    response_body: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(index=True)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


class AccessStore:
    """Tokens and idempotency keys in the plantcrew database (``db``: a Store or Database)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        SQLModel.metadata.create_all(
            db.engine,
            tables=[ApiToken.__table__, IdempotencyRecord.__table__],  # type: ignore[attr-defined]
        )

    # ---- tokens --------------------------------------------------------------------------
    def create_token(
        self,
        name: str,
        role: Role | str,
        *,
        approver_role: str | None = None,
        ttl: timedelta | None = None,
        note: str = "",
        now: datetime | None = None,
    ) -> tuple[ApiToken, str]:
        """Issue a token; returns the row and the plaintext token (shown once, never kept).

        Raises PermissionDenied for an unknown access role, StoreError for a bad plant role.
        """
        try:
            access_role = Role(role)
        except ValueError:
            raise PermissionDenied(
                f"unknown access role {role!r}; use one of {[r.value for r in Role]}"
            ) from None
        if approver_role is not None and not _PLANT_ROLE.fullmatch(approver_role):
            raise StoreError(f"plant role {approver_role!r}: use lower_case letters, digits, _")
        if not name.strip():
            raise StoreError("a token needs the name of the person or service holding it")
        now = now or datetime.now(UTC)
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = ApiToken(
            id=token_id,
            name=name.strip(),
            role=access_role.value,
            approver_role=approver_role,
            secret_hash=_hash(secret),
            created_at=now,
            expires_at=now + ttl if ttl else None,
            note=note,
        )
        with self.db.tx() as s:
            s.add(row)
        return row, f"{TOKEN_PREFIX}{token_id}_{secret}"

    def tokens(self, *, include_revoked: bool = False) -> list[ApiToken]:
        """Every token (secrets are never stored), newest first."""
        with self.db.tx() as s:
            q = select(ApiToken)
            if not include_revoked:
                q = q.where(col(ApiToken.revoked_at).is_(None))
            return list(s.exec(q.order_by(col(ApiToken.created_at).desc())))

    def revoke(self, token_id: str, *, now: datetime | None = None) -> ApiToken:
        """Revoke a token at once; NotFoundError when there is no such token."""
        with self.db.tx() as s:
            row = s.get(ApiToken, token_id)
            if row is None:
                raise NotFoundError(f"no token {token_id!r}")
            if row.revoked_at is None:
                row.revoked_at = now or datetime.now(UTC)
                s.add(row)
            return row

    def authenticate(self, token: str, *, now: datetime | None = None) -> ApiToken:
        """The live token row for a presented token; AuthenticationError otherwise.

        The comparison is constant-time (``hmac.compare_digest``); the message never says
        which part was wrong beyond malformed / not valid.
        """
        m = _TOKEN.match(token or "")
        if m is None:
            raise AuthenticationError("malformed token: expected pct_<id>_<secret>")
        token_id, secret = m.groups()
        with self.db.tx() as s:
            row = s.get(ApiToken, token_id)
        digest = _hash(secret)
        if row is None or not hmac.compare_digest(row.secret_hash, digest):
            raise AuthenticationError("token not valid")
        now = now or datetime.now(UTC)
        if row.revoked_at is not None:
            raise AuthenticationError("token revoked")
        if row.expires_at is not None and _utc(row.expires_at) <= now:
            raise AuthenticationError("token expired")
        return row

    # ---- idempotency keys ------------------------------------------------------------------
    @staticmethod
    def idempotency_id(token_id: str, key: str) -> str:
        """The record id of ``key`` used by ``token_id`` (keys are scoped per token)."""
        return hashlib.sha256(f"{token_id}|{key}".encode()).hexdigest()

    def begin_request(
        self,
        token_id: str,
        key: str,
        fingerprint: str,
        *,
        now: datetime | None = None,
        ttl: timedelta | None = None,
    ) -> IdempotencyRecord | None:
        """Claim ``key`` for a new request: None when claimed now (go ahead), else the record
        of the earlier request with this key (in progress or done). With ``ttl``, a record
        older than that is forgotten (the key is claimed anew), purged or not."""
        rec_id = self.idempotency_id(token_id, key)
        now = now or datetime.now(UTC)
        try:
            with self.db.tx() as s:
                found = s.get(IdempotencyRecord, rec_id)
                if found is not None and (ttl is None or _utc(found.created_at) >= now - ttl):
                    return found
                if found is not None:
                    s.delete(found)
                    s.flush()
                s.add(
                    IdempotencyRecord(
                        id=rec_id,
                        token_id=token_id,
                        key=key,
                        fingerprint=fingerprint,
                        created_at=now,
                    )
                )
            return None
        except StoreError as exc:  # a concurrent request claimed it first
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            with self.db.tx() as s:
                return s.get(IdempotencyRecord, rec_id)

    def finish_request(self, token_id: str, key: str, status: int, body: str) -> None:
        """Keep the response of the request that claimed ``key``."""
        with self.db.tx() as s:
            rec = s.get(IdempotencyRecord, self.idempotency_id(token_id, key))
            if rec is not None:
                rec.status, rec.response_status, rec.response_body = "done", status, body
                s.add(rec)

    def release_request(self, token_id: str, key: str) -> None:
        """Forget a claim whose request failed, so that a retry runs it again."""
        with self.db.tx() as s:
            s.execute(
                delete(IdempotencyRecord).where(
                    col(IdempotencyRecord.id) == self.idempotency_id(token_id, key),
                    col(IdempotencyRecord.status) == "in_progress",
                )
            )

    def purge_requests(
        self, older_than: timedelta, *, now: datetime | None = None, limit: int | None = None
    ) -> int:
        """Delete idempotency records older than ``older_than`` (at most ``limit`` of them,
        oldest first, so one call costs a bounded statement); returns how many."""
        cutoff = (now or datetime.now(UTC)) - older_than
        expired = col(IdempotencyRecord.created_at) < cutoff
        stmt = delete(IdempotencyRecord).where(expired)
        if limit is not None:
            oldest = (
                select(IdempotencyRecord.id)
                .where(expired)
                .order_by(col(IdempotencyRecord.created_at))
                .limit(limit)
            )
            stmt = delete(IdempotencyRecord).where(col(IdempotencyRecord.id).in_(oldest))
        with self.db.tx() as s:
            res = s.execute(stmt)
            return int(res.rowcount or 0)  # type: ignore[attr-defined]


__all__ = [
    "AGENT_PERMISSIONS",
    "ROLE_PERMISSIONS",
    "AccessError",
    "AccessStore",
    "ApiToken",
    "AuthenticationError",
    "IdempotencyRecord",
    "Permission",
    "PermissionDenied",
    "Role",
    "agent_may",
    "permissions_of",
    "require_agent",
]
