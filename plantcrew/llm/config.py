"""The model configuration (``config/models.yaml``): model groups, router settings, budgets.

Shape (see the shipped ``config/models.yaml`` for a commented example)::

    groups:                         # purpose -> deployments tried in ``order`` (lowest first)
      triage:
        deployments:
          - model: openai/gpt-4o-mini   # a litellm model name
            enabled: false              # listed, not used
            api_key_env: OPENAI_API_KEY # the key is read from this variable, never from the file
            timeout_s: 20
          - model: playbook/default     # the offline, deterministic playbook model
    router:
      num_retries: 1
      fallbacks: {reasoning: [triage]}
    budgets:                        # USD (see plantcrew.llm.budget)
      per_incident_usd: 0.5
      per_day_usd: 20

Deployments that share an ``order`` are load-balanced by ``weight``; a failing order level falls
back to the next one (litellm's order-based fallback). When ``router.playbook_last_resort`` is
true (the default) every group that does not end with a playbook deployment gets
``playbook/default`` appended as its last order level, so a step always gets an answer offline.

A group with model deployments is tried along its *chain* (:meth:`ModelsConfig.chain`): its own
order levels, then the model deployments of its ``router.fallbacks`` groups (depth first, each
group once, at most ``max_fallbacks`` groups), and only then its playbook: the playbook is the
last fallback. A group served by the playbook alone keeps it as its model.

Errors: :func:`load_models_config` raises :class:`~plantcrew.errors.ConfigError` naming file,
line and field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from plantcrew.errors import ConfigError
from plantcrew.llm.budget import Budgets
from plantcrew.llm.yamlfile import Loc, line_of, load_yaml, validate_data
from plantcrew.settings import get_settings

PURPOSES = ("triage", "reasoning", "review")
PLAYBOOK_PREFIX = "playbook/"
DEFAULT_PLAYBOOK_MODEL = "playbook/default"
# the litellm id of a deployment another group's chain takes in: "<group>><name>" (">" is
# in no group or deployment name)
CHAIN_SEP = ">"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelCaps(_Strict):
    """What a deployment's model can do, as AutoGen's ``ModelInfo`` needs it."""

    vision: bool = False
    function_calling: bool = True
    json_output: bool = True
    structured_output: bool = True
    family: str = "unknown"
    context_window: int = Field(128_000, gt=0, description="max input tokens")


class Price(_Strict):
    """What a deployment's tokens cost, in USD per million tokens (litellm's own price list
    is used when a deployment sets none; a local server it does not know costs 0)."""

    input_per_mtok: float = Field(ge=0, allow_inf_nan=False)
    output_per_mtok: float = Field(ge=0, allow_inf_nan=False)


class Deployment(_Strict):
    """One model behind a group: a litellm model name and how to reach and pace it.

    ``api_key_env`` names the environment variable that holds the key (the key itself is never
    in a file and never logged). ``rpm``/``tpm`` are requests/tokens per minute limits that
    litellm's router respects; ``timeout_s`` cuts a call; ``max_retries`` is the provider SDK's
    own retry count (with exponential backoff) for this deployment; ``order`` (1 = first) sets
    the failover sequence and ``weight`` the share among deployments of the same order.
    ``allowed_fails`` and ``cooldown_s`` override the router's circuit breaker for this
    deployment: after more than ``allowed_fails`` failures within ``cooldown_s`` the router
    skips it for ``cooldown_s``. ``price`` sets its token price (USD per million tokens).
    """

    model: str = Field(min_length=3, description="litellm model, e.g. openai/gpt-4o-mini")
    name: str | None = Field(None, description="unique deployment id; default <group>-<index>")
    enabled: bool = True
    api_base: str | None = None
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    timeout_s: float | None = Field(None, gt=0)
    max_retries: int | None = Field(None, ge=0)
    weight: float = Field(1.0, gt=0)
    order: int | None = Field(None, ge=1)
    allowed_fails: int | None = Field(None, ge=0)
    cooldown_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    price: Price | None = None
    caps: ModelCaps = ModelCaps()
    extra: dict[str, Any] = Field(
        {}, description="extra litellm_params (e.g. temperature); never secrets"
    )

    @property
    def is_playbook(self) -> bool:
        return self.model.startswith(PLAYBOOK_PREFIX)

    @model_validator(mode="after")
    def _check(self) -> Deployment:
        if "/" not in self.model:
            raise ValueError(f"model {self.model!r} needs a provider prefix (e.g. openai/...)")
        if self.name is not None and not (self.name and set(self.name) <= _NAME_CHARS):
            raise ValueError(f"name {self.name!r} may use only letters, digits and _ . : -")
        secret_keys = {"api_key", "key", "token", "secret", "password"}
        leaked = secret_keys.intersection(k.lower() for k in self.extra)
        if leaked:
            raise ValueError(
                f"extra must not hold secrets ({', '.join(sorted(leaked))}); use api_key_env"
            )
        return self


class ModelGroup(_Strict):
    """The deployments serving one purpose (``triage``, ``reasoning``, ``review``)."""

    deployments: list[Deployment] = Field(min_length=1)
    description: str = ""


class RouterSettings(_Strict):
    """litellm Router reliability settings (see docs.litellm.ai/docs/routing).

    ``num_retries`` retries a failed call (immediately when another healthy deployment of the
    order level exists, otherwise with exponential backoff no shorter than ``retry_after_s``
    and honouring a ``Retry-After`` header). The circuit breaker: a deployment that fails more
    than ``allowed_fails`` times within ``cooldown_time_s`` is skipped for ``cooldown_time_s``
    (then tried again; a deployment may override both). A rate-limit (429) answer may cool a
    deployment down at once, for its ``Retry-After``. ``cooldown_time_s: 0`` disables
    cooldowns. ``fallbacks``,
    ``context_window_fallbacks`` and ``content_policy_fallbacks`` map a group to the groups
    tried after it for any error / a too-long prompt / a refused prompt. The ``fallbacks``
    groups' model deployments are tried after the group's own and before its playbook (see
    :meth:`ModelsConfig.chain`); ``max_fallbacks`` caps how many groups a chain takes in, and
    the group hops of a context-window or content-policy fallback.
    """

    num_retries: int = Field(1, ge=0, le=10)
    retry_after_s: int = Field(0, ge=0)
    allowed_fails: int = Field(3, ge=0)
    cooldown_time_s: float = Field(30.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    max_fallbacks: int = Field(5, ge=0)
    routing_strategy: Literal[
        "simple-shuffle", "least-busy", "latency-based-routing", "usage-based-routing-v2"
    ] = "simple-shuffle"
    fallbacks: dict[str, list[str]] = {}
    context_window_fallbacks: dict[str, list[str]] = {}
    content_policy_fallbacks: dict[str, list[str]] = {}
    playbook_last_resort: bool = True
    playbook_direct: bool = Field(
        False,
        description="a group served by the playbook alone answers without the Router "
        "(plantcrew.llm.direct): faster, same records; off by default so that offline runs "
        "take the same litellm path as hosted models",
    )


class ModelsConfig(_Strict):
    """The whole ``models.yaml``."""

    groups: dict[str, ModelGroup] = Field(min_length=1)
    router: RouterSettings = RouterSettings()
    budgets: Budgets = Budgets()
    source: str = Field("<memory>", exclude=True, description="file it was read from")

    def active(self, group: str) -> list[Deployment]:
        """Enabled deployments of ``group`` with names and orders filled in, in order.

        Deployments without ``order`` get their 1-based position; the playbook last resort is
        appended when configured. Deployments whose ``api_key_env`` is unset are left out
        (see :meth:`skipped`). Raises KeyError for an unknown group.
        """
        return _resolve(self, group)[0]

    def skipped(self, group: str) -> list[tuple[str, str]]:
        """``(deployment name, reason)`` of the deployments of ``group`` left out."""
        return _resolve(self, group)[1]

    def fallback_groups(self, group: str) -> list[str]:
        """The groups ``group`` falls back to for any error, in the order they are tried: its
        ``router.fallbacks``, each followed by its own fallbacks (depth first), each group once,
        ``group`` itself never, at most ``router.max_fallbacks`` of them. KeyError if unknown."""
        if group not in self.groups:
            raise KeyError(group)
        out: list[str] = []

        def walk(g: str) -> None:
            for target in self.router.fallbacks.get(g, []):
                if target != group and target not in out and len(out) < self.router.max_fallbacks:
                    out.append(target)
                    walk(target)

        walk(group)
        return out

    def chain(self, group: str) -> list[tuple[Deployment, int]]:
        """Every deployment a call to ``group`` may be served by, in the order tried, with its
        order level in that chain (1 = first): ``[(deployment, level), ...]``.

        A group with model deployments: its own active deployments by ``order`` (a trailing
        playbook level excepted), then the active model deployments of its
        :meth:`fallback_groups` (each group's levels after the previous group's), then its
        trailing playbook level (the last fallback). A group with no active model deployment:
        its own deployments (the playbook is its model). KeyError for an unknown group.
        """
        own = self.active(group)
        if all(d.is_playbook for d in own):
            return [(d, d.order or 1) for d in own]
        last = own[-1].order
        tail = [d for d in own if d.order == last]
        if not all(d.is_playbook for d in tail):
            tail = []
        out = [(d, d.order or 1) for d in own if d not in tail]
        level = max(lv for _, lv in out)
        for target in self.fallback_groups(group):
            models = [d for d in self.active(target) if not d.is_playbook]
            out += [(d, level + (d.order or 1)) for d in models]
            level = max([level, *(lv for _, lv in out)])
        return out + [(d, level + 1) for d in tail]


def _resolve(cfg: ModelsConfig, group: str) -> tuple[list[Deployment], list[tuple[str, str]]]:
    deps = cfg.groups[group].deployments
    out: list[Deployment] = []
    skipped: list[tuple[str, str]] = []
    for i, dep in enumerate(deps):
        name = dep.name or f"{group}-{i}"
        filled = dep.model_copy(update={"name": name, "order": dep.order or i + 1})
        if not dep.enabled:
            skipped.append((name, "enabled: false"))
        elif dep.api_key_env and not os.environ.get(dep.api_key_env):
            skipped.append((name, f"environment variable {dep.api_key_env} is not set"))
        else:
            out.append(filled)
    out.sort(key=lambda d: d.order or 0)
    if cfg.router.playbook_last_resort and not (out and out[-1].is_playbook):
        last = max((d.order or 0 for d in out), default=0) + 1
        out.append(Deployment(model=DEFAULT_PLAYBOOK_MODEL, name=f"{group}-playbook", order=last))
    return out, skipped


def _check_refs(cfg: ModelsConfig, lines: dict[Loc, int], source: str) -> None:
    names: dict[str, Loc] = {}
    for gname, group in cfg.groups.items():
        if not gname or not set(gname) <= _NAME_CHARS:
            raise ConfigError(
                "group names may use only letters, digits and _ . : -",
                source=source,
                line=line_of(lines, ("groups", gname)),
                field=f"groups.{gname}",
            )
        for i, dep in enumerate(group.deployments):
            name = dep.name or f"{gname}-{i}"
            loc: Loc = ("groups", gname, "deployments", i)
            if name in names:
                raise ConfigError(
                    f"deployment name {name!r} is used twice",
                    source=source,
                    line=line_of(lines, loc),
                    field=".".join(map(str, loc)),
                )
            names[name] = loc
    for key in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
        table: dict[str, list[str]] = getattr(cfg.router, key)
        for src, targets in table.items():
            for j, target in enumerate([src, *targets]):
                if target not in cfg.groups:
                    loc = ("router", key, src) if j == 0 else ("router", key, src, j - 1)
                    raise ConfigError(
                        f"unknown group {target!r}",
                        source=source,
                        line=line_of(lines, loc),
                        field=".".join(map(str, loc)),
                    )


def load_models_config(path: Path | str | None = None) -> ModelsConfig:
    """Read and validate ``models.yaml`` (default: ``<settings.config_dir>/models.yaml``).

    Raises ConfigError naming file, line and field for a syntax error, a bad value, a duplicate
    deployment name or a fallback naming an unknown group.
    """
    p = Path(path) if path is not None else get_settings().config_dir / "models.yaml"
    data, lines = load_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError("top level must be a mapping", source=str(p), line=1)
    cfg = validate_data(ModelsConfig, data, lines, source=str(p))
    _check_refs(cfg, lines, str(p))
    return cfg.model_copy(update={"source": str(p)})


def models_config_from_dict(data: dict[str, Any], *, source: str = "<memory>") -> ModelsConfig:
    """Validate a config given as a dict (tests, API); ConfigError names the field."""
    cfg = validate_data(ModelsConfig, data, {}, source=source)
    _check_refs(cfg, {}, source)
    return cfg.model_copy(update={"source": source})
