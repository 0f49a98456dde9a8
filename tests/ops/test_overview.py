"""The admin's overview: for staff only; agents' load, the queue, the last hour and recent failures."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from agents.models import Agent, Kind
from imagetotext.models import Job, State
from imagetotext.overview import SLOTS, throughput

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client: Client, admin_user) -> Client:
    client.force_login(admin_user)
    return client


def job(owner: Any, state: str = State.COMPLETED, **fields: Any) -> Job:
    return Job.objects.create(owner=owner, model="llava:7b", state=state, **fields)


def test_the_overview_is_for_staff_only(client: Client, api_user) -> None:
    assert client.get("/admin/overview/")["Location"].startswith("/admin/login/")
    client.force_login(api_user)
    assert client.get("/admin/overview/")["Location"].startswith("/admin/login/")


def test_the_admin_index_links_to_the_overview(staff_client: Client) -> None:
    response = staff_client.get("/admin/")

    assert response.status_code == 200
    assert b'<a href="/admin/overview/">Overview</a>' in response.content
    assert b"Image to Text" in response.content  # the apps are still listed


def test_agents_show_their_load_against_their_concurrency(staff_client: Client, admin_user) -> None:
    gpu = Agent.objects.create(name="gpu", kind=Kind.OLLAMA, base_url="http://gpu.test:1", concurrency=4, online=True)
    Agent.objects.create(name="spare", kind=Kind.OLLAMA, base_url="http://spare.test:1", enabled=False)
    lease = timezone.now() + timedelta(seconds=30)
    job(admin_user, State.STARTED, agent=gpu, lease_until=lease)
    job(admin_user, State.STARTED, agent=gpu, lease_until=lease)

    html = staff_client.get("/admin/overview/").content.decode()

    assert re.search(r'aria-valuemax="4" aria-valuenow="2" aria-label="gpu load">\s*<span style="width: 50%">', html)
    assert "2 / 4" in html and "0 / 1" in html
    assert "online" in html and "disabled" in html


def test_the_queue_depth_and_workers_are_shown(staff_client: Client, admin_user) -> None:
    for _ in range(3):
        job(admin_user, State.QUEUED, queued_at=timezone.now() - timedelta(minutes=4))

    html = staff_client.get("/admin/overview/").content.decode()

    assert re.search(r'id="queue-depth"><strong>3</strong>', html)
    assert re.search(r'id="queue-oldest"><strong>4(\xa0|&nbsp;| )minutes</strong>', html)
    assert re.search(r'id="workers-alive"><strong>0</strong>', html)


def test_the_last_hour_is_counted_per_five_minutes(admin_user) -> None:
    now = timezone.make_aware(datetime(2026, 5, 1, 12, 33, 20))
    for minutes in (1, 2, 7):  # 12:32, 12:31 and 12:26
        job(admin_user, finished_at=now - timedelta(minutes=minutes))
    job(admin_user, State.FAILED, finished_at=now - timedelta(minutes=2))
    job(admin_user, finished_at=now - timedelta(minutes=75))  # before the hour
    job(admin_user, State.CANCELLED, finished_at=now - timedelta(minutes=1))

    chart = throughput(now)

    assert len(chart.bars) == SLOTS
    assert [timezone.localtime(bar.start).strftime("%H:%M") for bar in chart.bars[-3:]] == ["12:20", "12:25", "12:30"]
    last, before = chart.bars[-1], chart.bars[-2]  # the last, 12:30-12:35, is the one going on
    assert (last.completed, last.failed, before.completed) == (2, 1, 1)
    assert sum(bar.completed for bar in chart.bars) == 3 and chart.failed == 1
    assert chart.peak == 3
    assert last.completed_height + last.failed_height == pytest.approx(chart.height)


def test_the_chart_is_drawn_in_svg_without_a_script(staff_client: Client, admin_user) -> None:
    job(admin_user, finished_at=timezone.now() - timedelta(minutes=1))

    html = staff_client.get("/admin/overview/").content.decode()

    chart = html.index('<svg class="chart"')
    svg = html[chart : html.index("</svg>", chart)]
    assert svg.count('<rect class="completed"') == SLOTS and svg.count('<rect class="failed"') == SLOTS
    assert "1 completed, 0 failed" in svg
    assert "<script" not in html.split('id="content-main"')[1]
    assert "//cdn" not in html and "https://" not in html


def test_recent_failures_are_the_ten_newest_with_their_error(staff_client: Client, admin_user) -> None:
    now = timezone.now()
    for n in range(12):
        job(
            admin_user,
            State.FAILED,
            finished_at=now - timedelta(minutes=n),
            error=f"error number {n}",
            error_code="AgentError",
        )

    html = staff_client.get("/admin/overview/").content.decode()
    failures = html[html.index('id="failures"') :]

    assert failures.count("<tr>") == 11  # the heading's row and ten jobs
    assert "error number 0" in failures and "error number 9" in failures
    assert "error number 10" not in failures
    assert "<strong>AgentError</strong>" in failures


def test_an_empty_server_says_so(staff_client: Client) -> None:
    html = staff_client.get("/admin/overview/").content.decode()

    assert "No agent yet." in html and "No failed job." in html
