"""A page submit of many large photos keeps the web process's memory bounded by one image, not by the upload.

Against the real server (daphne and the worker, one web process), with the fake Ollama; the
peak resident size of the web process is read from /proc around one submit of thirty photos.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy
import pytest
from PIL import Image

from tests.fakes.ollama import FakeOllama
from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow

PHOTOS = 30
SIZE = (4000, 3000)
DECODED = SIZE[0] * SIZE[1] * 3
# The process's own churn (templates, the ORM, a thread stack or two), whatever the images.
ALLOWANCE = 32 * 2**20
PASSWORD = "memory-tests-admin"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Noisy 12 MP JPEGs, several MB each (noise does not compress), each different."""
    folder = tmp_path_factory.mktemp("photos")
    rng = numpy.random.default_rng(7)
    ramp = numpy.linspace(40, 200, SIZE[0], dtype=numpy.float32)[None, :, None]
    paths = []
    for n in range(PHOTOS):
        noise = rng.integers(-40, 40, (SIZE[1], SIZE[0], 3), dtype=numpy.int16)
        pixels = numpy.clip(ramp + noise + n, 0, 255).astype(numpy.uint8)
        path = folder / f"photo-{n}.jpg"
        Image.fromarray(pixels).save(path, "JPEG", quality=92)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with (
        FakeOllama() as ollama,
        live_server(
            tmp_path_factory.mktemp("memory-server"),
            OLLAMA_URLS=ollama.url,
            ADMIN_PASSWORD=PASSWORD,
            LOCAL_AGENT="0",
            WEB_PROCESSES="1",
            WORKERS="1",
        ) as running,
    ):
        yield running


def web_process(server: LiveServer) -> int:
    """The pid of serve's one daphne child."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            command = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields.get("PPid", "0")) == server.process.pid and b"daphne" in command:
            return int(fields["Pid"])
    raise AssertionError("serve has no daphne process")


def kilobytes(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    assert match, field
    return int(match.group(1)) * 1024


def signed_in(server: LiveServer) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=300)
    client.get("/accounts/login/")
    form = {"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": client.cookies["csrftoken"]}
    assert client.post("/accounts/login/", data=form).status_code == 302
    return client


def submit(client: httpx.Client, paths: list[Path]) -> httpx.Response:
    files = [("images", (path.name, path.open("rb"), "image/jpeg")) for path in paths]
    try:
        return client.post(
            "/ImageToText/jobs",
            data={"model": "llava:7b", "preset": "caption"},
            files=files,
            headers={"X-CSRFToken": client.cookies["csrftoken"], "HX-Request": "true"},
        )
    finally:
        for _, (_, handle, _) in files:
            handle.close()


def jobs_of_admin(server: LiveServer) -> int:
    count = "from imagetotext.models import Job; print(Job.objects.filter(owner__username='admin').count())"
    return int(server.manage("shell", "-c", count).split()[-1])  # after shell's own notice


def test_thirty_large_photos_grow_the_web_process_by_a_few_decoded_images_at_most(server, photos):
    upload = sum(path.stat().st_size for path in photos)
    assert upload > 4 * DECODED + ALLOWANCE  # so holding the whole upload would fail
    client = signed_in(server)
    assert submit(client, photos[:1]).status_code == 200  # imports and first-use caches, not counted
    pid = web_process(server)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart the peak (VmHWM) from the current size
    before = kilobytes(pid, "VmRSS")

    response = submit(client, photos)

    assert response.status_code == 200, response.text
    assert jobs_of_admin(server) == PHOTOS + 1
    growth = kilobytes(pid, "VmHWM") - before
    print(f"upload {upload / 2**20:.0f} MB, web process peak grew by {growth / 2**20:.0f} MB")
    assert growth < 4 * DECODED + ALLOWANCE
