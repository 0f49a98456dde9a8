"""The fake Ollama answers like protocols.md (A.1-A.10) says a real server does."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest

from tests.fakes.ollama import FakeOllama

PNG = b"\x89PNG\r\n\x1a\n not really a picture"
PNG_B64 = base64.b64encode(PNG).decode()


def post(fake: FakeOllama, path: str, body: Any = None, timeout: float = 5, **kwargs: Any) -> httpx.Response:
    with httpx.Client(base_url=fake.url, timeout=timeout) as client:
        return client.post(path, json=body, **kwargs)


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


def test_root_says_ollama_is_running(fake_ollama: FakeOllama) -> None:
    response = httpx.get(fake_ollama.url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "Ollama is running"
    assert httpx.head(fake_ollama.url).status_code == 200


def test_version_and_ps_answer_with_json(fake_ollama: FakeOllama) -> None:
    assert httpx.get(f"{fake_ollama.url}/api/version").json() == {"version": "0.12.0"}
    assert httpx.get(f"{fake_ollama.url}/api/ps").json() == {"models": []}


def test_tags_lists_the_default_models_without_capabilities(fake_ollama: FakeOllama) -> None:
    models = httpx.get(f"{fake_ollama.url}/api/tags").json()["models"]
    assert [m["name"] for m in models] == ["llava:7b", "gemma3:4b", "llama3.2:3b"]
    assert models[0]["details"]["format"] == "gguf"
    assert all("capabilities" not in m for m in models)


def test_show_reports_vision_and_a_projector_for_a_vision_model(fake_ollama: FakeOllama) -> None:
    body = post(fake_ollama, "/api/show", {"model": "gemma3:4b"}).json()
    assert body["capabilities"] == ["completion", "vision"]
    assert "projector_info" in body


def test_show_reports_completion_and_tools_for_a_text_only_model(fake_ollama: FakeOllama) -> None:
    body = post(fake_ollama, "/api/show", {"name": "llama3.2:3b"}).json()
    assert body["capabilities"] == ["completion", "tools"]
    assert "projector_info" not in body


def test_show_answers_404_for_an_unknown_model(fake_ollama: FakeOllama) -> None:
    response = post(fake_ollama, "/api/show", {"model": "llava"})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'llava:latest' not found"}


def test_show_without_a_model_is_400(fake_ollama: FakeOllama) -> None:
    response = post(fake_ollama, "/api/show", {})
    assert response.status_code == 400
    assert response.json() == {"error": "model is required"}


def test_generate_streams_ndjson_and_puts_text_in_the_final_chunk(fake_ollama: FakeOllama) -> None:
    response = post(fake_ollama, "/api/generate", {"model": "llava:7b", "prompt": "Describe", "images": [PNG_B64]})
    assert response.headers["content-type"].startswith("application/x-ndjson")
    chunks = lines(response)
    assert [c["done"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    final = chunks[-1]
    assert final["response"] != "" and final["done_reason"] == "stop"
    metrics = {"total_duration", "load_duration", "prompt_eval_count", "eval_count", "eval_duration", "context"}
    assert metrics <= set(final)
    assert "".join(c["response"] for c in chunks) == fake_ollama.reply_for("llava:7b", "Describe")


def test_generate_without_streaming_returns_the_whole_text_in_one_object(fake_ollama: FakeOllama) -> None:
    response = post(fake_ollama, "/api/generate", {"model": "llava:7b", "prompt": "Hi", "stream": False})
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["done"] is True and body["done_reason"] == "stop"
    assert body["response"] == fake_ollama.reply_for("llava:7b", "Hi")


def test_replies_set_per_model_replace_the_default_text(fake_ollama: FakeOllama) -> None:
    fake_ollama.replies["gemma3:4b"] = "A blue circle."
    body = post(fake_ollama, "/api/generate", {"model": "gemma3:4b", "prompt": "x", "stream": False}).json()
    assert body["response"] == "A blue circle."


def test_generate_records_the_request_and_the_decoded_images(fake_ollama: FakeOllama) -> None:
    body = {"model": "llava:7b", "prompt": "Describe", "images": [PNG_B64], "stream": False}
    post(fake_ollama, "/api/generate", body)
    recorded = fake_ollama.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", "/api/generate")
    assert recorded.json["prompt"] == "Describe"
    assert recorded.images == [PNG]
    fake_ollama.clear()
    assert fake_ollama.requests == []


def test_generate_rejects_a_data_url_image_like_go_base64(fake_ollama: FakeOllama) -> None:
    image = f"data:image/png;base64,{PNG_B64}"
    response = post(fake_ollama, "/api/generate", {"model": "llava:7b", "prompt": "x", "images": [image]})
    assert response.status_code == 400
    assert response.json() == {"error": "illegal base64 data at input byte 4"}


def test_generate_answers_404_for_an_unknown_or_empty_model(fake_ollama: FakeOllama) -> None:
    response = post(fake_ollama, "/api/generate", {"model": "llava:13b", "prompt": "x"})
    assert response.status_code == 404
    assert response.json() == {"error": "model 'llava:13b' not found"}
    assert post(fake_ollama, "/api/generate", {"prompt": "x"}).json() == {"error": "model '' not found"}


def test_generate_rejects_an_empty_body_and_invalid_json_with_400(fake_ollama: FakeOllama) -> None:
    empty = post(fake_ollama, "/api/generate", content=b"")
    assert (empty.status_code, empty.json()) == (400, {"error": "missing request body"})
    broken = post(fake_ollama, "/api/generate", content=b"{nope")
    assert broken.status_code == 400 and "invalid character" in broken.json()["error"]


def test_generate_with_an_empty_prompt_only_loads_the_model(fake_ollama: FakeOllama) -> None:
    body = post(fake_ollama, "/api/generate", {"model": "llava:7b"}).json()
    assert (body["response"], body["done"], body["done_reason"]) == ("", True, "load")


def test_images_sent_to_a_text_only_model_fail_with_500(fake_ollama: FakeOllama) -> None:
    response = post(fake_ollama, "/api/generate", {"model": "llama3.2:3b", "prompt": "x", "images": [PNG_B64]})
    assert response.status_code == 500
    assert "missing data required for image input" in response.json()["error"]


def test_no_vision_mode_fails_images_even_for_a_vision_model(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "no_vision"
    response = post(fake_ollama, "/api/generate", {"model": "llava:7b", "prompt": "x", "images": [PNG_B64]})
    assert response.status_code == 500
    assert response.json()["error"].startswith("Failed to create new sequence")


def test_midstream_error_mode_ends_a_200_stream_with_an_error_line(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "midstream_error"
    response = post(fake_ollama, "/api/generate", {"model": "llava:7b", "prompt": "x"})
    chunks = lines(response)
    assert response.status_code == 200
    assert chunks[-1] == {"error": "an error was encountered while running the model"}
    assert len(chunks) > 1 and not any(c.get("done") for c in chunks)


def test_busy_mode_answers_503(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "busy"
    response = post(fake_ollama, "/api/generate", {"model": "llava:7b", "prompt": "x"})
    assert response.status_code == 503
    assert response.json()["error"].startswith("server busy")


def test_500_mode_answers_every_route_with_an_error_body(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "500"
    response = httpx.get(f"{fake_ollama.url}/api/tags")
    assert response.status_code == 500
    assert set(response.json()) == {"error"}


def test_refuse_mode_refuses_connections_then_recovers_on_the_same_port(fake_ollama: FakeOllama) -> None:
    url = fake_ollama.url
    fake_ollama.mode = "refuse"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)
    fake_ollama.mode = "ok"
    assert fake_ollama.url == url
    assert httpx.get(url).text == "Ollama is running"


def test_hang_mode_makes_the_client_time_out(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "hang"
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{fake_ollama.url}/api/tags", timeout=0.3)


def test_drop_mode_ends_the_stream_without_a_done_chunk(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "drop"
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", f"{fake_ollama.url}/api/generate", json={"model": "llava:7b", "prompt": "x"}) as r:
            received.extend(json.loads(line) for line in r.iter_lines() if line)
    assert received and not any(chunk["done"] for chunk in received)


def test_drop_mode_closes_other_requests_without_a_response(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "drop"
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{fake_ollama.url}/api/tags")


def test_truncate_mode_ends_the_stream_cleanly_but_without_a_done_chunk(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "truncate"
    response = post(fake_ollama, "/api/generate", {"model": "llava:7b", "prompt": "x"})
    chunks = lines(response)
    assert response.status_code == 200
    assert len(chunks) == 2 and not any(chunk["done"] or "error" in chunk for chunk in chunks)


def test_stall_mode_sends_the_first_chunks_then_nothing_until_the_mode_changes(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "stall"
    received = []
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream(
            "POST", f"{fake_ollama.url}/api/generate", json={"model": "llava:7b", "prompt": "x"}, timeout=0.5
        ) as r:
            received.extend(json.loads(line) for line in r.iter_lines() if line)
    assert len(received) == 2 and not any(chunk["done"] for chunk in received)


def test_latency_delays_the_answer(fake_ollama: FakeOllama) -> None:
    fake_ollama.latency = 0.3
    started = time.monotonic()
    httpx.get(f"{fake_ollama.url}/api/version")
    assert time.monotonic() - started >= 0.3


def test_chunk_delay_lets_a_client_see_chunks_arrive_one_by_one(fake_ollama: FakeOllama) -> None:
    fake_ollama.chunk_delay = 0.05
    arrivals = []
    with httpx.stream("POST", f"{fake_ollama.url}/api/generate", json={"model": "llava:7b", "prompt": "x"}) as r:
        for line in r.iter_lines():
            if line:
                arrivals.append(time.monotonic())
    assert len(arrivals) > 3
    assert arrivals[-1] - arrivals[0] >= 0.05 * (len(arrivals) - 2)


def test_unknown_paths_and_wrong_methods_get_gin_plain_text(fake_ollama: FakeOllama) -> None:
    missing = httpx.get(f"{fake_ollama.url}/api/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    wrong = httpx.get(f"{fake_ollama.url}/api/generate")
    assert (wrong.status_code, wrong.text) == (405, "405 method not allowed")


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        FakeOllama(mode="sleepy")


def test_stop_closes_the_port() -> None:
    fake = FakeOllama().start()
    url = fake.url
    fake.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


# --- /api/chat ------------------------------------------------------------------


def chat_body(model: str = "llava:7b", content: str = "What is it?", images: list[Any] | None = None, **extra: Any):
    message: dict[str, Any] = {"role": "user", "content": content, "images": [PNG_B64] if images is None else images}
    return {"model": model, "messages": [message], **extra}


def test_chat_streams_message_pieces_and_ends_with_the_done_line(fake_ollama: FakeOllama) -> None:
    response = post(fake_ollama, "/api/chat", chat_body(content="Describe"))
    assert response.headers["content-type"].startswith("application/x-ndjson")
    chunks = lines(response)
    expected = fake_ollama.reply_for("llava:7b", "Describe")
    assert len(chunks) == len(expected.split()) and len(chunks) > 2
    assert [c["done"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(c["message"]["role"] == "assistant" and "response" not in c for c in chunks)
    assert "".join(c["message"]["content"] for c in chunks) == expected
    final = chunks[-1]
    assert final["done_reason"] == "stop" and final["eval_count"] == len(chunks)
    assert {"total_duration", "load_duration", "prompt_eval_count", "eval_duration"} <= set(final)
    assert "context" not in final


def test_chat_without_streaming_answers_one_object(fake_ollama: FakeOllama) -> None:
    response = post(fake_ollama, "/api/chat", chat_body(content="Hi", stream=False))
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["message"] == {"role": "assistant", "content": fake_ollama.reply_for("llava:7b", "Hi")}
    assert body["done"] is True and body["done_reason"] == "stop" and "context" not in body


def test_chat_answers_the_last_user_message_and_records_every_image_in_order(fake_ollama: FakeOllama) -> None:
    other = base64.b64encode(b"another picture").decode()
    messages = [
        {"role": "SYSTEM", "content": "Be brief."},
        {"role": "user", "content": "First?", "images": [PNG_B64]},
        {"role": "assistant", "content": "A thing."},
        {"role": "user", "content": "And these?", "images": [other, PNG_B64]},
    ]
    body = post(fake_ollama, "/api/chat", {"model": "llava:7b", "messages": messages, "stream": False}).json()
    assert body["message"]["content"] == fake_ollama.reply_for("llava:7b", "And these?")
    assert fake_ollama.requests[-1].images == [PNG, b"another picture", PNG]
    assert body["prompt_eval_count"] > 3 * 576


def test_chat_rejects_a_data_url_in_any_message_like_go_base64(fake_ollama: FakeOllama) -> None:
    messages = [
        {"role": "user", "content": "a", "images": [PNG_B64]},
        {"role": "user", "content": "b", "images": [f"data:image/png;base64,{PNG_B64}"]},
    ]
    response = post(fake_ollama, "/api/chat", {"model": "llava:7b", "messages": messages})
    assert (response.status_code, response.json()) == (400, {"error": "illegal base64 data at input byte 4"})


def test_chat_rejects_values_of_the_wrong_json_type_as_go_does(fake_ollama: FakeOllama) -> None:
    number_image = post(fake_ollama, "/api/chat", chat_body(images=[7]))
    assert number_image.status_code == 400
    assert number_image.json()["error"] == (
        "json: cannot unmarshal number into Go struct field Message.messages.images of type api.ImageData"
    )
    text_messages = post(fake_ollama, "/api/chat", {"model": "llava:7b", "messages": "hello"})
    assert "ChatRequest.messages of type []api.Message" in text_messages.json()["error"]
    number_role = post(fake_ollama, "/api/chat", {"model": "llava:7b", "messages": [{"role": 1}]})
    assert "Message.messages.role of type string" in number_role.json()["error"]


def test_chat_needs_a_model_and_a_known_one(fake_ollama: FakeOllama) -> None:
    missing = post(fake_ollama, "/api/chat", chat_body(model=""))
    assert (missing.status_code, missing.json()) == (400, {"error": "model is required"})
    unknown = post(fake_ollama, "/api/chat", chat_body(model="llava:13b"))
    assert (unknown.status_code, unknown.json()) == (404, {"error": "model 'llava:13b' not found"})


def test_chat_rejects_an_empty_body_and_invalid_json_with_400(fake_ollama: FakeOllama) -> None:
    empty = post(fake_ollama, "/api/chat", content=b"")
    assert (empty.status_code, empty.json()) == (400, {"error": "missing request body"})
    broken = post(fake_ollama, "/api/chat", content=b"[1,")
    assert broken.status_code == 400 and broken.json() == {"error": "unexpected EOF"}


def test_chat_without_messages_only_loads_the_model(fake_ollama: FakeOllama) -> None:
    body = post(fake_ollama, "/api/chat", {"model": "llava:7b", "messages": []}).json()
    assert (body["message"]["content"], body["done"], body["done_reason"]) == ("", True, "load")
    unloaded = post(fake_ollama, "/api/chat", {"model": "llava:7b", "messages": [], "keep_alive": 0}).json()
    assert unloaded["done_reason"] == "unload"


def test_chat_images_to_a_text_only_model_or_in_no_vision_mode_fail_with_500(fake_ollama: FakeOllama) -> None:
    text_only = post(fake_ollama, "/api/chat", chat_body(model="llama3.2:3b"))
    assert text_only.status_code == 500 and "missing data required for image input" in text_only.json()["error"]
    fake_ollama.mode = "no_vision"
    vision = post(fake_ollama, "/api/chat", chat_body())
    assert vision.status_code == 500 and vision.json()["error"].startswith("Failed to create new sequence")


def test_chat_has_the_same_busy_and_midstream_failures_as_generate(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "busy"
    assert post(fake_ollama, "/api/chat", chat_body()).status_code == 503
    fake_ollama.mode = "midstream_error"
    chunks = lines(post(fake_ollama, "/api/chat", chat_body()))
    assert chunks[-1] == {"error": "an error was encountered while running the model"}
    assert len(chunks) == 3 and all(c["message"]["content"] for c in chunks[:-1])
    fake_ollama.mode = "truncate"
    truncated = lines(post(fake_ollama, "/api/chat", chat_body()))
    assert len(truncated) == 2 and not any(c["done"] for c in truncated)


def test_chat_drop_mode_breaks_the_stream_after_some_chunks(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "drop"
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", f"{fake_ollama.url}/api/chat", json=chat_body()) as r:
            received.extend(json.loads(line) for line in r.iter_lines() if line)
    assert len(received) == 2 and not any(chunk["done"] for chunk in received)
