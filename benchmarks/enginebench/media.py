"""Images the engine benchmark uploads: photo-like JPEGs of a given size, and small PNGs.

Every upload is made unique (the server stores images by content, and a repeated image would
skip that work): JPEGs get a numbered comment segment, which changes the bytes, not the pixels.
"""

from __future__ import annotations

import io
import os
import random
import struct

from PIL import Image, ImageDraw, ImageFilter

JPEG_QUALITY = 90


def photo(width: int, height: int, seed: int = 7) -> Image.Image:
    """A stand-in for a camera photo: soft shapes over gradients, with fine grain (no flat areas)."""
    rng = random.Random(seed)
    small = (max(width // 8, 1), max(height // 8, 1))
    ramp = Image.linear_gradient("L")
    image = Image.merge("RGB", (ramp.resize(small), ramp.rotate(90).resize(small), Image.new("L", small, 120)))
    canvas = ImageDraw.Draw(image)
    for _ in range(150):
        x, y, r = rng.randrange(small[0]), rng.randrange(small[1]), rng.randrange(3, max(small[0] // 8, 4))
        shape = canvas.ellipse if rng.random() < 0.5 else canvas.rectangle
        shape((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    image = image.filter(ImageFilter.GaussianBlur(2)).resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), 48).convert("RGB")
    return Image.blend(image, grain, 0.2)


def photo_jpeg(width: int, height: int) -> bytes:
    return encode(photo(width, height), "JPEG", quality=JPEG_QUALITY)


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def unique_jpeg(data: bytes, number: int) -> bytes:
    """The same JPEG with a COM segment naming `number` right after the start-of-image marker."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    comment = f"bench upload {number} {os.getpid()}".encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]


def small_png(size: int = 64) -> bytes:
    """A size x size PNG of random pixels (about 12 KB at 64 px), different every call."""
    return encode(Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)), "PNG")
