"""Who is calling the API: an AI Server key (`Authorization: Bearer ak-…`) or a signed-in user.

`api_view(name)` checks the caller once and hands the view a request carrying
`owner` and `api_key`, in the manner of healthchecks' `authorize`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, cast

from asgiref.sync import iscoroutinefunction
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from imagetotext import rows
from imagetotext.api import ratelimit
from imagetotext.api.wire import error_response
from imagetotext.conf import Conf
from imagetotext.db_threads import arun
from imagetotext.models import ApiKey

# Recording every use would turn each API read into a write.
LAST_USED_PRECISION = timedelta(minutes=1)

View = Callable[..., Any]


class ApiRequest(HttpRequest):
    """The request an `api_view` hands on."""

    owner: Any  # the key's owner or the signed-in user (AUTH_USER_MODEL)
    api_key: ApiKey | None  # None when the caller is a signed-in user


def api_view(name: str) -> Callable[[View], View]:
    """Let a view (sync or async) be called only by a valid key allowed to call `name`, or a signed-in user."""

    def decorator(view: View) -> View:
        wrapper = wrap_async(view, name) if iscoroutinefunction(view) else wrap_sync(view, name)
        # Key holders cannot send a CSRF token; session callers are checked in authenticate().
        wrapper.csrf_exempt = True  # type: ignore[attr-defined]
        return wrapper

    return decorator


def wrap_sync(view: View, name: str) -> View:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refusal = authenticate(request, name)
        return refusal if refusal is not None else view(request, *args, **kwargs)

    return wrapper


def wrap_async(view: View, name: str) -> View:
    @wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refusal = await arun(authenticate, request, name)
        return refusal if refusal is not None else await view(request, *args, **kwargs)

    return wrapper


def authenticate(request: HttpRequest, api: str) -> HttpResponse | None:
    """Set request.owner and request.api_key, or return the reply that refuses the call."""
    token = bearer_token(request)
    user = getattr(request, "user", None)
    if token is None and user is not None and user.is_authenticated:
        return accept_session(request)
    key = key_for(token) if token else None
    refusal = refuse(key, api)
    if refusal is not None:
        return refusal
    assert key is not None
    note_use(key)
    request.owner, request.api_key = key.owner, key  # type: ignore[attr-defined]
    return limited(f"key:{key.pk}")


def key_for(token: str) -> ApiKey | None:
    """The key a token names, with its owner, or None.

    One statement written once (imagetotext.rows): the select_related query it replaces was
    compiled anew on every API call, a tenth of a small request's time in the web process.
    """
    found = rows.fetch(KEY_SQL, [ApiKey.hash(token)], ApiKey, get_user_model())
    if not found:
        return None
    key, owner = found[0]
    key.owner = owner
    return key


def _key_sql() -> str:
    quote, user = connection.ops.quote_name, get_user_model()
    return (
        f"SELECT {rows.columns(ApiKey, 'k')}, {rows.columns(user, 'u')} FROM {quote(ApiKey._meta.db_table)} k"
        f" JOIN {quote(user._meta.db_table)} u ON u.{quote(user._meta.pk.column)} = k.owner_id WHERE k.key_hash = %s"
    )


KEY_SQL = _key_sql()


def bearer_token(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def refuse(key: ApiKey | None, api: str) -> HttpResponse | None:
    if key is None:
        return unauthorized("A valid API key is required")
    if key.revoked_at is not None:
        return unauthorized("This API key was revoked")
    if not key.usable:
        return unauthorized("This API key has expired")
    if not key.allows(api):
        return error_response(403, f"This API key may not call {api}", "Forbidden")
    return None


def unauthorized(message: str) -> HttpResponse:
    response = error_response(401, message, "Unauthorized")
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def accept_session(request: HttpRequest) -> HttpResponse | None:
    """A browser call rides on the session cookie, so it must pass Django's CSRF check."""
    reason = csrf_failure(request)
    if reason is not None:
        return error_response(403, f"CSRF verification failed: {reason}", "Forbidden")
    request.owner, request.api_key = request.user, None  # type: ignore[attr-defined]
    return limited(f"user:{request.user.pk}")


def limited(caller: str) -> HttpResponse | None:
    """A 429 with Retry-After once a caller has spent its requests for the minute."""
    wait = ratelimit.take(caller, Conf.RATE_LIMIT_PER_MINUTE)
    if not wait:
        return None
    response = error_response(429, "Too many requests; slow down and retry later", "TooManyRequests")
    response["Retry-After"] = str(math.ceil(wait))
    return response


class CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def csrf_failure(request: HttpRequest) -> str | None:
    """Why the request fails the CSRF check (None if it passes); the view itself is exempt."""
    check = CsrfCheck(lambda request: HttpResponse())
    check.process_request(request)
    # CsrfCheck._reject returns the reason where Django would return a response.
    return cast("str | None", check.process_view(request, lambda request: HttpResponse(), (), {}))


def note_use(key: ApiKey) -> None:
    now = timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_PRECISION:
        return
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_PRECISION)
    ApiKey.objects.filter(stale, pk=key.pk).update(last_used_at=now)
    key.last_used_at = now
