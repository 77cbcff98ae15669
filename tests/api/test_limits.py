"""Per-token rate limits (token bucket, 429 + Retry-After) and idempotency keys on POSTs."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from sqlmodel import select

from plantcrew.api.ratelimit import RateLimiter
from plantcrew.messages import Message
from plantcrew.store import ApprovalVote
from plantcrew.store.access import IdempotencyRecord
from tests.api.conftest import Api, seed_pending_approval

BATCH = {
    "device_id": "pump1",
    "readings": [{"device_id": "pump1", "sensor": "t", "value": 1.0, "ts": 0.0}],
}


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_refills_at_its_rate() -> None:
    clock = FakeClock()
    lim = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    assert [lim.take("a").allowed for _ in range(4)] == [True, True, True, False]
    refused = lim.take("a")
    assert not refused.allowed and refused.retry_after_s == 1  # 1 token at 2/s: 0.5 s → 1 s
    assert lim.take("b").allowed  # buckets are per key
    clock.t += 0.5
    assert lim.take("a").allowed and not lim.take("a").allowed
    clock.t += 100  # never more than the burst
    assert [lim.take("a").allowed for _ in range(4)] == [True, True, True, False]
    slow = RateLimiter(rate_per_s=0.1, burst=1, clock=clock)
    slow.take("k")
    assert slow.take("k").retry_after_s == 10


def test_api_answers_429_with_retry_after_per_token(api: Api) -> None:
    clock = FakeClock()
    api.ctx.limiter = RateLimiter(rate_per_s=0.05, burst=3, clock=clock)
    codes = [api.client.get("/api/v1/me", headers=api.h("viewer")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = api.client.get("/api/v1/incidents", headers=api.h("viewer"))
    assert r.status_code == 429
    assert r.headers["retry-after"] == "20"
    assert r.headers["x-request-id"]
    # another token has its own bucket
    assert api.client.get("/api/v1/me", headers=api.h("operator")).status_code == 200
    clock.t += 20
    assert api.client.get("/api/v1/me", headers=api.h("viewer")).status_code == 200
    # probes are not rate limited
    assert all(api.client.get("/healthz").status_code == 200 for _ in range(5))


def test_answers_tell_the_token_its_rate_limit(api: Api) -> None:
    clock = FakeClock()
    api.ctx.limiter = RateLimiter(rate_per_s=0.05, burst=3, clock=clock)
    answers = [api.client.get("/api/v1/me", headers=api.h("viewer")) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers.get("ratelimit-limit") for r in answers] == ["3"] * 4
    assert [r.headers.get("ratelimit-remaining") for r in answers] == ["2", "1", "0", "0"]
    assert "ratelimit-remaining" not in api.client.get("/api/v1/me").headers  # no token: 401


def _telemetry_seen(api: Api) -> list[Message]:
    seen: list[Message] = []

    async def on(msg: Message) -> None:
        seen.append(msg)

    assert api.ctx.bus is not None
    api.client.portal.call(api.ctx.bus.subscribe, "telemetry.>", on)  # type: ignore[union-attr]
    return seen


def test_same_key_same_request_is_done_once_and_replayed(api: Api) -> None:
    seen = _telemetry_seen(api)
    hdr = api.h("operator", **{"Idempotency-Key": "batch-0001"})
    first = api.client.post("/api/v1/telemetry", headers=hdr, json={"batches": [BATCH]})
    second = api.client.post("/api/v1/telemetry", headers=hdr, json={"batches": [BATCH]})
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json() == {"accepted": 1, "rejected": []}
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    api.client.portal.call(api.ctx.bus.quiesce)  # type: ignore[union-attr]
    assert len(seen) == 1
    # without a key, each request is done
    api.client.post("/api/v1/telemetry", headers=api.h("operator"), json={"batches": [BATCH]})
    api.client.portal.call(api.ctx.bus.quiesce)  # type: ignore[union-attr]
    assert len(seen) == 2


def test_same_key_other_request_is_422_and_keys_are_per_token(api: Api) -> None:
    hdr = api.h("operator", **{"Idempotency-Key": "k-1"})
    assert api.client.post("/api/v1/telemetry", headers=hdr, json={"batches": [BATCH]}).is_success
    other = {"batches": [BATCH, BATCH]}
    r = api.client.post("/api/v1/telemetry", headers=hdr, json=other)
    assert r.status_code == 422 and "different request" in r.json()["detail"]
    r = api.client.post(
        "/api/v1/telemetry", headers=api.h("admin", **{"Idempotency-Key": "k-1"}), json=other
    )
    assert r.status_code == 202 and r.json()["accepted"] == 2
    bad = api.h("operator", **{"Idempotency-Key": "has space"})
    assert api.client.post("/api/v1/telemetry", headers=bad, json=other).status_code == 422


def test_a_failed_request_releases_its_key(api: Api) -> None:
    hdr = api.h("approver", **{"Idempotency-Key": "decide-1"})
    appr = seed_pending_approval(api.store)
    wrong = api.client.post("/api/v1/approvals/nope/approve", headers=hdr)
    assert wrong.status_code == 404
    # a different request with the key: allowed, since the failed one left no answer
    ok = api.client.post(f"/api/v1/approvals/{appr.id}/approve", headers=hdr)
    assert ok.status_code == 202
    again = api.client.post(f"/api/v1/approvals/{appr.id}/approve", headers=hdr)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == ok.json()
    with api.store.tx() as s:
        assert len(s.exec(select(ApprovalVote)).all()) == 1


def test_concurrent_claims_of_one_key_run_once(api: Api) -> None:
    access = api.ctx.access

    async def both() -> list[object]:
        return await asyncio.gather(
            *(asyncio.to_thread(access.begin_request, "tok", "same", "fp") for _ in range(4))
        )

    results = asyncio.run(both())
    assert sum(1 for r in results if r is None) == 1


def _claim_old(api: Api, token: str, key: str, age: timedelta, fp: str = "fp") -> None:
    """A request with ``key`` answered ``age`` ago (as an earlier API process left it)."""
    token_id = api.tokens[token].split("_")[1]
    access = api.ctx.access
    assert access.begin_request(token_id, key, fp, now=datetime.now(UTC) - age) is None
    access.finish_request(token_id, key, 202, json.dumps({"accepted": 9, "rejected": []}))


def _keys(api: Api) -> set[str]:
    with api.store.tx() as s:
        return {r.key for r in s.exec(select(IdempotencyRecord)).all()}


def test_expired_keys_are_purged_while_the_api_runs(api: Api) -> None:
    ttl = timedelta(seconds=api.ctx.settings.idempotency_ttl_s)
    for i in range(3):
        _claim_old(api, "operator", f"old-{i}", ttl + timedelta(minutes=1))
    _claim_old(api, "operator", "recent", ttl - timedelta(minutes=1))
    hdr = api.h("operator", **{"Idempotency-Key": "new-1"})
    assert api.client.post("/api/v1/telemetry", headers=hdr, json={"batches": [BATCH]}).is_success
    assert _keys(api) == {"recent", "new-1"}


def test_a_key_past_its_ttl_is_a_new_request(api: Api) -> None:
    ttl = timedelta(seconds=api.ctx.settings.idempotency_ttl_s)
    api.ctx.keys_purge_due = float("inf")  # no purge: the claim itself must see the expiry
    _claim_old(api, "operator", "reused", ttl + timedelta(seconds=5), fp="another request")
    hdr = api.h("operator", **{"Idempotency-Key": "reused"})
    r = api.client.post("/api/v1/telemetry", headers=hdr, json={"batches": [BATCH]})
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1, "rejected": []} and "idempotent-replayed" not in r.headers
    again = api.client.post("/api/v1/telemetry", headers=hdr, json={"batches": [BATCH]})
    assert again.headers["idempotent-replayed"] == "true"
