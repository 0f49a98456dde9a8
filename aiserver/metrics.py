"""GET /metrics for Prometheus, and the count of HTTP requests it includes.

Jobs, the queue, agents and callbacks are read from the database at each scrape
(imagetotext.metrics), so every process answers with the same figures. HTTP requests are
counted by each process in prometheus-client's multiprocess files
(settings.PROMETHEUS_MULTIPROC_DIR, one folder per host) and summed at each scrape, so the
count covers every web process of the host whichever one answers. `serve` empties the folder
as it starts, so the counts start again from zero with the processes.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from imagetotext.metrics import DatabaseCollector

HTTP_REQUESTS = Counter(
    "aiserver_http_requests",
    "HTTP requests answered, by route (the URL pattern's name), method and status.",
    ["route", "method", "status"],
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Every figure in Prometheus' text format; with METRICS_TOKEN set, only for its bearer."""
    if settings.METRICS_TOKEN and not bearer_matches(request, settings.METRICS_TOKEN):
        return HttpResponse("A valid bearer token is needed.\n", status=401, headers={"WWW-Authenticate": "Bearer"})
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(DatabaseCollector())
    # The text format every Prometheus reads (the library's own server answers it by default).
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def bearer_matches(request: HttpRequest, token: str) -> bool:
    given = request.headers.get("Authorization", "").encode()
    return hmac.compare_digest(given, f"Bearer {token}".encode())


def route_of(request: HttpRequest) -> str:
    """The name of the URL pattern that answered: a bounded set, unlike the paths clients send."""
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return match.view_name or match.route
    if request.path_info.startswith("/" + settings.STATIC_URL.lstrip("/")):
        return "static"
    return "unmatched"


def count(request: HttpRequest, response: HttpResponseBase) -> None:
    method = request.method if request.method in METHODS else "other"
    HTTP_REQUESTS.labels(route_of(request), method, str(response.status_code)).inc()


class RequestCountMiddleware:
    """Counts every response, those of the other middleware included (it comes first)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        response = self.get_response(request)
        count(request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        count(request, response)
        return response


def forget_counts(folder: Path | None = None) -> None:
    """Delete the counts of earlier runs; only while none of this host's web processes runs."""
    folder = folder or Path(settings.PROMETHEUS_MULTIPROC_DIR)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
