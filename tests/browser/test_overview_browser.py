"""The admin's overview in Chromium: agents with their load, the queue, the last hour, recent failures."""

from __future__ import annotations

import os
import re

import pytest

try:
    from playwright.sync_api import Page, expect
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("playwright is not installed (pip install -r requirements.txt)", allow_module_level=True)

from tests.browser.pages import ADMIN_PASSWORD, screenshot  # noqa: E402

pytestmark = pytest.mark.browser

# Jobs of the last hour in the server's database: completed and failed ones spread over it, two
# holding the Ollama agent's slots, and three queued for a model no agent offers (they stay queued).
SEED = """
from datetime import timedelta
from django.contrib.auth.models import User
from django.utils import timezone
from agents.models import Agent, Kind
from imagetotext.models import Job

admin = User.objects.get(username="admin")
now = timezone.now()
ollama = Agent.objects.get(kind=Kind.OLLAMA)
Agent.objects.filter(pk=ollama.pk).update(concurrency=4)
comfy = Agent.objects.get(kind=Kind.COMFYUI)
for n in range(40):
    end = now - timedelta(minutes=(n * 37) % 50, seconds=n)  # well inside the chart's hour, however slow the test
    Job.objects.create(owner=admin, model="llava:7b", agent=ollama, state="Completed",
                       started_at=end - timedelta(seconds=2 + n % 5), finished_at=end, completion_tokens=60)
for n, error in enumerate(["connect timed out after 10 s", "Model 'llava:13b' not found",
                           "the backend closed the connection mid-answer"]):
    Job.objects.create(owner=admin, model="llava:13b", agent=comfy if n == 1 else ollama, state="Failed",
                       error_code="AgentError", error=error, finished_at=now - timedelta(minutes=4 + 11 * n))
lease = now + timedelta(minutes=10)
for _ in range(2):
    Job.objects.create(owner=admin, model="llava:7b", agent=ollama, state="Started", started_at=now, lease_until=lease)
for n in range(3):
    Job.objects.create(owner=admin, model="llava:34b", state="Queued", queued_at=now - timedelta(minutes=n + 1))
"""


def sign_in_to_the_admin(page: Page) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")


def test_staff_see_agents_queue_throughput_and_failures_at_a_glance(page: Page, server) -> None:
    server.manage("shell", "-c", SEED)
    sign_in_to_the_admin(page)
    screenshot(page, "30-admin-index-light")

    page.get_by_role("link", name="Overview", exact=True).click()

    page.wait_for_url("**/admin/overview/")
    expect(page.locator("#queue-depth strong")).to_have_text("3")
    expect(page.locator("#workers-alive strong")).not_to_have_text("0")  # the server's worker beats
    ollama = page.locator("#agents tbody tr").filter(has=page.get_by_text("ollama", exact=True))
    expect(ollama.locator(".load-figures")).to_have_text("2 / 4")
    expect(ollama.get_by_role("meter")).to_have_attribute("aria-valuenow", "2")
    bar = ollama.locator(".bar span")
    assert 0.4 < bar.bounding_box()["width"] / ollama.locator(".bar").bounding_box()["width"] < 0.6
    chart = page.locator("svg.chart")
    expect(chart).to_have_attribute("aria-label", re.compile(r"40 completed, 3 failed"))
    heights = [float(rect.get_attribute("height") or 0) for rect in chart.locator("rect.completed").all()]
    assert len(heights) == 12 and sum(1 for h in heights if h > 0) >= 9
    failures = page.locator("#failures tbody tr")
    expect(failures).to_have_count(3)
    expect(failures.first).to_contain_text("connect timed out after 10 s")
    screenshot(page, "31-admin-overview-light")

    page.emulate_media(color_scheme="dark")
    expect(page.locator("#queue-depth strong")).to_have_text("3")
    screenshot(page, "32-admin-overview-dark")
