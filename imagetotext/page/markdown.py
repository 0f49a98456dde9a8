"""Model output rendered from Markdown to HTML that is safe to put in a page.

Model output is untrusted: whatever HTML it contains, or Markdown produces from
it, goes through nh3 (ammonia) and keeps only plain formatting and links.
"""

from __future__ import annotations

import threading

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

# nl2br: a model's single line breaks (an address, a poem, a list without markers) stay breaks.
EXTENSIONS = ["fenced_code", "tables", "sane_lists", "nl2br"]
# No images (a model could make the page load a tracker) and no forms or scripts.
ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "strong",
    "em",
    "b",
    "i",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "del",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto"}


_local = threading.local()


def _converter() -> markdown.Markdown:
    """This thread's converter, kept: making one loads its extensions, a third of a card's rendering.
    Not shared between threads: a converter keeps state while it converts."""
    if (converter := getattr(_local, "converter", None)) is None:
        converter = _local.converter = markdown.Markdown(extensions=EXTENSIONS, output_format="html")
    return converter


def render_markdown(text: str) -> SafeString:
    """Markdown to sanitised HTML; anything not on the allow-lists is dropped."""
    html = _converter().reset().convert(text)
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="nofollow noopener noreferrer",
    )
    return mark_safe(clean)  # noqa: S308 - sanitised just above
