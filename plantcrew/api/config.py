"""Settings of the HTTP service (``PLANTCREW_API_*`` in the environment)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """What ``plantcrew serve`` needs besides the bus and database URLs.

    Rates are per API token: a token bucket refilled at ``rate_per_s`` requests per second
    holding at most ``burst`` (RFC 6585 429 with ``Retry-After`` when empty). How long an agent
    counts as live is not set here: the service uses the Coordinator's own setting, crew.yaml's
    ``coordinator.agent_ttl_s`` (see ``create_app``). On SIGTERM ``plantcrew serve`` stops
    within ``shutdown_grace_s`` (``PLANTCREW_API_SHUTDOWN_GRACE_S``, or ``serve --grace``).
    """

    model_config = SettingsConfigDict(env_prefix="PLANTCREW_API_", extra="ignore")

    rate_per_s: float = Field(20.0, gt=0, description="requests per second per token")
    burst: int = Field(60, ge=1, description="bucket size: requests a token may burst")
    idempotency_ttl_s: float = Field(86_400.0, gt=0, description="how long keys are remembered")
    idempotency_purge_s: float = Field(
        60.0, gt=0, description="at most this often a keyed POST purges expired keys"
    )
    max_batches: int = Field(1000, ge=1, description="telemetry batches per ingest request")
    sse_poll_s: float = Field(0.5, gt=0, description="how often a stream looks for news")
    sse_keepalive_s: float = Field(15.0, gt=0, description="comment line when nothing happened")
    sse_auth_recheck_s: float = Field(
        30.0, gt=0, description="how often a stream checks its token is still valid"
    )
    probe_timeout_s: float = Field(2.0, gt=0, description="each readiness check's limit")
    unavailable_retry_s: int = Field(
        5, ge=1, description="Retry-After (s) of a 503 while the database cannot serve"
    )
    shutdown_grace_s: float = Field(
        20.0,
        ge=0,
        description="on SIGTERM, seconds requests in flight (and with --scenario the run's "
        "step) may take to finish before they are cut; below Kubernetes' 30 s "
        "terminationGracePeriodSeconds (infra/k8s/api.yaml)",
    )
    console: bool = Field(True, description="serve the web console at /")
    service_name: str = "plantcrew-api"
