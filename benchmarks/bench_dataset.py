"""Benchmark the dataset module alone: reading an uploaded ZIP of 1,000 images and exporting 1,000 rows.

Run from the repository root: `.venv/bin/python benchmarks/bench_dataset.py`.
No database and no server: imagetotext.dataset works on files and rows only. The ZIP holds
small generated JPEGs (256x192, noise, about 20 kB each) in nested folders, deflated as a
user's zip tool would; the export streams into a sink that only counts bytes, as a download
would. The issue sets no target beyond printing the time, so the figures are printed plainly.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from imagetotext.dataset import ExportRow, ZipContents, export_zip, read_zip  # noqa: E402

MB = 1024 * 1024


def jpeg(seed: int) -> bytes:
    """A 256x192 JPEG of grey noise tinted by seed: photo-like, so it does not compress to nothing."""
    noise = Image.effect_noise((256, 192), 40 + seed % 20).convert("RGB")
    tinted = Image.blend(noise, Image.new("RGB", noise.size, (seed % 256, 90, 160)), 0.3)
    buffer = io.BytesIO()
    tinted.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def dataset_zip(count: int) -> bytes:
    """A ZIP of count JPEGs under set/<n // 100>/<n // 10>/, with a few folders listed as entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(count):
            archive.writestr(f"set/{n // 100:02}/{n // 10:03}/{n:04}.jpg", jpeg(n))
    return buffer.getvalue()


def timed_read(data: bytes) -> ZipContents:
    started = time.perf_counter()
    contents = read_zip(io.BytesIO(data))
    listed = time.perf_counter() - started
    total = 0
    for item in contents.items:  # what storing the jobs does: each member read once, one at a time
        with item.open() as member:
            total += len(member.read())
    seconds = time.perf_counter() - started
    print(f"read_zip of {len(contents.items)} images ({len(data) / MB:.1f} MB ZIP): {listed * 1000:.0f} ms to list")
    print(f"  and every member read through its bounded reader ({total / MB:.1f} MB): {seconds * 1000:.0f} ms in all")
    if contents.refused or contents.skipped:
        sys.exit(f"read_zip left images out: {contents.refused or contents.skipped[:3]}")
    return contents


def timed_export(label: str, rows: list[ExportRow]) -> None:
    started, size, chunks = time.perf_counter(), 0, 0
    for chunk in export_zip(rows):
        size, chunks = size + len(chunk), chunks + 1
    seconds = time.perf_counter() - started
    print(
        f"export_zip of {len(rows)} rows ({label}): {seconds * 1000:.0f} ms, "
        f"{size / MB:.1f} MB in {chunks} chunks ({size / MB / seconds:.0f} MB/s)"
    )


def rows_of(contents: ZipContents) -> list[ExportRow]:
    return [
        ExportRow(
            item.path, item.open, f"a photo, number {n}", f"A photo {n}", "llava:7b", "Describe", "Completed", 1.5, n
        )
        for n, item in enumerate(contents.items)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="images in the ZIP and rows exported")
    args = parser.parse_args()
    started = time.perf_counter()
    data = dataset_zip(args.count)
    print(f"{os.cpu_count()} CPUs; generated {args.count} JPEGs in {time.perf_counter() - started:.1f} s")
    contents = timed_read(data)
    timed_export("images read back from the uploaded ZIP", rows_of(contents))
    big = bytes(MB)
    large = [replace(row, open_image=lambda: io.BytesIO(big)) for row in rows_of(contents)]
    timed_export("1 MB images from memory", large)
    print(f"peak memory (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
