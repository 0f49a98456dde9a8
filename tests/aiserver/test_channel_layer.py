"""The embedded SQLite channel layer, exercised in one process."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from channels.exceptions import ChannelFull
from django.conf import settings

from aiserver.channel_layer import SQLiteChannelLayer

RECEIVE_TIMEOUT = 3.0


@pytest.fixture
def layer(tmp_path: Path) -> SQLiteChannelLayer:
    return SQLiteChannelLayer(path=tmp_path / "channels.sqlite3", poll_interval=0.01)


async def receive(layer: SQLiteChannelLayer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), RECEIVE_TIMEOUT)


async def nothing_arrives(layer: SQLiteChannelLayer, channel: str, wait: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), wait)
    except TimeoutError:
        return True
    return False


def test_the_embedded_configuration_uses_the_sqlite_layer_and_redis_when_configured() -> None:
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if settings.REDIS_URL:
        assert backend == "channels_redis.core.RedisChannelLayer"
    else:
        assert backend == "aiserver.channel_layer.SQLiteChannelLayer"
        assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["path"]


async def test_a_message_sent_to_a_process_channel_is_received(layer: SQLiteChannelLayer) -> None:
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "job.status", "status": "running"})
    assert await receive(layer, channel) == {"type": "job.status", "status": "running"}


async def test_messages_arrive_in_the_order_they_were_sent(layer: SQLiteChannelLayer) -> None:
    channel = await layer.new_channel()
    for n in range(20):
        await layer.send(channel, {"type": "count", "n": n})
    assert [(await receive(layer, channel))["n"] for _ in range(20)] == list(range(20))


async def test_each_process_channel_gets_only_its_own_messages(layer: SQLiteChannelLayer) -> None:
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.send(second, {"type": "for.second"})
    await layer.send(first, {"type": "for.first"})
    assert (await receive(layer, first))["type"] == "for.first"
    assert (await receive(layer, second))["type"] == "for.second"


async def test_a_named_channel_hands_each_message_to_one_receiver(
    layer: SQLiteChannelLayer,
) -> None:
    await layer.send("jobs", {"type": "one"})
    await layer.send("jobs", {"type": "two"})
    got = await asyncio.gather(receive(layer, "jobs"), receive(layer, "jobs"))
    assert sorted(message["type"] for message in got) == ["one", "two"]
    assert await nothing_arrives(layer, "jobs")


async def test_group_send_reaches_every_member(layer: SQLiteChannelLayer) -> None:
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("job-7", first)
    await layer.group_add("job-7", second)
    await layer.group_send("job-7", {"type": "job.status", "status": "done"})
    assert (await receive(layer, first))["status"] == "done"
    assert (await receive(layer, second))["status"] == "done"


async def test_a_discarded_channel_no_longer_hears_the_group(layer: SQLiteChannelLayer) -> None:
    stays, leaves = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("job-7", stays)
    await layer.group_add("job-7", leaves)
    await layer.group_discard("job-7", leaves)
    await layer.group_send("job-7", {"type": "job.status"})
    assert (await receive(layer, stays))["type"] == "job.status"
    assert await nothing_arrives(layer, leaves)


async def test_group_send_to_an_empty_group_is_harmless(layer: SQLiteChannelLayer) -> None:
    await layer.group_send("nobody-here", {"type": "job.status"})


async def test_an_expired_message_is_not_delivered(tmp_path: Path) -> None:
    layer = SQLiteChannelLayer(path=tmp_path / "c.sqlite3", expiry=1, poll_interval=0.01)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "stale"})
    await asyncio.sleep(1.1)
    await layer.send(channel, {"type": "fresh"})
    assert (await receive(layer, channel))["type"] == "fresh"


async def test_an_expired_group_membership_receives_nothing(tmp_path: Path) -> None:
    layer = SQLiteChannelLayer(path=tmp_path / "c.sqlite3", group_expiry=1, poll_interval=0.01)
    channel = await layer.new_channel()
    await layer.group_add("job-7", channel)
    await asyncio.sleep(1.1)
    await layer.group_send("job-7", {"type": "job.status"})
    assert await nothing_arrives(layer, channel)


async def test_expired_rows_and_their_listeners_are_purged_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    layer = SQLiteChannelLayer(path=path, expiry=1, poll_interval=0.01)
    gone = await layer.new_channel()
    await layer.group_add("job-7", gone)
    await layer.group_send("job-7", {"type": "never.read"})
    await asyncio.sleep(1.1)
    # A fresh layer, like another process, purges on its first write; one
    # layer purges at most every few seconds.
    later = SQLiteChannelLayer(path=path, expiry=1)
    await later.group_send("job-7", {"type": "after.expiry"})
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM message").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM membership").fetchone() == (0,)


async def test_send_to_a_full_channel_raises_channel_full(tmp_path: Path) -> None:
    layer = SQLiteChannelLayer(path=tmp_path / "c.sqlite3", capacity=2)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "one"})
    await layer.send(channel, {"type": "two"})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "three"})


async def test_group_send_skips_a_full_member_and_still_reaches_the_others(tmp_path: Path) -> None:
    layer = SQLiteChannelLayer(path=tmp_path / "c.sqlite3", capacity=1, poll_interval=0.01)
    full, free = await layer.new_channel(), await layer.new_channel()
    await layer.send(full, {"type": "backlog"})
    await layer.group_add("job-7", full)
    await layer.group_add("job-7", free)
    await layer.group_send("job-7", {"type": "job.status"})
    assert (await receive(layer, free))["type"] == "job.status"
    assert (await receive(layer, full))["type"] == "backlog"
    assert await nothing_arrives(layer, full)


async def test_channel_capacity_patterns_override_the_default(tmp_path: Path) -> None:
    layer = SQLiteChannelLayer(path=tmp_path / "c.sqlite3", capacity=100, channel_capacity={"tight*": 1})
    await layer.send("tight-queue", {"type": "one"})
    with pytest.raises(ChannelFull):
        await layer.send("tight-queue", {"type": "two"})


async def test_flush_forgets_messages_and_groups(layer: SQLiteChannelLayer) -> None:
    channel = await layer.new_channel()
    await layer.group_add("job-7", channel)
    await layer.send(channel, {"type": "before.flush"})
    await layer.flush()
    await layer.group_send("job-7", {"type": "after.flush"})
    assert await nothing_arrives(layer, channel)


async def test_two_layers_on_one_file_talk_like_two_processes(tmp_path: Path) -> None:
    web = SQLiteChannelLayer(path=tmp_path / "c.sqlite3", poll_interval=0.01)
    worker = SQLiteChannelLayer(path=tmp_path / "c.sqlite3")
    channel = await web.new_channel()
    await web.group_add("job-7", channel)
    started = time.monotonic()
    await worker.group_send("job-7", {"type": "job.status", "status": "done"})
    assert (await receive(web, channel))["status"] == "done"
    assert time.monotonic() - started < 1.0


async def test_a_layer_cannot_receive_on_another_layers_channel(tmp_path: Path) -> None:
    web = SQLiteChannelLayer(path=tmp_path / "c.sqlite3")
    other = SQLiteChannelLayer(path=tmp_path / "c.sqlite3")
    channel = await other.new_channel()
    with pytest.raises(AssertionError):
        await web.receive(channel)


async def test_invalid_names_are_refused(layer: SQLiteChannelLayer) -> None:
    with pytest.raises(TypeError):
        await layer.send("no spaces allowed", {"type": "x"})
    with pytest.raises(TypeError):
        await layer.group_add("bad group!", await layer.new_channel())


@pytest.mark.parametrize("how", ["send", "group_send"])
async def test_a_waiting_process_is_woken_by_the_sender_not_by_its_next_poll(tmp_path: Path, how: str) -> None:
    path = tmp_path / "channels.sqlite3"
    receiver = SQLiteChannelLayer(path=path, poll_interval=3.0)  # a poll would take this long
    sender = SQLiteChannelLayer(path=path, poll_interval=3.0)
    channel = await receiver.new_channel()
    await receiver.group_add("watchers", channel)
    waiting = asyncio.ensure_future(receiver.receive(channel))
    await asyncio.sleep(0.3)  # the receiver's poll found nothing and waits now
    sent = time.monotonic()
    if how == "send":
        await sender.send(channel, {"type": "hello"})
    else:
        await sender.group_send("watchers", {"type": "hello"})
    message = await asyncio.wait_for(waiting, RECEIVE_TIMEOUT)
    assert message == {"type": "hello"}
    assert time.monotonic() - sent < 0.5
    await receiver.close()
