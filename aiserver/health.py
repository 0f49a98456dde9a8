"""/healthz and /readyz, for a process manager, a load balancer or Kubernetes' probes.

/healthz says this process answers, and touches nothing else. /readyz checks what serving
needs: the database, django-q2's broker and the channel layer answer (each within
CHECK_SECONDS), and some worker wrote its heartbeat lately (imagetotext.leases). It also says
how many agents are online, without depending on it: with none, jobs wait in the queue.

Neither needs a key, so neither says more than each check's state and the name of an
error's type: no URLs, host names, keys or versions.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable
from typing import Any, NamedTuple

from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe
from django_q.brokers import Broker, get_broker
from django_q.conf import Conf as QConf

from agents.models import Agent
from imagetotext.db_threads import arun
from imagetotext.leases import alive_workers

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
NO_STORE = {"Cache-Control": "no-store"}


@require_safe
async def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers: no database, no broker."""
    return JsonResponse({"status": "ok"}, headers=NO_STORE)


@require_safe
async def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database, broker and channel layer answer and a worker is alive; else 503."""
    (database, figures), (broker, _), (layer, _) = await asyncio.gather(
        checked("database", arun(database_figures)),
        checked("broker", broker_check()),
        checked("channel_layer", channel_layer_check()),
    )
    alive = figures.workers if figures else 0
    workers = {"state": "ok" if alive else "failing", "alive": alive} if figures else {"state": "unknown"}
    agents = {"online": figures.agents_online} if figures else {}
    ready = all(check["state"] == "ok" for check in (database, broker, layer, workers))
    body = {
        "status": "ready" if ready else "not ready",
        "checks": {
            "database": database,
            "broker": broker,
            "channel_layer": layer,
            "workers": workers,
            "agents": agents,
        },
    }
    return JsonResponse(body, status=200 if ready else 503, headers=NO_STORE)


class Figures(NamedTuple):
    workers: int
    agents_online: int


async def checked(name: str, work: Awaitable[Any]) -> tuple[dict[str, str], Any]:
    """Run one check with a time limit: its state for the answer, and what it returned."""
    try:
        value = await asyncio.wait_for(work, CHECK_SECONDS)
    except TimeoutError:
        log.warning("Readiness: the %s check took more than %g s", name, CHECK_SECONDS)
        return {"state": "timeout"}, None
    except Exception as error:  # noqa: BLE001 - any failure means "not ready"; the log has the detail
        log.warning("Readiness: the %s check failed: %s", name, error)
        return {"state": "failing", "error": type(error).__name__}, None
    return {"state": "ok"}, value


def database_figures() -> Figures:
    """The database answers; and, read from it, the workers alive and the agents online."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return Figures(alive_workers(), Agent.objects.usable().count())


@functools.cache
def broker() -> Broker:
    return get_broker()


def broker_answers() -> None:
    """Redis answers PING and the queue's length; the ORM broker counts its queue table."""
    queue = broker()
    if not queue.ping():
        raise ConnectionError("the broker did not answer")
    queue.queue_size()


async def broker_check() -> None:
    if QConf.ORM:  # the database: on the threads that keep their connections
        await arun(broker_answers)
    else:
        await asyncio.to_thread(broker_answers)


async def channel_layer_check() -> None:
    """A message to a group nobody is in: one round trip to Redis, or a read of the layer's file."""
    layer = get_channel_layer()
    if layer is None:
        raise LookupError("no channel layer is configured")
    await layer.group_send("readyz", {"type": "readyz.ping"})
