"""ReplyTo strings as ServiceStack reads them: an optional method, optional credentials, a URL.

    https://example.com/hook                      POST, no credentials
    PUT https://example.com/hook                  the text before a space is the method
    myToken123@https://example.com/hook           Authorization: Bearer myToken123
    user:password@https://example.com/hook        Authorization: Basic (user, password)
    http.X-API-Key:key@https://example.com/hook   the header X-API-Key: key

ServiceStack also replaces a token written as $NAME with the server's environment variable
NAME. That would let any API client send the server's secrets to an address of its choice,
so such a ReplyTo is refused instead.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

METHODS = frozenset({"POST", "PUT", "PATCH"})
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# Headers the callback itself sets, or that would change how the request is framed.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "user-agent",
        "x-callback-id",
        "x-callback-attempt",
        "x-signature-256",
    }
)


class InvalidReplyTo(ValueError):
    """A ReplyTo this server will not call, with the reason."""


@dataclass(frozen=True)
class ReplyTo:
    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        """Method and URL; credentials never appear in logs or pages."""
        hidden = " (with credentials)" if self.headers else ""
        return f"{self.method} {self.url}{hidden}"


def parse(text: str) -> ReplyTo:
    """Split a ReplyTo into method, URL and the headers its credentials make; raises InvalidReplyTo."""
    text = text.strip()
    method, _, rest = text.rpartition(" ")
    method = method.strip().upper() or "POST"
    if method not in METHODS:
        raise InvalidReplyTo(f"the method {method} is not one of {', '.join(sorted(METHODS))}")
    credentials, url = split_credentials(rest)
    check_url(url)
    return ReplyTo(url=url, method=method, headers=credential_headers(credentials) if credentials else {})


def split_credentials(text: str) -> tuple[str, str]:
    """("credentials", "url") for "credentials@http(s)://…"; ("", text) for a plain URL."""
    if text.startswith(("http://", "https://")):
        return "", text
    for scheme in ("@http://", "@https://"):
        before, found, after = text.partition(scheme)
        if found and before:
            return before, scheme[1:] + after
    return "", text  # not a URL: the destination check says so


def check_url(url: str) -> None:
    """Refuse a URL urllib cannot take apart (a malformed IPv6 literal such as http://[::1/, a bad port)."""
    try:
        urlsplit(url).port  # noqa: B018 - reading the port validates it
    except ValueError as error:
        raise InvalidReplyTo(f"the URL cannot be read: {error}") from None


def credential_headers(credentials: str) -> dict[str, str]:
    if credentials.startswith("http."):
        name, colon, value = credentials.removeprefix("http.").partition(":")
        if not colon or not HEADER_NAME.match(name):
            raise InvalidReplyTo("a header is written http.Name:value@URL")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidReplyTo(f"the header {name} is set by the callback itself")
        return {name: no_environment(value)}
    if ":" in credentials:
        user, _, password = credentials.partition(":")
        pair = f"{no_environment(user)}:{no_environment(password)}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    return {"Authorization": "Bearer " + no_environment(credentials)}


def no_environment(value: str) -> str:
    if value.startswith("$"):
        raise InvalidReplyTo("credentials from the server's environment ($NAME) are not supported")
    if not value or any(ord(char) < 0x20 or char == "\x7f" for char in value):
        raise InvalidReplyTo("credentials must be non-empty printable text")
    return value
