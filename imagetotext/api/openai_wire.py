"""OpenAI's error shape for the /v1/ routes: {"error": {"message", "type", "param", "code"}}.

The refusals every route shares (no key, a 405, a body Django will not read) come from
`api_view` and `methods` in AI Server's shape; `with_openai_errors` rewrites them, so an
OpenAI client reads the same error whichever check refused it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase

# OpenAI's error types follow the status (its SDKs pick the exception class by status too).
ERROR_TYPES = {
    400: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}
# The codes OpenAI gives the refusals every route shares.
SHARED_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def openai_error(status: int, message: str, code: str | None = None, param: str | None = None) -> JsonResponse:
    """A refusal in OpenAI's shape; the type follows the status ("api_error" for the others)."""
    return JsonResponse(error_body(status, message, code, param), status=status)


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    error_type = ERROR_TYPES.get(status, "api_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def with_openai_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """Give a /v1/ view's AI Server-shaped refusals (auth, rate limit, method, body) OpenAI's shape."""
    if iscoroutinefunction(view):

        @wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            return openai_shaped(await view(request, *args, **kwargs))

        return async_wrapper

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        return openai_shaped(view(request, *args, **kwargs))

    return wrapper


def openai_shaped(response: HttpResponseBase) -> HttpResponseBase:
    """The response with a responseStatus body replaced by OpenAI's; headers (Allow, Retry-After) kept."""
    if not (
        isinstance(response, HttpResponse)
        and response.status_code >= 400
        and response.get("Content-Type") == "application/json"
    ):
        return response
    body = json.loads(response.content)
    status = body.get("responseStatus") if isinstance(body, dict) else None
    if not isinstance(status, dict):
        return response
    errors = status.get("errors") or [{}]
    param = errors[0].get("fieldName") or None
    code = SHARED_CODES.get(response.status_code)
    response.content = json.dumps(error_body(response.status_code, str(status.get("message", "")), code, param))
    return response
