"""Batches in Chromium: a ZIP dropped on the page, its batch followed live, a caption edited, the export."""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import zipfile
from io import BytesIO

import pytest
from PIL import Image

try:
    from playwright.sync_api import Page, expect
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("playwright is not installed (pip install -r requirements.txt)", allow_module_level=True)

from tests.browser.pages import screenshot, sign_in  # noqa: E402

pytestmark = pytest.mark.browser
REPLY = "a small square of one colour on a plain ground"
COLOURS = ["red", "green", "blue", "orange", "purple"]


@pytest.fixture(scope="module")
def backends():
    """Replies short and quick enough for 50 images, slow enough that the progress is seen moving."""
    from tests.fakes.comfyui import FakeComfyUI
    from tests.fakes.ollama import FakeOllama

    with FakeOllama(chunk_delay=0.05, replies={"llava:7b": REPLY}) as ollama, FakeComfyUI() as comfy:
        yield ollama, comfy


def png(colour: str, number: int) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (64 + number, 48), colour).save(buffer, "PNG")
    return buffer.getvalue()


def dataset_zip(count: int, corrupt: bool = True) -> bytes:
    """count images in nested folders (set/<colour>/<n>/…), and one member that only looks like a PNG."""
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for number in range(count):
            colour = COLOURS[number % len(COLOURS)]
            archive.writestr(f"set/{colour}/{number // 10}/{number:02}.png", png(colour, number))
        if corrupt:
            archive.writestr("set/broken/bad.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return buffer.getvalue()


def drop_file(page: Page, data: bytes, name: str, kind: str) -> None:
    """What the browser does when a file is dragged from the desktop onto the drop zone."""
    page.evaluate(
        """([b64, name, kind]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: kind }));
            const zone = document.querySelector("#dropzone");
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        [base64.b64encode(data).decode(), name, kind],
    )


def send_zip(page: Page, data: bytes, name: str) -> None:
    drop_file(page, data, name, "application/zip")
    expect(page.locator("#pending li")).to_contain_text(name)
    page.get_by_label("Model", exact=True).select_option("llava:7b")
    page.get_by_label("Short caption").check()
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#pending li")).to_have_count(0)


def progress_value(page: Page) -> int:
    return int(page.locator("#batch-progress progress").get_attribute("value") or 0)


def test_a_dropped_zip_is_captioned_live_edited_and_exported(page: Page, tmp_path) -> None:
    sign_in(page)
    page.get_by_text("Batch options").click()
    page.get_by_label("Prefix").fill("sks, ")
    send_zip(page, dataset_zip(50), "dataset.zip")
    notice = page.locator("#sent-notice")
    expect(notice).to_contain_text("Sent 50 images as the batch dataset.zip")
    expect(notice).to_contain_text("1 of 51 was skipped: set/broken/bad.png:")
    notice.get_by_role("link", name="dataset.zip").click()

    page.locator("#live-status[data-state=open]").wait_for()
    first_seen = progress_value(page)
    expect(page.locator("#skipped")).to_contain_text("1 file skipped")
    expect(page.locator("#batch-progress")).to_contain_text("50 of 50 done", timeout=120_000)
    assert first_seen < 50, "the batch ended before its page could follow it"  # so the bar moved live
    expect(page.locator(".batch-item--completed")).to_have_count(50)
    screenshot(page, "20-batch-done-desktop-light")

    item = page.locator(".batch-item").first
    expect(item).to_contain_text("sks, " + REPLY)
    edited_path = item.locator(".batch-item-path").inner_text()
    other_path = page.locator(".batch-item .batch-item-path").nth(1).inner_text()
    item.get_by_role("button", name=re.compile("Edit the caption")).click()
    item.get_by_role("textbox").fill("a red square, edited by hand")
    item.get_by_role("button", name="Save").click()
    item = page.locator(".batch-item").first
    expect(item.locator(".batch-caption")).to_have_text("a red square, edited by hand")
    item.get_by_text("the model's original").click()
    expect(item.locator(".original")).to_contain_text(REPLY)

    with page.expect_download() as download:
        page.get_by_role("link", name="Dataset (ZIP)").click()
    archive = zipfile.ZipFile(download.value.path())
    names = archive.namelist()
    assert "set/red/0/00.png" in names and "set/broken/bad.png" not in names
    assert len([name for name in names if name.endswith(".png")]) == 50
    assert archive.read(edited_path.replace(".png", ".txt")).decode() == "a red square, edited by hand\n"
    assert archive.read(other_path.replace(".png", ".txt")).decode() == f"sks, {REPLY}\n"
    rows = list(csv.DictReader(io.StringIO(archive.read("captions.csv").decode())))
    assert len(rows) == 50 and {row["state"] for row in rows} == {"Completed"}

    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, "21-batch-phone-light")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "22-batch-phone-dark")


def test_a_second_batch_is_cancelled_halfway(page: Page, backends) -> None:
    ollama, _ = backends
    ollama.chunk_delay = 0.4  # long enough to cancel while most wait
    try:
        sign_in(page)
        send_zip(page, dataset_zip(20, corrupt=False), "second.zip")
        page.locator("#sent-notice").get_by_role("link", name="second.zip").click()
        page.locator("#live-status[data-state=open]").wait_for()
        expect(page.locator("#batch-progress")).to_contain_text(re.compile(r"[1-9]\d* completed"), timeout=60_000)
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Cancel the rest").click()
        expect(page.locator("#batch-progress")).to_contain_text("cancelled", timeout=20_000)
        expect(page.get_by_role("button", name="Cancel the rest")).to_have_count(0, timeout=20_000)
        # The progress bar and each item's card are separate updates: the last card may follow it.
        expect(page.locator(".batch-item--completed, .batch-item--cancelled")).to_have_count(20, timeout=10_000)
        completed = page.locator(".batch-item--completed").count()
        cancelled = page.locator(".batch-item--cancelled").count()
        assert completed + cancelled == 20 and 0 < completed < 20
        page.emulate_media(color_scheme="dark")
        screenshot(page, "23-batch-cancelled-desktop-dark")
    finally:
        ollama.chunk_delay = 0.05
