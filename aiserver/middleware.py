"""WhiteNoise's static files, without making every other request synchronous."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware:
    """Serve what WhiteNoise serves, and hand everything else on in the mode it came in.

    WhiteNoise's middleware is sync only. High in an async stack, it made Django run the
    whole chain below it, views included, through a thread and back for every request: two
    thread hops and a sync middleware chain in front of every API call. Here WhiteNoise only
    looks the path up (in memory, unless autorefresh) and serves the file; other requests go
    straight on.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.whitenoise = WhiteNoiseMiddleware(self.not_found)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    @staticmethod
    def not_found(request: HttpRequest) -> HttpResponse:  # WhiteNoise's get_response; never called here
        raise AssertionError("only found files are served by WhiteNoise")

    def static_file(self, request: HttpRequest) -> Any:
        if self.whitenoise.autorefresh:
            return self.whitenoise.find_file(request.path_info)
        return self.whitenoise.files.get(request.path_info)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        static_file = self.static_file(request)
        if static_file is not None:
            return self.whitenoise.serve(static_file, request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self.whitenoise.autorefresh:  # looks on disk: not on the event loop
            static_file = await sync_to_async(self.static_file, thread_sensitive=False)(request)
        else:
            static_file = self.static_file(request)
        if static_file is not None:
            return self.whitenoise.serve(static_file, request)
        return await self.get_response(request)
