"""A very long answer: cards and history show its start, the job page and the text endpoint all of it."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from aiserver.asgi import application
from imagetotext.live import publish_change, publish_text
from imagetotext.models import Job, State

pytestmark = pytest.mark.django_db(transaction=True)
LONG = "A *word* of it. " * 31_249 + "The end: THE-END"  # 500,000 characters
SMALL = 30_000  # bytes of HTML: a page of cards, not a copy of the answer


@pytest.fixture
def long_job(api_user, image) -> Job:
    assert len(LONG) == 500_000
    return Job.objects.create(
        owner=api_user,
        image=image,
        model="llava:7b",
        output=LONG,
        state=State.COMPLETED,
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )


def test_the_page_shows_the_start_of_a_long_answer_and_links_to_all_of_it(user_client, long_job):
    response = user_client.get("/ImageToText")
    html = response.content.decode()
    assert len(response.content) < SMALL
    assert "A <em>word</em> of it." in html and "THE-END" not in html
    assert f'<a href="/ImageToText/jobs/{long_job.pk}">Show all</a>' in html
    # Copy fetches the whole text instead of carrying it in the page.
    assert f'data-copy-url="/ImageToText/jobs/{long_job.pk}/text"' in html


def test_the_history_page_stays_small_and_copies_through_the_text_endpoint(user_client, long_job):
    response = user_client.get("/ImageToText/history")
    assert len(response.content) < SMALL
    html = response.content.decode()
    assert "THE-END" not in html
    assert f'data-copy-url="/ImageToText/jobs/{long_job.pk}/text"' in html


def test_the_history_still_finds_a_word_past_the_preview(user_client, long_job):
    html = user_client.get("/ImageToText/history?q=THE-END").content.decode()
    assert f'id="history-{long_job.pk}"' in html


def test_a_short_answer_is_copied_from_the_page_itself(user_client, api_user, image):
    job = Job.objects.create(owner=api_user, image=image, model="llava:7b", output="Short.", state=State.COMPLETED)
    for url in ("/ImageToText", "/ImageToText/history"):
        html = user_client.get(url).content.decode()
        assert "data-copy-url" not in html and "Short.</textarea>" in html, url
    assert "Show all" not in user_client.get("/ImageToText").content.decode()
    assert job.pk


def test_the_job_page_shows_the_whole_answer(user_client, long_job):
    html = user_client.get(f"/ImageToText/jobs/{long_job.pk}").content.decode()
    assert "THE-END" in html and "Show all" not in html
    assert html.count("A <em>word</em> of it.") == 31_249


def test_the_text_endpoint_gives_the_owner_the_whole_text(user_client, long_job):
    response = user_client.get(f"/ImageToText/jobs/{long_job.pk}/text")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == LONG


def test_the_text_endpoint_is_not_found_for_another_user(long_job, django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("bob", password="pw-for-tests-only"))
    assert client.get(f"/ImageToText/jobs/{long_job.pk}/text").status_code == 404


def test_the_text_endpoint_sends_strangers_to_sign_in(long_job):
    response = Client().get(f"/ImageToText/jobs/{long_job.pk}/text")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


# Over the WebSocket


def socket_for(user, path: str) -> WebsocketCommunicator:
    client = Client()
    client.force_login(user)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    return WebsocketCommunicator(application, path, headers=[(b"origin", b"http://127.0.0.1"), cookie])


@pytest.mark.usefixtures("async_orm_connections_closed")
async def test_the_list_pages_socket_sends_a_small_card_and_the_job_pages_the_whole_answer(api_user, long_job):
    for path, whole in (("/ws/jobs/", False), (f"/ws/jobs/?job={long_job.pk}", True)):
        socket = await sync_to_async(socket_for)(api_user, path)
        assert (await socket.connect())[0]
        await socket.receive_from(timeout=10)  # the resync on connect
        await sync_to_async(publish_change)(long_job.pk, api_user.pk, State.COMPLETED)
        card = await socket.receive_from(timeout=10)
        assert ("THE-END" in card) is whole, path
        assert whole or len(card.encode()) < SMALL
        await socket.disconnect()


@pytest.mark.usefixtures("async_orm_connections_closed")
async def test_a_long_text_streams_to_the_list_page_as_its_start(api_user, long_job):
    await Job.objects.filter(pk=long_job.pk).aupdate(state=State.STARTED, finished_at=None)
    socket = await sync_to_async(socket_for)(api_user, "/ws/jobs/")
    assert (await socket.connect())[0]
    resent = await socket.receive_from(timeout=10)
    assert len(resent.encode()) < SMALL and "THE-END" not in resent
    await sync_to_async(publish_text)(long_job.pk, api_user.pk, LONG)
    text = await socket.receive_from(timeout=10)
    assert len(text.encode()) < SMALL and text.endswith("…</div>\n")
    await socket.disconnect()
