"""Images the OCR tests draw with Pillow, and how their text is scored.

Shared by tests/test_local_ocr.py (the engine alone), tests/test_local_agent.py (the agent
through the API) and benchmarks/bench_local_agent.py.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

DEJAVU = Path("/usr/share/fonts/truetype/dejavu")  # Debian fonts-dejavu-core, on the machine image
PHRASE = "The quick brown fox jumps over 13 lazy dogs"
SIGN_WORDS = "PLATFORM 4 Trains to Central Station"

Font = ImageFont.FreeTypeFont


def load_font(face: str, size: int) -> Font:
    """Pillow's built-in scalable font (Aileron) for "default", else a DejaVu TTF."""
    if face == "default":
        font = ImageFont.load_default(size=size)
        if not isinstance(font, Font):
            pytest.skip("Pillow was built without FreeType: no scalable built-in font")
        return font
    path = DEJAVU / face
    if not path.is_file():
        pytest.skip(f"{path} is missing (Debian package fonts-dejavu-core)")
    return ImageFont.truetype(str(path), size)


def draw_lines(lines: list[str], font: Font, margin: int = 30) -> Image.Image:
    """Black lines of text on a white canvas just large enough to hold them."""
    step = int(font.size * 1.6)
    width = max(font.getlength(line) for line in lines)
    image = Image.new("RGB", (int(width) + 2 * margin, step * len(lines) + 2 * margin), "white")
    canvas = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        canvas.text((margin, margin + i * step), line, font=font, fill="black")
    return image


def busy_background(size: tuple[int, int], seed: int) -> Image.Image:
    """Random coloured shapes under seeded pixel noise: a stand-in for a photo."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, (120, 140, 110))
    canvas = ImageDraw.Draw(image)
    for _ in range(120):
        x, y, r = rng.randrange(size[0]), rng.randrange(size[1]), rng.randrange(10, 80)
        shape = canvas.ellipse if rng.random() < 0.5 else canvas.rectangle
        shape((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    noise = np.random.default_rng(seed).normal(0, 30, (size[1], size[0], 3))
    noisy = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(noisy)


def sign_photo() -> Image.Image:
    """A photo of a station sign: a white plate with dark lettering in a busy scene."""
    image = busy_background((1200, 800), seed=11)
    canvas = ImageDraw.Draw(image)
    canvas.rounded_rectangle((150, 220, 1050, 560), 18, fill="#f4f4ef", outline="#20305a", width=8)
    canvas.text((220, 260), "PLATFORM 4", font=load_font("DejaVuSans-Bold.ttf", 96), fill="#20305a")
    canvas.text((220, 430), "Trains to Central Station", font=load_font("DejaVuSans.ttf", 56), fill="#20305a")
    return image


def screenshot() -> Image.Image:
    """A settings dialog: title bar, menu, a filled-in field, a checkbox, two buttons."""
    image = Image.new("RGB", (1024, 600), "#f0f0f0")
    canvas = ImageDraw.Draw(image)
    canvas.rectangle((0, 0, 1024, 44), fill="#2b3a55")
    canvas.text((16, 10), "Image to Text - Settings", font=load_font("default", 20), fill="white")
    for x, item in zip((16, 80, 144, 208), ("File", "Edit", "View", "Help"), strict=True):
        canvas.text((x, 56), item, font=load_font("default", 16), fill="black")
    canvas.text((40, 110), "Email address", font=load_font("default", 18), fill="#333333")
    canvas.rectangle((40, 140, 480, 180), fill="white", outline="#999999")
    canvas.text((50, 150), "user@example.com", font=load_font("default", 18), fill="black")
    canvas.rectangle((40, 210, 58, 228), fill="white", outline="#555555")
    canvas.text((70, 208), "Send me a notification", font=load_font("default", 18), fill="black")
    canvas.rounded_rectangle((40, 280, 160, 320), 6, fill="#1a73e8")
    canvas.text((78, 290), "Save", font=load_font("default", 18), fill="white")
    canvas.rounded_rectangle((180, 280, 300, 320), 6, fill="#dadce0")
    canvas.text((210, 290), "Cancel", font=load_font("default", 18), fill="black")
    canvas.text((16, 570), "12 images processed", font=load_font("default", 14), fill="#555555")
    return image


SCREENSHOT_WORDS = (
    "Image to Text - Settings File Edit View Help Email address user@example.com "
    "Send me a notification Save Cancel 12 images processed"
)


def encode(image: Image.Image, image_format: str = "PNG", **options: Any) -> bytes:
    """The image as the bytes of a file in this format, as a client would upload it."""
    buffer = BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def word_recall(expected: str, found: str) -> float:
    """The fraction of expected words (case and edge punctuation ignored) found in the output."""

    def words(text: str) -> Counter[str]:
        tokens = (token.strip(string.punctuation).lower() for token in text.split())
        return Counter(token for token in tokens if token)

    wanted, got = words(expected), words(found)
    return sum(min(n, got[word]) for word, n in wanted.items()) / sum(wanted.values())
