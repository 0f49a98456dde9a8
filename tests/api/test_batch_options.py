"""QueueImageToTextBatch's options and refusals: duplicates, prefix and suffix, presets, limits, ZIPs
refused whole, and the batch's one callback."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from imagetotext import batches
from imagetotext.models import Batch, Job, Preset, State, StoredImage
from tests.api.test_batch_api import PixelOllama, caption_of, png, queue, status, zipped
from tests.api.test_batch_api import fake_ollama as fake_ollama  # noqa: F401  (fixture)
from tests.jobs.test_callbacks import SECRET, Receiver, callback_conf, receiver  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_run_inline")]


def images(*indexes: int) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(f"img{i}.png", png(i), content_type="image/png") for i in indexes]


def refusal(response: Any) -> dict[str, Any]:
    return response.json()["responseStatus"]


def test_prefix_and_suffix_are_added_to_every_caption_as_given(api_client: Client, ollama_agent) -> None:
    batch_id = queue(api_client, image=images(1, 2), Prefix="sks photo, ", Suffix=" --v2").json()["batchId"]

    items = status(api_client, batch_id)["items"]

    assert [item["text"] for item in items] == [f"sks photo, {caption_of(i)} --v2" for i in (1, 2)]
    assert [item["originalText"] for item in items] == [caption_of(1), caption_of(2)]


def test_reuse_takes_the_earlier_caption_without_asking_the_backend(
    api_client: Client, ollama_agent, fake_ollama: PixelOllama
) -> None:
    queue(api_client, image=images(1))
    asked = generated(fake_ollama)

    second = queue(api_client, image=images(1, 2), Duplicates="Reuse").json()
    items = status(api_client, second["batchId"])["items"]

    assert generated(fake_ollama) == asked + 1  # only the new image
    assert [(item["jobState"], item["text"]) for item in items] == [
        ("Completed", caption_of(1)),
        ("Completed", caption_of(2)),
    ]
    assert "Reused the caption of job" in Job.objects.get(batch_id=second["batchId"], path="img1.png").status


def test_append_runs_again_and_extends_the_earlier_caption(api_client: Client, ollama_agent, fake_ollama) -> None:
    queue(api_client, image=images(3))
    fake_ollama.replies["llava:7b"] = "Second look."

    batch_id = queue(api_client, image=images(3), Duplicates="append").json()["batchId"]

    [item] = status(api_client, batch_id)["items"]
    assert item["text"] == f"{caption_of(3)}\nSecond look."
    assert item["originalText"] == "Second look."


def test_again_runs_a_known_image_as_new(api_client: Client, ollama_agent, fake_ollama) -> None:
    queue(api_client, image=images(3))
    fake_ollama.replies["llava:7b"] = "Second look."

    batch_id = queue(api_client, image=images(3)).json()["batchId"]

    assert [item["text"] for item in status(api_client, batch_id)["items"]] == ["Second look."]


def test_a_preset_gives_the_prompt(api_client: Client, ollama_agent, fake_ollama, presets) -> None:
    fake_ollama.replies["llava:7b"] = "ok"
    data = {"Model": "llava:7b", "Preset": "caption", "image": images(1)}

    api_client.post("/api/QueueImageToTextBatch", data)

    assert Job.objects.get().prompt == Preset.objects.get(key="caption").prompt


@pytest.mark.parametrize(
    ("fields", "status_code", "field", "message"),
    [
        ({"Preset": "poem"}, 400, "Preset", "Unknown preset 'poem'"),
        ({"Duplicates": "sometimes"}, 400, "Duplicates", "Duplicates must be one of again, reuse, append"),
        ({"Model": "nobody:1b"}, 404, "Model", "Model nobody:1b not found"),
    ],
)
def test_a_bad_option_refuses_the_batch_and_stores_nothing(
    api_client: Client, ollama_agent, fields, status_code, field, message
) -> None:
    response = queue(api_client, image=images(1), **fields)

    assert response.status_code == status_code
    assert refusal(response)["errors"][0]["fieldName"] == field
    assert refusal(response)["message"].startswith(message)
    assert not Batch.objects.exists() and not Job.objects.exists() and not StoredImage.objects.exists()


def test_a_file_that_is_not_a_zip_is_refused(api_client: Client, ollama_agent) -> None:
    response = queue(api_client, zip=SimpleUploadedFile("a.zip", b"not a zip at all"))

    assert response.status_code == 400
    assert refusal(response)["message"].startswith("The file is not a ZIP archive we can read")
    assert not Batch.objects.exists()


def test_a_zip_with_too_many_images_is_refused_whole(
    api_client: Client, ollama_agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches.Limits, "MAX_ITEMS", 3)

    response = queue(api_client, zip=zipped({f"{i}.png": png(i) for i in range(4)}))

    assert response.status_code == 400
    assert refusal(response)["message"] == "The ZIP holds 4 images; the limit is 3."
    assert not Job.objects.exists()


def test_more_image_parts_than_djangos_default_of_100_are_one_batch(api_client: Client, ollama_agent) -> None:
    response = queue(api_client, image=images(*range(120)))

    assert response.status_code == 200, response.content
    assert response.json()["total"] == 120
    assert Job.objects.filter(state=State.COMPLETED).count() == 120


def test_too_many_image_parts_are_refused(api_client: Client, ollama_agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches.Limits, "MAX_ITEMS", 2)

    response = queue(api_client, image=images(1, 2, 3))

    assert response.status_code == 413
    assert refusal(response)["message"] == "The batch holds 3 images; the limit is 2"
    assert not Job.objects.exists()


def test_a_batch_over_its_byte_limit_is_refused(
    api_client: Client, ollama_agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches.Limits, "MAX_BYTES", len(png(1)) + len(png(2)) - 1)

    response = queue(api_client, image=images(1, 2))

    assert response.status_code == 413 and refusal(response)["errorCode"] == "BatchTooLarge"
    assert not Job.objects.exists()


def test_a_bad_file_is_skipped_and_the_others_run(api_client: Client, ollama_agent) -> None:
    bad = SimpleUploadedFile("notes.png", b"plain text, not a picture")

    body = queue(api_client, image=[*images(1), bad]).json()

    assert body["total"] == 1
    assert body["skipped"] == [
        {
            "path": "notes.png",
            "reason": "The file is not an image in an accepted format (JPEG, PNG, GIF, WebP, BMP, TIFF).",
        }
    ]
    assert Job.objects.get().state == State.COMPLETED


def test_a_batch_of_only_bad_files_is_refused(api_client: Client, ollama_agent) -> None:
    response = queue(api_client, image=[SimpleUploadedFile("a.png", b"nope")])

    assert response.status_code == 400
    assert "No image of the batch could be read (a.png:" in refusal(response)["message"]
    assert not Batch.objects.exists()


def test_image_and_zip_parts_together_are_refused(api_client: Client, ollama_agent) -> None:
    response = queue(api_client, image=images(1), zip=zipped({"a.png": png(2)}))

    assert response.status_code == 400 and refusal(response)["errors"][0]["fieldName"] == "Zip"


def test_a_key_restricted_to_other_apis_may_not_queue_a_batch(ollama_agent, api_user) -> None:
    from imagetotext.models import ApiKey

    key = ApiKey.issue(api_user, "single", restrict_to=["QueueImageToText"])[1]

    response = queue(Client(HTTP_AUTHORIZATION=f"Bearer {key}"), image=images(1))

    assert response.status_code == 403
    assert refusal(response)["message"] == "This API key may not call QueueImageToTextBatch"


def test_a_caption_over_the_limit_is_refused_and_the_old_one_kept(api_client: Client, ollama_agent) -> None:
    queue(api_client, image=images(1))
    job = Job.objects.get()

    response = api_client.post(
        "/api/UpdateBatchCaption",
        json.dumps({"JobId": job.pk, "Caption": "x" * 100_001}),
        content_type="application/json",
    )

    assert response.status_code == 400 and refusal(response)["errors"][0]["fieldName"] == "Caption"
    job.refresh_from_db()
    assert job.edited_text is None


def test_the_batch_calls_its_reply_to_once_when_every_item_ended(
    api_client: Client, ollama_agent, receiver: Receiver
) -> None:
    body = queue(api_client, image=images(1, 2, 3), ReplyTo=receiver.url, State="set-9", RefId="b-1").json()

    [received] = receiver.requests
    sent = received.json()
    assert sent["batchId"] == body["batchId"] and sent["refId"] == "b-1" and sent["replyState"] == "set-9"
    assert sent["state"] == "Completed" and sent["counts"]["completed"] == 3
    assert [item["text"] for item in sent["items"]] == [caption_of(i) for i in (1, 2, 3)]
    assert received.headers["X-Callback-Id"] == "b-1"
    assert received.headers["Idempotency-Key"].startswith('"')
    assert Batch.objects.get().callback_attempts.get().delivered is True
    assert not Job.objects.filter(callback_deliveries__isnull=False).exists()  # items owe none of their own


def test_retried_items_end_the_batch_again_with_a_new_callback(
    api_client: Client, ollama_agent, fake_ollama: PixelOllama, receiver: Receiver
) -> None:
    from tests.api.test_batch_api import colour

    fake_ollama.broken.add(colour(2))
    batch_id = queue(api_client, image=images(1, 2), ReplyTo=receiver.url).json()["batchId"]
    fake_ollama.broken.clear()

    api_client.post("/api/RetryBatch", {"BatchId": batch_id})

    first, second = (request.json() for request in receiver.requests)
    assert first["counts"]["failed"] == 1 and second["counts"]["completed"] == 2
    keys = {request.headers["Idempotency-Key"] for request in receiver.requests}
    assert len(keys) == 2


def test_queue_image_to_text_keeps_the_file_name_and_takes_a_preset(
    api_client: Client, ollama_agent, presets, not_run_single
) -> None:
    upload = SimpleUploadedFile("../holiday/beach day.png", png(1), content_type="image/png")

    response = api_client.post("/api/QueueImageToText", {"image": upload, "Model": "llava:7b", "Preset": "alt"})
    refused = api_client.post("/api/QueueImageToText", {"image": images(2)[0], "Model": "llava:7b", "Preset": "x"})

    job = Job.objects.get(pk=response.json()["jobId"])
    assert job.path == "beach day.png"
    assert job.prompt == Preset.objects.get(key="alt").prompt
    assert refused.status_code == 400 and refusal(refused)["message"] == "Unknown preset 'x'"


@pytest.fixture
def not_run_single(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda *args, **kwargs: None)


def test_the_ref_id_finds_the_batch_and_cannot_be_used_twice(api_client: Client, ollama_agent) -> None:
    queue(api_client, image=images(1), RefId="mine")

    again = queue(api_client, image=images(2), RefId="mine")
    found = api_client.get("/api/GetBatchStatus?refId=mine")

    assert again.status_code == 400 and refusal(again)["errors"][0]["fieldName"] == "RefId"
    assert found.status_code == 200 and found.json()["refId"] == "mine"


def test_an_export_of_a_zip_keeps_its_nested_paths(api_client: Client, ollama_agent) -> None:
    batch_id = queue(api_client, zip=zipped({"a/b/c.png": png(1), "a/d.png": png(2)})).json()["batchId"]

    archive = zipfile.ZipFile(io.BytesIO(b"".join(api_client.get(f"/api/GetBatchExport?BatchId={batch_id}"))))

    assert archive.namelist() == ["a/b/c.png", "a/b/c.txt", "a/d.png", "a/d.txt", "captions.csv", "captions.jsonl"]


def generated(fake: PixelOllama) -> int:
    return sum(request.path == "/api/generate" for request in fake.requests)


def test_batch_replies_are_as_documented(api_client: Client, ollama_agent) -> None:
    from tests.api.test_openapi import assert_documented

    queued = queue(api_client, image=images(1), Prefix="p ")
    batch_id = queued.json()["batchId"]
    job_id = Job.objects.get().pk

    assert_documented(queued, "/api/QueueImageToTextBatch")
    assert_documented(api_client.get(f"/api/GetBatchStatus?BatchId={batch_id}"), "/api/GetBatchStatus", "get")
    assert_documented(api_client.post("/api/CancelBatch", {"BatchId": batch_id}), "/api/CancelBatch")
    assert_documented(api_client.post("/api/RetryBatch", {"BatchId": batch_id}), "/api/RetryBatch")
    edit = api_client.post("/api/UpdateBatchCaption", {"JobId": job_id, "Caption": "mine"})
    assert_documented(edit, "/api/UpdateBatchCaption")
    assert_documented(api_client.get("/api/GetBatchStatus?BatchId=999"), "/api/GetBatchStatus", "get")


def test_zip_members_that_escape_or_are_not_images_are_skipped_with_their_reason(
    api_client: Client, ollama_agent
) -> None:
    members = {"ok/a.png": png(1), "../evil.png": png(2), "notes/readme.txt": b"hello"}

    body = queue(api_client, zip=zipped(members)).json()

    assert body["total"] == 1
    assert body["skipped"] == [
        {"path": "../evil.png", "reason": "the path leads out of the archive (..)"},
        {"path": "notes/readme.txt", "reason": "not an image (.txt)"},
    ]
    assert list(Job.objects.values_list("path", flat=True)) == ["ok/a.png"]
