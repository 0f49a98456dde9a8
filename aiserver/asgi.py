"""The ASGI entry point: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiserver.settings")
# Django must be set up before anything imports models (the routing does).
django.setup(set_prefix=False)

from aiserver.handler import ReusedThreadsASGIHandler  # noqa: E402

django_asgi_app = ReusedThreadsASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from aiserver.routing import websocket_urlpatterns  # noqa: E402


def leave_bodies_to_django() -> None:
    """Stop Twisted (under daphne) from parsing every form body into arguments nobody reads.

    Daphne hands Django the raw body, yet Twisted's Request first runs each multipart upload
    through the email package: about 1 ms per 10 kB, most of a second for a 12 MP photo, on the
    one thread that serves every connection. Twisted's Request takes parsePOSTFormSubmission
    for this; daphne does not pass it, so its request class is given that default here.
    """
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # served by another ASGI server
        return
    if getattr(WebRequest, "_leaves_bodies_alone", False):
        return
    made = WebRequest.__init__

    def __init__(self: WebRequest, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        made(self, *args, **kwargs)

    WebRequest.__init__ = __init__
    WebRequest._leaves_bodies_alone = True


leave_bodies_to_django()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
