"""OllamaClient's connect, first-byte and idle timeouts, against the fake Ollama over real HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from agents.clients.base import AgentUnavailable, TextRequest, TextResult
from agents.clients.ollama import OllamaClient
from agents.models import Agent
from tests.fakes.ollama import FakeOllama

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
PROMPT = "Describe the image"


@pytest.fixture
def agent(fake_ollama: FakeOllama) -> Agent:
    # Unsaved: the client needs only the URL and the timeouts. Long ones unless a test shortens them.
    return Agent(
        name="gpu", kind="ollama", base_url=fake_ollama.url, connect_timeout=30, first_byte_timeout=30, idle_timeout=30
    )


def caption(agent: Agent) -> TextResult:
    return OllamaClient(agent).image_to_text(TextRequest(image=IMAGE, model="llava:7b", prompt=PROMPT))


def timed_failure(agent: Agent) -> tuple[AgentUnavailable, float]:
    started = time.monotonic()
    with pytest.raises(AgentUnavailable) as caught:
        caption(agent)
    return caught.value, time.monotonic() - started


@pytest.fixture
def full_backlog() -> Iterator[str]:
    """The URL of a port that takes no more connections: the kernel drops the SYN, so connecting hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        queued: list[socket.socket] = []
        try:
            while len(queued) < 10:  # until the accept queue is full and a connect gets no answer
                queued.append(socket.create_connection(("127.0.0.1", port), timeout=0.3))
        except TimeoutError:
            pass
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            for connection in queued:
                connection.close()


def test_a_backend_that_sends_nothing_fails_after_the_first_byte_timeout(agent: Agent, fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "hang"
    agent.first_byte_timeout = 1

    error, seconds = timed_failure(agent)

    assert str(error) == "llava:7b sent nothing for 1 s after the request (first-byte timeout)"
    assert 1 <= seconds < 3
    assert error.retry_elsewhere is True


def test_a_cold_model_load_longer_than_the_idle_timeout_is_waited_for(agent: Agent, fake_ollama: FakeOllama) -> None:
    # The model "loads" for 1.5 s before the first chunk: longer than the idle timeout, within the first-byte one.
    fake_ollama.latency = 1.5
    agent.first_byte_timeout, agent.idle_timeout = 5, 1

    result = caption(agent)

    assert result.text == fake_ollama.reply_for("llava:7b", PROMPT)


def test_a_stream_that_goes_silent_fails_after_the_idle_timeout_not_the_first_byte_one(
    agent: Agent, fake_ollama: FakeOllama
) -> None:
    fake_ollama.mode = "stall"  # two chunks, then nothing
    agent.first_byte_timeout, agent.idle_timeout = 30, 1

    error, seconds = timed_failure(agent)

    assert str(error) == "llava:7b went silent for 1 s mid-answer (idle timeout)"
    assert 1 <= seconds < 3


def test_slow_chunks_within_the_idle_timeout_are_a_normal_answer(agent: Agent, fake_ollama: FakeOllama) -> None:
    fake_ollama.replies["llava:7b"] = "one two three four"
    fake_ollama.chunk_delay = 0.6  # the whole answer takes longer than the idle timeout, each gap less
    agent.idle_timeout = 1

    assert caption(agent).text == "one two three four"


def test_a_connection_that_never_opens_fails_after_the_connect_timeout(agent: Agent, full_backlog: str) -> None:
    agent.base_url, agent.connect_timeout = full_backlog, 1

    error, seconds = timed_failure(agent)

    assert str(error) == f"Cannot connect to {full_backlog}/api/generate within 1 s (connect timeout)"
    assert 1 <= seconds < 3


def test_a_stream_that_ends_cleanly_without_its_done_line_is_a_failure_not_a_short_answer(
    agent: Agent, fake_ollama: FakeOllama
) -> None:
    fake_ollama.mode = "truncate"  # two chunks, then a proper end of the body

    error, _ = timed_failure(agent)

    assert "stopped before the model finished" in str(error)
