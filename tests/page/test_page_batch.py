"""A batch's page: owner only, progress, a paged grid, inline caption edits, retry, cancel, skipped files."""

from __future__ import annotations

import pytest
from django.utils import timezone

from imagetotext.models import Batch, Job, State
from imagetotext.page.batch_cards import ITEMS_PER_PAGE

pytestmark = pytest.mark.django_db(transaction=True)


def make_batch(owner, image, count: int = 3, **fields) -> Batch:
    batch = Batch.objects.create(owner=owner, model="llava:7b", prompt="Caption it.", total=count, **fields)
    for number in range(count):
        Job.objects.create(owner=owner, image=image, batch=batch, path=f"set/{number:04}.png", model="llava:7b")
    return batch


def finish(job: Job, state: str = State.COMPLETED, **fields) -> None:
    now = timezone.now()
    Job.objects.filter(pk=job.pk).update(state=state, started_at=now, finished_at=now, **fields)


def test_only_the_owner_sees_a_batch_others_get_404(client, user_client, api_user, admin_user, image):
    batch = make_batch(admin_user, image)
    assert user_client.get(f"/ImageToText/batches/{batch.pk}").status_code == 404
    assert user_client.get(f"/ImageToText/batches/{batch.pk}/export?format=csv").status_code == 404
    assert user_client.post(f"/ImageToText/batches/{batch.pk}/cancel").status_code == 404
    assert Job.objects.filter(batch=batch, state=State.QUEUED).count() == 3
    anonymous = client.__class__()
    assert anonymous.get(f"/ImageToText/batches/{batch.pk}").status_code == 302


def test_the_list_shows_the_users_batches_with_how_far_they_got(user_client, api_user, admin_user, image):
    mine = make_batch(api_user, image, name="holiday.zip")
    make_batch(admin_user, image, name="not-mine.zip")
    finish(mine.jobs.first())
    html = user_client.get("/ImageToText/batches").content.decode()
    assert "holiday.zip" in html and "not-mine.zip" not in html
    assert "1 of 3 done" in html


def test_every_page_links_to_the_batches_for_a_signed_in_user(client, user_client):
    assert '<a href="/ImageToText/batches">Batches</a>' in user_client.get("/ImageToText").content.decode()
    assert "/ImageToText/batches" not in client.__class__().get("/accounts/login/").content.decode()


def test_the_page_shows_progress_captions_with_prefix_and_the_skipped_files(user_client, api_user, image):
    batch = make_batch(
        api_user, image, prefix="sks, ", skipped=[{"path": "set/notes.txt", "reason": "not an image (.txt)"}]
    )
    first, second, third = batch.jobs.order_by("path")
    finish(first, output="a red square")
    finish(second, State.FAILED, error="the backend fell over")
    html = user_client.get(f"/ImageToText/batches/{batch.pk}").content.decode()
    assert '<progress max="3" value="2"' in html
    assert "2 of 3 done" in html and "1 failed" in html and "0 running, 1 queued" in html
    assert "sks, a red square" in html
    assert "Failed: the backend fell over" in html
    assert "<code>set/notes.txt</code>: not an image (.txt)" in html
    assert "Retry 1 failed" in html and "Cancel the rest" in html
    for format in ("zip", "csv", "jsonl"):
        assert f'href="/ImageToText/batches/{batch.pk}/export?format={format}"' in html
    assert f'ws-connect="/ws/jobs/?batch={batch.pk}&amp;page=1"' in html


def test_the_grid_is_paged_so_a_large_batch_stays_small(user_client, api_user, image):
    batch = make_batch(api_user, image, count=ITEMS_PER_PAGE + 5)
    first = user_client.get(f"/ImageToText/batches/{batch.pk}").content.decode()
    assert first.count('class="batch-item ') == ITEMS_PER_PAGE
    assert "Page 1 of 2" in first
    second = user_client.get(f"/ImageToText/batches/{batch.pk}?page=2").content.decode()
    assert second.count('class="batch-item ') == 5
    assert f"set/{ITEMS_PER_PAGE + 4:04}.png" in second


def test_a_caption_is_edited_inline_and_the_original_stays_to_be_seen(user_client, api_user, image):
    batch = make_batch(api_user, image, count=1)
    job = batch.jobs.get()
    finish(job, output="a red square")
    base = f"/ImageToText/batches/{batch.pk}/items/{job.pk}/caption"
    editor = user_client.get(base, HTTP_HX_REQUEST="true").content.decode()
    assert f'<textarea id="caption-{job.pk}" name="caption"' in editor and ">a red square</textarea>" in editor
    saved = user_client.post(base + "/save", {"caption": "a crimson square"}, HTTP_HX_REQUEST="true")
    assert saved.status_code == 200
    html = saved.content.decode()
    assert "a crimson square" in html and "the model's original" in html and "a red square" in html
    job.refresh_from_db()
    assert (job.edited_text, job.output) == ("a crimson square", "a red square")


def test_a_caption_not_finished_cannot_be_edited(user_client, api_user, image):
    batch = make_batch(api_user, image, count=1)
    job = batch.jobs.get()
    response = user_client.post(f"/ImageToText/batches/{batch.pk}/items/{job.pk}/caption/save", {"caption": "x"})
    assert response.status_code == 409
    job.refresh_from_db()
    assert job.edited_text is None


def test_another_users_item_cannot_be_edited(user_client, admin_user, image):
    batch = make_batch(admin_user, image, count=1)
    job = batch.jobs.get()
    finish(job, output="theirs")
    response = user_client.post(f"/ImageToText/batches/{batch.pk}/items/{job.pk}/caption/save", {"caption": "mine"})
    assert response.status_code == 404
    job.refresh_from_db()
    assert job.edited_text is None


def test_retry_runs_the_failed_items_again(user_client, api_user, image, ollama_agent):
    batch = make_batch(api_user, image, count=2)
    failed, done = batch.jobs.order_by("path")
    finish(failed, State.FAILED, error="boom")
    finish(done, output="fine")
    response = user_client.post(f"/ImageToText/batches/{batch.pk}/retry", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert 'id="batch-progress"' in response.content.decode()
    failed.refresh_from_db()
    done.refresh_from_db()
    assert (failed.state, done.state) == (State.QUEUED, State.COMPLETED)


def test_cancel_stops_the_items_not_done_and_keeps_the_done_ones(user_client, api_user, image):
    batch = make_batch(api_user, image, count=3)
    done = batch.jobs.order_by("path").first()
    finish(done, output="fine")
    response = user_client.post(f"/ImageToText/batches/{batch.pk}/cancel")
    assert response.status_code == 302
    states = dict(batch.jobs.values_list("pk", "state"))
    assert states.pop(done.pk) == State.COMPLETED
    assert set(states.values()) == {State.CANCELLED}
    assert "2 cancelled" in user_client.get(f"/ImageToText/batches/{batch.pk}").content.decode()


def test_cards_history_and_the_job_page_show_the_file_path(user_client, api_user, image):
    single = Job.objects.create(owner=api_user, image=image, path="holiday/beach.png", model="llava:7b")
    assert ">holiday/beach.png</a></h3>" in user_client.get("/ImageToText").content.decode()
    batch = make_batch(api_user, image, count=1)
    job = batch.jobs.get()
    history = user_client.get("/ImageToText/history").content.decode()
    assert f">{job.path}</a>" in history and f">{single.path}</a>" in history
    page = user_client.get(f"/ImageToText/jobs/{job.pk}").content.decode()
    assert f"<dt>File</dt><dd>{job.path}</dd>" in page
    assert f'href="/ImageToText/batches/{batch.pk}"' in page


def test_history_finds_a_job_by_its_file_name(user_client, api_user, image):
    make_batch(api_user, image, count=3)
    html = user_client.get("/ImageToText/history", {"q": "0002.png"}).content.decode()
    assert "1 request found" in html and "set/0002.png" in html and "set/0001.png" not in html


def test_a_caption_refused_keeps_the_editor_open_with_the_reason(user_client, api_user, image):
    batch = make_batch(api_user, image, count=1)
    job = batch.jobs.get()
    finish(job, output="a red square")
    response = user_client.post(
        f"/ImageToText/batches/{batch.pk}/items/{job.pk}/caption/save", {"caption": "bad\x00"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert f'id="item-{job.pk}"' in html and f'<textarea id="caption-{job.pk}"' in html
    assert "The caption must not contain NUL characters" in html
    job.refresh_from_db()
    assert job.edited_text is None
