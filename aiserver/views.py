"""Project-wide views: the error page that API clients can read."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.defaults import server_error as html_server_error

from imagetotext.api.wire import error_response


def server_error(request: HttpRequest) -> HttpResponse:
    """A crash on /api/ still answers in AI Server's error shape; pages get Django's."""
    if request.path.startswith("/api/"):
        return error_response(500, "The server failed to answer this request; the error is logged.", "Exception")
    return html_server_error(request)
