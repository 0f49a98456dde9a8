"""JSON replies in the shape ServiceStack clients of AI Server expect."""

from __future__ import annotations

from collections.abc import Mapping

from django.http import HttpRequest, JsonResponse


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


def lower_keys(params: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in params.items()}


def parse_bool(value: str) -> bool | None:
    """True/False for the spellings ServiceStack accepts, None for anything else."""
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes", "on"}:
        return True
    if lowered in {"false", "0", "no", "off"}:
        return False
    return None
