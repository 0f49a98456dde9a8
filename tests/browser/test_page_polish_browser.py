"""Issue 14 in Chromium: text keeps its lines, empty is not broken, choices are remembered,
files are checked before sending, the job page shows the image, and the admin fits 1280 px."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

try:
    from playwright.sync_api import Page, expect
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("playwright is not installed (pip install -r requirements.txt)", allow_module_level=True)

from tests.browser.pages import ADMIN_PASSWORD, BOB_PASSWORD, screenshot, sign_in  # noqa: E402

pytestmark = pytest.mark.browser
# Small, so an image over the limit is quick to make; the server checks the same number.
IMAGE_LIMIT = 100_000
FLORENCE = "microsoft/Florence-2-base"
THREE_LINES = "OPEN DAILY\n9AM - 5PM\nCLOSED SUNDAYS"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def server(backends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The harness's server, with a small image limit."""
    from tests.live_server import live_server

    ollama, comfy = backends
    with live_server(
        tmp_path_factory.mktemp("polish-server"),
        OLLAMA_URLS=ollama.url,
        COMFYUI_URLS=comfy.url,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        LOCAL_AGENT="0",
        IMAGE_MAX_BYTES=str(IMAGE_LIMIT),
    ) as running:
        running.manage(
            "shell",
            "-c",
            f"from django.contrib.auth.models import User; User.objects.create_user('bob', password='{BOB_PASSWORD}')",
        )
        yield running


@pytest.fixture
def comfy(backends) -> Iterator[object]:
    _, comfy = backends
    captions = dict(comfy.captions)
    yield comfy
    comfy.captions = captions


def png_file(folder: Path, name: str, colour: str = "teal", size: tuple[int, int] = (160, 120)) -> str:
    path = folder / name
    Image.new("RGB", size, colour).save(path, "PNG")
    return str(path)


def noisy_png(folder: Path, name: str) -> str:
    """A PNG over IMAGE_LIMIT: noise does not compress."""
    path = folder / name
    Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3)).save(path, "PNG")
    assert path.stat().st_size > IMAGE_LIMIT
    return str(path)


def cards(page: Page):
    return page.locator("#jobs > .job-card")


def choose(page: Page, model: str, preset: str, tag: str = "") -> None:
    page.get_by_label("Model", exact=True).select_option(model)
    page.get_by_label(preset).check()
    page.get_by_label(re.compile("^Tag")).fill(tag)


def send_and_wait(page: Page) -> object:
    """Send what is picked; the new card on top, once it is done."""
    newest = cards(page).first.get_attribute("id") if cards(page).count() else ""
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#pending li")).to_have_count(0)
    expect(cards(page).first).not_to_have_id(newest or "none")
    card = page.locator(f"#{cards(page).first.get_attribute('id')}")
    expect(card.locator(".badge")).to_have_text("Done", timeout=30_000)
    return card


def shown_lines(locator) -> int:
    """How many lines the element's text takes on screen: the distinct tops of its text's boxes."""
    return locator.evaluate(
        """el => {
            const range = document.createRange();
            range.selectNodeContents(el);
            const tops = [...range.getClientRects()].filter((r) => r.width > 0).map((r) => r.top).sort((a, b) => a - b);
            return tops.filter((top, i) => i === 0 || top - tops[i - 1] > 8).length;  // a bold word's box is not a line
        }"""
    )


def expect_lines(locator, count: int) -> None:
    """The element shows `count` lines, soon (a card may be swapped for its live copy meanwhile)."""
    deadline = time.monotonic() + 5
    while (shown := shown_lines(locator)) != count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shown == count


def as_phone_in_dark(page: Page) -> None:
    page.set_viewport_size(PHONE)
    page.emulate_media(color_scheme="dark")


def test_ocr_text_with_three_lines_shows_three_lines_everywhere(page: Page, comfy, tmp_path: Path) -> None:
    comfy.captions["ocr"] = THREE_LINES
    sign_in(page)
    page.set_input_files("#images", png_file(tmp_path, "sign.png"))
    choose(page, FLORENCE, "Extract text")
    card = send_and_wait(page)
    text = card.locator(".job-output")
    expect(text).to_have_text(THREE_LINES)
    expect_lines(text, 3)
    screenshot(page, "polish-01-ocr-lines")
    card.get_by_role("button", name="Copy text").click()
    assert page.evaluate("navigator.clipboard.readText()") == THREE_LINES

    card.locator(".job-title a").click()
    expect(page.locator(".job-output")).to_have_text(THREE_LINES)
    expect_lines(page.locator(".job-output"), 3)
    page.goto("/ImageToText/history")
    row = page.locator(".history-output").first
    expect(row).to_have_text(THREE_LINES)
    expect_lines(row, 3)
    as_phone_in_dark(page)
    screenshot(page, "polish-02-ocr-lines-history-phone-dark")


def test_a_markdown_answer_keeps_single_line_breaks(page: Page, backends, tmp_path: Path) -> None:
    ollama, _ = backends
    sign_in(page)
    page.set_input_files("#images", png_file(tmp_path, "letter.png", "white"))
    choose(page, "llava:7b", "Short caption")
    page.get_by_label("Prompt", exact=True).fill("Give the address on two lines.")
    ollama.replies["llava:7b"] = "**Address**\n1 High Street\nLondon"
    try:
        card = send_and_wait(page)
    finally:
        del ollama.replies["llava:7b"]
    output = card.locator(".job-output.markdown")
    expect(output.locator("strong")).to_have_text("Address")
    expect_lines(output, 3)


def test_an_empty_result_says_no_text_found_and_copy_is_disabled(page: Page, comfy, tmp_path: Path) -> None:
    comfy.captions["ocr"] = ""
    sign_in(page)
    page.set_input_files("#images", png_file(tmp_path, "blank.png", "white"))
    choose(page, FLORENCE, "Extract text")
    card = send_and_wait(page)
    expect(card.locator(".job-output")).to_have_text("No text found")
    expect(card.get_by_role("button", name="Copy text")).to_be_disabled()
    screenshot(page, "polish-03-no-text-found")
    as_phone_in_dark(page)
    screenshot(page, "polish-04-no-text-found-phone-dark")
    page.goto("/ImageToText/history")
    expect(page.locator(".history-row").first.locator(".history-output")).to_have_text("No text found")


def test_run_again_restores_model_preset_prompt_and_tag_from_the_card(page: Page, tmp_path: Path) -> None:
    sign_in(page)
    page.set_input_files("#images", png_file(tmp_path, "teal.png"))
    choose(page, FLORENCE, "Alt text for accessibility", tag="shop")
    florence_card = send_and_wait(page)
    page.set_input_files("#images", png_file(tmp_path, "olive.png", "olive"))
    choose(page, "gemma3:4b", "Short caption", tag="colours")
    page.get_by_label("Prompt", exact=True).fill("What colour is it?")
    vision_card = send_and_wait(page)

    choose(page, "llava:7b", "Tags / keywords", tag="something else")
    florence_card.get_by_role("button", name=re.compile("Run request .* again")).click()
    expect(page.locator("#pending li")).to_contain_text("again")
    expect(page.get_by_label("Model", exact=True)).to_have_value(FLORENCE)
    expect(page.get_by_label("Alt text for accessibility")).to_be_checked()
    expect(page.get_by_label(re.compile("^Tag"))).to_have_value("shop")
    expect(page.locator("#prompt-help")).to_contain_text('"detailed_caption"')

    vision_card.get_by_role("button", name=re.compile("Run request .* again")).click()
    expect(page.get_by_label("Model", exact=True)).to_have_value("gemma3:4b")
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("What colour is it?")
    expect(page.locator("input[name=preset]:checked")).to_have_count(0)  # a prompt of its own, no preset
    expect(page.get_by_label(re.compile("^Tag"))).to_have_value("colours")
    screenshot(page, "polish-05-run-again-restored")


def test_run_again_from_the_job_page_opens_the_form_with_that_job(page: Page, tmp_path: Path) -> None:
    sign_in(page)
    page.set_input_files("#images", png_file(tmp_path, "navy.png", "navy"))
    choose(page, "llava:7b", "Tags / keywords", tag="stock")
    card = send_and_wait(page)
    job_id = (card.get_attribute("id") or "").removeprefix("job-")
    choose(page, "gemma3:4b", "Short caption", tag="")

    page.goto(f"/ImageToText/jobs/{job_id}")
    page.get_by_role("button", name=f"Run request {job_id} again").click()
    page.wait_for_url("**/ImageToText")  # the ?again= is gone, so a reload does not add it twice
    expect(page.locator("#pending li")).to_have_text(re.compile(f"Request {job_id}, again"))
    expect(page.get_by_label("Model", exact=True)).to_have_value("llava:7b")
    expect(page.get_by_label("Tags / keywords")).to_be_checked()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value(re.compile("^List 10 to 15"))
    expect(page.get_by_label(re.compile("^Tag"))).to_have_value("stock")
    again = send_and_wait(page)
    assert again.locator("img").get_attribute("src") == page.locator(f"#job-{job_id} img").get_attribute("src")


def test_the_choices_survive_a_reload_and_another_browser(browser, server, page: Page, tmp_path: Path) -> None:
    sign_in(page)
    page.set_input_files("#images", png_file(tmp_path, "pink.png", "pink"))
    choose(page, "gemma3:4b", "Alt text for accessibility", tag="holiday")
    send_and_wait(page)
    page.reload()
    expect(page.get_by_label("Model", exact=True)).to_have_value("gemma3:4b")
    expect(page.get_by_label("Alt text for accessibility")).to_be_checked()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value(re.compile("^Write alt text"))
    expect(page.get_by_label(re.compile("^Tag"))).to_have_value("holiday")
    expect(page.locator("#model-agents")).to_have_text(re.compile(r"^Runs on Ollama 127\.0\.0\.1:\d+\.$"))

    other = browser.new_context(base_url=server.url, color_scheme="dark", viewport=PHONE)
    try:
        phone = other.new_page()
        sign_in(phone)
        expect(phone.get_by_label("Model", exact=True)).to_have_value("gemma3:4b")
        expect(phone.get_by_label(re.compile("^Tag"))).to_have_value("holiday")
        screenshot(phone, "polish-06-remembered-phone-dark")
    finally:
        other.close()


def test_files_are_checked_before_sending_and_a_refusal_keeps_them(page: Page, tmp_path: Path) -> None:
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    sign_in(page)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    page.set_input_files("#images", [noisy_png(tmp_path, "huge.png"), str(notes)])
    pending = page.locator("#pending li")
    expect(pending).to_have_count(2)
    expect(pending.nth(0).locator(".pending-problem")).to_have_text(
        re.compile(r"^Not sent: The image is 0\.2\d+ MB; the limit is 0\.0954 MB\.$")
    )
    expect(pending.nth(1).locator(".pending-problem")).to_contain_text("Not an image in an accepted format (JPEG")

    posts.clear()
    page.get_by_role("button", name="Send").click()
    errors = page.locator("#upload-errors")
    expect(errors).to_contain_text("None of the picked files can be sent")
    assert posts == [], "a send the browser refuses never reaches the server"
    expect(pending).to_have_count(2)
    # The errors sit right under the drop area, not by the Send button.
    zone, box = page.locator("#dropzone").bounding_box(), errors.bounding_box()
    assert 0 <= box["y"] - (zone["y"] + zone["height"]) < 40
    screenshot(page, "polish-07-flagged-before-sending")

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    page.get_by_role("button", name="Remove huge.png").click()
    page.get_by_role("button", name="Remove notes.txt").click()
    page.set_input_files("#images", str(broken))
    expect(pending).to_have_count(1)
    expect(pending.locator(".pending-problem")).to_have_count(0)
    page.get_by_role("button", name="Send").click()
    expect(errors).to_contain_text("broken.png: The file could not be read as an image")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text("broken.png")
    as_phone_in_dark(page)
    screenshot(page, "polish-08-refused-keeps-picks-phone-dark")


def test_the_job_page_shows_the_image_full_size_with_its_facts(page: Page, tmp_path: Path) -> None:
    sign_in(page)
    page.set_input_files("#images", png_file(tmp_path, "wide.png", "maroon", size=(900, 600)))
    choose(page, "llava:7b", "Short caption", tag="big")
    card = send_and_wait(page)
    job_id = (card.get_attribute("id") or "").removeprefix("job-")
    page.goto(f"/ImageToText/jobs/{job_id}")
    original = page.get_by_role("img", name=f"The image sent with request {job_id}")
    expect(original).to_have_attribute("src", f"/ImageToText/jobs/{job_id}/images/1")
    assert original.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]") == [True, 900, 600]
    expect(page.locator(".original-image figcaption")).to_contain_text("900×600 · image/png")
    facts = page.locator(".facts")
    for text in ("wide.png", "Write one short sentence", "big", "s in the queue", "tokens/s"):
        expect(facts).to_contain_text(text)
    expect(page.get_by_role("button", name="Copy text")).to_be_enabled()
    expect(page.get_by_role("button", name=f"Run request {job_id} again")).to_be_visible()
    screenshot(page, "polish-09-job-page")
    as_phone_in_dark(page)
    screenshot(page, "polish-10-job-page-phone-dark")

    page.emulate_media(color_scheme="light")
    other = page.context.browser.new_context(base_url=page.url.split("/ImageToText")[0])
    try:
        bob = other.new_page()
        sign_in(bob, "bob", BOB_PASSWORD)
        assert bob.request.get(f"/ImageToText/jobs/{job_id}/images/1").status == 404
    finally:
        other.close()


def test_the_small_ones_trailing_slash_and_the_api_docs_link(page: Page) -> None:
    sign_in(page)
    page.goto("/ImageToText/")
    expect(page).to_have_url(re.compile(r"/ImageToText$"))
    page.get_by_role("link", name="API docs").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Image to Text")
    expect(page.locator("#dropzone-help, #formats-help")).to_have_count(0)  # left the page


LONG_ERROR = "comfy: " + "CUDA out of memory while loading the Florence-2 weights; " * 6 + "x" * 120


def test_the_admin_tables_fit_1280_px_and_check_now_is_a_button(browser, server) -> None:
    server.manage(
        "shell",
        "-c",
        (
            "from django.contrib.auth.models import User; from imagetotext.models import ApiKey, Batch, Job; "
            "admin = User.objects.get(username='admin'); "
            "ApiKey.issue(admin, 'the photo studio laptop', restrict_to=['ImageToText', 'QueueImageToText']); "
            "Batch.objects.create(owner=admin, name='2026-shop-photos-autumn-collection.zip', model='llava:7b'); "
            f"Job.objects.create(owner=admin, model='microsoft/Florence-2-large-ft-promptgen-v2', state='Failed', "
            f"error={LONG_ERROR!r}, tag='a-rather-long-tag-for-a-batch-of-shop-photos')"
        ),
    )
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto("/admin/login/")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        for url in (
            "/admin/agents/agent/",
            "/admin/imagetotext/job/",
            "/admin/imagetotext/failedjob/",
            "/admin/imagetotext/apikey/",
            "/admin/imagetotext/batch/",
        ):
            page.goto(url)
            screenshot(page, "polish-11-admin-" + url.strip("/").replace("/", "-") + "-1280")
            sizes = page.evaluate(
                """() => {
                    const list = document.querySelector("#changelist .results");
                    return [document.documentElement.scrollWidth, list?.scrollWidth, list?.clientWidth];
                }"""
            )
            assert sizes[1] is not None, f"{url} lists nothing"
            assert sizes[0] <= 1280 and sizes[1] <= sizes[2] + 1, f"{url}: page, list, room: {sizes}"
        page.goto("/admin/agents/agent/")

        page.get_by_role("button", name=re.compile(r"^Check Ollama .* now$")).click()
        expect(page.locator(".messagelist")).to_contain_text(re.compile(r"Agent Ollama .* is online with 3 models"))
        expect(page).to_have_url(re.compile(r"/admin/agents/agent/$"))

        page.locator("#result_list tbody tr th a").filter(has_text="ComfyUI").click()
        page.get_by_label("Name").fill("Studio PC")
        page.get_by_role("button", name="Save and continue editing").click()
        page.get_by_role("button", name="Check now").click()
        expect(page.locator(".messagelist")).to_contain_text("Agent Studio PC is online")
        expect(page).to_have_url(re.compile(r"/admin/agents/agent/\d+/change/$"))
        screenshot(page, "polish-13-admin-agent-checked")
        page.emulate_media(color_scheme="dark")
        screenshot(page, "polish-14-admin-agent-checked-dark")

        page.goto("/admin/imagetotext/apikey/add/")
        assert page.get_by_label("Owner").evaluate("s => s.selectedOptions[0].textContent") == "admin"

        page.goto("/ImageToText")  # signed in already, through the admin's login
        expect(page.locator(f'option[value="{FLORENCE}"]')).to_have_text(f"{FLORENCE} · Studio PC")
    finally:
        context.close()
