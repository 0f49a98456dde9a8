"""OllamaClient.image_to_text against the fake Ollama server, over real HTTP."""

from __future__ import annotations

import ssl
import time
from typing import Any

import httpx
import pytest

from agents.clients.base import (
    AgentCancelled,
    AgentError,
    AgentUnavailable,
    OnText,
    TextRequest,
    TextResult,
    pooled_client,
)
from agents.clients.ollama import OllamaClient, Progress, read_final_chunk
from agents.models import Agent
from tests.fakes.base import RecordedRequest
from tests.fakes.ollama import FakeOllama

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PROMPT = "Describe the image"


@pytest.fixture
def agent(fake_ollama: FakeOllama) -> Agent:
    # Unsaved on purpose: the client needs only the URL, key and timeout.
    return Agent(name="gpu", kind="ollama", base_url=fake_ollama.url)


def caption(agent: Agent, model: str = "llava:7b", on_text: OnText | None = None, **extra: Any) -> TextResult:
    """Caption IMAGE with PROMPT; keyword arguments become request.options."""
    request = TextRequest(image=IMAGE, model=model, prompt=PROMPT, options=extra)
    return OllamaClient(agent).image_to_text(request, on_text)


def sent(fake: FakeOllama) -> RecordedRequest:
    (generate,) = [r for r in fake.requests if r.path == "/api/generate"]
    return generate


def open_connections(fake: FakeOllama) -> int:
    # aiohttp keeps one handler per open TCP connection; the fake has no public view of them.
    assert fake._runner is not None and fake._runner.server is not None
    return len(fake._runner.server.connections)


# --- the answer ------------------------------------------------------------------


def test_the_text_is_the_whole_reply_including_the_final_chunk(agent: Agent, fake_ollama: FakeOllama) -> None:
    result = caption(agent)

    assert result.text == fake_ollama.reply_for("llava:7b", PROMPT)


def test_the_token_counts_come_from_the_final_chunk(agent: Agent, fake_ollama: FakeOllama) -> None:
    result = caption(agent)

    words = len(fake_ollama.reply_for("llava:7b", PROMPT).split())
    assert result.prompt_tokens == len(PROMPT.split()) + 576
    assert result.completion_tokens == words


def test_raw_is_the_final_chunk_with_the_whole_text_like_a_non_streamed_call(
    agent: Agent, fake_ollama: FakeOllama
) -> None:
    result = caption(agent)

    assert result.raw["done"] is True
    assert result.raw["done_reason"] == "stop"
    assert result.raw["response"] == fake_ollama.reply_for("llava:7b", PROMPT)
    assert result.raw["eval_count"] == result.completion_tokens


# --- what was sent ---------------------------------------------------------------


def test_it_posts_the_model_prompt_and_a_streamed_request(agent: Agent, fake_ollama: FakeOllama) -> None:
    caption(agent)

    body = sent(fake_ollama).json
    assert (body["model"], body["prompt"], body["stream"]) == ("llava:7b", PROMPT, True)


def test_the_image_arrives_as_raw_base64_of_the_same_bytes(agent: Agent, fake_ollama: FakeOllama) -> None:
    caption(agent)

    request = sent(fake_ollama)
    assert request.images == [IMAGE]
    assert not request.json["images"][0].startswith("data:")


def test_generate_options_are_passed_through(agent: Agent, fake_ollama: FakeOllama) -> None:
    caption(agent, options={"temperature": 0, "seed": 7}, system="Be brief", keep_alive="10m", think=False)

    body = sent(fake_ollama).json
    assert body["options"] == {"temperature": 0, "seed": 7}
    assert (body["system"], body["keep_alive"], body["think"]) == ("Be brief", "10m", False)


def test_unknown_options_are_dropped_and_cannot_override_the_request(agent: Agent, fake_ollama: FakeOllama) -> None:
    caption(agent, colour="red", stream=False, images=["data:image/png;base64,AAAA"])

    body = sent(fake_ollama).json
    assert "colour" not in body
    assert body["stream"] is True
    assert sent(fake_ollama).images == [IMAGE]


def test_the_agents_api_key_is_sent(fake_ollama: FakeOllama) -> None:
    agent = Agent(name="gpu", kind="ollama", base_url=fake_ollama.url, api_key="s3cret")

    caption(agent)

    assert sent(fake_ollama).headers["Authorization"] == "Bearer s3cret"


# --- progress and cancelling -------------------------------------------------------


def test_on_text_sees_the_text_grow_as_it_arrives(agent: Agent, fake_ollama: FakeOllama) -> None:
    fake_ollama.chunk_delay = 0.2
    seen: list[str] = []

    caption(agent, on_text=lambda text: seen.append(text) or False)

    assert len(seen) >= 3
    assert all(later.startswith(earlier) and later != earlier for earlier, later in zip(seen, seen[1:]))
    assert seen[-1] == fake_ollama.reply_for("llava:7b", PROMPT)


def test_on_text_hears_every_chunk_even_when_they_arrive_quickly(agent: Agent, fake_ollama: FakeOllama) -> None:
    fake_ollama.replies["llava:7b"] = "word " * 200
    seen: list[str] = []

    caption(agent, on_text=lambda text: seen.append(text) or False)

    assert len(seen) >= 200  # a call per streamed chunk (one per word here): API streams relay each one
    assert seen[-1] == "word " * 200


def test_on_text_returning_true_cancels_and_closes_the_connection(agent: Agent, fake_ollama: FakeOllama) -> None:
    # The whole reply would take about 4 s to stream.
    fake_ollama.chunk_delay = 0.3
    seen: list[str] = []
    started = time.monotonic()

    with pytest.raises(AgentCancelled):
        caption(agent, on_text=lambda text: seen.append(text) or True)

    while open_connections(fake_ollama) and time.monotonic() - started < 1:
        time.sleep(0.02)
    assert open_connections(fake_ollama) == 0
    assert len(seen) == 1


def test_clients_for_many_agents_share_one_tls_context(fake_ollama: FakeOllama, monkeypatch) -> None:
    # Making a context reads the CA bundle (tens of ms): httpx made one per client, even for http://.
    made: list[ssl.SSLContext] = []
    real = ssl.SSLContext.load_verify_locations

    def counted(context: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        made.append(context)
        real(context, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    agents = [Agent(name=f"gpu-{n}", kind="ollama", base_url=f"{fake_ollama.url}/{n}") for n in range(5)]
    clients = {id(pooled_client(agent)) for agent in agents}

    assert len(clients) == 5 and len(made) <= 1
    assert caption(Agent(name="gpu", kind="ollama", base_url=fake_ollama.url)).text


# --- failures ------------------------------------------------------------------------


def test_a_refused_connection_makes_the_agent_unavailable(agent: Agent, fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "refuse"

    with pytest.raises(AgentUnavailable, match="connection refused"):
        caption(agent)


def test_a_server_error_makes_the_agent_unavailable_with_ollamas_message(agent: Agent, fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "500"

    with pytest.raises(AgentUnavailable, match="answered 500: llama runner process has terminated"):
        caption(agent)


def test_a_connection_dropped_mid_stream_makes_the_agent_unavailable(agent: Agent, fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "drop"

    with pytest.raises(AgentUnavailable, match="broke before the answer was complete"):
        caption(agent)


def test_an_error_line_mid_stream_makes_the_agent_unavailable_with_its_text(
    agent: Agent, fake_ollama: FakeOllama
) -> None:
    fake_ollama.mode = "midstream_error"

    with pytest.raises(AgentUnavailable, match="an error was encountered while running the model"):
        caption(agent)


def test_a_busy_server_makes_the_agent_unavailable(agent: Agent, fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "busy"

    with pytest.raises(AgentUnavailable, match="503: server busy"):
        caption(agent)


def test_a_model_that_cannot_read_images_fails_the_job_without_blaming_the_agent(
    agent: Agent, fake_ollama: FakeOllama
) -> None:
    fake_ollama.mode = "no_vision"

    with pytest.raises(AgentError, match="The model llava:7b cannot read images") as caught:
        caption(agent)

    assert not isinstance(caught.value, AgentUnavailable)
    assert caught.value.retry_elsewhere is False


def test_sending_an_image_to_a_text_only_model_is_the_same_permanent_failure(agent: Agent) -> None:
    with pytest.raises(AgentError, match="The model llama3.2:3b cannot read images") as caught:
        caption(agent, model="llama3.2:3b")

    assert caught.value.retry_elsewhere is False


def test_an_unknown_model_may_be_tried_on_another_agent(agent: Agent) -> None:
    with pytest.raises(AgentError, match="model 'bakllava:7b' not found") as caught:
        caption(agent, model="bakllava:7b")

    assert not isinstance(caught.value, AgentUnavailable)
    assert caught.value.retry_elsewhere is True


def test_a_bad_request_is_a_permanent_failure_with_ollamas_message(agent: Agent) -> None:
    # The fake checks types like Go's encoding/json does.
    with pytest.raises(AgentError, match="cannot unmarshal number .* GenerateRequest.suffix") as caught:
        caption(agent, suffix=5)

    assert not isinstance(caught.value, AgentUnavailable)
    assert caught.value.retry_elsewhere is False


# --- stream parsing (shapes the fake never sends) -------------------------------------


def ndjson(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"Content-Type": "application/x-ndjson"})


def test_a_stream_that_ends_without_a_done_line_makes_the_agent_unavailable() -> None:
    response = ndjson(b'{"response": "A red", "done": false}\n{"response": " square", "done": false}\n')

    with pytest.raises(AgentUnavailable, match="no done:true line"):
        read_final_chunk(response, Progress(None))


def test_a_line_that_is_not_json_makes_the_agent_unavailable() -> None:
    response = ndjson(b'{"response": "A red", "done": false}\n<html>Bad gateway</html>\n')

    with pytest.raises(AgentUnavailable, match="not JSON"):
        read_final_chunk(response, Progress(None))
