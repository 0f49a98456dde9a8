"""Browser tests: Debian's Chromium through Playwright, against the real server and the fake backends.

One server (daphne and the django-q2 worker, `manage.py serve`) and one browser
serve the whole module; each test gets a fresh browser context (no cookies).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.pages import ADMIN_PASSWORD, BOB_PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[object]:
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread,
    which must be gone before the asyncio tests of other modules run."""
    from playwright.sync_api import sync_playwright

    # Nothing here touches Django's database from that loop: the server under test
    # runs in its own processes.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[object, object]]:
    from tests.fakes.comfyui import FakeComfyUI
    from tests.fakes.ollama import FakeOllama

    # Slow enough that the text is seen arriving, quick enough for a short suite.
    with FakeOllama(chunk_delay=0.12) as ollama, FakeComfyUI(run_seconds=1.0) as comfy:
        yield ollama, comfy


@pytest.fixture(scope="module")
def server(backends: tuple[object, object], tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.live_server import live_server

    ollama, comfy = backends
    with live_server(
        tmp_path_factory.mktemp("browser-server"),
        OLLAMA_URLS=ollama.url,
        COMFYUI_URLS=comfy.url,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        LOCAL_AGENT="0",
    ) as running:
        running.manage(
            "shell",
            "-c",
            (
                "from django.contrib.auth.models import User; "
                f"User.objects.create_user('bob', password='{BOB_PASSWORD}')"
            ),
        )
        yield running


@pytest.fixture
def context(browser, server) -> Iterator[object]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1200, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def page(context):
    return context.new_page()
