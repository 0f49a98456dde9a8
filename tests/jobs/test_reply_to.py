"""ReplyTo's ServiceStack forms: method, credentials, URL."""

from __future__ import annotations

import pytest

from imagetotext.replyto import InvalidReplyTo, ReplyTo, parse

URL = "https://example.com/hook?a=1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (URL, ReplyTo(URL)),
        (f"  {URL}  ", ReplyTo(URL)),
        (f"put {URL}", ReplyTo(URL, "PUT")),
        (f"tok.en/+=@{URL}", ReplyTo(URL, headers={"Authorization": "Bearer tok.en/+="})),
        (f"user:pa:ss@{URL}", ReplyTo(URL, headers={"Authorization": "Basic dXNlcjpwYTpzcw=="})),
        (f"http.X-API-Key:k:1@{URL}", ReplyTo(URL, headers={"X-API-Key": "k:1"})),
        (f"PATCH t@{URL}", ReplyTo(URL, "PATCH", {"Authorization": "Bearer t"})),
        ("https://user:pw@example.com/hook", ReplyTo("https://user:pw@example.com/hook")),
        ("t@http://example.com/", ReplyTo("http://example.com/", headers={"Authorization": "Bearer t"})),
    ],
)
def test_each_form_gives_method_url_and_headers(text: str, expected: ReplyTo) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"$TOKEN@{URL}", "environment"),
        (f"http.X-Key:$TOKEN@{URL}", "environment"),
        (f"user:$PASSWORD@{URL}", "environment"),
        (f"GET {URL}", "method GET"),
        (f"http.Bad Header:x@{URL}", "method HTTP.BAD"),
        (f"http.:x@{URL}", "http.Name:value"),
        (f"http.NoValue@{URL}", "http.Name:value"),
        (f"http.Content-Type:text/plain@{URL}", "set by the callback itself"),
        (f"http.x-callback-id:1@{URL}", "set by the callback itself"),
        (f"http.X-Key:@{URL}", "non-empty"),
    ],
)
def test_what_cannot_be_honoured_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidReplyTo, match=reason.replace(".", r"\.")):
        parse(text)


def test_credentials_are_left_out_when_it_is_shown() -> None:
    shown = str(parse(f"PUT secret-token@{URL}"))

    assert shown == f"PUT {URL} (with credentials)"
