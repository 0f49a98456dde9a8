"""Middleware that keeps an async request async: static files, and Django's own hooks run in place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware import clickjacking, common, csrf, security
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


class InlineHooks:
    """Run a Django middleware's hooks on the event loop, not on a thread each, in an async stack.

    Django's MiddlewareMixin sends every process_request and process_response to the request's
    sync thread and back (and Django adapts process_view the same way): for the seven
    middlewares of a Django project, about fifteen thread hops per request. The hooks below
    do no I/O of their own (the session's and the messages' say when they would, and then
    still go to the thread), so they run in place. In a sync stack nothing changes.
    """

    get_response: Callable[[HttpRequest], Any]
    async_mode: bool

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)  # type: ignore[call-arg]
        process_view = getattr(self, "process_view", None)
        if self.async_mode and process_view is not None:

            async def process_view_here(request: HttpRequest, view: Any, args: Any, kwargs: Any) -> Any:
                return process_view(request, view, args, kwargs)

            # An instance attribute: Django reads the hook off the instance when it builds the chain.
            setattr(self, "process_view", markcoroutinefunction(process_view_here))  # noqa: B010

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.response_does_io(request):
                return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
            response = self.process_response(request, response)
        return response

    def response_does_io(self, request: HttpRequest) -> bool:
        return False


class SecurityMiddleware(InlineHooks, security.SecurityMiddleware):
    pass


class SessionMiddleware(InlineHooks, sessions.SessionMiddleware):
    def response_does_io(self, request: HttpRequest) -> bool:
        # A session that was never read is neither saved nor loaded; one that was may be saved.
        return bool(getattr(request, "session", None) is not None and request.session.accessed)


class CommonMiddleware(InlineHooks, common.CommonMiddleware):
    pass


class CsrfViewMiddleware(InlineHooks, csrf.CsrfViewMiddleware):
    pass


class AuthenticationMiddleware(InlineHooks, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(InlineHooks, messages.MessageMiddleware):
    def response_does_io(self, request: HttpRequest) -> bool:
        # Messages read or added are stored on the way out (in the session, perhaps).
        storage = getattr(request, "_messages", None)
        return bool(storage is not None and (storage.used or storage.added_new))


class XFrameOptionsMiddleware(InlineHooks, clickjacking.XFrameOptionsMiddleware):
    pass
