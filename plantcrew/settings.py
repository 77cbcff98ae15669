"""Settings from the environment (``PLANTCREW_*``) and ``config/``, via pydantic-settings.

Importing this module sets ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (unless already set) so that
litellm never tries to download its model cost map: plantcrew starts fast and offline.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")

PACKAGE_ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG_DIR = PACKAGE_ROOT.parent / "config"


class Settings(BaseSettings):
    """Process-wide settings.

    Every field can be set from the environment as ``PLANTCREW_<FIELD>``, e.g.
    ``PLANTCREW_BUS_URL=nats://127.0.0.1:4222``.
    """

    model_config = SettingsConfigDict(env_prefix="PLANTCREW_", extra="ignore")

    bus_url: str = Field("memory://", description="memory://, nats://host:4222, redis://host:6379")
    db_url: str = Field("sqlite:///plantcrew.db", description="sqlite:///path or postgresql://...")
    config_dir: Path = Field(
        DEFAULT_CONFIG_DIR, description="folder with crew/models/policies/playbooks YAML"
    )
    heartbeat_interval_s: float = Field(5.0, gt=0, description="seconds between agent heartbeats")
    agent_ttl_s: float = Field(15.0, gt=0, description="an agent silent this long counts as gone")
    log_level: str = "INFO"
    log_json: bool = False


def get_settings() -> Settings:
    """Read settings fresh from the environment (cheap; not cached, so tests can change env)."""
    return Settings()
