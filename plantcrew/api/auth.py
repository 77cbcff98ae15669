"""Authentication (bearer API tokens), permissions and the per-token rate limit.

Every ``/api/v1`` route depends on :func:`require` with the permission it needs: the token is
checked (401 when missing or not valid, with ``WWW-Authenticate: Bearer``, RFC 6750), its
bucket is charged (429 with ``Retry-After`` when empty; every answer to a token carries
``RateLimit-Limit``, the bucket size, and ``RateLimit-Remaining``, the requests left in it),
and its role must grant the permission (403). The caller's identity and roles come from the
token only, never from the request body.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from plantcrew import metrics
from plantcrew.api.context import ApiContext
from plantcrew.api.problems import ApiError
from plantcrew.store.access import AuthenticationError, Permission, permissions_of

# RFC 9110 section 11.4: credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
_CREDENTIALS = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+) +(\S+) *$")


def bearer_credentials(header: str | None) -> HTTPAuthorizationCredentials | None:
    """The ``Bearer`` credentials of an ``Authorization`` header value, or None.

    The scheme is case-insensitive and one or more spaces may separate it from the token
    (RFC 9110 section 11.4, RFC 6750 section 2.1), whatever FastAPI version parses headers
    (before 0.128.1 it kept the extra spaces in the token). Anything else (no token, another
    scheme, a tab) gives None.
    """
    m = _CREDENTIALS.match(header or "")
    if m is None or m.group(1).lower() != "bearer":
        return None
    return HTTPAuthorizationCredentials(scheme=m.group(1), credentials=m.group(2))


bearer = HTTPBearer(  # documents the scheme in OpenAPI; the header is read by bearer_credentials
    auto_error=False,
    scheme_name="ApiToken",
    description="An API token from `plantcrew tokens create` (pct_<id>_<secret>).",
)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: token id, the person or service, access and plant roles."""

    token_id: str
    name: str
    role: str
    approver_role: str | None
    permissions: frozenset[Permission]

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions


def context(request: Request) -> ApiContext:
    """The app's ApiContext (set by ``create_app``)."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


async def authenticate(
    request: Request,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller behind the bearer token, charged one request of its rate limit."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    credentials = bearer_credentials(request.headers.get("Authorization"))
    if credentials is None:
        raise ApiError(
            401,
            "Not authenticated",
            "send Authorization: Bearer <API token>",
            headers={"WWW-Authenticate": 'Bearer realm="plantcrew"'},
        )
    ctx = context(request)
    try:
        row = await run_in_threadpool(ctx.access.authenticate, credentials.credentials)
    except AuthenticationError as exc:
        raise ApiError(
            401,
            "Not authenticated",
            str(exc),
            headers={"WWW-Authenticate": 'Bearer realm="plantcrew", error="invalid_token"'},
        ) from None
    principal = Principal(row.id, row.name, row.role, row.approver_role, permissions_of(row.role))
    request.state.principal = principal
    structlog.contextvars.bind_contextvars(token_id=row.id)
    verdict = ctx.limiter.take(row.id)
    request.state.rate_limit = (ctx.limiter.burst, verdict.remaining)  # sent as RateLimit-*
    if not verdict.allowed:
        metrics.RATE_LIMITED.labels(row.id).inc()
        raise ApiError(
            429,
            "Too many requests",
            f"rate limit of token {row.id}: {ctx.limiter.rate:g}/s, burst {ctx.limiter.burst}; "
            f"retry in {verdict.retry_after_s} s",
            headers={"Retry-After": str(verdict.retry_after_s)},
        )
    return principal


async def why_token_invalid(request: Request) -> str | None:
    """Why the request's bearer token is no longer valid (revoked, expired), or None while it
    is. For long requests (event streams) that were authenticated once at their start."""
    credentials = bearer_credentials(request.headers.get("Authorization"))
    if credentials is None:
        return "no API token"
    try:
        await run_in_threadpool(context(request).access.authenticate, credentials.credentials)
    except AuthenticationError as exc:
        return str(exc)
    return None


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the authenticated caller, if its role grants ``permission`` (else 403)."""

    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.may(permission):
            raise ApiError(
                403,
                "Forbidden",
                f"role {principal.role!r} of token {principal.token_id} lacks {permission.value}",
            )
        return principal

    dependency.__name__ = f"require_{permission.name.lower()}"
    return dependency
