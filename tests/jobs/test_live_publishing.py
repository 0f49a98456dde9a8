"""Every state change and every streamed chunk of a job goes out on the channel layer."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.files.uploadedfile import SimpleUploadedFile

from imagetotext.live import job_group, user_group

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_run_inline")]


@pytest.fixture
def layer():
    """The configured layer (updates are sent from a thread of their own, which the in-memory one does not
    allow); a channel made by a test hears only what is sent after it joined a group."""
    return get_channel_layer()


def listen(layer, group: str) -> str:
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    return channel


def drain(layer, *channels: str) -> list[list[dict]]:
    """What reached each channel until 0.2 s passed with nothing new (one event loop for all:
    the SQLite layer delivers a process's messages to the inboxes of the loop that polls)."""

    async def receive_all(channel: str) -> list[dict]:
        messages = []
        while True:
            try:
                messages.append(await asyncio.wait_for(layer.receive(channel), 0.2))
            except TimeoutError:
                return messages

    async def every_channel() -> list[list[dict]]:
        return list(await asyncio.gather(*map(receive_all, channels)))

    return async_to_sync(every_channel)()


def test_the_owner_hears_every_state_and_the_text_as_it_grows(
    layer, api_client, api_user, ollama_agent, fake_ollama, png_bytes
) -> None:
    fake_ollama.chunk_delay = 0.05
    channel = listen(layer, user_group(api_user.pk))

    api_client.post(
        "/api/ImageToText", {"image": SimpleUploadedFile("a.png", png_bytes), "Model": "llava:7b", "Prompt": "Hi"}
    )

    [messages] = drain(layer, channel)
    states = [m["state"] for m in messages if m["type"] == "job.changed"]
    texts = [m["text"] for m in messages if m["type"] == "job.text"]
    # A synchronous request's job starts as it is created, when an agent is free: its first update says so.
    assert messages[0]["created"] is True
    assert states[0] == "Started" and states[-1] == "Completed"
    assert len(texts) >= 2 and all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    # The text held back at the end is not sent as text: the Completed job that follows holds all of it.
    reply = fake_ollama.reply_for("llava:7b", "Hi")
    assert reply.startswith(texts[-1])
    assert messages[-1]["type"] == "job.changed" and messages[-1]["state"] == "Completed"
    from imagetotext.models import Job

    assert Job.objects.get().output == reply


@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_the_jobs_own_group_hears_it_too_and_other_users_do_not(
    layer, api_client, api_user, ollama_agent, png_bytes, django_user_model
) -> None:
    other = django_user_model.objects.create_user("bob")
    theirs = listen(layer, user_group(other.pk))
    job_channel = listen(layer, job_group(1))

    api_client.post("/api/ImageToText", {"image": SimpleUploadedFile("a.png", png_bytes), "Model": "llava:7b"})

    from imagetotext.models import Job

    assert Job.objects.get().pk == 1
    to_them, to_the_job = drain(layer, theirs, job_channel)
    assert to_them == []
    assert {m["type"] for m in to_the_job} == {"job.changed", "job.text"}
