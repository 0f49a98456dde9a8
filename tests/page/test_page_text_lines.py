"""Text read off an image keeps its lines on the card, in the history and on the job page;
a Markdown answer keeps its single line breaks; a job that found no text says so."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone

from agents.models import Agent, Kind
from imagetotext.models import Job, State

pytestmark = pytest.mark.django_db(transaction=True)
THREE_LINES = "OPEN DAILY\n9AM - 5PM\nCLOSED SUNDAYS"


def done(owner, image, output: str, **fields) -> Job:
    now = timezone.now()
    fields.setdefault("model", "llava:7b")
    return Job.objects.create(
        owner=owner, image=image, state=State.COMPLETED, started_at=now, finished_at=now, output=output, **fields
    )


def output_of(html: str, job: Job) -> str:
    card = html[html.index(f'id="job-{job.pk}"') :]
    return re.search(r'class="job-output[^"]*">(.*?)</(?:div|p)>', card, re.S).group(0)


def test_florence_ocr_text_shows_its_three_lines_as_they_are(user_client, api_user, image):
    job = done(api_user, image, THREE_LINES, model="microsoft/Florence-2-base", florence_task="ocr")
    for url in ("/ImageToText", f"/ImageToText/jobs/{job.pk}"):
        shown = output_of(user_client.get(url).content.decode(), job)
        assert 'class="job-output job-output--lines"' in shown, url
        assert "OPEN DAILY\n9AM - 5PM\nCLOSED SUNDAYS" in shown, url
        assert "<p>" not in shown, url


def test_the_built_in_ocr_text_is_shown_as_lines_not_markdown(user_client, api_user, image):
    local = Agent.objects.create(name="Built-in OCR", kind=Kind.LOCAL, online=True)
    job = done(api_user, image, "# not a heading\n*not emphasis*", model="local/ocr", agent=local)
    shown = output_of(user_client.get("/ImageToText").content.decode(), job)
    assert "# not a heading\n*not emphasis*" in shown
    assert "<h1>" not in shown and "<em>" not in shown


def test_a_markdown_answer_keeps_its_single_line_breaks(user_client, api_user, image):
    job = done(api_user, image, "**Address**\n1 High Street\nLondon", prompt="Where is this?")
    shown = output_of(user_client.get("/ImageToText").content.decode(), job)
    assert 'class="job-output markdown"' in shown
    assert "<strong>Address</strong><br>\n1 High Street<br>\nLondon" in shown


def test_the_history_keeps_the_lines_of_the_text(user_client, api_user, image):
    done(api_user, image, THREE_LINES, model="microsoft/Florence-2-base", florence_task="ocr")
    html = user_client.get("/ImageToText/history").content.decode()
    assert '<p class="history-output">OPEN DAILY\n9AM - 5PM\nCLOSED SUNDAYS</p>' in html


def test_an_empty_result_says_no_text_was_found_and_cannot_be_copied(user_client, api_user, image):
    job = done(api_user, image, "", model="microsoft/Florence-2-base", florence_task="ocr")
    html = user_client.get("/ImageToText").content.decode()
    card = html[html.index(f'id="job-{job.pk}"') :]
    card = card[: card.index("</article>")]
    assert '<p class="job-output job-output--empty">No text found</p>' in card
    assert '<button type="button" class="button" disabled>Copy text</button>' in card
    assert "data-copy-from" not in card and "data-copy-url" not in card


def test_whitespace_only_counts_as_no_text_in_the_history_too(user_client, api_user, image):
    done(api_user, image, " \n ", model="local/ocr")
    html = user_client.get("/ImageToText/history").content.decode()
    assert "No text found" in html
    assert "Copy text" not in html


def test_a_failed_job_is_not_called_empty(user_client, api_user, image):
    Job.objects.create(owner=api_user, image=image, model="llava:7b", state=State.FAILED, error="model crashed")
    html = user_client.get("/ImageToText").content.decode()
    assert "No text found" not in html
    assert "Failed: model crashed" in html
