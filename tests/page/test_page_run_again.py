"""Run again carries what a job was sent with, from its card, the history and its own page."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from django.utils import timezone

from imagetotext.models import Job, State

pytestmark = pytest.mark.django_db(transaction=True)


def finished_job(owner, image, **fields) -> Job:
    return Job.objects.create(
        owner=owner, image=image, state=State.COMPLETED, output="Done.", finished_at=timezone.now(), **fields
    )


def again_data(html: str, job: Job) -> dict[str, str]:
    """The data-* attributes of the element that runs `job` again."""
    tag = re.search(rf'<[^>]*data-again="{job.pk}"[^>]*>', html).group(0)
    return {name: html_lib.unescape(value) for name, value in re.findall(r'data-([a-z-]+)="([^"]*)"', tag)}


def test_the_cards_run_again_carries_model_prompt_task_and_tag(user_client, api_user, image):
    job = finished_job(api_user, image, model="llava:7b", prompt='Say "hi" & <go>', tag="shop")
    data = again_data(user_client.get("/ImageToText").content.decode(), job)
    assert data["model"] == "llava:7b"
    assert data["prompt"] == 'Say "hi" & <go>'
    assert data["task"] == ""
    assert data["tag"] == "shop"
    assert data["again-url"] == f"/ImageToText?again={job.pk}"
    assert data["thumb"] == f"/ImageToText/thumbnails/{image.sha256}.webp"


def test_the_history_and_the_job_page_offer_run_again_too(user_client, api_user, image):
    job = finished_job(api_user, image, model="microsoft/Florence-2-base", florence_task="ocr", tag="signs")
    for url in ("/ImageToText/history", f"/ImageToText/jobs/{job.pk}"):
        data = again_data(user_client.get(url).content.decode(), job)
        assert (data["model"], data["task"], data["tag"]) == ("microsoft/Florence-2-base", "ocr", "signs"), url


def test_the_page_opened_to_run_a_job_again_carries_that_job(user_client, api_user, image, ollama_agent):
    job = finished_job(api_user, image, model="gemma3:4b", prompt="What colour?", tag="t1")
    html = user_client.get(f"/ImageToText?again={job.pk}").content.decode()
    assert '<span id="run-again-on-load" hidden' in html
    data = again_data(html, job)
    assert (data["model"], data["prompt"], data["tag"]) == ("gemma3:4b", "What colour?", "t1")


@pytest.mark.parametrize("again", ["unfinished", "someone-elses", "not-a-number", "²"])
def test_run_again_on_load_ignores_what_it_cannot_run(user_client, api_user, image, django_user_model, again):
    bob = django_user_model.objects.create_user("bob", password="pw-for-tests-only")
    value = {
        "unfinished": lambda: Job.objects.create(owner=api_user, image=image, model="llava:7b").pk,
        "someone-elses": lambda: finished_job(bob, image, model="llava:7b").pk,
    }.get(again, lambda: again)()
    response = user_client.get(f"/ImageToText?again={value}")
    assert response.status_code == 200
    assert "run-again-on-load" not in response.content.decode()


def test_a_job_without_an_image_cannot_be_run_again(user_client, api_user):
    job = finished_job(api_user, None, model="llava:7b")
    assert "run-again-on-load" not in user_client.get(f"/ImageToText?again={job.pk}").content.decode()
    assert f'data-again="{job.pk}"' not in user_client.get("/ImageToText").content.decode()
