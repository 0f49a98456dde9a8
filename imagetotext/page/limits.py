"""What the browser checks before sending: the accepted image types and the size limits.

Every value comes from what the server checks uploads with (Conf, imagetotext.images, the
batch limits), so the page flags a file the server would refuse, and the upload help lists
the formats the API accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagetotext.batches import Limits
from imagetotext.conf import Conf
from imagetotext.images import ACCEPTED_FORMATS, CONTENT_TYPES, MEGABYTE

# The file name endings of each accepted type, for files the browser gives no type (some drops).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image/jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "image/png": (".png",),
    "image/gif": (".gif",),
    "image/webp": (".webp",),
    "image/bmp": (".bmp", ".dib"),
    "image/tiff": (".tif", ".tiff"),
}
ZIP_ACCEPT = (".zip", "application/zip")
GIGABYTE = 1024 * MEGABYTE


@dataclass(frozen=True)
class UploadRules:
    """The limits and types the page's JavaScript checks each picked file against."""

    max_bytes: int
    batch_max_bytes: int
    batch_max_items: int
    content_types: tuple[str, ...]
    extensions: tuple[str, ...]
    formats: str = ACCEPTED_FORMATS

    @property
    def accept(self) -> str:
        """The file input's accept attribute: every image type and ending, and ZIPs."""
        return ",".join((*self.content_types, *self.extensions, *ZIP_ACCEPT))

    @property
    def max_size(self) -> str:
        return readable_size(self.max_bytes)

    @property
    def batch_max_size(self) -> str:
        return readable_size(self.batch_max_bytes)


def upload_rules() -> UploadRules:
    """The rules as configured now (tests change Conf and Limits)."""
    types = tuple(dict.fromkeys(CONTENT_TYPES.values()))
    endings = tuple(ending for content_type in types for ending in EXTENSIONS.get(content_type, ()))
    return UploadRules(Conf.MAX_UPLOAD_BYTES, Limits.MAX_BYTES, Limits.MAX_ITEMS, types, endings)


def readable_size(size: int) -> str:
    """A size as the server's refusals write it ("20 MB", "2.5 MB"), in GB from 1 GB up."""
    if size >= GIGABYTE:
        return f"{size / GIGABYTE:.3g} GB"
    return f"{size / MEGABYTE:.3g} MB"
