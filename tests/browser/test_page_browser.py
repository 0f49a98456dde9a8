"""The Image to Text page in Chromium: sign in, send images, watch the cards live."""

from __future__ import annotations

import base64
import os
import re
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

try:
    from playwright.sync_api import Page, expect
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("playwright is not installed (pip install -r requirements.txt)", allow_module_level=True)

from tests.browser.pages import BOB_PASSWORD, screenshot, sign_in  # noqa: E402

CAPTION_PROMPT = "Write one short sentence that captions this image."
pytestmark = pytest.mark.browser


def png(colour: str, size: tuple[int, int] = (160, 120)) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def write_pngs(folder: Path, *colours: str) -> list[str]:
    paths = []
    for colour in colours:
        path = folder / f"{colour}.png"
        path.write_bytes(png(colour))
        paths.append(str(path))
    return paths


def paste_image(page: Page, data: bytes) -> None:
    """What the browser does on Ctrl+V with an image on the clipboard."""
    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "image.png", { type: "image/png" }));
            document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }));
        }""",
        base64.b64encode(data).decode(),
    )


def drop_image(page: Page, data: bytes) -> None:
    """What the browser does when a file is dragged from the desktop onto the drop zone."""
    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
            const zone = document.querySelector("#dropzone");
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        base64.b64encode(data).decode(),
    )


def send(page: Page, model: str, preset: str) -> None:
    """Send what is picked, and wait for its card: it arrives over the WebSocket, on top."""
    newest = cards(page).first.get_attribute("id") if cards(page).count() else None
    page.get_by_label("Model", exact=True).select_option(model)
    page.get_by_label(preset).check()
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#pending li")).to_have_count(0)
    if newest:
        expect(cards(page).first).not_to_have_id(newest)
    else:
        expect(cards(page)).not_to_have_count(0)


def cards(page: Page):
    return page.locator("#jobs > .job-card")


def test_images_by_picker_and_paste_stream_into_their_cards(page: Page, backends, tmp_path: Path) -> None:
    """One image at a time makes a card each (several at once make a batch: test_batch_browser)."""
    ollama, _ = backends
    sign_in(page)
    screenshot(page, "01-empty-page")
    page.get_by_label("Model", exact=True).select_option("llava:7b")
    page.get_by_label("Short caption").check()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value(CAPTION_PROMPT)
    page.set_input_files("#images", write_pngs(tmp_path, "red"))
    expect(page.locator("#pending li")).to_have_count(1)
    page.get_by_role("button", name="Send").click()
    expect(cards(page)).to_have_count(1)
    paste_image(page, png("blue"))
    expect(page.locator("#pending li")).to_have_count(1)
    expect(page.locator("#pending li").first).to_contain_text("pasted-")
    screenshot(page, "02-pasted-image-ready")
    page.get_by_label("Prompt", exact=True).press("Control+Enter")  # the keyboard sends too

    expect(cards(page)).to_have_count(2)
    expect(cards(page).first.locator(".job-title")).to_contain_text("pasted-")
    expect(cards(page).nth(1).locator(".job-title")).to_have_text("red.png")
    reply = ollama.reply_for("llava:7b", CAPTION_PROMPT)
    running = page.locator(".job-card--started").first
    expect(running.locator(".job-text")).to_contain_text("A red square")
    expect(running.locator(".badge")).to_have_text("Running")
    partial = running.locator(".job-text").inner_text()
    assert 0 < len(partial) < len(reply), "the text should be seen before the job ends"
    expect(running.locator(".job-status")).to_contain_text(re.compile(r"Running on .+ · \d+ s"))
    screenshot(page, "03-streaming")

    expect(page.locator(".job-card--completed")).to_have_count(2, timeout=30_000)
    for index in range(2):
        expect(cards(page).nth(index).locator(".job-output")).to_have_text(reply)
        expect(cards(page).nth(index).locator(".job-status")).to_contain_text("tokens/s")
    expect(cards(page).first.locator("img")).to_have_attribute("alt", re.compile("The image sent with request"))
    screenshot(page, "04-done")


def test_a_dropped_image_is_sent_and_its_text_copied(page: Page, backends) -> None:
    ollama, _ = backends
    sign_in(page)

    drop_image(page, png("olive"))
    expect(page.locator("#pending li")).to_have_count(1)
    expect(page.locator("#pending li")).to_contain_text("dropped.png")
    send(page, "gemma3:4b", "Short caption")
    card = cards(page).first
    expect(card).to_have_class(re.compile("job-card--completed"), timeout=30_000)
    card.get_by_role("button", name="Copy text").click()

    reply = ollama.reply_for("gemma3:4b", CAPTION_PROMPT)
    assert page.evaluate("navigator.clipboard.readText()") == reply


def test_a_florence_job_on_comfyui_gets_the_task_for_the_preset(page: Page, backends, tmp_path: Path) -> None:
    _, comfy = backends
    sign_in(page)
    page.get_by_label("Model", exact=True).select_option("microsoft/Florence-2-base")
    expect(page.get_by_label("Prompt", exact=True)).to_be_disabled()
    page.get_by_label("Alt text for accessibility").check()
    expect(page.locator("#prompt-help")).to_contain_text('"detailed_caption"')
    page.set_input_files("#images", write_pngs(tmp_path, "orange"))
    send(page, "microsoft/Florence-2-base", "Alt text for accessibility")
    card = cards(page).first
    expect(card.locator(".job-prompt")).to_contain_text("Florence-2 task: Detailed caption")
    caption = comfy.caption_for("detailed_caption")
    expect(card.locator(".job-output")).to_have_text(caption, timeout=20_000)
    screenshot(page, "05-florence-done")
    card.get_by_role("button", name="Copy text").click()
    expect(card.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == caption


def test_run_again_sends_the_stored_image_with_another_model(page: Page, backends, tmp_path: Path) -> None:
    ollama, _ = backends
    sign_in(page)
    page.set_input_files("#images", write_pngs(tmp_path, "teal"))
    send(page, "microsoft/Florence-2-base", "Short caption")
    first = page.locator(f"#{cards(page).first.get_attribute('id')}")  # this card, not whichever is on top
    expect(first.locator(".badge")).to_have_text("Done", timeout=20_000)
    first.get_by_role("button", name=re.compile("Run request .* again")).click()
    expect(page.locator("#pending li")).to_contain_text("again")
    expect(page.get_by_label("Model", exact=True)).to_be_focused()
    page.get_by_label("Model", exact=True).select_option("gemma3:4b")
    page.get_by_label("Prompt", exact=True).fill("What colour is it?")
    page.get_by_role("button", name="Send").click()
    again = cards(page).first
    expect(again).not_to_have_id(first.get_attribute("id") or "")
    expect(again.locator(".job-output")).to_have_text(
        ollama.reply_for("gemma3:4b", "What colour is it?"), timeout=20_000
    )
    assert again.locator("img").get_attribute("src") == first.locator("img").get_attribute("src")


def test_a_failed_job_shows_its_reason_and_succeeds_on_retry(page: Page, backends, tmp_path: Path) -> None:
    ollama, _ = backends
    sign_in(page)
    ollama.mode = "no_vision"
    try:
        page.set_input_files("#images", write_pngs(tmp_path, "purple"))
        send(page, "gemma3:4b", "Short caption")
        card = cards(page).first
        expect(card.locator(".badge")).to_have_text("Failed", timeout=20_000)
        expect(card.locator(".job-error")).to_contain_text("cannot read images")
        screenshot(page, "06-failed")
    finally:
        ollama.mode = "ok"
    card.get_by_role("button", name="Retry").click()
    expect(card.locator(".job-output")).to_have_text(ollama.reply_for("gemma3:4b", CAPTION_PROMPT), timeout=20_000)


def test_a_reload_mid_job_shows_the_true_state(page: Page, backends, tmp_path: Path) -> None:
    ollama, _ = backends
    sign_in(page)
    page.set_input_files("#images", write_pngs(tmp_path, "yellow"))
    send(page, "llava:7b", "Detailed description")
    card = cards(page).first
    expect(card.locator(".job-text")).not_to_be_empty()
    job_id = card.get_attribute("id")
    page.reload()
    page.locator("#live-status[data-state=open]").wait_for()
    card = page.locator(f"#{job_id}")
    expect(card).to_have_class(re.compile("job-card--(started|completed)"))
    screenshot(page, "07-after-reload")
    prompt = page.locator(f"#{job_id} .job-prompt").inner_text()
    expect(card.locator(".job-output")).to_have_text(ollama.reply_for("llava:7b", prompt), timeout=20_000)


def test_one_user_never_sees_anothers_cards(browser, server, backends, tmp_path: Path) -> None:
    alice_context = browser.new_context(base_url=server.url)
    bob_context = browser.new_context(base_url=server.url, color_scheme="dark", viewport={"width": 390, "height": 844})
    try:
        alice, bob = alice_context.new_page(), bob_context.new_page()
        sign_in(alice)
        sign_in(bob, "bob", BOB_PASSWORD)
        alice.set_input_files("#images", write_pngs(tmp_path, "pink"))
        send(alice, "llava:7b", "Tags / keywords")
        expect(cards(alice).first.locator(".badge")).to_have_text("Done", timeout=20_000)
        expect(cards(bob)).to_have_count(0)
        expect(bob.locator(".jobs-empty")).to_be_visible()
        bob.goto("/ImageToText/history")
        expect(bob.locator(".history-row")).to_have_count(0)
        screenshot(bob, "08-bob-phone-dark-history")
        bob.goto("/ImageToText")
        screenshot(bob, "09-bob-phone-dark")
        alice.set_viewport_size({"width": 390, "height": 844})
        alice.emulate_media(color_scheme="dark")
        screenshot(alice, "10-alice-phone-dark")
        alice.goto("/ImageToText/history")
        expect(alice.locator(".history-row").first).to_be_visible()
        screenshot(alice, "11-alice-phone-dark-history")
    finally:
        alice_context.close()
        bob_context.close()


def test_after_many_requests_a_reload_keeps_the_newest_cards_first(page: Page, server) -> None:
    # 30 requests that just finished: more than the page lists, all of them resent on connect.
    server.manage(
        "shell",
        "-c",
        (
            "from django.contrib.auth.models import User; from django.utils import timezone; "
            "from imagetotext.models import Job; admin = User.objects.get(username='admin'); "
            "[Job.objects.create(owner=admin, model='llava:7b', prompt=f'Request {n}', state='Completed', "
            "output=f'Answer {n}', started_at=timezone.now(), finished_at=timezone.now()) for n in range(30)]"
        ),
    )
    sign_in(page)
    page.reload()
    expect(page.locator("#live-status")).to_have_text("live")
    page.wait_for_timeout(1500)  # the old page re-added resent cards a second after load

    ids = [int(card_id.removeprefix("job-")) for card_id in cards(page).evaluate_all("cards => cards.map(c => c.id)")]
    assert len(ids) == 20
    assert ids == sorted(ids, reverse=True), "newest first, with no older card above a newer one"
    screenshot(page, "10-reloaded-after-30-requests")
