"""The form opens with the model, preset and tag the user last sent with, kept on the server."""

from __future__ import annotations

import re
from io import BytesIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from imagetotext.models import PagePreferences, Preset

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/ImageToText/jobs"


def png(colour: str) -> SimpleUploadedFile:
    buffer = BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, "PNG")
    return SimpleUploadedFile(f"{colour}.png", buffer.getvalue(), content_type="image/png")


def selected_model(html: str) -> str:
    return re.search(r'<option value="([^"]+)" selected', html).group(1)


def checked_preset(html: str) -> str:
    return re.search(r'name="preset" value="([^"]+)"[^>]* checked', html).group(1)


def tag_value(html: str) -> str:
    return re.search(r'<input type="text" id="tag"[^>]* value="([^"]*)"', html).group(1)


def prompt_text(html: str) -> str:
    return re.search(r'<textarea id="prompt"[^>]*>(.*?)</textarea>', html, re.S).group(1)


def test_a_send_is_remembered_and_the_next_page_opens_with_it(user_client, ollama_agent, api_user):
    response = user_client.post(
        URL, {"images": [png("red")], "model": "llava:7b", "preset": "tags", "tag": "shop"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200

    saved = PagePreferences.objects.get(user=api_user)
    assert (saved.model, saved.preset, saved.tag) == ("llava:7b", "tags", "shop")
    html = user_client.get("/ImageToText").content.decode()
    assert selected_model(html) == "llava:7b"
    assert checked_preset(html) == "tags"
    assert tag_value(html) == "shop"
    assert prompt_text(html) == Preset.objects.get(key="tags").prompt


def test_a_second_browser_of_the_same_user_gets_the_same_choices(user_client, ollama_agent, api_user):
    user_client.post(URL, {"images": [png("red")], "model": "llava:7b", "preset": "alt"}, HTTP_HX_REQUEST="true")
    other_browser = Client()
    other_browser.force_login(api_user)
    html = other_browser.get("/ImageToText").content.decode()
    assert (selected_model(html), checked_preset(html)) == ("llava:7b", "alt")


def test_a_refused_send_changes_nothing(user_client, ollama_agent, api_user):
    bad = SimpleUploadedFile("notes.txt", b"just some words", content_type="text/plain")
    response = user_client.post(URL, {"images": [bad], "model": "llava:7b", "tag": "x"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert not PagePreferences.objects.filter(user=api_user).exists()


def test_a_batch_send_is_remembered_too(user_client, ollama_agent, api_user):
    response = user_client.post(
        URL,
        {"images": [png("red"), png("blue")], "model": "gemma3:4b", "preset": "caption", "tag": "set-1"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    saved = PagePreferences.objects.get(user=api_user)
    assert (saved.model, saved.preset, saved.tag) == ("gemma3:4b", "caption", "set-1")


def test_a_model_no_longer_offered_falls_back_to_the_first_listed(user_client, ollama_agent, api_user):
    PagePreferences.objects.create(user=api_user, model="gone:1b", preset="removed", tag="kept")
    html = user_client.get("/ImageToText").content.decode()
    assert " selected" not in html.split('id="model"', 1)[1].split("</select>", 1)[0]
    assert checked_preset(html) == "detailed"  # the default preset
    assert tag_value(html) == "kept"


def test_one_users_choices_are_not_anothers(user_client, ollama_agent, django_user_model):
    bob = django_user_model.objects.create_user("bob", password="pw-for-tests-only")
    PagePreferences.objects.create(user=bob, model="llava:7b", preset="tags", tag="bobs")
    html = user_client.get("/ImageToText").content.decode()
    assert tag_value(html) == ""
    assert checked_preset(html) == "detailed"
