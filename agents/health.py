"""Checking agents: discovery on success, offline with the reason on failure."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from django.db import connection

from agents.clients.base import AgentError
from agents.clients.registry import client_for
from agents.models import Agent

log = logging.getLogger(__name__)


def check_agent(agent: Agent) -> bool:
    """Check one agent now and record the outcome; True when it is online."""
    try:
        discovery = client_for(agent).discover()
    except AgentError as error:
        if agent.online:
            log.warning("Agent %s went offline: %s", agent, error)
        agent.mark_offline(str(error))
        return False
    if not agent.online:
        # A warning like going offline: both are state changes an operator wants to see.
        log.warning("Agent %s is online with %d models", agent, len(discovery.models))
    agent.mark_online(discovery)
    return True


def check_agents(agents: Iterable[Agent]) -> dict[str, bool]:
    """Check several agents side by side, so one slow agent does not hold up the rest."""
    agents = list(agents)
    if not agents:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(agents))) as pool:
        results = list(pool.map(check_in_thread, agents))
    return {agent.name: online for agent, online in zip(agents, results)}


def check_in_thread(agent: Agent) -> bool:
    try:
        return check_agent(agent)
    finally:
        # Each pool thread opened its own database connection; do not leak it.
        connection.close()


def check_all_agents() -> dict[str, bool]:
    """The scheduled health check: every enabled agent."""
    return check_agents(Agent.objects.filter(enabled=True))
