"""Benchmark the local OCR engine: cold start, warm time per drawn image, peak memory.

Run from the repository root: `.venv/bin/python benchmarks/bench_ocr.py [--repeat N]`.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def banner() -> Image.Image:
    """One short line of large text on a small canvas."""
    image = Image.new("RGB", (1000, 200), "white")
    ImageDraw.Draw(image).text((40, 40), "HELLO WORLD 42", font=ImageFont.load_default(size=96), fill="black")
    return image


def page(size: tuple[int, int], font_size: int) -> Image.Image:
    """A canvas filled with lines of random words: a document page or a dense screen."""
    rng, font = random.Random(3), ImageFont.load_default(size=font_size)
    image = Image.new("RGB", size, "white")
    canvas = ImageDraw.Draw(image)
    for y in range(40, size[1] - 2 * font_size, int(font_size * 1.6)):
        line = " ".join(rng.choice(WORDS) for _ in range(size[0] // (font_size * 4)))
        canvas.text((40, y), line, font=font, fill="black")
    return image


def photo_like() -> Image.Image:
    """Coloured shapes with a sign painted on top: scene text."""
    rng = random.Random(7)
    image = Image.new("RGB", (1280, 960), (120, 140, 110))
    canvas = ImageDraw.Draw(image)
    for _ in range(150):
        x, y, r = rng.randrange(1280), rng.randrange(960), rng.randrange(20, 120)
        canvas.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    font = ImageFont.load_default(size=110)
    canvas.text((300, 400), "STOP 25", font=font, fill="yellow", stroke_width=4, stroke_fill="black")
    return image


IMAGES: dict[str, Callable[[], Image.Image]] = {
    "banner 1000x200": banner,
    "document 1240x1754 (A4 @150dpi, 20px)": lambda: page((1240, 1754), 20),
    "screen 1280x800 (14px)": lambda: page((1280, 800), 14),
    "photo-like 1280x960": photo_like,
    "empty 800x600": lambda: Image.new("RGB", (800, 600), "white"),
}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="warm runs per image")
    parser.add_argument("--use-cls", action="store_true", help="turn on the text-direction classifier")
    args = parser.parse_args()
    images = {name: make() for name, make in IMAGES.items()}
    print(f"peak RSS before OCR import: {peak_rss_mb():.0f} MB")

    started = time.perf_counter()
    from agents.clients.ocr import OcrEngine

    engine = OcrEngine(use_cls=args.use_cls)
    engine.load()
    print(f"cold start (import + model load): {time.perf_counter() - started:.2f} s")
    print(f"peak RSS after load: {peak_rss_mb():.0f} MB")

    for name, image in images.items():
        first = engine.recognise(image)
        times = [engine.recognise(image).seconds for _ in range(args.repeat)]
        preview = first.text.replace("\n", " / ")[:50]
        print(
            f"{name:40} first {first.seconds:5.2f} s  warm mean {statistics.mean(times):5.2f} s"
            f"  min {min(times):5.2f} s  {len(first.lines):3} boxes  {preview!r}"
        )
    print(f"peak RSS at end: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
