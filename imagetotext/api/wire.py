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
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError

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


# What Django raises when it first reads request.POST or request.FILES (or request.body); its
# own handler would answer a bare HTML 400.
UNREADABLE_BODY = (MultiPartParserError, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)


def unreadable_body_response(error: Exception) -> JsonResponse:
    """A body Django would not read, in AI Server's error shape (413 when it is too large)."""
    if isinstance(error, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return error_response(413, f"The request's data is larger than the {limit} bytes allowed", "RequestTooLarge")
    if isinstance(error, TooManyFieldsSent | TooManyFilesSent):
        return error_response(400, f"The request has too many fields or files: {error}")
    return error_response(400, f"The multipart body cannot be read: {error}")


def methods(*allowed: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like require_http_methods, but the 405 carries responseStatus. Works on async views too.

    Also answers in that shape when Django cannot read the body (see UNREADABLE_BODY).
    """

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
                try:
                    return refused(request) or await view(request, *args, **kwargs)
                except UNREADABLE_BODY as error:
                    return unreadable_body_response(error)

            return async_wrapper

        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                return refused(request) or view(request, *args, **kwargs)
            except UNREADABLE_BODY as error:
                return unreadable_body_response(error)

        return wrapper

    return decorate


# --- reading requests -----------------------------------------------------------


def query_value(request: HttpRequest, name: str) -> str | None:
    """A query parameter looked up without regard to case (Vision, vision, VISION)."""
    return lower_keys(request.GET).get(name.lower())


def lower_keys(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key.lower(): value for key, value in params.items()}


# Bodies the routes read as fields; anything else is refused with 415 rather than read as nothing.
FIELD_BODIES = ("multipart/form-data", "application/x-www-form-urlencoded", "application/json", "")
# Deeper JSON is no request of ours, and Python's parser would give up with a RecursionError.
MAX_JSON_DEPTH = 32


def fields_of(request: HttpRequest) -> dict[str, Any]:
    """Query string, then form fields or a JSON body, merged; keys lower-cased (RefId == refId)."""
    merged: dict[str, Any] = lower_keys(request.GET)
    if request.content_type == "application/json":
        merged.update(lower_keys(json_body(request)))
    elif request.method == "POST":
        if request.content_type not in FIELD_BODIES:
            raise Refusal(
                f"A {request.content_type} body is not accepted; send multipart/form-data", 415, "UnsupportedMediaType"
            )
        merged.update(lower_keys(request.POST))
    return merged


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The body as a JSON object, whatever the Content-Type says (Ollama's curl examples send a form's)."""
    if request.content_type == "multipart/form-data":
        raise Refusal("Send the request as a JSON body, not multipart/form-data", 415, "UnsupportedMediaType")
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except RecursionError:
        raise Refusal(f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as error:
        raise Refusal(f"The body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise Refusal("The JSON body must be an object")
    check_json(body)
    return body


def check_json(body: Any) -> None:
    """Refuse JSON no field could be stored from: too deep, or text with NUL or lone surrogates."""
    pending = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise Refusal(f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(value, dict):
            pending.extend((key, depth) for key in value)
            pending.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            check_text(value, "Text in the JSON body")


def check_text(value: str, what: str, field: str = "") -> None:
    """Text the database can hold: no NUL character (PostgreSQL refuses it), no lone surrogate."""
    if "\x00" in value:
        raise Refusal(f"{what} must not contain NUL characters", field=field)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Refusal(f"{what} is not valid Unicode text (a lone surrogate?)", field=field) from None


def text_field(fields: dict[str, Any], name: str, max_length: int = 10_000) -> str:
    value = fields.get(name.lower())
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Refusal(f"{name} must be a string", field=name)
    if len(value) > max_length:
        raise Refusal(f"{name} is longer than {max_length} characters", field=name)
    check_text(value, name, field=name)
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
