"""Sending several images, a folder or a ZIP from the page makes a batch; a bad file is skipped, not fatal."""

from __future__ import annotations

import zipfile
from io import BytesIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from imagetotext.models import Batch, Duplicates, Job

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/ImageToText/jobs"


def png_data(colour: str) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, "PNG")
    return buffer.getvalue()


def png(colour: str, name: str = "") -> SimpleUploadedFile:
    return SimpleUploadedFile(name or f"{colour}.png", png_data(colour), content_type="image/png")


def zip_of(members: dict[str, bytes], name: str = "photos.zip") -> SimpleUploadedFile:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in members.items():
            archive.writestr(path, data)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/zip")


def test_one_image_stays_a_single_job_and_keeps_its_file_name(user_client, ollama_agent):
    response = user_client.post(
        URL, {"images": [png("red", "Holiday 01.png")], "model": "llava:7b"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    job = Job.objects.get()
    assert (job.batch, job.path) == (None, "Holiday 01.png")
    assert Batch.objects.count() == 0


def test_several_images_become_a_batch_and_a_bad_one_is_skipped_and_named(user_client, ollama_agent, api_user):
    bad = SimpleUploadedFile("notes.txt", b"just some words", content_type="text/plain")
    response = user_client.post(
        URL, {"images": [png("red"), bad, png("blue")], "model": "llava:7b", "tag": "set"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    batch = Batch.objects.get()
    assert (batch.owner, batch.total, batch.tag) == (api_user, 2, "set")
    assert sorted(batch.jobs.values_list("path", flat=True)) == ["blue.png", "red.png"]
    html = response.content.decode()
    assert f'href="/ImageToText/batches/{batch.pk}"' in html
    assert "1 of 3 was skipped: notes.txt: The file is not an image in an accepted format" in html
    # The errors box is emptied: something was sent.
    assert "Nothing was sent" not in html


def test_a_folder_of_more_than_100_files_with_their_paths_is_one_batch(user_client, ollama_agent):
    count = 150  # above Django's defaults of 100 files and, with a path each, of 1,000 fields at 1,000
    response = user_client.post(
        URL,
        {
            "images": [png("red", f"{i}.png") for i in range(count)],
            "paths": [f"shoot/{i}.png" for i in range(count)],
            "model": "llava:7b",
        },
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200, response.content
    batch = Batch.objects.get()
    assert (batch.total, batch.name) == (count, "shoot")
    assert set(batch.jobs.values_list("path", flat=True)) == {f"shoot/{i}.png" for i in range(count)}


def test_folder_paths_sent_beside_the_files_are_kept_sanitised(user_client, ollama_agent):
    user_client.post(
        URL,
        {
            "images": [png("red"), png("blue")],
            "paths": ["trip/day 1/red.png", "trip/../day2/blue.png"],
            "model": "llava:7b",
        },
        HTTP_HX_REQUEST="true",
    )
    batch = Batch.objects.get()
    # A path that climbs out (..) falls back to the file's own name.
    assert sorted(batch.jobs.values_list("path", flat=True)) == ["blue.png", "trip/day 1/red.png"]


def test_a_zip_becomes_a_batch_with_nested_paths_and_its_corrupt_member_listed(user_client, ollama_agent):
    archive = zip_of(
        {
            "set/a/one.png": png_data("red"),
            "set/b/c/two.png": png_data("blue"),
            "set/broken.png": b"\x89PNG\r\n\x1a\n" + b"not really",
            "set/readme.md": b"# notes",
        }
    )
    response = user_client.post(URL, {"images": [archive], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    batch = Batch.objects.get()
    assert batch.name == "photos.zip"
    assert sorted(batch.jobs.values_list("path", flat=True)) == ["set/a/one.png", "set/b/c/two.png"]
    assert {each["path"] for each in batch.skipped} == {"set/broken.png", "set/readme.md"}
    assert "2 of 4 were skipped: " in response.content.decode()


def test_prefix_suffix_and_what_to_do_with_duplicates_reach_the_batch(user_client, ollama_agent):
    user_client.post(
        URL,
        {
            "images": [png("red"), png("blue")],
            "model": "llava:7b",
            "preset": "tags",
            "caption_prefix": "sks, ",
            "caption_suffix": " (photo)",
            "duplicates": Duplicates.REUSE,
        },
        HTTP_HX_REQUEST="true",
    )
    batch = Batch.objects.get()
    assert (batch.prefix, batch.suffix, batch.duplicates, batch.preset.key) == ("sks, ", " (photo)", "reuse", "tags")
    assert batch.prompt.startswith("List 10 to 15 comma-separated keywords")


def test_a_batch_with_no_readable_image_sends_nothing_and_says_why(user_client, ollama_agent):
    response = user_client.post(
        URL,
        {"images": [zip_of({"a.txt": b"words", "b.md": b"more words"})], "model": "llava:7b"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    assert (
        "The ZIP holds no image we can read (a.txt: not an image (.txt), b.md: not an image (.md))"
        in response.content.decode()
    )
    assert (Batch.objects.count(), Job.objects.count()) == (0, 0)


def test_a_file_that_is_not_a_zip_at_all_is_refused_readably(user_client, ollama_agent):
    fake = SimpleUploadedFile("archive.zip", b"not a zip", content_type="application/zip")
    response = user_client.post(URL, {"images": [fake], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert "The file is not a ZIP archive we can read" in response.content.decode()


def test_without_htmx_a_batch_redirects_to_its_page(user_client, ollama_agent):
    response = user_client.post(URL, {"images": [png("red"), png("blue")], "model": "llava:7b"})
    assert response.status_code == 302
    assert response["Location"] == f"/ImageToText/batches/{Batch.objects.get().pk}"


def test_a_batchs_jobs_are_not_cards_on_the_page_but_a_single_job_is(user_client, ollama_agent):
    user_client.post(URL, {"images": [png("red"), png("blue")], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    user_client.post(URL, {"images": [png("green")], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    html = user_client.get("/ImageToText").content.decode()
    single = Job.objects.get(batch__isnull=True)
    assert html.count('class="job-card ') == 1 and f'id="job-{single.pk}"' in html


def test_images_run_again_with_new_ones_stay_single_jobs(user_client, ollama_agent):
    user_client.post(URL, {"images": [png("red")], "model": "llava:7b"}, HTTP_HX_REQUEST="true")
    first = Job.objects.get()
    response = user_client.post(
        URL,
        {"again": [str(first.pk)], "images": [png("blue"), png("green")], "model": "llava:7b"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert Batch.objects.count() == 0
    assert sorted(Job.objects.values_list("path", flat=True)) == ["blue.png", "green.png", "red.png", "red.png"]
