"""One job from the page: its card in each state, retry, cancel, detail page, and who may see it."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from imagetotext.models import Job, State

pytestmark = pytest.mark.django_db(transaction=True)


def make_job(owner, image, **fields):
    return Job.objects.create(owner=owner, image=image, model=fields.pop("model", "llava:7b"), **fields)


def test_a_queued_card_shows_its_place_in_the_queue(user_client, api_user, image):
    make_job(api_user, image)
    second = make_job(api_user, image)
    html = user_client.get("/ImageToText").content.decode()
    assert f'id="job-{second.pk}"' in html
    assert "Queued, position 2" in html
    assert f'hx-post="/ImageToText/jobs/{second.pk}/cancel"' in html


def test_a_running_card_names_its_agent_and_counts_from_its_start(user_client, api_user, image, ollama_agent):
    started = timezone.now() - timedelta(seconds=5)
    job = make_job(api_user, image, state=State.STARTED, agent=ollama_agent, started_at=started, output="A red sq")
    html = user_client.get(f"/ImageToText/jobs/{job.pk}").content.decode()
    assert "Running on gpu" in html
    assert f'data-started="{started.isoformat()}"' in html
    assert f'<div id="job-{job.pk}-text" class="job-text" aria-live="off">A red sq</div>' in html


def test_a_done_card_renders_sanitised_markdown_with_speed_and_the_raw_text_to_copy(user_client, api_user, image):
    now = timezone.now()
    job = make_job(
        api_user,
        image,
        state=State.COMPLETED,
        started_at=now - timedelta(seconds=2),
        finished_at=now,
        output="# Title\n<script>alert(1)</script>*fine* [x](javascript:alert(1))",
        completion_tokens=50,
    )
    html = user_client.get(f"/ImageToText/jobs/{job.pk}").content.decode()
    rendered = re.search(r'<div class="job-output markdown">(.*?)</div>', html, re.S).group(1)
    assert "<h1>Title</h1>" in rendered and "<em>fine</em>" in rendered
    assert "<script" not in rendered and "javascript:" not in rendered
    assert "Done in 2.0 s · 25.0 tokens/s" in html
    assert f'<textarea id="job-{job.pk}-raw"' in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Copy text" in html and "Run again" in html


def test_a_failed_card_gives_the_reason_and_retry_queues_it_again(user_client, api_user, image, ollama_agent):
    job = make_job(api_user, image, state=State.FAILED, error="gpu: model crashed", finished_at=timezone.now())
    assert "Failed: gpu: model crashed" in user_client.get("/ImageToText").content.decode()
    response = user_client.post(f"/ImageToText/jobs/{job.pk}/retry", HTTP_HX_REQUEST="true")
    assert response.status_code == 204  # the queued card comes over the WebSocket
    job.refresh_from_db()
    assert (job.state, job.error) == (State.QUEUED, "")


def test_retry_of_a_model_that_is_gone_says_why_on_the_card(user_client, api_user, image):
    job = make_job(api_user, image, model="vanished:1b", state=State.FAILED, finished_at=timezone.now())
    response = user_client.post(f"/ImageToText/jobs/{job.pk}/retry")
    assert "Could not retry: Model vanished:1b not found" in response.content.decode()
    job.refresh_from_db()
    assert job.state == State.FAILED


def test_cancel_stops_a_queued_job(user_client, api_user, image):
    job = make_job(api_user, image)
    response = user_client.post(f"/ImageToText/jobs/{job.pk}/cancel")
    assert response.status_code == 200
    assert "Cancelled" in response.content.decode()
    job.refresh_from_db()
    assert job.state == State.CANCELLED


def test_another_users_job_is_not_found_and_not_shown(client, django_user_model, api_user, image):
    job = make_job(api_user, image, output="alice's secret")
    bob = django_user_model.objects.create_user("bob", password="pw-for-tests-only")
    client.force_login(bob)
    assert client.get(f"/ImageToText/jobs/{job.pk}").status_code == 404
    assert client.post(f"/ImageToText/jobs/{job.pk}/retry").status_code == 404
    assert client.post(f"/ImageToText/jobs/{job.pk}/cancel").status_code == 404
    assert client.post(f"/ImageToText/jobs/{job.pk}/delete").status_code == 404
    assert client.get(f"/ImageToText/thumbnails/{image.sha256}.webp").status_code == 404
    assert f'id="job-{job.pk}"' not in client.get("/ImageToText").content.decode()
    assert "alice" not in client.get("/ImageToText/history?q=secret").content.decode()
    job.refresh_from_db()
    assert job.state == State.QUEUED


def test_the_thumbnail_is_a_small_webp_cached_by_its_content(user_client, api_user, image):
    make_job(api_user, image)
    response = user_client.get(f"/ImageToText/thumbnails/{image.sha256}.webp")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert response["ETag"] == f'"{image.sha256}-320"'
    assert "max-age=31536000" in response["Cache-Control"] and "private" in response["Cache-Control"]
    assert response.content[:4] == b"RIFF" and response.content[8:12] == b"WEBP"
    again = user_client.get(f"/ImageToText/thumbnails/{image.sha256}.webp", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304
    assert again.content == b""
