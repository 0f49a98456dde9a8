"""A URLconf with one sync and one async view behind api_view, for tests/test_api_auth.py."""

from __future__ import annotations

from django.http import JsonResponse
from django.urls import path

from imagetotext.api.auth import ApiRequest, api_view


def who(request: ApiRequest) -> dict[str, object]:
    key = request.api_key
    return {"owner": request.owner.get_username(), "key": key.name if key else None}


@api_view("ImageToText")
def sync_view(request: ApiRequest) -> JsonResponse:
    return JsonResponse(who(request))


@api_view("ImageToText")
async def async_view(request: ApiRequest) -> JsonResponse:
    return JsonResponse(who(request))


urlpatterns = [
    path("sync", sync_view),
    path("async", async_view),
]
