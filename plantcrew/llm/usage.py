"""litellm's ``Router`` without the per-call usage bookkeeping of deployments that have no limit.

After every successful call litellm's Router counts the deployment's tokens and requests of the
current minute (``Router._increment_deployment_usage``), twice: from its success callback and
from the response. Each time it first builds the deployment's model information
(``get_router_model_info``: the provider lookup and a deep copy of the model map's entry, over a
hundred keys), and then counts nothing when the deployment has no limit: no ``tpm``/``rpm`` in
its parameters, its ``model_info`` or the model map, and no input/output token limits. In an
offline crew every call pays that twice for nothing (a sixth of a worker's CPU per task).

:class:`UsageRouter` asks once per deployment whether it has a limit, by the same test, and
skips the bookkeeping of a deployment that has none. A deployment with a limit is counted as
before. The answer is kept per deployment id and model group: a deployment replaced under the
same id (not done by :class:`~plantcrew.llm.router.ModelRouter`) keeps its first answer.

litellm's callback lists are module-level. A litellm ``Router`` adds four of its bound methods
to them when it is built (its deployments' success/failure counts and cooldowns) and never takes
them off: a process that builds routers one after another kept every router alive, ran every
old router's callbacks on each call (counting the call and opening circuits in routers that
did not make it), and once a list held ``MAX_CALLBACKS`` (100) entries litellm refused the new
router's callbacks, so its circuit breaker never opened. A :class:`UsageRouter` takes its four
off again; four module-level functions of the same names, registered once, hand each event to
the router that made the call, found by :data:`ROUTER_KEY` in the deployment's ``model_info``
(a weak reference: a router nobody holds is collected). The entries a router's routing strategy
adds (``least-busy``, ``latency-based-routing``, ``usage-based-routing-v2`` selectors) stay
global, as litellm's pre-call checks read them there, and are removed by :meth:`UsageRouter.close`
or when the router is collected.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import plantcrew.settings  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP before litellm)

import litellm  # isort: skip
from litellm.router_strategy.least_busy import LeastBusyLoggingHandler  # isort: skip
from litellm.router_strategy.lowest_cost import LowestCostLoggingHandler  # isort: skip
from litellm.router_strategy.lowest_latency import LowestLatencyLoggingHandler  # isort: skip
from litellm.router_strategy.lowest_tpm_rpm import LowestTPMLoggingHandler  # isort: skip
from litellm.router_strategy.lowest_tpm_rpm_v2 import LowestTPMLoggingHandler_v2  # isort: skip
from litellm.router_utils.pre_call_checks.io_token_rate_limit_check import (  # isort: skip
    deployment_has_io_token_limits,
)


ROUTER_KEY = "plantcrew_router"
"""The ``model_info`` key of a :class:`UsageRouter`'s deployments naming the router (a hex id)."""

# litellm's global callback lists (attribute names of the litellm module)
CALLBACK_LISTS = (
    "callbacks",
    "input_callback",
    "_async_input_callback",
    "success_callback",
    "_async_success_callback",
    "failure_callback",
    "_async_failure_callback",
    "service_callback",
)

_routers: weakref.WeakValueDictionary[str, UsageRouter] = weakref.WeakValueDictionary()


def _router_of(kwargs: Any) -> UsageRouter | None:
    """The live router whose deployment a logged call went to, or None."""
    try:
        info = kwargs["litellm_params"].get("model_info") or {}
        key = info.get(ROUTER_KEY)
    except (AttributeError, KeyError, TypeError):
        return None
    return _routers.get(key) if isinstance(key, str) else None


def _dispatcher(method: str, *, is_async: bool) -> Callable[..., Any]:
    """A callback handing litellm's event ``(kwargs, response, start, end)`` to ``method`` of
    the router that made the call (nothing when that router is closed or gone). It carries
    the method's name: litellm's logging tells its internal callbacks by name
    (``sync_deployment_callback_on_success`` is not run for an async call, as before)."""

    async def async_dispatch(*event: Any) -> Any:
        router = _router_of(event[0])
        return None if router is None else await getattr(router, method)(*event)

    def dispatch(*event: Any) -> Any:
        router = _router_of(event[0])
        return None if router is None else getattr(router, method)(*event)

    chosen = async_dispatch if is_async else dispatch
    chosen.__name__ = chosen.__qualname__ = method
    return chosen


# Router method -> (litellm list it registers in, its dispatcher)
_DISPATCH: dict[str, tuple[str, Callable[..., Any]]] = {
    method: (name, _dispatcher(method, is_async=name.startswith("_async")))
    for method, name in (
        ("deployment_callback_on_success", "_async_success_callback"),
        ("sync_deployment_callback_on_success", "success_callback"),
        ("async_deployment_callback_on_failure", "_async_failure_callback"),
        ("deployment_callback_on_failure", "failure_callback"),
    )
}
# what success_log_read, run per playbook call, tells apart from other callbacks
_DISPATCHER_IDS = frozenset(id(dispatcher) for _, dispatcher in _DISPATCH.values())


_SELECTORS = (
    LeastBusyLoggingHandler,
    LowestCostLoggingHandler,
    LowestLatencyLoggingHandler,
    LowestTPMLoggingHandler,
    LowestTPMLoggingHandler_v2,
)
_SELECTOR_ATTRS = (
    "leastbusy_logger",
    "lowesttpm_logger",
    "lowesttpm_logger_v2",
    "lowestlatency_logger",
    "lowestcost_logger",
)


def success_log_read(litellm_params: Any, logging_obj: Any) -> bool:
    """Whether litellm's success logging of a call (``logging_obj``, its ``litellm_params``)
    would reach more than the deployment counts of the router that made it: True when a
    callback other than this module's is registered (in ``litellm.callbacks`` anything but
    a routing strategy's selector, whose own router is not this call's), the call has dynamic
    callbacks, or the calling router routes by a strategy that reads success events."""
    if logging_obj is None:
        return True
    if getattr(logging_obj, "dynamic_success_callbacks", None) or getattr(
        logging_obj, "dynamic_async_success_callbacks", None
    ):
        return True
    for name in ("success_callback", "_async_success_callback"):
        if any(id(item) not in _DISPATCHER_IDS for item in getattr(litellm, name, None) or ()):
            return True
    if any(not isinstance(item, _SELECTORS) for item in litellm.callbacks or ()):
        return True
    router = _router_of({"litellm_params": litellm_params})
    return router is not None and (
        bool(getattr(router, "_group_selectors", None))
        or any(getattr(router, attr, None) is not None for attr in _SELECTOR_ATTRS)
    )


def _lists() -> list[list[Any]]:
    return [v for name in CALLBACK_LISTS if isinstance(v := getattr(litellm, name, None), list)]


def _drop(key: str, owned: tuple[Any, ...]) -> None:
    """Forget router ``key`` and take the ``owned`` entries off litellm's lists (by identity)."""
    _routers.pop(key, None)
    if not owned:
        return
    ids = {id(item) for item in owned}
    for items in _lists():
        if any(id(item) in ids for item in items):
            items[:] = [item for item in items if id(item) not in ids]
    for item in owned:
        retire = getattr(item, "retire", None)
        if callable(retire):
            retire()


class UsageRouter(litellm.Router):
    """A litellm ``Router`` that keeps no usage counts for deployments without limits and
    leaves no callback of its own in litellm's global lists (see module doc); otherwise
    litellm's own. ``model_list`` is keyword-only; each entry's ``model_info`` gets
    :data:`ROUTER_KEY`. Call :meth:`close` when done (collection does the same)."""

    def __init__(self, *, model_list: Iterable[dict[str, Any]] = (), **kwargs: Any) -> None:
        self._limited: dict[tuple[str, str], bool] = {}
        self.plantcrew_key = uuid.uuid4().hex
        tagged = [
            {
                **entry,
                "model_info": {**(entry.get("model_info") or {}), ROUTER_KEY: self.plantcrew_key},
            }
            for entry in model_list
        ]
        before = {id(item) for items in _lists() for item in items}
        super().__init__(model_list=tagged, **kwargs)
        owned: list[Any] = []
        for items in _lists():
            mine = [item for item in items if id(item) not in before]
            for item in mine:
                if getattr(item, "__self__", None) is self and item.__name__ in _DISPATCH:
                    items.remove(item)  # the dispatcher of its name stands for it
                elif item not in owned:
                    owned.append(item)
        for list_name, dispatcher in _DISPATCH.values():
            items = getattr(litellm, list_name)
            if dispatcher not in items:  # once per process; past litellm's MAX_CALLBACKS too
                items.append(dispatcher)
        _routers[self.plantcrew_key] = self
        self._close = weakref.finalize(self, _drop, self.plantcrew_key, tuple(owned))

    def close(self) -> None:
        """Stop taking litellm's events and take this router's entries (its routing
        strategy's) off litellm's global lists; idempotent. A closed router is not called."""
        self._close()
        self.discard()

    def has_limits(self, deployment_id: str, model_group: str) -> bool:
        """Whether litellm counts the usage of ``deployment_id`` (a ``tpm``/``rpm`` limit in its
        parameters, model info or the model map, or input/output token limits); True for an
        unknown deployment (litellm decides)."""
        known = self._limited.get((deployment_id, model_group))
        if known is not None:
            return known
        deployment = self.get_deployment(model_id=deployment_id)
        if deployment is None:
            return True
        info = self.get_router_model_info(deployment=deployment, received_model_name=model_group)
        limits = (
            deployment.get("tpm", None),
            deployment.get("rpm", None),
            deployment.litellm_params.tpm,
            deployment.litellm_params.rpm,
            info.get("tpm", None),
            info.get("rpm", None),
        )
        limited = any(limit is not None for limit in limits) or deployment_has_io_token_limits(
            deployment.model_dump()
        )
        self._limited[deployment_id, model_group] = limited
        return limited

    async def _increment_deployment_usage(
        self, *, deployment_id: str, model_group: str, **kwargs: Any
    ) -> str | None:
        if not self.has_limits(deployment_id, model_group):
            return None  # what litellm returns for it, after building its model info
        return await super()._increment_deployment_usage(
            deployment_id=deployment_id, model_group=model_group, **kwargs
        )


__all__ = ["ROUTER_KEY", "UsageRouter", "success_log_read"]
