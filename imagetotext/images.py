"""Validate, orient and resize uploaded images before any backend or page sees them.

Originals are stored untouched; backends get the original itself when it already suits
them, otherwise a cleaned, downscaled copy; the page gets a small WebP.
"""

from __future__ import annotations

import io
import math
import os
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from django.core.files.uploadedfile import UploadedFile
from PIL import ExifTags, Image

from imagetotext.conf import Conf
from imagetotext.errors import ImageRejected

__all__ = ["ImageRejected", "Prepared", "UploadedImage", "prepare", "read_upload", "read_uploaded_file", "thumbnail"]

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
# What every backend decodes as it is, by format and Pillow mode. Not WebP: llama.cpp's
# image loader (stb_image, under Ollama) has no WebP decoder. Not GIF: it may be animated
# and is usually transparent. Not CMYK JPEG (stb_image refuses it), not 16-bit grey PNG
# (decoders that clip it to 8 bits see white), not alpha: see _to_rgb.
SENT_AS_IS: dict[str, frozenset[str]] = {
    "JPEG": frozenset({"L", "RGB"}),
    "MPO": frozenset({"L", "RGB"}),
    "PNG": frozenset({"1", "L", "P", "RGB"}),
}
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# EXIF orientations 5-8 include a quarter turn, so the displayed width and height swap.
QUARTER_TURNS = frozenset({5, 6, 7, 8})
# What undoes each EXIF orientation; the table ImageOps.exif_transpose uses.
UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What Pillow's parsers raise on hostile or broken files.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)
MEGABYTE = 1024 * 1024
# How far under the longest side a JPEG's reduced-size decode may land and be sent as it is.
# A phone's 12 MP photo (4032×3024) decodes at 1/4 as 1008×756 for a 1024 px model: taking
# that skips a decode at 1/2 and a resample from 2016 px, half of the photo's preparation
# (35 ms of 70 here), for 1.6 % fewer pixels a side than asked, which no model sees.
DRAFT_SLACK = 0.95
# The most of an image handed to a decoder at once (see _open), in memory and from a file.
DECODE_BLOCK_MAX = 16 * MEGABYTE
FILE_DECODE_BLOCK = 256 * 1024


@dataclass(frozen=True)
class Prepared:
    """An upload as prepare() made it for a backend's longest side."""

    longest_side: int
    data: bytes
    content_type: str


@dataclass(frozen=True)
class UploadedImage:
    """An upload checked: what decoding it told us, and where its bytes are.

    An upload checked from its file keeps only the file, so a request of many images holds none
    of their bytes until each is stored (see data).
    """

    source: bytes | UploadedFile
    content_type: str
    width: int
    height: int
    prepared: Prepared | None = None
    # A synchronous request's image sent as it is: its decode check, still running (see check).
    checking: Future[None] | None = None

    def check(self) -> None:
        """Wait for the decode check still running, if any; ImageRejected if the image is broken.

        jobs.create_with_upload calls it before its transaction commits, so a broken upload
        leaves nothing behind and never reaches a backend.
        """
        if self.checking is not None:
            self.checking.result()

    @property
    def data(self) -> bytes:
        """The bytes exactly as uploaded; a file is read afresh on each call, so nothing here keeps them."""
        if isinstance(self.source, bytes):
            return self.source
        self.source.seek(0)
        return self.source.read()


def read_upload(data: bytes, prepare_for: int | None = None) -> UploadedImage:
    """Check the upload is a whole image of an accepted format and size; else ImageRejected.

    prepare_for: also prepare it for a backend of that longest side (a synchronous request,
    about to send it). An image that needs decoding is then decoded once, for the check and
    for the backend together, instead of once for each. One sent as it is is still decoded to
    check it, on another thread while the request stores its job (the decoder lets go of the
    GIL): its result is not needed until the job is committed (UploadedImage.check).
    """
    _check_size(len(data))
    with _open(data) as im:
        content_type, width, height = _described(im)
        if prepare_for is None:
            _prove_it_decodes(im)
            return UploadedImage(data, content_type, width, height)
        if (kept := _as_sent(im, data, prepare_for)) is None:
            prepared = Prepared(prepare_for, *_converted(im, prepare_for))  # decodes it: the check
            return UploadedImage(data, content_type, width, height, prepared)
    checking = _checkers().submit(_decodes, data)
    return UploadedImage(data, content_type, width, height, Prepared(prepare_for, kept, content_type), checking)


def read_uploaded_file(upload: UploadedFile, prepare_for: int | None = None) -> UploadedImage:
    """A file part of a request checked like read_upload, refused by its size before it is read.

    Without prepare_for it is decoded straight from its file (on disk, for all but small
    requests) and only the file is kept: its bytes are read when it is stored.
    """
    if upload.size and upload.size > Conf.MAX_UPLOAD_BYTES:
        raise ImageRejected(f"The image is larger than {Conf.MAX_UPLOAD_BYTES // 2**20} MB", 413, "ImageTooLarge")
    if prepare_for is not None:  # about to go to a backend, so its bytes are needed now anyway
        return read_upload(upload.read(), prepare_for)
    _check_size(upload.size or 0)
    upload.seek(0)
    with _open(upload) as im:  # closed at once: the decoded pixels go with it
        content_type, width, height = _described(im)
        _prove_it_decodes(im)
    return UploadedImage(upload, content_type, width, height)


def _check_size(size: int) -> None:
    if not size:
        raise ImageRejected("No image was uploaded.")
    if size > Conf.MAX_UPLOAD_BYTES:
        raise ImageRejected(
            f"The image is {_megabytes(size)}; the limit is {_megabytes(Conf.MAX_UPLOAD_BYTES)}.",
            status=413,
            code="ImageTooLarge",
        )


def _described(im: Image.Image) -> tuple[str, int, int]:
    """Its content type and its width and height as shown (after its EXIF orientation)."""
    width, height = im.size
    if _orientation(im) in QUARTER_TURNS:
        width, height = height, width
    return REPORTED_TYPES[im.format or ""], width, height


def prepare(data: bytes, longest_side: int) -> tuple[bytes, str]:
    """The image a backend gets: the upload's own pixels if they suit as they are, else a cleaned copy.

    An upright, opaque JPEG or PNG within longest_side keeps its pixels byte for byte: only its
    metadata segments (EXIF with its GPS position, comments, XMP, colour profile) and anything
    after the image are cut out, without decoding. Anything else is decoded, turned upright,
    flattened on white, downscaled and re-encoded without metadata: PNG if the source was
    lossless, JPEG otherwise.
    """
    im = _open(data)
    if (kept := _as_sent(im, data, longest_side)) is not None:
        return kept, REPORTED_TYPES[im.format or ""]
    return _converted(im, longest_side)


def _converted(im: Image.Image, longest_side: int) -> tuple[bytes, str]:
    """Decoded, upright, flattened, downscaled and re-encoded: PNG if lossless, else JPEG."""
    lossless = im.format in LOSSLESS_FORMATS
    flat = _render(im, longest_side)
    if lossless:
        return _encode(flat, "PNG"), "image/png"
    return _encode(flat, "JPEG", quality=Conf.JPEG_QUALITY), "image/jpeg"


def thumbnail(data: bytes, size: int = 320) -> bytes:
    """A small upright WebP for the page, at most size pixels on its longest side."""
    return _encode(_render(_open(data), size), "WEBP", quality=Conf.THUMBNAIL_QUALITY)


def _open(source: bytes | IO[bytes]) -> Image.Image:
    """Parse the header only, refusing anything too big before its pixels are allocated."""
    with _refused_if_unreadable():
        im = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=list(CONTENT_TYPES))
        _check_pixels(*im.size)
    # Feed the decoder an upload in memory whole, not Pillow's 64 kB a call: it lets go of the
    # GIL for each call and must win it back after, which under load (request, database and
    # job threads all busy) cost up to a switch interval per block. A 12 MP photo's check
    # beside one busy thread: 383 ms in 64 kB blocks, 37 ms in one. A file on disk goes in
    # larger blocks too, but not whole: its bytes are not to be held in memory (read_uploaded_file).
    whole = min(len(source), DECODE_BLOCK_MAX) if isinstance(source, bytes) else FILE_DECODE_BLOCK
    im.decodermaxblock = max(im.decodermaxblock, whole)
    return im


_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _checkers() -> ThreadPoolExecutor:
    """This process's threads for decode checks, made on first use (and anew in a forked child)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="decode-check"))
        return _pool[1]


def _decodes(data: bytes) -> None:
    with _open(data) as im:
        _prove_it_decodes(im)


def _prove_it_decodes(im: Image.Image) -> None:
    """Decode the first frame once, so a truncated or corrupt upload is refused at the door.

    A JPEG is decoded at 1/8 scale: libjpeg still reads every coefficient of the stream,
    so it meets each truncation and error a full decode would, while skipping most of the
    inverse DCT and colour conversion (a 12 MP photo: 98 ms full, 45 ms at 1/8). Other
    formats have no cheaper decode. Without this, a passed-through upload would reach the
    backend unchecked and a broken one would fail in the worker, not here.
    """
    with _refused_if_unreadable():
        im.draft("RGB", (1, 1))
        im.load()


@contextmanager
def _refused_if_unreadable() -> Iterator[None]:
    """Turn what Pillow raises on hostile or broken files into ImageRejected."""
    try:
        yield
    except Image.UnidentifiedImageError:
        raise ImageRejected(
            f"The file is not an image in an accepted format ({ACCEPTED_FORMATS}).",
            code="UnsupportedImageFormat",
        ) from None
    except Image.DecompressionBombError:
        # Pillow's own guard fires at twice its MAX_IMAGE_PIXELS; answer with our limit.
        raise _too_many_pixels("The image has too many pixels") from None
    except DECODE_ERRORS:
        raise ImageRejected("The file could not be read as an image; it may be truncated or corrupt.") from None


def _check_pixels(width: int, height: int) -> None:
    """Refuse by header size alone, so a decompression bomb is never decoded."""
    if width * height > Conf.MAX_PIXELS:
        raise _too_many_pixels(f"The image is {width}×{height} pixels")


def _too_many_pixels(what: str) -> ImageRejected:
    limit = f"{Conf.MAX_PIXELS:,} pixels"
    return ImageRejected(f"{what}; the limit is {limit}.", status=413, code="ImageTooLarge")


def _as_sent(im: Image.Image, data: bytes, longest_side: int) -> bytes | None:
    """The upload minus its metadata if backends can take its pixels as they are; decided without decoding."""
    modes = SENT_AS_IS.get(im.format or "", frozenset())
    if im.mode not in modes or "transparency" in im.info or max(im.size) > longest_side:
        return None
    if _header_orientation(im, data) != 1:
        return None
    return _png_without_metadata(data) if im.format == "PNG" else _jpeg_without_metadata(data)


# JPEG markers: APP1-APP15 (EXIF, XMP, ICC, MPF, maker notes...) and COM go; APP14 ("Adobe")
# stays, as it says how the colours were transformed. Markers without a length field.
JPEG_DROPPED = frozenset(range(0xE1, 0xF0)) - {0xEE} | {0xFE}
JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
SOS, EOI = 0xDA, b"\xff\xd9"


def _jpeg_without_metadata(data: bytes) -> bytes | None:
    """The JPEG's first image with its metadata segments cut out; None if its segments do not add up.

    Segments up to the first scan are walked by their lengths; from the scan on, the entropy-coded
    data escapes every 0xFF, so the first end-of-image marker after it ends the first picture (a
    phone's MPO appends more pictures there).
    """
    if not data.startswith(b"\xff\xd8"):
        return None
    kept, position = [data[:2]], 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in JPEG_STANDALONE:
            kept.append(data[position : position + 2])
            position += 2
            continue
        if marker == SOS:
            end = data.find(EOI, position)
            if end < 0:
                return None
            kept.append(data[position : end + 2])
            return _joined(data, kept)
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2 or position + 2 + length > len(data):
            return None
        if marker not in JPEG_DROPPED:
            kept.append(data[position : position + 2 + length])
        position += 2 + length
    return None


def _joined(data: bytes, kept: list[bytes]) -> bytes:
    """The kept pieces as one file: the upload itself when nothing was cut (no copy)."""
    return data if sum(map(len, kept)) == len(data) else b"".join(kept)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that describe rather than draw: EXIF, colour profile, text, the time it was saved.
PNG_DROPPED = frozenset({b"eXIf", b"iCCP", b"tEXt", b"iTXt", b"zTXt", b"tIME"})


def _png_without_metadata(data: bytes) -> bytes | None:
    """The PNG with its metadata chunks and anything after IEND cut out; None if its chunks do not add up."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    kept, position = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            return None
        if kind not in PNG_DROPPED:
            kept.append(data[position:end])
        if kind == b"IEND":
            return _joined(data, kept)
        position = end
    return None


def _header_orientation(im: Image.Image, data: bytes) -> int | None:
    """The EXIF orientation without decoding pixels; None if only decoding would tell."""
    if im.format != "PNG" or "exif" in im.info:
        return _orientation(im)
    # A PNG may store its eXIf chunk after the pixels, so Pillow's PNG getexif() decodes
    # them to look. A byte search answers instead (a false match only costs a re-encode);
    # with no such chunk, the base getexif() reads the header's XMP just the same.
    if b"eXIf" in data:
        return None
    return _orientation(im, Image.Image.getexif(im))


def _orientation(im: Image.Image, exif: Image.Exif | None = None) -> int:
    """The EXIF orientation (1 = upright); a broken EXIF block counts as upright."""
    try:
        exif = im.getexif() if exif is None else exif
        return int(exif.get(ExifTags.Base.Orientation, 1))
    except DECODE_ERRORS:
        return 1


def _render(im: Image.Image, longest_side: int) -> Image.Image:
    """Decode to an upright RGB first frame no longer than longest_side, without metadata."""
    target = _fitted(im.size, longest_side)
    with _refused_if_unreadable():
        # A JPEG decodes straight at the smallest 1/2, 1/4 or 1/8 scale still covering
        # target, less DRAFT_SLACK (a 6000×4000 photo for 1024: 1500×1000). Ask for a box
        # of the image's own shape, not a square: 1024×1024 would stop at 1/2, as
        # 4000/4 < 1024. The box is in stored orientation (turned below), so a quarter turn
        # needs no swapped box.
        im.draft("RGB", _fitted(im.size, math.ceil(longest_side * DRAFT_SLACK)))
        im.load()
    orientation = _orientation(im)
    flat = _to_rgb(im)
    if max(flat.size) > longest_side:
        # The draft leaves under twice the target; LANCZOS from there lands 50-51 dB PSNR
        # from a full-size decode and LANCZOS (BICUBIC: 0.5 dB less, a third faster).
        flat = flat.resize(target, Image.Resampling.LANCZOS)
    if orientation in UPRIGHT:
        flat = flat.transpose(UPRIGHT[orientation])
    # Drop EXIF, GPS, ICC and comments: encoders copy some of them from info.
    flat.info = {}
    return flat


def _fitted(size: tuple[int, int], longest_side: int) -> tuple[int, int]:
    """size scaled to longest_side on its longest side; never enlarged."""
    width, height = size
    scale = longest_side / max(width, height)
    if scale >= 1:
        return size
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(im: Image.Image) -> Image.Image:
    """Flatten to RGB; vision models and OCR read transparent pixels badly, so use white."""
    if im.mode in SIXTEEN_BIT_MODES:
        # convert("RGB") clips 16-bit values above 255, turning the image white; scale
        # 0-65535 to 0-255 first.
        return im.convert("I").point(lambda value: value / 257).convert("RGB")
    if im.mode not in ALPHA_MODES and "transparency" not in im.info:
        return im if im.mode == "RGB" else im.convert("RGB")
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _encode(im: Image.Image, image_format: str, **options: int) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, image_format, **options)
    return buffer.getvalue()


def _megabytes(size: int) -> str:
    return f"{size / MEGABYTE:.3g} MB"
