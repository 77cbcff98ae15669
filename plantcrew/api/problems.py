"""Error answers of the API as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class Problem(BaseModel):
    """An error answer: ``title`` (short), ``status`` (HTTP code), ``detail`` (what happened)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


class ApiError(HTTPException):
    """An HTTPException rendered as a Problem (with optional per-field ``errors``)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.title, self.errors = title, errors


def unavailable(request_id: str | None, cause: str, retry_after_s: int) -> JSONResponse:
    """The 503 answer while the database cannot serve (``cause``: ``unreachable`` or
    ``busy``, see ``plantcrew.store.db.unavailable_cause``), with ``Retry-After``. The
    driver's message (hosts, ports) stays in the log."""
    body = Problem(
        title="Service unavailable",
        status=503,
        detail=f"database {cause}: the service cannot use its database now; "
        f"retry in {retry_after_s} s",
        request_id=request_id,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=503,
        headers={"Retry-After": str(retry_after_s)},
        media_type="application/problem+json",
    )


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting Problem answers for ``codes``."""
    titles = {
        400: "Bad request",
        401: "Not authenticated",
        403: "Forbidden",
        404: "Not found",
        409: "Conflict",
        413: "Too large",
        422: "Unprocessable content",
        429: "Too many requests",
        503: "Service unavailable",
    }
    headers = {
        401: {
            "WWW-Authenticate": {
                "description": "the Bearer challenge (RFC 6750)",
                "required": True,
                "schema": {"type": "string"},
            }
        },
        429: {
            "Retry-After": {
                "description": "seconds until the token's bucket holds a request again",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        },
        503: {
            "Retry-After": {
                "description": "seconds after which the database may serve again",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }
    out: dict[int | str, dict[str, Any]] = {}
    for c in codes:
        # no "model": FastAPI would document application/json too, which is never sent
        out[c] = {
            "description": titles.get(c, "Error"),
            "content": {"application/problem+json": {"schema": Problem.model_json_schema()}},
        }
        if c in headers:
            out[c]["headers"] = headers[c]
    return out
