"""JSON replies in the shape ServiceStack clients of AI Server expect."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse


def error_response(
    status: int, message: str, error_code: str = "ArgumentException", field: str = ""
) -> JsonResponse:
    """{responseStatus: {errorCode, message, errors}} with the given HTTP status."""
    return JsonResponse({"responseStatus": response_status(message, error_code, field)}, status=status)


def response_status(message: str, error_code: str = "ArgumentException", field: str = "") -> dict[str, object]:
    """ServiceStack's ResponseStatus; a field error is listed when the fault is one field's."""
    errors = [{"errorCode": error_code, "fieldName": field, "message": message}] if field else []
    return {"errorCode": error_code, "message": message, "errors": errors}


def query_value(request: HttpRequest, name: str) -> str | None:
    """A query parameter looked up without regard to case (Vision, vision, VISION)."""
    return lower_keys(request.GET).get(name.lower())


def lower_keys(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key.lower(): value for key, value in params.items()}


def parse_bool(value: str) -> bool | None:
    """True/False for the spellings ServiceStack accepts, None for anything else."""
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes", "on"}:
        return True
    if lowered in {"false", "0", "no", "off"}:
        return False
    return None


def methods(*allowed: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like require_http_methods, but the 405 carries responseStatus. Works on async views too."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        def refused(request: HttpRequest) -> HttpResponse | None:
            if request.method in allowed:
                return None
            response = error_response(405, f"{request.method} is not allowed here", "NotSupportedException")
            response["Allow"] = ", ".join(allowed)
            return response

        if iscoroutinefunction(view):

            @wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                return refused(request) or await view(request, *args, **kwargs)

            return async_wrapper

        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return refused(request) or view(request, *args, **kwargs)

        return wrapper

    return decorate
