"""Downloads from the page: a batch's dataset (ZIP, CSV, JSONL) and the results of a history search."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import zipfile

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from imagetotext.models import Batch, Job, State
from imagetotext.page import exports

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def batch(api_user, image) -> Batch:
    batch = Batch.objects.create(owner=api_user, model="llava:7b", prompt="Caption it.", total=2, prefix="sks, ")
    now = timezone.now()
    Job.objects.create(
        owner=api_user,
        image=image,
        batch=batch,
        path="trip/b.png",
        model="llava:7b",
        prompt="Caption it.",
        state=State.COMPLETED,
        output="a blue sky",
        edited_text="a blue sky, edited",
        started_at=now,
        finished_at=now,
    )
    Job.objects.create(
        owner=api_user,
        image=image,
        batch=batch,
        path="trip/a.png",
        model="llava:7b",
        prompt="Caption it.",
        state=State.FAILED,
        error="boom",
        started_at=now,
        finished_at=now,
    )
    return batch


def body(response) -> bytes:
    """The whole download; its chunks come from an async iterator, as an ASGI server reads them."""

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(collect)()


def test_the_zip_holds_each_image_under_its_path_with_its_caption_beside_it(user_client, batch, png_bytes):
    response = user_client.get(f"/ImageToText/batches/{batch.pk}/export?format=zip")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == f'attachment; filename="batch-{batch.pk}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(body(response)))
    assert archive.namelist() == ["trip/a.png", "trip/b.png", "trip/b.txt", "captions.csv", "captions.jsonl"]
    assert archive.read("trip/b.png") == png_bytes
    assert archive.read("trip/b.txt") == b"a blue sky, edited\n"  # the edit, not the model's text


def test_the_csv_and_jsonl_list_every_item_with_its_kept_and_original_caption(user_client, batch):
    rows = list(
        csv.DictReader(
            io.StringIO(body(user_client.get(f"/ImageToText/batches/{batch.pk}/export?format=csv")).decode())
        )
    )
    assert [(row["path"], row["caption"], row["original_caption"], row["state"]) for row in rows] == [
        ("trip/a.png", "", "", "Failed"),
        ("trip/b.png", "a blue sky, edited", "a blue sky", "Completed"),
    ]
    lines = body(user_client.get(f"/ImageToText/batches/{batch.pk}/export?format=jsonl")).decode().splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["trip/a.png", "trip/b.png"]
    assert json.loads(lines[1])["model"] == "llava:7b"


def test_an_unknown_format_is_refused_readably(user_client, batch):
    response = user_client.get(f"/ImageToText/batches/{batch.pk}/export?format=rar")
    assert response.status_code == 400
    assert "Choose format=zip, csv or jsonl." in response.content.decode()


def test_the_history_exports_only_what_its_search_found(user_client, api_user, batch, image):
    Job.objects.create(owner=api_user, image=image, path="other.png", model="llava:7b", output="elsewhere")
    page = user_client.get("/ImageToText/history", {"q": "trip/"}).content.decode()
    assert 'href="/ImageToText/history/export?q=trip%2F&amp;format=csv"' in page
    response = user_client.get("/ImageToText/history/export", {"q": "trip/", "format": "csv"})
    assert response.status_code == 200
    paths = [row["path"] for row in csv.DictReader(io.StringIO(body(response).decode()))]
    assert sorted(paths) == ["trip/a.png", "trip/b.png"]


def test_the_history_export_holds_only_the_users_own_jobs(user_client, admin_user, batch, image):
    Job.objects.create(owner=admin_user, image=image, path="trip/theirs.png", model="llava:7b", output="secret")
    response = user_client.get("/ImageToText/history/export", {"format": "jsonl"})
    paths = [json.loads(line)["path"] for line in body(response).decode().splitlines()]
    assert "trip/theirs.png" not in paths and len(paths) == 2


async def test_an_export_is_made_only_as_fast_as_it_is_read_and_stops_when_the_reader_goes():
    made: list[int] = []

    def chunks():
        for number in range(10_000):
            made.append(number)
            yield b"x" * 1024

    stream = exports.streamed(chunks())
    assert await stream.__anext__() == b"x" * 1024
    await asyncio.sleep(0.3)
    ahead = len(made)
    assert ahead <= exports.QUEUED_CHUNKS + 2  # not the whole export in memory
    await stream.aclose()  # the client went away
    await asyncio.sleep(exports.PUT_WAIT_SECONDS * 3)
    assert len(made) <= ahead + 1
