"""Ollama agents: discovery through /api/tags and /api/show, text through /api/generate and /api/chat."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from agents.clients.base import (
    AgentCancelled,
    AgentClient,
    AgentError,
    AgentUnavailable,
    OnText,
    TextRequest,
    TextResult,
    error_text,
)
from agents.clients.base import (
    describe as describe_error,
)
from agents.models import Capability, DiscoveredModel, Discovery, Kind

DETAIL_KEYS = ("family", "parameter_size", "quantization_level", "format")
# Fields of request.options that /api/generate understands; anything else is dropped.
GENERATE_KEYS = ("options", "system", "format", "keep_alive", "template", "suffix", "raw", "think")
# Those /api/chat understands (protocols.md A.3); a chat's system prompt is one of its messages.
CHAT_KEYS = ("options", "format", "keep_alive", "think")
# What Ollama's runners say when a text-only model is sent an image (protocols.md A.6).
NO_IMAGE_INPUT = ("missing data required for image input", "image input is not supported")


class OllamaClient(AgentClient):
    kind = Kind.OLLAMA

    def discover(self) -> Discovery:
        version = self.version()
        listed = self.request_json("GET", "/api/tags").get("models") or []
        models, skipped = [], []
        for entry in listed:
            name = entry.get("model") or entry.get("name")
            try:
                models.append(self.describe(name, entry))
            except AgentError as error:
                # A model deleted between the two calls is not the agent's fault.
                skipped.append(f"{name}: {error}")
        note = "Skipped " + "; ".join(skipped) if skipped else ""
        return Discovery(version=version, models=models, note=note)

    def version(self) -> str:
        try:
            return str(self.request_json("GET", "/api/version").get("version", ""))
        except AgentError as error:
            if "answered 404" in str(error):
                return ""
            raise

    def describe(self, name: str, listed: dict[str, Any]) -> DiscoveredModel:
        """Ask /api/show what the model can do; only vision models take images."""
        shown = self.request_json("POST", "/api/show", {"model": name})
        capabilities = list(shown.get("capabilities") or [])
        source = shown.get("details") or listed.get("details") or {}
        details: dict[str, Any] = {key: source[key] for key in DETAIL_KEYS if source.get(key)}
        details["capabilities"] = capabilities
        if listed.get("size"):
            details["size"] = listed["size"]
        capability = Capability.VISION if "vision" in capabilities else Capability.TEXT
        return DiscoveredModel(name=name, capability=capability, details=details)

    def image_to_text(self, request: TextRequest, on_text: OnText | None = None) -> TextResult:
        """Stream the text from /api/generate (or /api/chat for a chat), passing the text so far to on_text."""
        chat = bool(request.messages)
        url = self.url("/api/chat" if chat else "/api/generate")
        body = chat_body(request) if chat else generate_body(request)
        progress = Progress(on_text, chat)
        timeout, answered = self.generate_timeout(), False
        try:
            with self.http.stream("POST", url, json=body, extensions={"timeout": timeout}) as response:
                # Ollama sends its headers with the first chunk, once the model has loaded and
                # answers (protocols.md A.2, A.5); from here on the wait is between chunks.
                # httpcore reads this dict when it starts on the body, so the change applies to it.
                timeout["read"], answered = self.agent.idle_timeout, True
                check_status(response, request.model)
                final = read_final_chunk(response, progress)
        except httpx.TransportError as error:
            raise self.unavailable(url, error, request.model, answered) from None
        progress.finish()
        return TextResult(
            text=progress.text,
            prompt_tokens=final.get("prompt_eval_count"),
            completion_tokens=final.get("eval_count"),
            raw=dict(final, response=progress.text),
        )

    def unavailable(self, url: str, error: httpx.TransportError, model: str, answered: bool) -> AgentUnavailable:
        """A readable reason for a failed connection, timeout or broken stream."""
        agent = self.agent
        if isinstance(error, (httpx.ConnectTimeout, httpx.PoolTimeout)):
            return AgentUnavailable(f"Cannot connect to {url} within {agent.connect_timeout} s (connect timeout)")
        if isinstance(error, httpx.WriteTimeout):
            return AgentUnavailable(f"{url} stopped taking the request for {agent.idle_timeout} s (idle timeout)")
        if isinstance(error, httpx.TimeoutException) and answered:
            return AgentUnavailable(f"{model} went silent for {agent.idle_timeout} s mid-answer (idle timeout)")
        if isinstance(error, httpx.TimeoutException):
            return AgentUnavailable(
                f"{model} sent nothing for {agent.first_byte_timeout} s after the request (first-byte timeout)"
            )
        if isinstance(error, httpx.ConnectError):
            return AgentUnavailable(f"Cannot connect to {url}: {describe_error(error)}")
        return AgentUnavailable(
            f"The connection to {url} broke before the answer was complete: {describe_error(error)}"
        )

    def generate_timeout(self) -> dict[str, float | None]:
        """httpx's timeouts as the request extension, so the read timeout can change once the answer starts."""
        agent = self.agent
        return httpx.Timeout(
            connect=agent.connect_timeout,
            read=agent.first_byte_timeout,
            write=agent.idle_timeout,
            pool=agent.connect_timeout,
        ).as_dict()


class Progress:
    """Collects the streamed text and hands it to on_text as each chunk arrives.

    Every chunk is reported: an API client streaming the job gets each one as its own line.
    Whoever publishes to people coalesces (imagetotext.tasks.streamer).
    """

    def __init__(self, on_text: OnText | None, chat: bool = False) -> None:
        self.on_text = on_text
        self.chat = chat
        self.text = ""
        self.reported = ""

    def add(self, chunk: dict[str, Any]) -> None:
        """One NDJSON chunk: generate's text is in "response", chat's in message.content."""
        if self.chat:
            message = chunk.get("message")
            piece = str((message.get("content") if isinstance(message, dict) else "") or "")
        else:
            piece = str(chunk.get("response") or "")
        self.text += piece
        if piece:
            self.report()

    def finish(self) -> None:
        """Report the whole text unless the last report already had it."""
        if self.text != self.reported:
            self.report()

    def report(self) -> None:
        self.reported = self.text
        if self.on_text is not None and self.on_text(self.text):
            raise AgentCancelled("Stopped reading the answer: the job was cancelled")


def generate_body(request: TextRequest) -> dict[str, Any]:
    """The /api/generate request: raw base64 image (Ollama rejects data: URLs), streamed."""
    body: dict[str, Any] = {
        "model": request.model,
        "prompt": request.prompt,
        "images": [base64.b64encode(image).decode("ascii") for image in request.images],
        "stream": True,
    }
    body.update((key, request.options[key]) for key in GENERATE_KEYS if key in request.options)
    return body


def chat_body(request: TextRequest) -> dict[str, Any]:
    """The /api/chat request: each message with its images (positions in the request's) in raw base64."""
    encoded = [base64.b64encode(image).decode("ascii") for image in request.images]
    messages = []
    for message in request.messages:
        sent = {key: value for key, value in message.items() if key != "images"}
        if message.get("images"):
            sent["images"] = [encoded[position] for position in message["images"]]
        messages.append(sent)
    body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": True}
    body.update((key, request.options[key]) for key in CHAT_KEYS if key in request.options)
    return body


def check_status(response: httpx.Response, model: str) -> None:
    """Raise the AgentError that an error status means for the job runner."""
    if response.status_code < 400:
        return
    response.read()
    status, message = response.status_code, error_text(response)
    if status >= 500 and any(marker in message.lower() for marker in NO_IMAGE_INPUT):
        # The agent is healthy; the same model elsewhere would fail the same way.
        raise AgentError(f"The model {model} cannot read images: {message}", retry_elsewhere=False)
    if status >= 500:
        raise AgentUnavailable(f"Ollama answered {status}: {message}")
    if status == 404:
        raise AgentError(f"The model {model} is not on this agent: {message}", retry_elsewhere=True)
    # A bad request would be just as bad anywhere; other refusals (auth, limits) are local.
    raise AgentError(f"Ollama refused the request ({status}): {message}", retry_elsewhere=status != 400)


def read_final_chunk(response: httpx.Response, progress: Progress) -> dict[str, Any]:
    """Feed each NDJSON chunk's text to progress and return the done:true chunk."""
    for line in response.iter_lines():
        if not line.strip():
            continue
        chunk = parse_chunk(line)
        progress.add(chunk)
        if chunk.get("done"):
            return chunk
    raise AgentUnavailable("The answer stopped before the model finished (no done:true line)")


def parse_chunk(line: str) -> dict[str, Any]:
    try:
        chunk = json.loads(line)
    except ValueError:
        raise AgentUnavailable(f"Ollama sent a line that is not JSON: {line[:100]!r}") from None
    if not isinstance(chunk, dict):
        raise AgentUnavailable(f"Ollama sent a line that is not a JSON object: {line[:100]!r}")
    if "error" in chunk:
        raise AgentUnavailable(f"The model failed while answering: {chunk['error']}")
    return chunk
