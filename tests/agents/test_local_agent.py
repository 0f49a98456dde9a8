"""The built-in OCR agent end to end: drawn images through POST /api/ImageToText, Model=local/ocr.

Jobs run inline (django-q2's sync mode) on the real engine and its bundled models.
"""

from __future__ import annotations

import socket
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import ExifTags, Image, ImageDraw

from agents.clients import local
from agents.clients.local import OCR_MODEL
from agents.clients.ocr import get_engine
from agents.health import check_agent
from agents.models import Agent
from agents.registration import register_local_agent
from imagetotext.models import Job, State
from tests.drawing import (
    PHRASE,
    SCREENSHOT_WORDS,
    SIGN_WORDS,
    busy_background,
    draw_lines,
    encode,
    load_font,
    screenshot,
    sign_photo,
    word_recall,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("jobs_run_inline")]

# EXIF orientation 6: the pixels are stored a quarter turn anticlockwise, as most phones
# save portrait photos. (With 8, the other quarter turn, RapidOCR turns the tall line
# crops back itself and reads the words anyway, so only 6 shows whether we applied it.)
TURNED_ANTICLOCKWISE = 6


@pytest.fixture
def local_agent() -> Agent:
    agent = register_local_agent()
    assert agent is not None
    assert check_agent(agent), agent.last_error
    return agent


def upload(data: bytes, name: str = "image.png", content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def ocr_text(api_client: Client, data: bytes, **file: str) -> str:
    """The text POST /api/ImageToText answers for this image, after checking it answered 200."""
    response = api_client.post("/api/ImageToText", {"image": upload(data, **file), "Model": OCR_MODEL})
    assert response.status_code == 200, response.content
    [result] = response.json()["results"]
    return result["text"]


def turned_photo_with_exif(image: Image.Image) -> bytes:
    """A JPEG whose pixels are turned a quarter, with the EXIF tag that shows it upright."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = TURNED_ANTICLOCKWISE
    return encode(image.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif)


# --- reading through the API ------------------------------------------------------------------


@pytest.mark.parametrize("size", [18, 40])
@pytest.mark.parametrize("face", ["default", "DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf"])
def test_it_reads_a_clean_sentence_exactly_in_each_font_and_size(
    api_client: Client, local_agent: Agent, face: str, size: int
) -> None:
    image = draw_lines([PHRASE], load_font(face, size))

    assert ocr_text(api_client, encode(image)) == PHRASE


def test_a_document_comes_back_line_by_line_and_the_job_records_the_boxes(
    api_client: Client, local_agent: Agent
) -> None:
    lines = ["Delivery note 7731", "3 boxes of printer paper", "Signed on arrival: M. Ortiz"]
    image = draw_lines(lines, load_font("DejaVuSerif.ttf", 30))

    assert ocr_text(api_client, encode(image)).splitlines() == lines
    job = Job.objects.get()
    assert (job.state, job.agent) == (State.COMPLETED, local_agent)
    assert [line["text"] for line in job.result["lines"]] == lines
    assert all(line["confidence"] > 0.9 for line in job.result["lines"])


def test_a_sideways_phone_photo_is_read_upright_thanks_to_its_exif_orientation(
    api_client: Client, local_agent: Agent
) -> None:
    photo = turned_photo_with_exif(sign_photo())

    text = ocr_text(api_client, photo, name="sign.jpg", content_type="image/jpeg")

    assert word_recall(SIGN_WORDS, text) >= 0.9
    assert text.splitlines()[0] == "PLATFORM 4"


def test_the_same_photo_read_without_its_orientation_would_be_mostly_garbage() -> None:
    stored_pixels = Image.open(BytesIO(turned_photo_with_exif(sign_photo())))

    assert word_recall(SIGN_WORDS, get_engine().recognise(stored_pixels).text) < 0.5


def test_it_reads_outlined_text_on_a_busy_background(api_client: Client, local_agent: Agent) -> None:
    image = busy_background((1000, 360), seed=5)
    canvas = ImageDraw.Draw(image)
    outline = {"stroke_width": 3, "stroke_fill": "black"}
    canvas.text((40, 50), "SUMMER SALE", font=load_font("default", 84), fill="yellow", **outline)
    canvas.text((60, 220), "Everything must go", font=load_font("default", 56), fill="white", **outline)

    assert word_recall("SUMMER SALE Everything must go", ocr_text(api_client, encode(image, "JPEG"))) >= 0.9


def test_it_reads_the_labels_of_a_screenshot(api_client: Client, local_agent: Agent) -> None:
    assert word_recall(SCREENSHOT_WORDS, ocr_text(api_client, encode(screenshot()))) >= 0.9


def test_an_image_without_text_is_an_empty_result_not_an_error(api_client: Client, local_agent: Agent) -> None:
    response = api_client.post(
        "/api/ImageToText", {"image": upload(encode(Image.new("RGB", (640, 480), "white"))), "Model": OCR_MODEL}
    )

    assert response.status_code == 200
    assert response.json()["results"] == [{"text": ""}]
    assert Job.objects.get().state == State.COMPLETED


# --- offering and switching off ---------------------------------------------------------------


def test_active_models_list_local_ocr_as_a_local_vision_model(client: Client, local_agent: Agent, admin_user) -> None:
    client.force_login(admin_user)  # only staff see the agents offering a model
    response = client.get("/api/ActiveAiModels?Vision=true")

    assert response.status_code == 200
    assert OCR_MODEL in response.json()["results"]
    [entry] = [e for e in response.json()["models"] if e["name"] == OCR_MODEL]
    assert entry["kind"] == "local"
    assert entry["agents"] == [local_agent.name]


def test_local_agent_off_disables_the_agent_and_the_api_refuses_the_model(
    api_client: Client, local_agent: Agent, settings: Any
) -> None:
    settings.LOCAL_AGENT = False

    assert register_local_agent() is None
    response = api_client.post("/api/ImageToText", {"image": upload(encode(screenshot())), "Model": OCR_MODEL})

    # The model is known but no enabled agent offers it: AI Server's NotSupported 405.
    assert response.status_code == 405
    assert response.json()["responseStatus"]["message"] == f"No active agent supports the model {OCR_MODEL}"
    local_agent.refresh_from_db()
    assert local_agent.enabled is False
    assert Job.objects.count() == 0


# --- discovery ----------------------------------------------------------------------------------


def rapidocr_found_at(monkeypatch: pytest.MonkeyPatch, package: Path | None) -> None:
    """Make discovery find the rapidocr package in this folder (None: not installed)."""
    real_find_spec = local.importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        if name != "rapidocr":
            return real_find_spec(name, *args)
        return package and SimpleNamespace(origin=str(package / "__init__.py"))

    monkeypatch.setattr(local.importlib.util, "find_spec", find_spec)


def test_missing_model_files_take_the_agent_offline_naming_the_files(
    local_agent: Agent, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rapidocr_found_at(monkeypatch, tmp_path)

    assert check_agent(local_agent) is False

    local_agent.refresh_from_db()
    assert local_agent.online is False
    assert local_agent.last_error.startswith(f"OCR model files are missing from {tmp_path / 'models'}: ")
    assert "PP-OCRv6_det_small.onnx" in local_agent.last_error


def test_a_missing_ocr_engine_is_reported_with_how_to_install_it(
    local_agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    rapidocr_found_at(monkeypatch, None)

    assert check_agent(local_agent) is False

    local_agent.refresh_from_db()
    assert local_agent.last_error == "The OCR engine is not installed (pip install -r requirements.txt)"


# --- no network ----------------------------------------------------------------------------------

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def refuse_the_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Refuse connections and name lookups beyond this machine; returns what was attempted."""
    attempts: list[object] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family != socket.AF_UNIX and address[0] not in LOOPBACK:
            attempts.append(address)
            raise OSError(f"network is off for this test: {address}")
        real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in LOOPBACK and host is not None:
            attempts.append(host)
            raise socket.gaierror(f"network is off for this test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def test_a_job_runs_with_the_network_blocked_and_never_tries_to_reach_it(
    api_client: Client, local_agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = refuse_the_network(monkeypatch)
    image = draw_lines(["Offline and still reading"], load_font("default", 40))

    assert ocr_text(api_client, encode(image)) == "Offline and still reading"
    assert attempts == []
    with pytest.raises(OSError):  # the block itself works
        socket.create_connection(("203.0.113.7", 80), timeout=1)


def test_a_signed_in_user_gets_the_text_of_a_screenshot_on_the_page(
    client: Client, api_user: Any, local_agent: Agent
) -> None:
    client.force_login(api_user)
    page = client.get("/ImageToText").content.decode()
    assert "local/ocr" in page

    client.post(
        "/ImageToText/jobs",
        {"images": [upload(encode(screenshot()), "screen.png")], "model": OCR_MODEL, "preset": "text"},
        HTTP_HX_REQUEST="true",
    )

    job = Job.objects.get()
    shown = client.get(f"/ImageToText/jobs/{job.pk}").content.decode()
    assert job.state == "Completed" and job.agent == local_agent
    assert word_recall(SCREENSHOT_WORDS, job.output) >= 0.9
    assert all(word in shown for word in SCREENSHOT_WORDS.split()[:3])
