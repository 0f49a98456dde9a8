"""AI Server's wire habits: keys in any case, camelCase replies, XSD durations, one error shape."""

from __future__ import annotations

import json
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, JsonResponse

from aiserver.responses import error_response, lower_keys


class BadRequest(Exception):
    """The request cannot be read; becomes a 400 with responseStatus."""

    def __init__(self, message: str, field: str = "", status: int = 400, code: str = "ArgumentException") -> None:
        super().__init__(message)
        self.message, self.field, self.status, self.code = message, field, status, code

    def response(self) -> JsonResponse:
        return error_response(self.status, self.message, self.code, self.field)


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
        raise BadRequest(f"The body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest("The JSON body must be an object")
    return body


def text_field(fields: dict[str, Any], name: str, max_length: int = 10_000) -> str:
    value = fields.get(name.lower())
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string", name)
    if len(value) > max_length:
        raise BadRequest(f"{name} is longer than {max_length} characters", name)
    return value.strip()


def uploaded_image(request: HttpRequest) -> UploadedFile:
    """The multipart file part named image (any case), as AI Server reads it."""
    for name, upload in request.FILES.items():
        if name.lower() == "image":
            return upload
    raise BadRequest("Upload the image as a multipart/form-data file part named 'image'", "Image")


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
