"""The admin's overview for staff: agents and their load, the queue, the last hour, recent failures.

The same figures /metrics gives (imagetotext.metrics), for people who would rather look than
query. The chart is an SVG drawn by the template from the bars computed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from imagetotext.leases import alive_workers
from imagetotext.metrics import agent_loads, queue_figures
from imagetotext.models import Job, State

SLOT = timedelta(minutes=5)
SLOTS = 12  # an hour
RECENT_FAILURES = 10
# The chart's drawing area, in SVG units: each slot gets SLOT_WIDTH, its bar BAR_WIDTH of it.
CHART_HEIGHT, SLOT_WIDTH, BAR_WIDTH = 100, 40, 28


@staff_member_required
def overview(request: HttpRequest) -> HttpResponse:
    """The overview page, in the admin's frame."""
    context = {
        **admin.site.each_context(request),
        "title": "Overview",
        "agents": agent_loads(),
        "queue": queue_figures(),
        "workers": alive_workers(),
        "chart": throughput(timezone.now()),
        "failures": recent_failures(),
    }
    return render(request, "admin/overview.html", context)


def recent_failures() -> list[Job]:
    failed = Job.objects.filter(state=State.FAILED).select_related("agent")
    return list(failed.order_by("-finished_at", "-pk")[:RECENT_FAILURES])


@dataclass(frozen=True)
class Bar:
    """One five-minute slot of the chart: its jobs, and where its rectangles go."""

    start: datetime
    completed: int
    failed: int
    x: int
    completed_y: float
    completed_height: float
    failed_y: float
    failed_height: float
    label: bool  # print its time under the axis

    @property
    def middle(self) -> float:
        return self.x + BAR_WIDTH / 2


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    peak: int  # the most jobs one slot ended, the top of the scale
    width: int = SLOT_WIDTH * SLOTS
    height: int = CHART_HEIGHT
    bar_width: int = BAR_WIDTH

    @property
    def completed(self) -> int:
        return sum(bar.completed for bar in self.bars)

    @property
    def failed(self) -> int:
        return sum(bar.failed for bar in self.bars)


def throughput(now: datetime) -> Chart:
    """Jobs completed and failed in each five minutes of the last hour (one query)."""
    local = timezone.localtime(now)
    end = local.replace(minute=local.minute - local.minute % 5, second=0, microsecond=0) + SLOT
    starts = [end - SLOT * (SLOTS - n) for n in range(SLOTS)]
    counts = {}
    for n, start in enumerate(starts):
        within = Q(finished_at__gte=start, finished_at__lt=start + SLOT)
        counts[f"done_{n}"] = Count("pk", filter=within & Q(state=State.COMPLETED))
        counts[f"failed_{n}"] = Count("pk", filter=within & Q(state=State.FAILED))
    figures = Job.objects.filter(finished_at__gte=starts[0], finished_at__lt=end).aggregate(**counts)
    slots = [(start, figures[f"done_{n}"], figures[f"failed_{n}"]) for n, start in enumerate(starts)]
    peak = max([done + failed for _, done, failed in slots] + [1])
    return Chart([bar(n, *slot, peak) for n, slot in enumerate(slots)], peak)


def bar(n: int, start: datetime, completed: int, failed: int, peak: int) -> Bar:
    completed_height = CHART_HEIGHT * completed / peak
    failed_height = CHART_HEIGHT * failed / peak
    completed_y = CHART_HEIGHT - completed_height
    return Bar(
        start,
        completed,
        failed,
        x=n * SLOT_WIDTH + (SLOT_WIDTH - BAR_WIDTH) // 2,
        completed_y=completed_y,
        completed_height=completed_height,
        failed_y=completed_y - failed_height,
        failed_height=failed_height,
        label=n % 3 == 0,
    )
