"""The kind -> client registry: `client_for(agent)` gives the client that speaks its protocol."""

from __future__ import annotations

from agents.clients.base import AgentClient, AgentError
from agents.clients.comfyui import ComfyUIClient
from agents.clients.local import LocalClient
from agents.clients.ollama import OllamaClient
from agents.models import Agent, Kind

CLIENTS: dict[str, type[AgentClient]] = {
    Kind.OLLAMA: OllamaClient,
    Kind.COMFYUI: ComfyUIClient,
    Kind.LOCAL: LocalClient,
}


def client_for(agent: Agent) -> AgentClient:
    """The client that speaks this agent's protocol."""
    try:
        return CLIENTS[agent.kind](agent)
    except KeyError:
        raise AgentError(f"No client for agents of kind {agent.kind!r}") from None
