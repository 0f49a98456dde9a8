"""ComfyUIClient's timeouts and outages in the middle of a run, against the fake ComfyUI."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from agents.clients.base import AgentUnavailable, OnText, TextRequest, TextResult
from agents.clients.comfyui import ComfyUIClient
from agents.models import Agent
from tests.fakes.comfyui import TINY_PNG, FakeComfyUI


@pytest.fixture
def agent(fake_comfyui: FakeComfyUI, settings: Any) -> Agent:
    settings.TASK_TIMEOUT = 30  # the run's ceiling: far beyond what these tests wait
    return Agent(name="comfy", kind="comfyui", base_url=fake_comfyui.url, first_byte_timeout=30, idle_timeout=1)


def caption(agent: Agent, on_text: OnText | None = None) -> TextResult:
    request = TextRequest(image=TINY_PNG, model="microsoft/Florence-2-base", task="caption")
    return ComfyUIClient(agent).image_to_text(request, on_text)


def once_running(fake: FakeComfyUI, action: Callable[[], None]) -> OnText:
    """An on_text that does `action` once, as soon as the fake runs the prompt."""
    done: list[bool] = []

    def on_text(text: str) -> bool:
        if not done and httpx.get(fake.url + "/queue").json()["queue_running"]:
            done.append(True)
            action()
        return False

    return on_text


def test_a_server_that_goes_silent_mid_run_fails_after_the_idle_timeout(
    agent: Agent, fake_comfyui: FakeComfyUI
) -> None:
    fake_comfyui.run_seconds = 20

    def go_silent() -> None:
        fake_comfyui.mode = "hang"  # no more messages, pings unanswered

    started = time.monotonic()
    with pytest.raises(AgentUnavailable) as caught:
        caption(agent, on_text=once_running(fake_comfyui, go_silent))

    assert str(caught.value) == "ComfyUI went silent for 1 s: no message and no answer to a ping (idle timeout)"
    assert time.monotonic() - started < 4


@pytest.mark.slow
def test_a_node_that_runs_longer_than_the_idle_timeout_without_a_message_is_waited_for(
    agent: Agent, fake_comfyui: FakeComfyUI
) -> None:
    fake_comfyui.run_seconds = 6  # four nodes of 1.5 s each, silent while they run; pings are answered

    result = caption(agent)

    assert result.text == fake_comfyui.caption_for("caption")


def test_a_restart_mid_run_loses_the_prompt_and_fails_the_run_at_once(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    fake_comfyui.run_seconds = 20
    started = time.monotonic()

    with pytest.raises(AgentUnavailable, match="ComfyUI lost the prompt"):
        caption(agent, on_text=once_running(fake_comfyui, fake_comfyui.restart))

    assert time.monotonic() - started < 5


def test_a_server_that_stops_mid_run_fails_the_run(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    fake_comfyui.run_seconds = 20

    def stop_listening() -> None:
        fake_comfyui.mode = "refuse"  # the socket closes; polling /history is refused

    with pytest.raises(AgentUnavailable, match="connection refused"):
        caption(agent, on_text=once_running(fake_comfyui, stop_listening))
