"""Batches and presets in the admin: the list shows progress, actions cancel and retry, presets are edited."""

from __future__ import annotations

import pytest
from django.test import Client

from imagetotext import batches
from imagetotext.models import Batch, Preset, State
from tests.jobs.test_batch_service import items

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(client: Client, admin_user) -> Client:
    client.force_login(admin_user)
    return client


@pytest.fixture
def batch(api_user, ollama_agent, monkeypatch: pytest.MonkeyPatch) -> Batch:
    monkeypatch.setattr("imagetotext.dispatch.async_task", lambda *args, **kwargs: None)
    return batches.create_batch(api_user, batches.BatchOptions(model="llava:7b", name="pets.zip"), items(2))


def test_the_batch_list_shows_each_batchs_progress(staff: Client, batch: Batch) -> None:
    response = staff.get("/admin/imagetotext/batch/")

    assert response.status_code == 200
    assert "pets.zip" in response.text and "0 done, 0 failed, 0 cancelled" in response.text


def test_the_cancel_action_cancels_the_unfinished_items(staff: Client, batch: Batch) -> None:
    response = staff.post(
        "/admin/imagetotext/batch/", {"action": "cancel_batches", "_selected_action": [batch.pk]}, follow=True
    )

    assert "Cancelled 2 item(s)." in response.text
    assert set(batch.jobs.values_list("state", flat=True)) == {State.CANCELLED}


def test_a_preset_is_edited_in_the_admin(staff: Client) -> None:
    preset = Preset.objects.create(key="short", label="Short", prompt="Be brief.", florence_task="caption")

    response = staff.post(
        f"/admin/imagetotext/preset/{preset.pk}/change/",
        {"key": "short", "label": "Short", "prompt": "Be briefer.", "florence_task": "caption", "position": 3},
    )

    assert response.status_code == 302
    preset.refresh_from_db()
    assert preset.prompt == "Be briefer." and preset.position == 3
