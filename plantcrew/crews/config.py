"""``config/crew.yaml``: roles, workers per role, model groups, timeouts, delivery."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from plantcrew.bus import DurableOptions
from plantcrew.errors import ConfigError
from plantcrew.settings import line_of, load_yaml_model


class CoordinatorSettings(BaseModel):
    """Timeouts in plant seconds; ``max_lessons``: how many of the newest confirmed lessons
    (and, separately, corrections) a diagnose task carries, identical ones merged;
    ``group_commit``: at most this many events share one database transaction in a
    Coordinator process (:mod:`plantcrew.crews.group_commit`; 1: one event a transaction)."""

    task_timeout_s: float = Field(60.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    verify_timeout_s: float = Field(240.0, gt=0)
    agent_ttl_s: float = Field(30.0, gt=0)
    max_lessons: int = Field(1000, ge=0)
    group_commit: int = Field(64, ge=1)


ROLES = ("monitor", "diagnostic", "operator", "safety", "reviewer")

EVENT_CONSUMERS = 32
"""Default consumers of ``crew.events`` in a Coordinator process (``plantcrew coordinator
--concurrency``): events in flight at once. The more arrive together, the more share a
transaction (group commit): in ``bench/incidents.py`` on ``nats://`` 32 consumers took 11
database transactions per incident where 8 took 17 and 3 took 25."""


class RoleConfig(BaseModel):
    """One role: in-process workers and the model group it reasons with (if it does)."""

    model_config = ConfigDict(extra="forbid")
    workers: int = Field(1, ge=0, le=64)
    model_group: str | None = None


class DeliveryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_deliver: int = Field(5, ge=1)
    ack_wait_s: float = Field(30.0, gt=0)
    backoff_s: list[float] = [0.05, 0.2, 1.0, 5.0]

    def options(self) -> DurableOptions:
        return DurableOptions(self.max_deliver, self.ack_wait_s, tuple(self.backoff_s))


class CrewConfig(BaseModel):
    """The whole crew file."""

    model_config = ConfigDict(extra="forbid")
    roles: dict[str, RoleConfig] = Field(default_factory=lambda: {r: RoleConfig() for r in ROLES})
    coordinator: CoordinatorSettings = CoordinatorSettings()
    heartbeat_interval_s: float = Field(5.0, gt=0)
    delivery: DeliveryConfig = DeliveryConfig()

    def role(self, name: str) -> RoleConfig:
        return self.roles.get(name, RoleConfig())

    @classmethod
    def load(cls, path: str | Path, *, model_groups: Collection[str] | None = None) -> CrewConfig:
        """Load and validate; ConfigError names file, line and field. With ``model_groups``
        (the groups of models.yaml), a role's ``model_group`` must be one of them."""
        cfg = load_yaml_model(path, cls)
        unknown = set(cfg.roles) - set(ROLES)
        if unknown:
            raise ConfigError(
                f"unknown role(s) {sorted(unknown)}; roles are {list(ROLES)}",
                source=str(path),
                field="roles",
            )
        for role, rc in cfg.roles.items():
            if model_groups is not None and rc.model_group not in (None, *model_groups):
                field = f"roles.{role}.model_group"
                raise ConfigError(
                    f"unknown model group {rc.model_group!r}; models.yaml has "
                    f"{sorted(model_groups)}",
                    source=str(path),
                    line=line_of(Path(path).read_text(encoding="utf-8"), field),
                    field=field,
                )
        return cfg
