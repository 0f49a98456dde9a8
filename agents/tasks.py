"""Entry points for django-q2. Keep them thin: the work lives in agents.health."""

from __future__ import annotations

from agents.health import check_agent, check_all_agents
from agents.models import Agent

__all__ = ["check_all_agents", "check_agent_by_id"]


def check_agent_by_id(agent_id: int) -> bool:
    return check_agent(Agent.objects.get(pk=agent_id))
