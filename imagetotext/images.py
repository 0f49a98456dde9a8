"""Validate, orient and resize uploaded images before any backend or page sees them.

Originals are stored untouched; backends and the page get cleaned, downscaled copies.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageOps

from imagetotext.conf import Conf

# The only Pillow decoders we let near an upload; each format's content type.
CONTENT_TYPES: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
# The JPEG decoder names many phone photos (several pictures in one file) "MPO".
REPORTED_TYPES: dict[str, str] = {**CONTENT_TYPES, "MPO": "image/jpeg"}
ACCEPTED_FORMATS = "JPEG, PNG, GIF, WebP, BMP, TIFF"
# Sources without lossy artefacts (often screenshots): JPEG would smear their text for OCR.
LOSSLESS_FORMATS = frozenset({"PNG", "GIF", "BMP", "TIFF"})
# EXIF orientations 5-8 include a quarter turn, so the displayed width and height swap.
QUARTER_TURNS = frozenset({5, 6, 7, 8})
# What Pillow's parsers raise on hostile or broken files.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)
MEGABYTE = 1024 * 1024


class ImageRejected(Exception):
    """An upload we refuse, with the HTTP status and error code to answer with."""

    def __init__(self, message: str, status: int = 400, code: str = "InvalidImage") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


@dataclass(frozen=True)
class UploadedImage:
    """The bytes exactly as uploaded, and what decoding them told us."""

    data: bytes
    content_type: str
    width: int
    height: int


def read_upload(data: bytes) -> UploadedImage:
    """Check the upload is a whole image of an accepted format and size; else ImageRejected."""
    if not data:
        raise ImageRejected("No image was uploaded.")
    if len(data) > Conf.MAX_UPLOAD_BYTES:
        raise ImageRejected(
            f"The image is {_megabytes(len(data))}; the limit is "
            f"{_megabytes(Conf.MAX_UPLOAD_BYTES)}.",
            status=413,
            code="ImageTooLarge",
        )
    im = _open(data)
    width, height = im.size
    if _orientation(im) in QUARTER_TURNS:
        width, height = height, width
    return UploadedImage(data, REPORTED_TYPES[im.format or ""], width, height)


def prepare(data: bytes, longest_side: int) -> tuple[bytes, str]:
    """Upright, flattened, downscaled copy for a backend: PNG if the source was lossless."""
    im, source_format = _render(data, longest_side)
    if source_format in LOSSLESS_FORMATS:
        return _encode(im, "PNG"), "image/png"
    return _encode(im, "JPEG", quality=Conf.JPEG_QUALITY), "image/jpeg"


def thumbnail(data: bytes, size: int = 320) -> bytes:
    """A small upright WebP for the page, at most size pixels on its longest side."""
    im, _ = _render(data, size)
    return _encode(im, "WEBP", quality=Conf.THUMBNAIL_QUALITY)


def _open(data: bytes) -> Image.Image:
    """Decode the first frame, refusing anything too big before its pixels are allocated."""
    try:
        im = Image.open(io.BytesIO(data), formats=list(CONTENT_TYPES))
        _check_pixels(*im.size)
        im.load()
    except Image.UnidentifiedImageError:
        raise ImageRejected(
            f"The file is not an image in an accepted format ({ACCEPTED_FORMATS}).",
            code="UnsupportedImageFormat",
        ) from None
    except Image.DecompressionBombError:
        # Pillow's own guard fires at twice its MAX_IMAGE_PIXELS; answer with our limit.
        raise _too_many_pixels("The image has too many pixels") from None
    except DECODE_ERRORS:
        raise ImageRejected(
            "The file could not be read as an image; it may be truncated or corrupt."
        ) from None
    return im


def _check_pixels(width: int, height: int) -> None:
    """Refuse by header size alone, so a decompression bomb is never decoded."""
    if width * height > Conf.MAX_PIXELS:
        raise _too_many_pixels(f"The image is {width}×{height} pixels")


def _too_many_pixels(what: str) -> ImageRejected:
    limit = f"{Conf.MAX_PIXELS:,} pixels"
    return ImageRejected(f"{what}; the limit is {limit}.", status=413, code="ImageTooLarge")


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1 = upright); a broken EXIF block counts as upright."""
    try:
        return int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except DECODE_ERRORS:
        return 1


def _render(data: bytes, longest_side: int) -> tuple[Image.Image, str]:
    """Decode to an upright RGB first frame no longer than longest_side; also the source format."""
    im = _open(data)
    source_format = im.format or ""
    flat = _on_white(_upright(im))
    flat.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    # Drop EXIF, GPS, ICC and comments: encoders copy some of them from info.
    flat.info = {}
    return flat, source_format


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, matching what _orientation reported."""
    if _orientation(im) == 1:
        return im
    return ImageOps.exif_transpose(im)


def _on_white(im: Image.Image) -> Image.Image:
    """Flatten to RGB; vision models and OCR read transparent pixels badly, so use white."""
    if im.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and "transparency" not in im.info:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _encode(im: Image.Image, image_format: str, **options: int) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, image_format, **options)
    return buffer.getvalue()


def _megabytes(size: int) -> str:
    return f"{size / MEGABYTE:.3g} MB"
