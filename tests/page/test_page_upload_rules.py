"""What the page tells the browser and the user about uploads, and the small things around the form."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agents.models import Agent, AgentModel, Capability, Kind
from imagetotext.batches import Limits
from imagetotext.conf import Conf
from imagetotext.images import ACCEPTED_FORMATS, CONTENT_TYPES
from imagetotext.page.limits import EXTENSIONS, readable_size

pytestmark = pytest.mark.django_db(transaction=True)


def dropzone(html: str) -> dict[str, str]:
    tag = re.search(r'<div class="dropzone" id="dropzone"([^>]*)>', html).group(1)
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', tag))


def test_the_browser_is_given_the_servers_limits_and_types(user_client, ollama_agent, monkeypatch):
    monkeypatch.setattr(Conf, "MAX_UPLOAD_BYTES", 5 * 1024 * 1024)
    monkeypatch.setattr(Limits, "MAX_BYTES", 3 * 1024**3)
    html = user_client.get("/ImageToText").content.decode()
    rules = dropzone(html)
    assert rules["max-bytes"] == str(5 * 1024 * 1024) and rules["max-size"] == "5 MB"
    assert rules["batch-max-bytes"] == str(3 * 1024**3) and rules["batch-max-size"] == "3 GB"
    assert rules["batch-max-items"] == str(Limits.MAX_ITEMS)
    assert set(rules["types"].split(",")) == set(CONTENT_TYPES.values())
    assert ".tiff" in rules["extensions"].split(",") and ".jpg" in rules["extensions"].split(",")
    accept = re.search(r'<input type="file" id="images" name="images" accept="([^"]+)"', html).group(1)
    assert set(accept.split(",")) >= {*CONTENT_TYPES.values(), ".zip"}


def test_every_accepted_type_has_file_name_endings():
    assert set(CONTENT_TYPES.values()) <= set(EXTENSIONS)


def test_the_upload_help_lists_the_formats_the_server_names_when_it_refuses(user_client, ollama_agent):
    html = user_client.get("/ImageToText").content.decode()
    bad = SimpleUploadedFile("notes.txt", b"words", content_type="text/plain")
    refusal = user_client.post("/ImageToText/jobs", {"images": [bad], "model": "llava:7b"}).content.decode()
    assert f"({ACCEPTED_FORMATS})" in refusal
    assert f'<p id="formats-help" class="help">{ACCEPTED_FORMATS}, up to' in html


def test_sizes_read_as_the_servers_refusals_write_them():
    assert readable_size(20 * 1024 * 1024) == "20 MB"
    assert readable_size(int(2.5 * 1024 * 1024)) == "2.5 MB"
    assert readable_size(2 * 1024**3) == "2 GB"


def test_errors_sit_next_to_the_drop_area(user_client, ollama_agent):
    html = user_client.get("/ImageToText").content.decode()
    after_zone = html[html.index('<ul id="pending"') :]
    assert after_zone.index('id="upload-errors"') < after_zone.index('<label for="model">')


def test_the_address_with_a_trailing_slash_leads_to_the_page(user_client):
    response = user_client.get("/ImageToText/?again=7")
    assert response.status_code == 302
    assert response["Location"] == "/ImageToText?again=7"


def test_the_page_links_to_the_api_docs(user_client):
    assert '<a href="/api/docs">API docs</a>' in user_client.get("/ImageToText").content.decode()


def test_a_model_label_names_its_agent_or_how_many_run_it(user_client, ollama_agent):
    second = Agent.objects.create(name="laptop", kind=Kind.OLLAMA, base_url="http://laptop:11434", online=True)
    AgentModel.objects.create(agent=second, name="llava:7b", capability=Capability.VISION)
    html = user_client.get("/ImageToText").content.decode()
    assert re.search(r'<option value="gemma3:4b"[^>]*data-agents="gpu"[^>]*>gemma3:4b · gpu</option>', html)
    assert re.search(
        r'<option value="llava:7b"[^>]*data-agents="(gpu and laptop|laptop and gpu)"[^>]*>llava:7b · 2 agents</option>',
        html,
    )
