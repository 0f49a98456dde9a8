"""Benchmark a 1,000-image batch through the real server: the time to accept it, and to export it.

Run from the repository root: `.venv/bin/python benchmarks/bench_batch.py`.
A fresh embedded store (SQLite in a temporary DATA_DIR), `manage.py serve` (daphne and the
django-q2 cluster) and one fake Ollama answering at once, as benchmarks/enginebench does.
One POST /api/QueueImageToTextBatch carries a ZIP of 1,000 small distinct PNGs in nested
folders: "accept" is that request, from its first byte to the reply (every image checked and
stored, every job queued). The workers then caption them; "export" is GET /api/GetBatchExport
of the finished batch read to its end (streamed: the images, a .txt each, captions.csv and
captions.jsonl). The PNGs are tiny: the figure is the server's own work per item (checking,
storing and queueing), not the upload of large files.
"""

from __future__ import annotations

import io
import sys
import time
import zipfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from benchmarks.enginebench.fakes import BenchOllama  # noqa: E402
from benchmarks.enginebench.server import AgentSpec, embedded_store, manage, register_agents, running_server  # noqa: E402

ITEMS = 1000
MODEL = "bench-batch:7b"
CAPTION_WAIT_SECONDS = 40


def dataset_zip(count: int) -> bytes:
    """count distinct 8x8 PNGs under set/<n // 100>/<n // 10>/."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(count):
            image = io.BytesIO()
            Image.new("RGB", (8, 8), (n % 256, n // 256, 90)).save(image, "PNG")
            archive.writestr(f"set/{n // 100:02}/{n // 10:03}/{n:04}.png", image.getvalue())
    return buffer.getvalue()


def accept(http: httpx.Client, data: bytes) -> tuple[float, int]:
    started = time.perf_counter()
    response = http.post(
        "/api/QueueImageToTextBatch",
        data={"Model": MODEL, "Prompt": "Caption it.", "Prefix": "bench, "},
        files={"zip": ("bench.zip", data, "application/zip")},
    )
    seconds = time.perf_counter() - started
    body = response.json()
    if response.status_code != 200 or body.get("total") != ITEMS:
        sys.exit(f"QueueImageToTextBatch answered {response.status_code}: {str(body)[:300]}")
    return seconds, int(body["batchId"])


def wait_for_captions(http: httpx.Client, batch_id: int) -> dict[str, int]:
    deadline = time.monotonic() + CAPTION_WAIT_SECONDS
    while True:
        counts: dict[str, int] = http.get("/api/GetBatchStatus", params={"BatchId": batch_id, "Take": 1}).json()[
            "counts"
        ]
        if not counts["queued"] + counts["running"] or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def export(http: httpx.Client, batch_id: int) -> tuple[float, int, int]:
    started, size = time.perf_counter(), 0
    with http.stream("GET", "/api/GetBatchExport", params={"BatchId": batch_id}) as response:
        if response.status_code != 200:
            sys.exit(f"GetBatchExport answered {response.status_code}")
        chunks = io.BytesIO()
        for chunk in response.iter_bytes():
            size += len(chunk)
            chunks.write(chunk)
    seconds = time.perf_counter() - started
    members = len(zipfile.ZipFile(chunks).namelist())
    return seconds, size, members


def main() -> int:
    data = dataset_zip(ITEMS)
    with BenchOllama(MODEL, latency=0.0, reply="A small square.") as fake, embedded_store() as env:
        manage(env, "migrate", "--verbosity", "0")
        with running_server(env, "batch") as server:
            register_agents(server.env, [AgentSpec("bench-batch", fake.url, 16)])
            key = server.manage("createapikey", "bench", "--owner", "admin").strip()
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=120, trust_env=False) as http:
                accepted, batch_id = accept(http, data)
                print(f"accept: {ITEMS} images ({len(data) / 1024:.0f} kB ZIP) in {accepted:.2f} s", flush=True)
                started = time.perf_counter()
                counts = wait_for_captions(http, batch_id)
                waited = time.perf_counter() - started
                print(f"  captioned by the workers: {counts['completed']} completed in {waited:.1f} s more")
                seconds, size, members = export(http, batch_id)
                print(f"export: {size / 1024:.0f} kB ZIP of {members} members in {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
