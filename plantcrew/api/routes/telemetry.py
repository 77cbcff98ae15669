"""``/telemetry``: take readings in over HTTP and put them on the bus.

Each batch is validated on its own (``plantcrew.messages.TelemetryBatch``). A valid batch is
published on ``telemetry.<device_id>``; an invalid one is reported in the answer (its index
and each bad field) and dead-lettered on ``crew.dlq`` with the reason, never dropped.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from plantcrew import metrics, tracing
from plantcrew.api.auth import Principal, context, require
from plantcrew.api.idempotency import KEY_PATTERN, idempotent
from plantcrew.api.problems import ApiError, problem_responses
from plantcrew.api.schemas import FieldError, RejectedItem, TelemetryIn, TelemetryOut
from plantcrew.bus.base import dead_letter
from plantcrew.errors import BusError
from plantcrew.messages import Message, Subjects, TelemetryBatch, utcnow
from plantcrew.store.access import Permission

log = structlog.get_logger("plantcrew.api.telemetry")
router = APIRouter(tags=["telemetry"], responses=problem_responses(401, 403, 422, 429))
Writer = Annotated[Principal, Depends(require(Permission.TELEMETRY_WRITE))]
_DEVICE = re.compile(r"[A-Za-z0-9_\-]{1,128}")  # whole string: fullmatch


def _check(item: Any) -> tuple[TelemetryBatch | None, list[FieldError]]:
    if not isinstance(item, dict):
        return None, [FieldError(field="", reason="a batch must be a JSON object")]
    try:
        batch = TelemetryBatch.model_validate(item)
    except ValidationError as exc:
        return None, [
            FieldError(field=".".join(str(p) for p in e["loc"]), reason=e["msg"])
            for e in exc.errors()
        ]
    errors = []
    if not _DEVICE.fullmatch(batch.device_id):
        errors.append(
            FieldError(field="device_id", reason="use 1-128 of letters, digits, '_' and '-'")
        )
    for i, r in enumerate(batch.readings):
        if r.device_id != batch.device_id:
            errors.append(
                FieldError(
                    field=f"readings.{i}.device_id",
                    reason=f"{r.device_id!r} differs from the batch's {batch.device_id!r}",
                )
            )
    return (None, errors) if errors else (batch, [])


@router.post(
    "/telemetry",
    status_code=202,
    response_model=TelemetryOut,
    summary="Ingest telemetry batches",
    responses={
        **problem_responses(400, 409, 413, 422, 503),
        202: {"model": TelemetryOut, "description": "published and rejected batches"},
    },
)
async def ingest(
    request: Request,
    body: TelemetryIn,
    principal: Writer,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", pattern=KEY_PATTERN, description="retry-safe request key"),
    ] = None,
) -> JSONResponse:
    """Publish valid batches on the bus; report and dead-letter invalid ones, per item."""
    ctx = context(request)
    if len(body.batches) > ctx.settings.max_batches:
        raise ApiError(413, "Too large", f"at most {ctx.settings.max_batches} batches per request")

    async def produce() -> tuple[int, TelemetryOut]:
        bus = ctx.bus
        if bus is None:
            raise ApiError(503, "Not ready", "the bus is not connected")
        source = f"api:{principal.token_id}"
        traceparent = tracing.current_traceparent()
        accepted, rejected = 0, []
        try:
            for index, item in enumerate(body.batches):
                batch, errors = _check(item)
                if batch is not None:
                    await bus.publish(
                        Message.new(
                            batch,
                            source=source,
                            subject=Subjects.telemetry(batch.device_id),
                            time=utcnow(),
                            run_id=body.run_id,
                            correlation_id=body.run_id,
                            traceparent=traceparent,
                        )
                    )
                    accepted += 1
                    metrics.TELEMETRY_INGESTED.labels("accepted").inc()
                    continue
                device = item.get("device_id") if isinstance(item, dict) else None
                reason = "invalid telemetry batch from the API: " + "; ".join(
                    f"{e.field or '<item>'}: {e.reason}" for e in errors
                )
                letter = dead_letter(
                    subject=(
                        f"telemetry.{device}"
                        if isinstance(device, str) and _DEVICE.fullmatch(device)
                        else "telemetry"
                    ),
                    reason=reason,
                    raw=json.dumps(item, default=str),
                    attempts=0,
                    quarantined=True,
                    source=source,
                )
                await bus.publish(letter)
                metrics.TELEMETRY_INGESTED.labels("rejected").inc()
                metrics.dead_lettered("telemetry", quarantined=True)
                log.warning("telemetry batch rejected", index=index, reason=reason)
                rejected.append(
                    RejectedItem(index=index, errors=errors, dead_letter_id=str(letter.id))
                )
        except BusError as exc:
            raise ApiError(
                503,
                "Not ready",
                f"bus failed after {accepted} published batches: {exc}",
            ) from None
        return 202, TelemetryOut(accepted=accepted, rejected=rejected)

    return await idempotent(request, principal, idempotency_key, produce)
