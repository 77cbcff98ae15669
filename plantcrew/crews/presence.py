"""Is a crew already live on this broker? The presence probe, and the local run's refusal.

A crew process (``plantcrew coordinator``, ``worker``, ``up``) and a run with its crew in
process on a broker bus answer requests on the plain subject :data:`PRESENCE` with a heartbeat
naming one of their agents (:func:`answer_presence`); one that is stopping no longer answers,
and one that died cannot.

:func:`refuse_if_crew_live` is what ``run_scenario(crew="local")`` does on a broker bus before
anything is written: a local crew on a broker where another crew runs shares its durable
subjects and queue groups (each takes some of the other's events and tasks), so the run
refuses to start (ConfigError naming who answered) and says to use ``--crew remote``.

One request costs one round trip: NATS answers at once that nobody subscribes
(no responders) and so does the Redis bus (its ``PUBLISH`` reached no subscriber); a crew's
process answers from its event loop. :data:`PROBE_TIMEOUT_S` bounds the wait for a process so
busy that it subscribed but does not answer in time (the run then starts, as before the probe).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from plantcrew.bus import Bus, Subscription, connect
from plantcrew.crews.registry import process_agent_id
from plantcrew.errors import BusTimeout, ConfigError
from plantcrew.messages import AgentHeartbeat, Message
from plantcrew.settings import redacted_url

if TYPE_CHECKING:
    from plantcrew.agents import Agent

PRESENCE = "crew.presence"
"""Plain subject of the presence probe (request/reply; see module doc)."""

PROBE_TIMEOUT_S = 1.0
"""At most this long (wall seconds) for a subscribed process's answer."""


async def answer_presence(bus: Bus, who: Callable[[], AgentHeartbeat | None]) -> Subscription:
    """Answer every presence probe on ``bus`` with ``who()`` (no answer while it is None,
    e.g. when stopping). Returns the subscription (unsubscribe to stop answering).
    Raises BusError when the broker cannot be reached."""

    async def answer(msg: Message) -> Message | None:
        hb = who()
        if hb is None or hb.stopping:
            return None
        return msg.reply(hb, source=hb.agent_id, subject=PRESENCE)

    return await bus.subscribe(PRESENCE, answer)


def heartbeat_of(agents: Iterable[Agent]) -> AgentHeartbeat | None:
    """A presence answer for a process's agents: the first one not stopping (None: all are)."""
    for agent in agents:
        if not agent.stopping:
            return AgentHeartbeat(
                agent_id=agent.agent_id, role=agent.role, capabilities=list(agent.capabilities)
            )
    return None


async def crew_on(bus: Bus, *, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[AgentHeartbeat, float]:
    """Ask who is live on ``bus``: the first answer and its round trip in wall seconds.

    Raises BusTimeout when nobody answers (no crew there) within ``timeout_s``, BusError when
    the broker cannot be reached."""
    probe = AgentHeartbeat(agent_id=process_agent_id("probe"), role="probe", capabilities=[])
    t0 = time.perf_counter()
    reply = await bus.request(
        Message.new(probe, source=probe.agent_id, subject=PRESENCE), timeout=timeout_s
    )
    if not isinstance(reply.payload, AgentHeartbeat):
        raise BusTimeout(f"{PRESENCE} answered {reply.type}, not agent.heartbeat")
    return reply.payload, time.perf_counter() - t0


async def refuse_if_crew_live(bus_url: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise ConfigError (one line: who answered, how long ago, what to do instead) when a
    crew already runs on the broker at ``bus_url``; return when none answers. Raises BusError
    when the broker cannot be reached. Not for ``memory://`` (one process: nobody to ask)."""

    bus = await connect(bus_url)
    try:
        hb, rtt = await crew_on(bus, timeout_s=timeout_s)
    except BusTimeout:
        return
    finally:
        await bus.close()
    raise ConfigError(
        f"a crew already runs on {redacted_url(bus_url)}: {hb.role} {hb.agent_id} answered "
        f"just now (in {rtt * 1000:.0f} ms); a local crew there would share its subjects and queue "
        "groups, so run on that crew with --crew remote, or use a broker (or ?namespace=) of "
        "its own"
    )


__all__ = [
    "PRESENCE",
    "PROBE_TIMEOUT_S",
    "answer_presence",
    "crew_on",
    "heartbeat_of",
    "refuse_if_crew_live",
]
