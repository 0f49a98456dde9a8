"""A dataset batch through the API, as the issue's "Done when" says: a ZIP of nested folders with a
corrupt member and one image the backend fails on; an edit, a retry, a cancel, and the exports, exactly."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from imagetotext.models import Batch, Job, State
from tests.fakes.base import RECORDED
from tests.fakes.ollama import FakeOllama, decode_image

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_run_inline")]

PROMPT = "Caption it."
REFUSED = "illegal base64 data at input byte 4"


class PixelOllama(FakeOllama):
    """Answers each image with its own caption, named by its colour, and refuses the colours in
    `broken` as Ollama refuses an image it cannot take (HTTP 400 with Ollama's error member)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.broken: set[tuple[int, int, int]] = set()
        self._colour: tuple[int, int, int] | None = None

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        images = json.loads(request[RECORDED].body or b"{}").get("images") or []
        self._colour = colour_of(decode_image(images[0])) if images else None
        if self._colour in self.broken:
            return web.json_response({"error": REFUSED}, status=400)
        return await super()._generate(request)  # reply_for runs before its first await

    def reply_for(self, model: str, prompt: str) -> str:
        if self._colour is None or model in self.replies:
            return super().reply_for(model, prompt)
        return f"A square of {self._colour} ({model})."


def colour_of(data: bytes) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return tuple(im.convert("RGB").getpixel((0, 0)))  # type: ignore[return-value]


def colour(index: int) -> tuple[int, int, int]:
    return (index * 4 % 256, 255 - index * 3 % 256, 100 + index % 7)


def png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16 + index % 5, 12), colour(index)).save(buffer, "PNG")
    return buffer.getvalue()


def caption_of(index: int) -> str:
    return f"A square of {colour(index)} (llava:7b)."


def dataset(count: int) -> dict[str, bytes]:
    """count distinct images by path, in nested folders."""
    return {f"set/{'cats' if i % 2 else 'dogs/small'}/img{i:03}.png": png(i) for i in range(count)}


def zipped(members: dict[str, bytes]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return SimpleUploadedFile("holiday.zip", buffer.getvalue(), content_type="application/zip")


@pytest.fixture
def fake_ollama() -> Iterator[PixelOllama]:
    with PixelOllama() as fake:
        yield fake


def queue(client: Client, **fields: Any) -> Any:
    return client.post("/api/QueueImageToTextBatch", {"Model": "llava:7b", "Prompt": PROMPT, **fields})


def status(client: Client, batch_id: int, **query: Any) -> dict[str, Any]:
    response = client.get("/api/GetBatchStatus", {"BatchId": batch_id, **query})
    assert response.status_code == 200, response.content
    return response.json()


def export(client: Client, batch_id: int, kind: str) -> bytes:
    response = client.get(f"/api/GetBatchExport?BatchId={batch_id}&Format={kind}")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="holiday.{kind}"'
    return b"".join(response.streaming_content)  # type: ignore[arg-type]


def test_a_zip_batch_is_captioned_edited_retried_and_exported_exactly(
    api_client: Client, ollama_agent, fake_ollama: PixelOllama
) -> None:
    members = dataset(52)
    members["set/cats/broken.png"] = png(99)[:60]  # cut short: not a whole PNG
    fails = "set/dogs/small/img010.png"
    fake_ollama.broken.add(colour(10))

    response = queue(api_client, zip=zipped(members), RefId="holiday-1")

    body = response.json()
    assert response.status_code == 200, body
    assert body["total"] == 52 and body["refId"] == "holiday-1"
    assert body["statusUrl"] == f"http://testserver/api/GetBatchStatus?BatchId={body['batchId']}"
    assert [each["path"] for each in body["skipped"]] == ["set/cats/broken.png"]
    assert "truncated or corrupt" in body["skipped"][0]["reason"]
    batch_id = body["batchId"]

    done = status(api_client, batch_id, Take=1000)
    assert done["state"] == "Completed"
    assert done["counts"] == {"queued": 0, "running": 0, "completed": 51, "failed": 1, "cancelled": 0, "total": 52}
    items = {item["path"]: item for item in done["items"]}
    assert sorted(items) == sorted(path for path in members if "broken" not in path)
    assert items[fails]["jobState"] == "Failed" and REFUSED in items[fails]["error"]
    assert items["set/cats/img001.png"]["text"] == caption_of(1)

    edited = "A teal square, hand-checked."
    edit = api_client.post(
        "/api/UpdateBatchCaption",
        json.dumps({"jobId": items["set/cats/img001.png"]["jobId"], "caption": edited}),
        content_type="application/json",
    )
    assert edit.status_code == 200 and edit.json()["originalText"] == caption_of(1)

    fake_ollama.broken.clear()
    retried = api_client.post("/api/RetryBatch", {"BatchId": batch_id})
    assert retried.json() == {"batchId": batch_id, "retried": 1}
    after = status(api_client, batch_id, Take=1000)
    assert after["counts"]["completed"] == 52 and after["counts"]["failed"] == 0

    archive = zipfile.ZipFile(io.BytesIO(export(api_client, batch_id, "zip")))
    good = sorted(path for path in members if "broken" not in path)
    sidecars = [path.removesuffix(".png") + ".txt" for path in good]
    assert sorted(archive.namelist()) == sorted([*good, *sidecars, "captions.csv", "captions.jsonl"])
    for index, path in enumerate(sorted(members, key=lambda p: int(p[-7:-4]) if "img" in p else -1)):
        if "broken" in path:
            continue
        assert archive.read(path) == members[path]
        expected = edited if path == "set/cats/img001.png" else caption_of(index - 1)
        assert archive.read(path.removesuffix(".png") + ".txt").decode() == expected + "\n"

    jobs = {job.path: job for job in Job.objects.filter(batch_id=batch_id)}
    expected_rows = [
        {
            "path": path,
            "caption": edited if path == "set/cats/img001.png" else caption_of(int(path[-7:-4])),
            "original_caption": caption_of(int(path[-7:-4])),
            "model": "llava:7b",
            "prompt": PROMPT,
            "state": "Completed",
            "duration_seconds": round(jobs[path].duration or 0, 3),
            "job_id": jobs[path].pk,
        }
        for path in sorted(jobs, key=lambda p: jobs[p].pk)
    ]
    jsonl = export(api_client, batch_id, "jsonl").decode()
    assert [json.loads(line) for line in jsonl.splitlines()] == expected_rows
    assert archive.read("captions.jsonl").decode() == jsonl
    csv_text = export(api_client, batch_id, "csv").decode()
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert rows == [{key: str(value) for key, value in row.items()} for row in expected_rows]
    assert csv_text.startswith("path,caption,original_caption,model,prompt,state,duration_seconds,job_id\r\n")
    assert archive.read("captions.csv").decode() == csv_text


@pytest.fixture
def not_run(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Keep queued jobs queued: record what would go to the workers."""
    sent: list[int] = []
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda func, job_id, **kw: sent.append(job_id))
    return sent


def test_a_batch_cancelled_halfway_keeps_what_ended_and_cancels_the_rest(
    api_client: Client, ollama_agent, not_run: list[int]
) -> None:
    from imagetotext.tasks import run_assigned

    images = [SimpleUploadedFile(f"photo{i}.png", png(i), content_type="image/png") for i in range(8)]
    batch_id = queue(api_client, image=images).json()["batchId"]
    for job_id in list(dict.fromkeys(not_run))[:2]:
        run_assigned(job_id)
    ran = Job.objects.filter(batch_id=batch_id, state=State.COMPLETED).count()

    response = api_client.post("/api/CancelBatch", {"BatchId": batch_id})

    assert response.status_code == 200
    assert response.json() == {"batchId": batch_id, "cancelled": 8 - ran}
    after = status(api_client, batch_id)
    assert ran >= 2
    assert after["state"] == "Cancelled"
    assert after["counts"]["completed"] == ran and after["counts"]["cancelled"] == 8 - ran
    assert [item["path"] for item in after["items"]] == [f"photo{i}.png" for i in range(8)]
    assert Batch.objects.get().finished_at is not None


def test_another_users_batch_is_not_found(api_client: Client, ollama_agent, django_user_model) -> None:
    from imagetotext.models import ApiKey

    batch_id = queue(api_client, image=[SimpleUploadedFile("a.png", png(1))]).json()["batchId"]
    job_id = Job.objects.get().pk
    other = Client(HTTP_AUTHORIZATION=f"Bearer {ApiKey.issue(django_user_model.objects.create_user('bob'), 'b')[1]}")

    answers = [
        other.get(f"/api/GetBatchStatus?BatchId={batch_id}"),
        other.get(f"/api/GetBatchExport?BatchId={batch_id}"),
        other.post("/api/CancelBatch", {"BatchId": batch_id}),
        other.post("/api/RetryBatch", {"BatchId": batch_id}),
        other.post("/api/UpdateBatchCaption", {"JobId": job_id, "Caption": "mine"}),
    ]

    assert [answer.status_code for answer in answers] == [404] * 5
    assert all(answer.json()["responseStatus"]["errorCode"] == "NotFound" for answer in answers)
    assert Job.objects.get().edited_text is None and Job.objects.get().state == State.COMPLETED


def test_status_pages_through_a_batch(api_client: Client, ollama_agent, not_run: list[int]) -> None:
    images = [SimpleUploadedFile(f"p{i}.png", png(i)) for i in range(5)]
    batch_id = queue(api_client, image=images).json()["batchId"]

    page = status(api_client, batch_id, Skip=2, Take=2)
    refused = api_client.get(f"/api/GetBatchStatus?BatchId={batch_id}&Take=1001")

    assert [item["path"] for item in page["items"]] == ["p2.png", "p3.png"]
    assert page["state"] == "Queued" and page["counts"]["queued"] == 5
    assert refused.status_code == 400
    assert refused.json()["responseStatus"]["errors"][0]["fieldName"] == "Take"
