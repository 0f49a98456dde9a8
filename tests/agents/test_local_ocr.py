"""The local OCR engine (agents/ocr.py), on images these tests draw with Pillow.

Runs without Django: `.venv/bin/pytest -p no:django tests/test_local_ocr.py -q`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from agents.clients import ocr
from agents.clients.ocr import OcrEngine, OcrLine, get_engine
from tests.drawing import PHRASE, SCREENSHOT_WORDS, busy_background, draw_lines, load_font, screenshot, word_recall

ROOT = Path(__file__).resolve().parents[2]


# --- stub helpers (drawing helpers are in tests/drawing.py) ------------------------------


def fake_output(*hits: tuple[str, float, tuple[int, int, int, int]]) -> SimpleNamespace:
    """What RapidOCR returns, for hits given as (text, score, (left, top, right, bottom))."""
    boxes = [[[x0, y0], [x1, y0], [x1, y1], [x0, y1]] for _, _, (x0, y0, x1, y1) in hits]
    return SimpleNamespace(txts=tuple(h[0] for h in hits), scores=tuple(h[1] for h in hits), boxes=np.array(boxes))


def engine_answering(monkeypatch: pytest.MonkeyPatch, output: Any, **options: Any) -> OcrEngine:
    """An OcrEngine whose RapidOCR is replaced by a stub returning `output`."""
    monkeypatch.setattr(ocr, "build_rapidocr", lambda use_cls: lambda pixels: output)
    return OcrEngine(**options)


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    return get_engine()


# --- the real model on drawn images ------------------------------------------------------


@pytest.mark.parametrize("size", [16, 28, 56])
@pytest.mark.parametrize("face", ["default", "DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf"])
def test_it_reads_a_clean_sentence_exactly_in_each_font_and_size(engine: OcrEngine, face: str, size: int) -> None:
    result = engine.recognise(draw_lines([PHRASE], load_font(face, size)))
    assert result.text == PHRASE


def test_it_reads_a_multi_line_document_line_by_line(engine: OcrEngine) -> None:
    lines = ["Invoice No. 2024-0815", "Total amount due: $1,234.56", "Please pay within 30 days.", "Thank you!"]
    result = engine.recognise(draw_lines(lines, load_font("default", 26)))
    assert result.text.splitlines() == lines


def test_it_reads_a_two_column_form_row_by_row(engine: OcrEngine) -> None:
    rows = [("Name:", "Alice Johnson"), ("Plan:", "Premium yearly"), ("Renewal date:", "2027-03-14")]
    image = Image.new("RGB", (720, 260), "white")
    canvas = ImageDraw.Draw(image)
    for i, (label, value) in enumerate(rows):
        canvas.text((40, 40 + 60 * i), label, font=load_font("default", 26), fill="black")
        canvas.text((360, 40 + 60 * i), value, font=load_font("default", 26), fill="black")
    assert engine.recognise(image).text.splitlines() == [f"{label} {value}" for label, value in rows]


def test_it_reads_the_labels_of_a_screenshot(engine: OcrEngine) -> None:
    assert word_recall(SCREENSHOT_WORDS, engine.recognise(screenshot()).text) >= 0.9


def test_it_reads_outlined_text_on_a_busy_background(engine: OcrEngine) -> None:
    image = busy_background((900, 300), seed=7)
    canvas = ImageDraw.Draw(image)
    sign, small = load_font("default", 80), load_font("default", 52)
    canvas.text((40, 50), "OPEN 24 HOURS", font=sign, fill="yellow", stroke_width=3, stroke_fill="black")
    canvas.text((60, 190), "Free parking", font=small, fill="white", stroke_width=3, stroke_fill="black")
    assert word_recall("OPEN 24 HOURS Free parking", engine.recognise(image).text) >= 0.9


def test_an_empty_image_gives_empty_text_and_no_lines(engine: OcrEngine) -> None:
    result = engine.recognise(Image.new("RGB", (640, 480), "white"))
    assert (result.text, result.lines) == ("", [])


@pytest.mark.parametrize("seed", range(4))
def test_a_busy_picture_without_text_gives_no_stray_characters(engine: OcrEngine, seed: int) -> None:
    assert engine.recognise(busy_background((640, 480), seed)).text == ""


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "P"])
def test_it_reads_black_text_on_a_transparent_background_as_if_on_white(engine: OcrEngine, mode: str) -> None:
    image = Image.new("RGBA", (520, 120), (0, 0, 0, 0))  # transparent black: unreadable unless composited
    ImageDraw.Draw(image).text((30, 30), "Hello world 42", font=load_font("default", 44), fill="black")
    image = image.convert(mode)
    assert image.has_transparency_data
    assert engine.recognise(image).text == "Hello world 42"


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "I;16"])
def test_it_reads_text_in_other_image_modes(engine: OcrEngine, mode: str) -> None:
    image = draw_lines(["Hello world 42"], load_font("default", 44))
    assert engine.recognise(image.convert(mode)).text == "Hello world 42"


# --- filtering and reading order (a stub stands in for RapidOCR) ----------------------------


def test_hits_below_the_confidence_threshold_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    output = fake_output(("clear words", 0.97, (0, 0, 200, 30)), ("smudge", 0.31, (0, 50, 200, 80)))
    assert engine_answering(monkeypatch, output).recognise(Image.new("RGB", (9, 9))).text == "clear words"


def test_the_confidence_threshold_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    output = fake_output(("clear words", 0.97, (0, 0, 200, 30)), ("smudge", 0.31, (0, 50, 200, 80)))
    engine = engine_answering(monkeypatch, output, min_confidence=0.3)
    assert engine.recognise(Image.new("RGB", (9, 9))).text == "clear words\nsmudge"


def test_single_character_hits_are_dropped_unless_nearly_certain(monkeypatch: pytest.MonkeyPatch) -> None:
    output = fake_output(("0", 0.8, (0, 0, 20, 30)), ("-", 0.9, (0, 50, 20, 80)), ("7", 0.99, (0, 100, 20, 130)))
    assert engine_answering(monkeypatch, output).recognise(Image.new("RGB", (9, 9))).text == "7"


def test_boxes_read_left_to_right_within_a_line_and_lines_top_to_bottom(monkeypatch: pytest.MonkeyPatch) -> None:
    output = fake_output(
        ("second line", 0.9, (10, 62, 200, 90)),
        ("world", 0.9, (300, 14, 400, 40)),  # a little lower than "hello" but on its line
        ("hello", 0.9, (10, 10, 120, 36)),
        ("right", 0.9, (300, 60, 400, 88)),
    )
    result = engine_answering(monkeypatch, output).recognise(Image.new("RGB", (9, 9)))
    assert result.text == "hello world\nsecond line right"
    assert [line.text for line in result.lines] == ["hello", "world", "second line", "right"]


def test_lines_carry_confidence_and_a_plain_float_box(monkeypatch: pytest.MonkeyPatch) -> None:
    output = fake_output(("hello", 0.875, (10, 10, 120, 36)))
    result = engine_answering(monkeypatch, output).recognise(Image.new("RGB", (9, 9)))
    assert result.lines == [OcrLine("hello", 0.875, ((10.0, 10.0), (120.0, 10.0), (120.0, 36.0), (10.0, 36.0)))]
    assert json.dumps(result.lines[0].box)
    assert result.seconds > 0


# --- loading ---------------------------------------------------------------------------------


def test_models_load_once_however_many_calls_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[bool] = []

    def build(use_cls: bool) -> Any:
        builds.append(use_cls)
        return lambda pixels: None

    monkeypatch.setattr(ocr, "build_rapidocr", build)
    engine = OcrEngine()
    threads = [threading.Thread(target=engine.load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.recognise(Image.new("RGB", (9, 9)))
    engine.recognise(Image.new("RGB", (9, 9)))
    assert builds == [False]


def test_get_engine_returns_the_same_engine_every_time() -> None:
    assert get_engine() is get_engine()


def test_the_real_engine_reuses_its_loaded_models(engine: OcrEngine) -> None:
    engine.recognise(Image.new("RGB", (64, 64), "white"))
    loaded = engine._ocr
    get_engine().recognise(Image.new("RGB", (64, 64), "white"))
    assert get_engine()._ocr is loaded is not None


def test_a_missing_bundled_model_fails_loudly_instead_of_downloading(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="PP-OCRv6_det_small.onnx"):
        ocr.rapidocr_params(use_cls=False, model_dir=tmp_path)


OFFLINE_SCRIPT = """
import json, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:]))
    raise OSError("network is off for this test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse
sys.path.insert(0, sys.argv[1])
from PIL import Image, ImageDraw, ImageFont
from agents.clients.ocr import get_engine
image = Image.new("RGB", (600, 140), "white")
ImageDraw.Draw(image).text((30, 30), "OFFLINE 42", font=ImageFont.load_default(size=60), fill="black")
print(json.dumps({"text": get_engine().recognise(image).text, "attempts": attempts}))
"""


def no_network_prefix() -> list[str]:
    """`unshare -n` (an empty network namespace) when this machine allows it, else nothing."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    return []  # the script's own socket patch still refuses every connection


def test_a_fresh_process_reads_text_with_no_network_and_never_tries_to_connect() -> None:
    command = [*no_network_prefix(), sys.executable, "-c", OFFLINE_SCRIPT, str(ROOT)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == {"text": "OFFLINE 42", "attempts": []}
