"""The page's WebSocket: signed-in users only, their own cards only, and a resync on connect."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from aiserver.asgi import application
from imagetotext.live import publish_change, publish_text
from imagetotext.models import Job, State

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("async_orm_connections_closed")]
ORIGIN = (b"origin", b"http://127.0.0.1")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="pw-for-tests-only")


def socket_for(user) -> WebsocketCommunicator:
    headers = [ORIGIN]
    if user is not None:
        client = Client()
        client.force_login(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return WebsocketCommunicator(application, "/ws/jobs/", headers=headers)


async def test_an_anonymous_socket_is_refused():
    socket = socket_for(None)
    connected, _ = await socket.connect()
    assert not connected


async def test_a_user_gets_the_card_of_their_job_when_it_changes_and_its_text_as_it_streams(api_user, image):
    job = await Job.objects.acreate(owner=api_user, image=image, model="llava:7b", state=State.COMPLETED)
    socket = await sync_to_async(socket_for)(api_user)
    connected, _ = await socket.connect()
    assert connected
    await Job.objects.filter(pk=job.pk).aupdate(state=State.STARTED, started_at=timezone.now(), output="")
    await sync_to_async(publish_change)(job.pk, api_user.pk, State.STARTED)
    card = await socket.receive_from()
    assert f'id="job-{job.pk}"' in card and "Running on" in card
    await sync_to_async(publish_text)(job.pk, api_user.pk, "A red <square>")
    text = await socket.receive_from()
    assert text == f'<div id="job-{job.pk}-text" class="job-text" aria-live="off">A red &lt;square&gt;</div>\n'
    await socket.disconnect()


async def test_a_user_never_gets_another_users_cards(api_user, bob, image):
    alices = await Job.objects.acreate(owner=api_user, image=image, model="llava:7b", output="alice's text")
    socket = await sync_to_async(socket_for)(bob)
    connected, _ = await socket.connect()
    assert connected
    await sync_to_async(publish_change)(alices.pk, api_user.pk, State.QUEUED)
    assert await socket.receive_nothing(timeout=0.3)
    # Even an event in bob's group naming alice's job renders nothing of hers.
    await sync_to_async(publish_change)(alices.pk, bob.pk, State.QUEUED)
    assert await socket.receive_nothing(timeout=0.3)
    await socket.disconnect()


async def test_on_connect_it_resends_unfinished_and_recently_finished_cards(api_user, bob, image):
    now = timezone.now()
    queued = await Job.objects.acreate(owner=api_user, image=image, model="llava:7b")
    running = await Job.objects.acreate(
        owner=api_user, image=image, model="llava:7b", state=State.STARTED, started_at=now, output="So far"
    )
    recent = await Job.objects.acreate(
        owner=api_user,
        image=image,
        model="llava:7b",
        state=State.COMPLETED,
        finished_at=now - timedelta(minutes=1),
        output="Just finished.",
    )
    old = await Job.objects.acreate(
        owner=api_user, image=image, model="llava:7b", state=State.COMPLETED, finished_at=now - timedelta(hours=2)
    )
    others = await Job.objects.acreate(owner=bob, image=image, model="llava:7b")
    socket = await sync_to_async(socket_for)(api_user)
    await socket.connect()
    cards = await socket.receive_from()
    for job in (queued, running, recent):
        assert f'id="job-{job.pk}"' in cards
    assert "So far" in cards and "Just finished." in cards
    assert f'id="job-{old.pk}"' not in cards and f'id="job-{others.pk}"' not in cards
    await socket.disconnect()


async def test_a_new_job_goes_on_top_of_the_list_and_a_changed_one_replaces_its_card(api_user, image):
    socket = await sync_to_async(socket_for)(api_user)
    await socket.connect()
    job = await Job.objects.acreate(owner=api_user, image=image, model="llava:7b")
    await sync_to_async(publish_change)(job.pk, api_user.pk, State.QUEUED, created=True)
    added = await socket.receive_from()
    assert added.startswith('<div hx-swap-oob="afterbegin:#jobs">') and f'id="job-{job.pk}"' in added
    await sync_to_async(publish_change)(job.pk, api_user.pk, State.QUEUED)
    changed = await socket.receive_from()
    assert changed.startswith(f'<article id="job-{job.pk}"') and 'hx-swap-oob="true"' in changed
    await socket.disconnect()


async def test_the_job_page_hears_only_about_its_own_job(api_user, image):
    mine = await Job.objects.acreate(owner=api_user, image=image, model="llava:7b")
    other = await Job.objects.acreate(owner=api_user, image=image, model="llava:7b")
    client = await sync_to_async(Client)()
    await sync_to_async(client.force_login)(api_user)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    socket = WebsocketCommunicator(application, f"/ws/jobs/?job={mine.pk}", headers=[ORIGIN, cookie])
    await socket.connect()
    resent = await socket.receive_from()
    assert f'id="job-{mine.pk}"' in resent and f'id="job-{other.pk}"' not in resent
    await sync_to_async(publish_change)(other.pk, api_user.pk, State.QUEUED, created=True)
    assert await socket.receive_nothing(timeout=0.3)
    await sync_to_async(publish_change)(mine.pk, api_user.pk, State.QUEUED, created=True)
    assert 'hx-swap-oob="true"' in await socket.receive_from()  # replaced in place, not added
    await socket.disconnect()
