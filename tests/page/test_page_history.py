"""History: the user's requests newest first, pages, search, and deleting."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone

from imagetotext.models import Job, State, StoredImage

pytestmark = pytest.mark.django_db(transaction=True)


def done(owner, image, **fields):
    fields.setdefault("model", "llava:7b")
    return Job.objects.create(owner=owner, image=image, state=State.COMPLETED, finished_at=timezone.now(), **fields)


def shown(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<li class="history-row" id="history-(\d+)">', html)]


def test_it_lists_requests_newest_first_twenty_a_page(user_client, api_user, image):
    jobs = [done(api_user, image, output=f"answer {n}") for n in range(25)]
    first = user_client.get("/ImageToText/history").content.decode()
    assert shown(first) == [job.pk for job in reversed(jobs)][:20]
    assert "Page 1 of 2" in first and "25 requests." in first
    second = user_client.get("/ImageToText/history?page=2").content.decode()
    assert shown(second) == [job.pk for job in reversed(jobs[:5])]


def test_it_searches_prompt_and_answer_text(user_client, api_user, image):
    cat = done(api_user, image, output="A cat on a mat.")
    invoice = done(api_user, image, prompt="Read the invoice number.")
    done(api_user, image, output="A dog.")
    assert shown(user_client.get("/ImageToText/history?q=CAT").content.decode()) == [cat.pk]
    assert shown(user_client.get("/ImageToText/history?q=invoice").content.decode()) == [invoice.pk]


def test_it_filters_by_model_and_tag_and_keeps_them_across_pages(user_client, api_user, image):
    gemma = [done(api_user, image, model="gemma3:4b", tag="receipts") for _ in range(21)]
    done(api_user, image, model="llava:7b", tag="receipts")
    done(api_user, image, model="gemma3:4b", tag="holiday")
    html = user_client.get("/ImageToText/history?model=gemma3:4b&tag=receipts").content.decode()
    assert shown(html) == [job.pk for job in reversed(gemma)][:20]
    assert 'href="?model=gemma3%3A4b&amp;tag=receipts&amp;page=2"' in html
    assert '<option value="holiday">holiday</option>' in html


def test_nothing_found_is_said_plainly(user_client, api_user, image):
    done(api_user, image, output="A cat.")
    assert "Nothing matches this search." in user_client.get("/ImageToText/history?q=zebra").content.decode()


def test_each_result_opens_and_can_be_copied(user_client, api_user, image):
    job = done(api_user, image, output="Raw *text*")
    html = user_client.get("/ImageToText/history").content.decode()
    assert f'href="/ImageToText/jobs/{job.pk}"' in html
    assert f'data-copy-from="history-{job.pk}-raw"' in html and "Raw *text*</textarea>" in html


def test_deleting_a_job_keeps_an_image_another_job_uses(user_client, api_user, image):
    first, second = done(api_user, image), done(api_user, image)
    response = user_client.post(f"/ImageToText/jobs/{first.pk}/delete", {"next": "/ImageToText/history?q=x"})
    assert response.status_code == 302
    assert response["Location"] == "/ImageToText/history?q=x"
    assert list(Job.objects.all()) == [second]
    image.refresh_from_db()
    assert image.file.storage.exists(image.file.name)


def test_deleting_a_job_while_an_upload_takes_its_image_up_keeps_the_image(user_client, api_user, image):
    """An upload of the same bytes found the image and has not committed its job yet: the job is
    deleted, the image stays for the upload (PostgreSQL: held by the upload; SQLite: one writer)."""
    from django.db import transaction

    from imagetotext.models import store_image
    from tests.meanwhile import Meanwhile

    job = done(api_user, image)
    data = image.file.read()
    deleting = Meanwhile(lambda: user_client.post(f"/ImageToText/jobs/{job.pk}/delete").status_code)
    with transaction.atomic():
        again, _ = store_image(data, image.content_type, image.width, image.height)
        deleting.go()
        deleting.done.wait(1.0)  # SQLite: waits for this transaction's write lock; PostgreSQL: for the image
        uploaded = done(api_user, again)

    assert deleting.join() == 302
    assert list(Job.objects.all()) == [uploaded]
    assert again.pk == image.pk and StoredImage.objects.filter(pk=image.pk).exists()
    assert image.file.storage.exists(image.file.name)


def test_deleting_the_last_job_of_an_image_removes_the_image_and_its_file(user_client, api_user, image):
    job = done(api_user, image)
    name, storage = image.file.name, image.file.storage
    response = user_client.post(f"/ImageToText/jobs/{job.pk}/delete", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert not Job.objects.exists()
    assert not StoredImage.objects.exists()
    assert not storage.exists(name)


def test_a_job_still_running_cannot_be_deleted(user_client, api_user, image):
    job = Job.objects.create(owner=api_user, image=image, model="llava:7b")
    response = user_client.post(f"/ImageToText/jobs/{job.pk}/delete")
    assert response.status_code == 409
    assert Job.objects.filter(pk=job.pk).exists()


def test_deleting_needs_a_post(user_client, api_user, image):
    job = done(api_user, image)
    assert user_client.get(f"/ImageToText/jobs/{job.pk}/delete").status_code == 405
    assert Job.objects.filter(pk=job.pk).exists()
