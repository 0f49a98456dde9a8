"""AI Server's wire format: keys in any case, camelCase replies, XSD durations, one error shape.

Everything that reads a request or writes a reply the way ServiceStack clients expect lives
here, so the views only say what to answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse, JsonResponse

from imagetotext.errors import Refusal

# --- errors --------------------------------------------------------------------


def error_response(status: int, message: str, error_code: str = "ArgumentException", field: str = "") -> JsonResponse:
    """{responseStatus: {errorCode, message, errors}} with the given HTTP status."""
    return JsonResponse({"responseStatus": response_status(message, error_code, field)}, status=status)


def response_status(message: str, error_code: str = "ArgumentException", field: str = "") -> dict[str, object]:
    """ServiceStack's ResponseStatus; a field error is listed when the fault is one field's."""
    errors = [{"errorCode": error_code, "fieldName": field, "message": message}] if field else []
    return {"errorCode": error_code, "message": message, "errors": errors}


def refusal_response(refusal: Refusal) -> JsonResponse:
    """A Refusal in AI Server's error shape."""
    return error_response(refusal.status, refusal.message, refusal.code, refusal.field)


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


# --- reading requests -----------------------------------------------------------


def query_value(request: HttpRequest, name: str) -> str | None:
    """A query parameter looked up without regard to case (Vision, vision, VISION)."""
    return lower_keys(request.GET).get(name.lower())


def lower_keys(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key.lower(): value for key, value in params.items()}


def fields_of(request: HttpRequest) -> dict[str, Any]:
    """Query string, then form fields or a JSON body, merged; keys lower-cased (RefId == refId)."""
    merged: dict[str, Any] = lower_keys(request.GET)
    if request.content_type == "application/json":
        merged.update(lower_keys(json_body(request)))
    elif request.method == "POST":
        merged.update(lower_keys(request.POST))
    return merged


def json_body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except ValueError as error:
        raise Refusal(f"The body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise Refusal("The JSON body must be an object")
    return body


def text_field(fields: dict[str, Any], name: str, max_length: int = 10_000) -> str:
    value = fields.get(name.lower())
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Refusal(f"{name} must be a string", field=name)
    if len(value) > max_length:
        raise Refusal(f"{name} is longer than {max_length} characters", field=name)
    return value.strip()


def uploaded_image(request: HttpRequest) -> UploadedFile:
    """The multipart file part named image (any case), as AI Server reads it."""
    for name, upload in request.FILES.items():
        if name.lower() == "image" and isinstance(upload, UploadedFile):
            return upload
    raise Refusal("Upload the image as a multipart/form-data file part named 'image'", field="Image")


# --- writing replies ------------------------------------------------------------


def xsd_duration(seconds: float | None) -> str | None:
    """A duration as ServiceStack writes TimeSpan: PT2.5S, PT1M30S, PT1H0M2S."""
    if seconds is None:
        return None
    whole_minutes, secs = divmod(round(seconds, 3), 60)
    hours, minutes = divmod(int(whole_minutes), 60)
    text = "PT"
    if hours:
        text += f"{hours}H"
    if hours or minutes:
        text += f"{minutes}M"
    return text + f"{secs:.3f}".rstrip("0").rstrip(".") + "S"


def reply(body: dict[str, Any], status: int = 200) -> JsonResponse:
    """A JSON reply without the null members, as ServiceStack leaves them out."""
    return JsonResponse({key: value for key, value in body.items() if value is not None}, status=status)
