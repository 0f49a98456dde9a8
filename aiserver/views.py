"""Project-wide views: the error answers that API clients can read."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found as html_page_not_found
from django.views.defaults import server_error as html_server_error

from imagetotext.api.openai_wire import error_body as openai_error_body
from imagetotext.api.wire import error_response, response_status


def server_error(request: HttpRequest) -> HttpResponse:
    """A crash on /api/ still answers in AI Server's error shape; pages get Django's."""
    if request.path.startswith("/api/"):
        return error_response(500, "The server failed to answer this request; the error is logged.", "Exception")
    return html_server_error(request)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """An unknown path under /api/ or /v1/ answers JSON its client can read; pages get Django's page.

    Under /api/ both AI Server's responseStatus and Ollama's "error" key are given: the path is
    unknown, so is whose client sent it. Under /v1/, OpenAI's error object.
    """
    message = f"No API route {request.method} {request.path}"
    if request.path.startswith("/v1/"):
        return JsonResponse(openai_error_body(404, message), status=404)
    if request.path.startswith("/api/"):
        return JsonResponse({"error": message, "responseStatus": response_status(message, "NotFound")}, status=404)
    return html_page_not_found(request, exception)
