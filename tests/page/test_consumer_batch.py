"""A batch page's WebSocket: the progress bar, throttled, and only the items of the grid page shown."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from aiserver.asgi import application
from imagetotext.live import publish_change
from imagetotext.models import Batch, Job, State
from imagetotext.page import consumers
from imagetotext.page.batch_cards import ITEMS_PER_PAGE

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("async_orm_connections_closed")]
ORIGIN = (b"origin", b"http://127.0.0.1")


def socket_for(user, query: str) -> WebsocketCommunicator:
    client = Client()
    client.force_login(user)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    return WebsocketCommunicator(application, f"/ws/jobs/?{query}", headers=[ORIGIN, cookie])


def make_batch(owner, image, count: int) -> tuple[Batch, list[Job]]:
    batch = Batch.objects.create(owner=owner, model="llava:7b", total=count)
    jobs = [
        Job.objects.create(owner=owner, image=image, batch=batch, path=f"{n:04}.png", model="llava:7b")
        for n in range(count)
    ]
    return batch, jobs


async def connected(user, query: str) -> WebsocketCommunicator:
    socket = await sync_to_async(socket_for)(user, query)
    ok, _ = await socket.connect()
    assert ok
    resync = await socket.receive_from()  # the progress and the visible items, as on connect
    assert 'id="batch-progress"' in resync
    return socket


async def test_a_change_of_a_visible_item_sends_it_then_the_progress(api_user, image):
    batch, jobs = await sync_to_async(make_batch)(api_user, image, 3)
    socket = await connected(api_user, f"batch={batch.pk}&page=1")
    now = timezone.now()
    await Job.objects.filter(pk=jobs[0].pk).aupdate(
        state=State.COMPLETED, output="a red square", started_at=now, finished_at=now
    )
    await sync_to_async(publish_change)(jobs[0].pk, api_user.pk, State.COMPLETED)
    item = await socket.receive_from()
    assert f'id="item-{jobs[0].pk}"' in item and "a red square" in item
    progress = await socket.receive_from()
    assert 'id="batch-progress"' in progress and "1 of 3 done" in progress
    await socket.disconnect()


async def test_many_changes_at_once_send_the_progress_once(api_user, image, monkeypatch):
    # A window wide enough that all twenty events land in it even on a slow, busy machine.
    monkeypatch.setattr(consumers, "PROGRESS_SECONDS", 1.0)
    batch, jobs = await sync_to_async(make_batch)(api_user, image, ITEMS_PER_PAGE + 20)
    socket = await connected(api_user, f"batch={batch.pk}&page=1")
    hidden = jobs[ITEMS_PER_PAGE:]  # on page 2: their items are not sent
    await Job.objects.filter(pk__in=[job.pk for job in hidden]).aupdate(
        state=State.CANCELLED, finished_at=timezone.now()
    )
    for job in hidden:
        await sync_to_async(publish_change)(job.pk, api_user.pk, State.CANCELLED)
    progress = await socket.receive_from(timeout=3)
    assert "20 cancelled" in progress
    assert await socket.receive_nothing(timeout=0.6)
    await socket.disconnect()


async def test_another_users_batch_is_refused(api_user, admin_user, image):
    batch, _ = await sync_to_async(make_batch)(admin_user, image, 1)
    socket = await sync_to_async(socket_for)(api_user, f"batch={batch.pk}")
    ok, code = await socket.connect()
    assert (ok, code) == (False, 4404)


async def test_the_list_page_gets_no_cards_of_a_batchs_jobs(api_user, image):
    batch, jobs = await sync_to_async(make_batch)(api_user, image, 2)
    socket = await sync_to_async(socket_for)(api_user, "")
    ok, _ = await socket.connect()
    assert ok
    assert await socket.receive_nothing(timeout=0.3)  # no resync of the batch's queued jobs
    await sync_to_async(publish_change)(jobs[0].pk, api_user.pk, State.QUEUED, True)
    assert await socket.receive_nothing(timeout=0.3)
    await socket.disconnect()
