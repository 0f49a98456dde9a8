"""The base every agent client builds on: request and result types, errors, and one HTTP wrapper.

Every request to a backend goes through AgentClient.send, on an httpx.Client pooled per agent
and process: connection set-up (and a TLS context) is paid once, not per request.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
from django.conf import settings

from agents.models import Agent, Discovery
from aiserver.tls import client_context


class AgentError(Exception):
    """The agent answered, but not with what we asked for.

    retry_elsewhere says whether another agent offering the same model might
    succeed (the model vanished from this agent, it ran out of memory...).
    """

    retry_elsewhere = False

    def __init__(self, message: str, retry_elsewhere: bool | None = None) -> None:
        super().__init__(message)
        if retry_elsewhere is not None:
            self.retry_elsewhere = retry_elsewhere


class AgentUnavailable(AgentError):
    """The agent cannot be reached, timed out, or failed with a server error: mark it offline."""

    retry_elsewhere = True


class AgentCancelled(AgentError):
    """The request was stopped because the job was cancelled."""


@dataclass(frozen=True)
class TextRequest:
    """An image (or several) to turn into text, already prepared for the backend."""

    image: bytes
    model: str
    prompt: str = ""
    # Florence-2 task name (caption, detailed_caption, ocr, ...); ComfyUI only.
    task: str = ""
    # Extra Ollama generate fields (options, system, format, keep_alive...).
    options: dict[str, Any] = field(default_factory=dict)
    # The second and later images, for a vision model that reads several (Ollama only).
    more_images: tuple[bytes, ...] = ()
    # A chat (Ollama only): messages as /api/chat takes them, but each one's "images" are positions
    # in (image, *more_images). Empty: one prompt, sent to /api/generate.
    messages: tuple[dict[str, Any], ...] = ()

    @property
    def images(self) -> tuple[bytes, ...]:
        return (self.image, *self.more_images)


@dataclass(frozen=True)
class TextResult:
    """The text a backend produced, with token counts when it reports them."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # The backend's own final reply, kept for clients that want it verbatim.
    raw: dict[str, Any] = field(default_factory=dict)


# Called with the whole text so far each time more arrives; returning True asks
# the client to stop (the job was cancelled).
OnText = Callable[[str], bool]


class AgentClient:
    """Talks to one agent. Subclasses add the calls of their kind."""

    kind: ClassVar[str]

    def __init__(self, agent: Agent, timeout: float | None = None) -> None:
        self.agent = agent
        self.timeout = timeout or settings.AGENT_CHECK_TIMEOUT

    def discover(self) -> Discovery:
        """Check the agent and list the models it offers; raises AgentError."""
        raise NotImplementedError

    def image_to_text(self, request: TextRequest, on_text: OnText | None = None) -> TextResult:
        """Run one request on the agent; raises AgentUnavailable to try elsewhere, AgentError to give up."""
        raise NotImplementedError

    @property
    def http(self) -> httpx.Client:
        """This agent's pooled HTTP client (its base headers carry the agent's API key)."""
        return pooled_client(self.agent)

    def url(self, path: str) -> str:
        return self.agent.base_url.rstrip("/") + path

    def send(
        self, method: str, path: str, timeout: float | httpx.Timeout | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request; no connection or no answer in time becomes AgentUnavailable."""
        url, limits = self.url(path), httpx.Timeout(self.timeout if timeout is None else timeout)
        try:
            return self.http.request(method, url, timeout=limits, **kwargs)
        except (httpx.ConnectTimeout, httpx.PoolTimeout):
            raise AgentUnavailable(f"Cannot connect to {url} within {limits.connect:g} s") from None
        except httpx.WriteTimeout:
            raise AgentUnavailable(f"{url} stopped taking the request for {limits.write:g} s") from None
        except httpx.TimeoutException:
            raise AgentUnavailable(f"No answer from {url} within {limits.read:g} s") from None
        except httpx.TransportError as error:
            raise AgentUnavailable(f"Cannot connect to {url}: {describe(error)}") from None

    def request_json(self, method: str, path: str, body: Any = None) -> Any:
        """Send a request and return the decoded JSON reply, mapping failures to AgentError."""
        return decode(self.send(method, path, json=body))


PoolKey = tuple[int, str, tuple[tuple[str, str], ...]]
_pool: dict[PoolKey, httpx.Client] = {}
_pool_lock = threading.Lock()


def pooled_client(agent: Agent) -> httpx.Client:
    """The process's client for this agent's address and credentials, made on first use.

    Keyed by process id too: a client inherited through fork() shares its sockets with the parent.
    """
    headers = tuple(sorted(agent.auth_headers().items()))
    key = (os.getpid(), agent.base_url.rstrip("/"), headers)
    with _pool_lock:
        client = _pool.get(key)
        if client is None or client.is_closed:
            client = _pool[key] = httpx.Client(headers=dict(headers), trust_env=False, verify=client_context())
    return client


def decode(response: httpx.Response) -> Any:
    """The JSON body of a successful reply; otherwise an AgentError naming the cause."""
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code >= 400:
        cls = AgentUnavailable if response.status_code >= 500 else AgentError
        raise cls(f"{where} answered {response.status_code}: {error_text(response)}")
    try:
        return response.json()
    except ValueError:
        raise AgentUnavailable(f"{where} did not answer with JSON") from None


def error_text(response: httpx.Response) -> str:
    """The message inside an error body, whichever shape the backend uses."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        return str(error.get("message") or error)[:300]
    return str(error)[:300]


def describe(error: httpx.TransportError) -> str:
    text = str(error) or type(error).__name__
    if "refused" in text.lower():
        return "connection refused"
    return text
