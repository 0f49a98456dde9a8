"""The fake ComfyUI answers like protocols.md (B.1-B.9) says a real server does."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import websockets

from tests.fakes.comfyui import FakeComfyUI

PNG = b"\x89PNG\r\n\x1a\n cat"


def graph(
    task: str = "caption", text_input: str = "", image: str = "cat.png", seed: int = 1, display: str = "PreviewAny"
) -> dict[str, Any]:
    """The B.7 captioning graph."""
    display_node = {"source": ["3", 2]} if display == "PreviewAny" else {"text": ["3", 2]}
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {
            "class_type": "DownloadAndLoadFlorence2Model",
            "inputs": {"model": "microsoft/Florence-2-base", "precision": "fp16", "attention": "sdpa"},
        },
        "3": {
            "class_type": "Florence2Run",
            "inputs": {
                "image": ["1", 0],
                "florence2_model": ["2", 0],
                "text_input": text_input,
                "task": task,
                "fill_mask": False,
                "seed": seed,
            },
        },
        "4": {"class_type": display, "inputs": display_node},
    }


@pytest.fixture
def comfy(fake_comfyui: FakeComfyUI) -> FakeComfyUI:
    fake_comfyui.add_file("cat.png", PNG)
    return fake_comfyui


def post_prompt(fake: FakeComfyUI, body: Any) -> httpx.Response:
    return httpx.post(f"{fake.url}/prompt", json=body)


def ws_url(fake: FakeComfyUI, client_id: str | None = "c1") -> str:
    query = f"?clientId={client_id}" if client_id else ""
    return f"{fake.url.replace('http', 'ws', 1)}/ws{query}"


async def messages_until_done(ws: Any, prompt_id: str) -> list[dict[str, Any]]:
    """Every frame up to and including `executing` with node null for `prompt_id`."""
    received = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        received.append(message)
        if message["type"] == "executing" and message["data"] == {"node": None, "prompt_id": prompt_id}:
            return received


async def run(fake: FakeComfyUI, prompt: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    async with websockets.connect(ws_url(fake)) as ws:
        await ws.recv()  # the status on connect
        prompt_id = post_prompt(fake, {"prompt": prompt, "client_id": "c1"}).json()["prompt_id"]
        return prompt_id, await messages_until_done(ws, prompt_id)


def rejection(fake: FakeComfyUI, prompt: dict[str, Any]) -> dict[str, Any]:
    response = post_prompt(fake, {"prompt": prompt})
    assert response.status_code == 400
    return response.json()


def test_a_body_without_prompt_is_rejected_with_no_prompt(comfy: FakeComfyUI) -> None:
    response = post_prompt(comfy, {"client_id": "c1"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        },
        "node_errors": {},
    }


def test_an_unknown_node_class_is_rejected_with_missing_node_type(comfy: FakeComfyUI) -> None:
    prompt = graph() | {"5": {"class_type": "Nope", "inputs": {}, "_meta": {"title": "My node"}}}
    error = rejection(comfy, prompt)["error"]
    assert error["type"] == "missing_node_type"
    assert error["details"] == "Node ID '#5'"
    assert error["extra_info"] == {"node_id": "5", "class_type": "Nope", "node_title": "My node"}


def test_a_graph_without_a_display_node_is_rejected_with_prompt_no_outputs(comfy: FakeComfyUI) -> None:
    prompt = {k: v for k, v in graph().items() if k != "4"}
    assert rejection(comfy, prompt)["error"]["type"] == "prompt_no_outputs"


def test_an_unknown_florence_task_fails_validation_with_value_not_in_list(comfy: FakeComfyUI) -> None:
    body = rejection(comfy, graph(task="captionz"))
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    node = body["node_errors"]["3"]
    assert (node["class_type"], node["dependent_outputs"]) == ("Florence2Run", ["4"])
    assert node["errors"][0]["type"] == "value_not_in_list"
    assert node["errors"][0]["details"].startswith("task: 'captionz' not in ['region_caption',")
    assert node["errors"][0]["extra_info"]["received_value"] == "captionz"


def test_seed_zero_fails_validation_with_value_smaller_than_min(comfy: FakeComfyUI) -> None:
    error = rejection(comfy, graph(seed=0))["node_errors"]["3"]["errors"][0]
    assert (error["type"], error["message"]) == ("value_smaller_than_min", "Value 0 smaller than min of 1")


def test_load_image_of_a_file_never_uploaded_fails_custom_validation(comfy: FakeComfyUI) -> None:
    node = rejection(comfy, graph(image="nope.png"))["node_errors"]["1"]
    assert node["errors"] == [
        {
            "type": "custom_validation_failed",
            "message": "Custom validation failed for node",
            "details": "image - Invalid image file: nope.png",
            "extra_info": {"input_name": "image"},
        }
    ]


def test_a_non_canonical_prompt_id_is_rejected(comfy: FakeComfyUI) -> None:
    response = post_prompt(comfy, {"prompt": graph(), "prompt_id": str(uuid.uuid4()).upper()})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_prompt_id"


def test_invalid_json_gets_a_plain_text_500(comfy: FakeComfyUI) -> None:
    response = httpx.post(f"{comfy.url}/prompt", content=b"{not json")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/plain")


def test_without_florence_installed_its_nodes_are_missing() -> None:
    with FakeComfyUI(florence_installed=False) as fake:
        fake.add_file("cat.png", PNG)
        assert httpx.get(f"{fake.url}/object_info/Florence2Run").json() == {}
        assert rejection(fake, graph())["error"]["type"] == "missing_node_type"


async def test_a_run_sends_the_documented_ws_sequence_ending_with_executing_null(comfy: FakeComfyUI) -> None:
    prompt_id, received = await run(comfy, graph())
    kinds = [m["type"] for m in received if m["type"] != "progress_state"]
    assert kinds == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "executing",
        "executing",
        "executing",
        "executing",
        "executed",
        "execution_success",
        "status",
        "executing",
    ]
    executed = next(m for m in received if m["type"] == "executed")["data"]
    assert executed == {
        "node": "4",
        "display_node": "4",
        "output": {"text": [comfy.caption_for("caption")]},
        "prompt_id": prompt_id,
    }
    assert received[-2]["data"] == {"status": {"exec_info": {"queue_remaining": 0}}}


async def test_history_is_empty_until_done_then_holds_the_caption(comfy: FakeComfyUI) -> None:
    comfy.run_seconds = 0.5
    prompt_id = post_prompt(comfy, {"prompt": graph(task="ocr", display="ShowText|pysssss")}).json()["prompt_id"]
    assert httpx.get(f"{comfy.url}/history/{prompt_id}").json() == {}
    for _ in range(50):
        await asyncio.sleep(0.05)
        history = httpx.get(f"{comfy.url}/history/{prompt_id}").json()
        if history:
            break
    entry = history[prompt_id]
    assert entry["outputs"] == {"4": {"text": ["OPEN DAILY 9AM - 5PM"]}}
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("success", True)


async def test_per_prompt_events_go_only_to_the_submitting_client(comfy: FakeComfyUI) -> None:
    async with websockets.connect(ws_url(comfy, "other")) as other:
        await other.recv()
        prompt_id, _ = await run(comfy, graph())
        seen = []
        while True:
            try:
                seen.append(json.loads(await asyncio.wait_for(other.recv(), 0.3))["type"])
            except TimeoutError:
                break
    assert seen and set(seen) == {"status"}


async def test_a_socket_without_client_id_gets_a_server_assigned_sid(comfy: FakeComfyUI) -> None:
    async with websockets.connect(ws_url(comfy, None)) as ws:
        first = json.loads(await ws.recv())
    assert first["type"] == "status"
    assert len(first["data"]["sid"]) == 32 and first["data"]["status"] == {"exec_info": {"queue_remaining": 0}}


async def test_a_feature_flags_first_frame_is_answered(comfy: FakeComfyUI) -> None:
    async with websockets.connect(ws_url(comfy)) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        reply = json.loads(await ws.recv())
    assert reply == {
        "type": "feature_flags",
        "data": {"supports_preview_metadata": True, "max_upload_size": 104857600.0},
    }


async def test_a_reconnect_with_the_same_client_id_takes_over_the_events(comfy: FakeComfyUI) -> None:
    async with websockets.connect(ws_url(comfy)) as old:
        await old.recv()
        prompt_id, received = await run(comfy, graph())
    assert received[-1]["data"] == {"node": None, "prompt_id": prompt_id}


async def test_text_input_on_a_caption_task_ends_in_execution_error(comfy: FakeComfyUI) -> None:
    prompt_id, received = await run(comfy, graph(text_input="a cat"))
    error = next(m for m in received if m["type"] == "execution_error")["data"]
    assert (error["node_id"], error["node_type"], error["exception_type"]) == ("3", "Florence2Run", "ValueError")
    assert error["exception_message"].startswith("Text input (prompt) is only supported for")
    assert received[-1]["data"] == {"node": None, "prompt_id": prompt_id}
    entry = httpx.get(f"{comfy.url}/history/{prompt_id}").json()[prompt_id]
    assert (entry["outputs"], entry["status"]["status_str"], entry["status"]["completed"]) == ({}, "error", False)
    assert entry["status"]["messages"][-1][0] == "execution_error"


async def test_execution_error_mode_fails_a_valid_run(comfy: FakeComfyUI) -> None:
    comfy.mode = "execution_error"
    _, received = await run(comfy, graph())
    types = [m["type"] for m in received]
    assert "execution_error" in types and "executed" not in types and "execution_success" not in types


async def test_interrupt_stops_the_running_prompt(comfy: FakeComfyUI) -> None:
    comfy.run_seconds = 5
    async with websockets.connect(ws_url(comfy)) as ws:
        await ws.recv()
        prompt_id = post_prompt(comfy, {"prompt": graph(), "client_id": "c1"}).json()["prompt_id"]
        await asyncio.sleep(0.2)
        response = httpx.post(f"{comfy.url}/interrupt", json={"prompt_id": prompt_id})
        received = await messages_until_done(ws, prompt_id)
    assert (response.status_code, response.content) == (200, b"")
    assert [m["type"] for m in received][-3:] == ["execution_interrupted", "status", "executing"]
    entry = httpx.get(f"{comfy.url}/history/{prompt_id}").json()[prompt_id]
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("error", False)


async def test_drop_mode_cuts_the_socket_but_the_run_still_reaches_history(comfy: FakeComfyUI) -> None:
    comfy.run_seconds = 1
    async with websockets.connect(ws_url(comfy)) as ws:
        await ws.recv()
        prompt_id = post_prompt(comfy, {"prompt": graph(), "client_id": "c1"}).json()["prompt_id"]
        comfy.mode = "drop"
        with pytest.raises(websockets.ConnectionClosedError):
            await messages_until_done(ws, prompt_id)
    comfy.mode = "ok"
    for _ in range(60):
        history = httpx.get(f"{comfy.url}/history/{prompt_id}").json()
        if history:
            break
        await asyncio.sleep(0.05)
    assert history[prompt_id]["outputs"] == {"4": {"text": [comfy.caption_for("caption")]}}


async def test_pings_are_answered_until_hang_mode_which_also_holds_back_every_message(comfy: FakeComfyUI) -> None:
    comfy.run_seconds = 1
    async with websockets.connect(ws_url(comfy), ping_interval=None) as ws:
        await ws.recv()
        await asyncio.wait_for(await ws.ping(), 2)  # answered
        prompt_id = post_prompt(comfy, {"prompt": graph(), "client_id": "c1"}).json()["prompt_id"]
        comfy.mode = "hang"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(await ws.ping(), 0.5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(messages_until_done(ws, prompt_id), 1.5)


async def test_restart_closes_the_sockets_and_forgets_the_queue_and_the_history(comfy: FakeComfyUI) -> None:
    done = post_prompt(comfy, {"prompt": graph()}).json()["prompt_id"]
    for _ in range(60):
        if httpx.get(f"{comfy.url}/history/{done}").json():
            break
        await asyncio.sleep(0.05)
    comfy.run_seconds = 10
    async with websockets.connect(ws_url(comfy)) as ws:
        await ws.recv()
        running = post_prompt(comfy, {"prompt": graph(), "client_id": "c1"}).json()["prompt_id"]
        comfy.restart()
        with pytest.raises(websockets.ConnectionClosed):
            await messages_until_done(ws, running)
    queue = httpx.get(f"{comfy.url}/queue").json()
    assert queue == {"queue_running": [], "queue_pending": []}
    assert httpx.get(f"{comfy.url}/history").json() == {}
    assert post_prompt(comfy, {"prompt": graph()}).status_code == 200  # and it takes work again


def test_prompts_queue_and_run_one_at_a_time(comfy: FakeComfyUI) -> None:
    comfy.run_seconds = 0.3
    first = post_prompt(comfy, {"prompt": graph()}).json()
    second = post_prompt(comfy, {"prompt": graph(task="ocr")}).json()
    queue = httpx.get(f"{comfy.url}/api/queue").json()
    queued = [item[1] for item in queue["queue_running"] + queue["queue_pending"]]
    assert queued == [first["prompt_id"], second["prompt_id"]]
    assert httpx.get(f"{comfy.url}/prompt").json() == {"exec_info": {"queue_remaining": 2}}
    assert httpx.post(f"{comfy.url}/queue", json={"delete": [second["prompt_id"]]}).status_code == 200
    assert httpx.get(f"{comfy.url}/queue").json()["queue_pending"] == []


def test_upload_renames_on_a_clash_and_keeps_the_name_for_identical_bytes(comfy: FakeComfyUI) -> None:
    def upload(data: bytes) -> dict[str, Any]:
        return httpx.post(f"{comfy.url}/upload/image", files={"image": ("cat.png", data, "image/png")}).json()

    assert upload(PNG) == {"name": "cat.png", "subfolder": "", "type": "input"}
    assert upload(b"different")["name"] == "cat (1).png"
    assert comfy.requests[-1].images == [b"different"]


def test_upload_without_an_image_part_is_a_bare_400(comfy: FakeComfyUI) -> None:
    response = httpx.post(f"{comfy.url}/upload/image", files={"other": ("x.png", PNG)})
    assert (response.status_code, response.content) == (400, b"")


def test_view_returns_the_file_or_400_or_404(comfy: FakeComfyUI) -> None:
    found = httpx.get(f"{comfy.url}/view", params={"filename": "cat.png", "type": "input"})
    assert (found.status_code, found.headers["content-type"], found.content) == (200, "image/png", PNG)
    assert httpx.get(f"{comfy.url}/view", params={"filename": "../cat.png"}).status_code == 400
    assert httpx.get(f"{comfy.url}/view", params={"filename": "cat.png"}).status_code == 404


def test_object_info_describes_each_class_and_unknown_classes_are_empty(comfy: FakeComfyUI) -> None:
    florence = httpx.get(f"{comfy.url}/object_info/Florence2Run").json()["Florence2Run"]
    assert florence["output_name"] == ["image", "mask", "caption", "data"]
    assert florence["input"]["optional"]["seed"] == ["INT", {"default": 1, "min": 1, "max": 18446744073709551615}]
    loader = httpx.get(f"{comfy.url}/object_info/Florence2ModelLoader").json()["Florence2ModelLoader"]
    assert loader["input"]["required"]["model"] == [["Florence-2-base"]]
    assert "ShowText|pysssss" in httpx.get(f"{comfy.url}/object_info").json()
    assert httpx.get(f"{comfy.url}/object_info/Nope").json() == {}


def test_every_route_is_also_served_under_api(comfy: FakeComfyUI) -> None:
    assert httpx.get(f"{comfy.url}/api/system_stats").json()["system"]["comfyui_version"] == "0.3.64"
    load_image = httpx.get(f"{comfy.url}/api/object_info/LoadImage").json()["LoadImage"]
    assert load_image["input"]["required"]["image"] == [["cat.png"], {"image_upload": True}]
    assert httpx.post(f"{comfy.url}/api/prompt", json={"prompt": graph()}).status_code == 200


def test_500_mode_answers_like_an_aiohttp_crash(comfy: FakeComfyUI) -> None:
    comfy.mode = "500"
    response = httpx.get(f"{comfy.url}/system_stats")
    assert response.status_code == 500 and response.text.startswith("500 Internal Server Error")
