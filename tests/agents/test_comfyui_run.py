"""ComfyUIClient.image_to_text against the fake ComfyUI, over real HTTP and WebSocket."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from agents.clients.base import AgentCancelled, AgentError, AgentUnavailable, OnText, TextRequest, TextResult
from agents.clients.comfyui import ComfyUIClient
from agents.models import Agent
from tests.fakes.base import RecordedRequest
from tests.fakes.comfyui import TINY_PNG, FakeComfyUI

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00 a cat"


@pytest.fixture
def agent(fake_comfyui: FakeComfyUI, settings: Any) -> Agent:
    # A generous run budget still keeps a broken test from waiting the default half hour.
    settings.TASK_TIMEOUT = 15
    return Agent(name="comfy", kind="comfyui", base_url=fake_comfyui.url)


def caption(
    agent: Agent, task: str = "caption", prompt: str = "", image: bytes = TINY_PNG, on_text: OnText | None = None
) -> TextResult:
    request = TextRequest(image=image, model="microsoft/Florence-2-base", prompt=prompt, task=task)
    return ComfyUIClient(agent).image_to_text(request, on_text)


def requests_to(fake: FakeComfyUI, path: str) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.path == path]


def posted_graph(fake: FakeComfyUI) -> dict[str, Any]:
    return requests_to(fake, "/prompt")[-1].json["prompt"]


# --- the caption --------------------------------------------------------------


@pytest.mark.parametrize("task", ["caption", "ocr"])
def test_the_text_is_the_caption_florence_gave_for_the_task(agent: Agent, fake_comfyui: FakeComfyUI, task: str) -> None:
    result = caption(agent, task=task)

    assert result.text == fake_comfyui.caption_for(task)


def test_without_a_task_it_asks_for_the_more_detailed_caption(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    result = caption(agent, task="")

    assert result.text == fake_comfyui.caption_for("more_detailed_caption")
    assert posted_graph(fake_comfyui)["3"]["inputs"]["task"] == "more_detailed_caption"


def test_leftover_sentence_tokens_and_whitespace_are_stripped(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    fake_comfyui.captions["caption"] = "</s><s> A cat on a table. </s>\n"

    assert caption(agent).text == "A cat on a table."


def test_an_empty_caption_is_an_empty_result_not_an_error(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    fake_comfyui.captions["caption"] = ""

    assert caption(agent).text == ""


def test_on_text_gets_the_final_text_once(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    seen: list[str] = []

    caption(agent, on_text=lambda text: seen.append(text) or False)

    assert [text for text in seen if text] == [fake_comfyui.caption_for("caption")]


def test_on_text_is_called_at_least_once_a_second_while_waiting(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    # Each of the four nodes takes 1.5 s without a frame, so only a receive timeout keeps the calls coming.
    fake_comfyui.run_seconds = 6
    calls: list[float] = []

    def record_then_give_up_after_a_while(text: str) -> bool:
        calls.append(time.monotonic())
        return calls[-1] - calls[0] > 3

    with pytest.raises(AgentCancelled):
        caption(agent, on_text=record_then_give_up_after_a_while)

    gaps = [later - earlier for earlier, later in zip(calls, calls[1:])]
    assert max(gaps) < 1.2


# --- the upload -----------------------------------------------------------------


def test_the_image_bytes_are_uploaded_to_the_input_folder(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    caption(agent)

    upload = requests_to(fake_comfyui, "/upload/image")[0]
    assert upload.images == [TINY_PNG]
    assert upload.form["type"] == "input"
    assert [data for (kind, _, _), data in fake_comfyui.files.items() if kind == "input"] == [TINY_PNG]


def test_the_upload_is_named_by_content_hash_and_format(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    caption(agent, image=JPEG)

    (name,) = [name for (_, _, name) in fake_comfyui.files]
    assert name.startswith("aiserver-") and name.endswith(".jpg")
    assert posted_graph(fake_comfyui)["1"]["inputs"]["image"] == name


def test_the_same_image_twice_is_stored_once(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    caption(agent)
    caption(agent)

    assert len(fake_comfyui.files) == 1


def test_load_image_gets_the_name_the_server_chose(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    caption(agent, image=JPEG)
    (taken,) = [name for (_, _, name) in fake_comfyui.files]
    fake_comfyui.files = {("input", "", taken): b"other bytes under the same name"}

    caption(agent, image=JPEG)

    assert posted_graph(fake_comfyui)["1"]["inputs"]["image"] == taken.replace(".jpg", " (1).jpg")


# --- the graph ----------------------------------------------------------------


def test_the_graph_chains_load_image_florence_and_preview_any(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    caption(agent)

    graph = posted_graph(fake_comfyui)
    assert {nid: node["class_type"] for nid, node in graph.items()} == {
        "1": "LoadImage",
        "2": "DownloadAndLoadFlorence2Model",
        "3": "Florence2Run",
        "4": "PreviewAny",
    }
    assert graph["2"]["inputs"] == {"model": "microsoft/Florence-2-base", "precision": "fp16", "attention": "sdpa"}
    run = graph["3"]["inputs"]
    assert (run["image"], run["florence2_model"], run["task"]) == (["1", 0], ["2", 0], "caption")
    assert (run["do_sample"], run["keep_model_loaded"], run["seed"]) == (False, True, 1)
    assert graph["4"]["inputs"] == {"source": ["3", 2]}


def test_a_prompt_is_passed_as_text_input_for_docvqa(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    caption(agent, task="docvqa", prompt="What is the opening time?")

    assert posted_graph(fake_comfyui)["3"]["inputs"]["text_input"] == "What is the opening time?"


def test_a_prompt_is_left_out_for_caption_tasks_which_would_fail_with_it(
    agent: Agent, fake_comfyui: FakeComfyUI
) -> None:
    result = caption(agent, task="caption", prompt="Describe the cat")

    assert posted_graph(fake_comfyui)["3"]["inputs"]["text_input"] == ""
    assert result.text == fake_comfyui.caption_for("caption")


def test_without_preview_any_the_caption_goes_through_show_text(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    fake_comfyui.preview_any_installed = False

    result = caption(agent)

    assert posted_graph(fake_comfyui)["4"] == {"class_type": "ShowText|pysssss", "inputs": {"text": ["3", 2]}}
    assert result.text == fake_comfyui.caption_for("caption")


def test_a_client_asks_for_preview_any_only_once(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    client = ComfyUIClient(agent)
    request = TextRequest(image=TINY_PNG, model="microsoft/Florence-2-base", task="caption")

    client.image_to_text(request)
    client.image_to_text(request)

    assert len(requests_to(fake_comfyui, "/object_info/PreviewAny")) == 1


# --- the socket -----------------------------------------------------------------


def test_the_socket_is_open_before_the_prompt_is_posted_with_its_client_id(
    agent: Agent, fake_comfyui: FakeComfyUI
) -> None:
    caption(agent)

    paths = [r.path for r in fake_comfyui.requests]
    socket, posted = requests_to(fake_comfyui, "/ws")[0], requests_to(fake_comfyui, "/prompt")[0]
    assert paths.index("/ws") < paths.index("/prompt")
    assert socket.query["clientId"] == posted.json["client_id"]


def test_the_api_key_is_sent_on_the_socket_too(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    agent.api_key = "secret-key"

    caption(agent)

    assert requests_to(fake_comfyui, "/ws")[0].headers["Authorization"] == "Bearer secret-key"


def test_when_the_socket_drops_the_caption_comes_from_polling_history(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    fake_comfyui.run_seconds = 1.5
    dropped: list[bool] = []

    def drop_the_socket_once(text: str) -> bool:
        if not dropped:
            # The run sends a frame at least every 0.4 s; the first one after this cuts the socket.
            fake_comfyui.mode = "drop"
            time.sleep(0.6)
            fake_comfyui.mode = "ok"  # plain HTTP works again for the polling
            dropped.append(True)
        return False

    result = caption(agent, on_text=drop_the_socket_once)

    assert result.text == fake_comfyui.caption_for("caption")
    assert len(requests_to(fake_comfyui, f"/history/{posted_prompt_id(fake_comfyui)}")) >= 2


def posted_prompt_id(fake: FakeComfyUI) -> str:
    return requests_to(fake, "/prompt")[-1].json["prompt_id"]


# --- failures -------------------------------------------------------------------


def test_a_validation_error_names_the_node_and_is_not_retried_elsewhere(agent: Agent) -> None:
    with pytest.raises(AgentError) as caught:
        caption(agent, task="captionz")

    assert "Florence2Run node 3: Value not in list: task: 'captionz' not in" in str(caught.value)
    assert caught.value.retry_elsewhere is False


def test_a_comfyui_without_florence_is_worth_retrying_elsewhere(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    fake_comfyui.florence_installed = False

    with pytest.raises(AgentError) as caught:
        caption(agent)

    assert "lacks the Florence-2 nodes" in str(caught.value)
    assert caught.value.retry_elsewhere is True


def test_an_out_of_memory_execution_error_is_reported_and_retried_elsewhere(
    agent: Agent, fake_comfyui: FakeComfyUI
) -> None:
    fake_comfyui.mode = "execution_error"

    with pytest.raises(AgentError) as caught:
        caption(agent)

    assert str(caught.value).startswith("torch.OutOfMemoryError: Allocation on device")
    assert str(caught.value).endswith("ran out of memory on your GPU.")
    assert caught.value.retry_elsewhere is True


def test_a_refused_connection_makes_the_agent_unavailable(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    fake_comfyui.mode = "refuse"

    with pytest.raises(AgentUnavailable, match="connection refused"):
        caption(agent)


def test_a_server_error_makes_the_agent_unavailable(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    fake_comfyui.mode = "500"

    with pytest.raises(AgentUnavailable, match="500"):
        caption(agent)


def test_a_hung_server_gives_up_after_the_first_byte_timeout(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    fake_comfyui.mode = "hang"
    agent.first_byte_timeout = 1
    started = time.monotonic()

    with pytest.raises(AgentUnavailable, match="within 1 s"):
        caption(agent)

    assert time.monotonic() - started < 3


def test_a_run_longer_than_the_task_timeout_gives_up_and_is_stopped_on_the_server(
    agent: Agent, fake_comfyui: FakeComfyUI, settings: Any
) -> None:
    fake_comfyui.run_seconds = 10
    settings.TASK_TIMEOUT = 1

    with pytest.raises(AgentUnavailable, match="no result within 1 s"):
        caption(agent)

    prompt_id = posted_prompt_id(fake_comfyui)
    (interrupt,) = requests_to(fake_comfyui, "/interrupt")
    assert interrupt.json == {"prompt_id": prompt_id}
    assert interrupted_in_history(fake_comfyui, prompt_id)


def test_a_prompt_stopped_by_someone_on_the_comfyui_server_fails_the_run(
    agent: Agent, fake_comfyui: FakeComfyUI
) -> None:
    fake_comfyui.run_seconds = 3

    with pytest.raises(AgentError, match="interrupted on the ComfyUI server") as caught:
        caption(agent, on_text=interrupt_from_outside_once(fake_comfyui))

    assert not caught.value.retry_elsewhere


def test_a_stopped_prompt_fails_the_run_when_only_history_is_polled(
    agent: Agent, fake_comfyui: FakeComfyUI, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_comfyui.run_seconds = 3
    monkeypatch.setattr(ComfyUIClient, "open_socket", lambda self, client_id, deadline: None)

    with pytest.raises(AgentError, match="interrupted on the ComfyUI server"):
        caption(agent, on_text=interrupt_from_outside_once(fake_comfyui))

    assert requests_to(fake_comfyui, "/ws") == []


def interrupt_from_outside_once(fake: FakeComfyUI) -> OnText:
    """An on_text that, on its first call, presses ComfyUI's own Cancel (POST /interrupt, no prompt id)."""
    pressed: list[bool] = []

    def on_text(text: str) -> bool:
        if not pressed:
            pressed.append(True)
            while not httpx.get(fake.url + "/queue").json()["queue_running"]:
                time.sleep(0.05)
            httpx.post(fake.url + "/interrupt", json={})
        return False

    return on_text


def interrupted_in_history(fake: FakeComfyUI, prompt_id: str, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        entry = httpx.get(f"{fake.url}/history/{prompt_id}").json().get(prompt_id)
        if entry:
            return any(event == "execution_interrupted" for event, _ in entry["status"]["messages"])
        time.sleep(0.1)
    return False


def test_cancelling_interrupts_the_prompt_on_the_server(agent: Agent, fake_comfyui: FakeComfyUI) -> None:
    fake_comfyui.run_seconds = 5

    with pytest.raises(AgentCancelled):
        caption(agent, on_text=lambda text: True)

    (interrupt,) = requests_to(fake_comfyui, "/interrupt")
    assert interrupt.json == {"prompt_id": posted_prompt_id(fake_comfyui)}
