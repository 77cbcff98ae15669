"""Per-token rate limits: a token bucket for each API token.

A bucket holds at most ``burst`` requests and refills at ``rate_per_s`` (the classic token
bucket, e.g. Tanenbaum, Computer Networks, 5.4). A request takes one; with none left it is
refused with the seconds until one is back, which the API sends as ``Retry-After`` on a 429
(RFC 6585 section 4; RFC 9110 section 10.2.3). Buckets live in this process: with several
API replicas each enforces the limit on the requests it serves.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Verdict:
    """Whether a request may go on; ``retry_after_s`` (whole seconds, >= 1) when not."""

    allowed: bool
    remaining: int
    retry_after_s: int = 0


class RateLimiter:
    """Token buckets keyed by API token id. Thread-safe (sync endpoints run in a pool)."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate, self.burst, self.clock, self.max_keys = rate_per_s, burst, clock, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def take(self, key: str) -> Verdict:
        """Take one request from ``key``'s bucket."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                tokens -= 1.0
                self._store(key, tokens, now)
                return Verdict(True, int(tokens))
            self._store(key, tokens, now)
            wait = (1.0 - tokens) / self.rate
            return Verdict(False, 0, max(1, math.ceil(wait)))

    def _store(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            # forget full buckets first: they hold no state worth keeping
            full = [k for k, (t, _) in self._buckets.items() if t >= self.burst - 1e-9]
            for k in full[: max(1, len(full))]:
                del self._buckets[k]
        self._buckets[key] = (tokens, now)
