"""Datasets in and out: images read safely from an uploaded ZIP, captions exported as a training set.

read_zip lists a ZIP's images without trusting it (paths, symlinks, sizes, bombs) and without
reading them: each is opened when its job is stored. export_zip streams the images back with a
.txt sidecar each (the layout kohya, taggui and OneTrainer read) plus captions.csv and
captions.jsonl, never holding the archive or a whole image in memory.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
import re
import stat
import struct
import tempfile
import time
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from copy import copy
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from imagetotext.errors import ImageRejected

logger = logging.getLogger(__name__)

MEGABYTE = 1024 * 1024
GIGABYTE = 1024 * MEGABYTE
# A member this much smaller packed than unpacked, and over BOMB_FLOOR_BYTES, is a bomb, not a photo.
BOMB_RATIO = 200
BOMB_FLOOR_BYTES = MEGABYTE
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
# The formats imagetotext.images accepts, told apart by their first bytes.
SIGNATURES: tuple[tuple[bytes, ...], ...] = (
    (b"\xff\xd8\xff",),
    (b"\x89PNG\r\n\x1a\n",),
    (b"GIF87a", b"GIF89a"),
    (b"BM",),
    (b"II*\x00", b"MM\x00*"),
)
SNIFF_BYTES = 12
# What macOS and Windows add to archives and folders; nobody put these there on purpose.
OS_LITTER = frozenset({"__macosx", ".ds_store", "thumbs.db", "desktop.ini"})
UNPACKED_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
# What zipfile and its decompressors raise on a broken or hostile archive.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, struct.error)
END_RECORD, ZIP64_LOCATOR, ZIP64_END_RECORD = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
COMPLETED = "Completed"  # imagetotext.models.State.COMPLETED, without importing the models
EXPORT_FIELDS = ("path", "caption", "original_caption", "model", "prompt", "state", "duration_seconds", "job_id")
COPY_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ZipLimits:
    """How much of an uploaded ZIP we agree to read."""

    max_items: int = 1000
    max_total_bytes: int = 2 * GIGABYTE
    max_member_bytes: int = 20 * MEGABYTE

    @property
    def max_entries(self) -> int:
        """Entries of any kind (folders, sidecars, macOS litter) read before the archive is refused."""
        return 10 * self.max_items


@dataclass(frozen=True)
class ZipMember:
    """One image in the ZIP: its sanitised path, how to read it, and its declared size."""

    path: str
    open: Callable[[], BinaryIO]
    size: int


@dataclass(frozen=True)
class Skipped:
    """A member left out, and why, in words for the person who made the ZIP."""

    path: str
    reason: str


@dataclass
class ZipContents:
    """The images of a ZIP by path, the members left out, or why the whole archive was refused."""

    items: list[ZipMember] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    refused: str | None = None


def read_zip(source: BinaryIO, limits: ZipLimits | None = None) -> ZipContents:
    """The image members of an uploaded ZIP, each checked by its header and first bytes, none read whole.

    Folders and what operating systems add (`__MACOSX/`, `.DS_Store`, `._x.jpg`, `Thumbs.db`) are
    left out silently; every other member left out is listed in `skipped` with the reason. The
    archive is refused whole (`refused`) when it is not a ZIP, lists too many entries or images,
    or declares more bytes in all than the limits allow.
    """
    limits = limits or ZipLimits()
    try:
        refused = _refused_by_end_record(source, limits)
        if refused:
            return ZipContents(refused=refused)
        source.seek(0)
        archive = zipfile.ZipFile(source)
        infos = archive.infolist()
    except ZIP_ERRORS as error:
        return ZipContents(refused=f"The file is not a ZIP archive we can read ({error}).")
    if len(infos) > limits.max_entries:
        return ZipContents(refused=f"The ZIP lists {len(infos)} entries; the limit is {limits.max_entries}.")
    declared = sum(info.file_size for info in infos if not info.is_dir())
    if declared > limits.max_total_bytes:
        return ZipContents(
            refused=f"The ZIP unpacks to {_size(declared)}; the limit is {_size(limits.max_total_bytes)}."
        )
    contents = _classified(archive, infos, limits)
    if len(contents.items) > limits.max_items:
        return ZipContents(refused=f"The ZIP holds {len(contents.items)} images; the limit is {limits.max_items}.")
    contents.items.sort(key=lambda item: item.path)
    return contents


def _classified(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limits: ZipLimits) -> ZipContents:
    """Each member kept as an image or skipped with its reason; the first of two equal paths wins."""
    contents, taken = ZipContents(), set[str]()
    for info in infos:
        if info.is_dir() or _is_os_litter(info.filename):
            continue
        path, reason = sanitised_path(info.filename)
        if not reason:
            reason = _refusal(archive, info, path, limits)
        if not reason and path in taken:
            reason = "another member has the same path"
        if reason:
            contents.skipped.append(Skipped(path or info.filename, reason))
            continue
        taken.add(path)
        contents.items.append(ZipMember(path, _opener(archive, info, path), info.file_size))
    return contents


def sanitised_path(name: str) -> tuple[str, str]:
    """A member's name as a safe relative path with forward slashes, or ("", why it is refused)."""
    name = unicodedata.normalize("NFC", name.replace("\\", "/"))
    name = "".join(char for char in name if unicodedata.category(char) not in {"Cc", "Cf"})
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "", "the path is absolute"
    segments = [segment for segment in name.split("/") if segment not in {"", "."}]
    if ".." in segments:
        return "", "the path leads out of the archive (..)"
    if not segments:
        return "", "the member has no name"
    return "/".join(segments), ""


def _is_os_litter(name: str) -> bool:
    segments = name.replace("\\", "/").lower().split("/")
    return any(segment in OS_LITTER for segment in segments) or segments[-1].startswith("._")


def _refusal(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, limits: ZipLimits) -> str:
    """Why this member is not an image we will read, or "" when it is; reads at most its first bytes."""
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic links are not followed"
    if info.flag_bits & 0x1:
        return "the member is encrypted"
    if info.compress_type not in UNPACKED_METHODS:
        return f"the member is compressed with a method we do not read (method {info.compress_type})"
    if info.file_size > limits.max_member_bytes:
        return f"the member unpacks to {_size(info.file_size)}; the limit is {_size(limits.max_member_bytes)}"
    if info.file_size > BOMB_FLOOR_BYTES and info.file_size > BOMB_RATIO * max(info.compress_size, 1):
        return f"the member unpacks to {info.file_size // max(info.compress_size, 1)} times its size (a zip bomb?)"
    if any(segment.startswith(".") for segment in path.split("/")):
        return "hidden files are not read"
    extension = posixpath.splitext(path)[1].lower()
    if extension not in IMAGE_EXTENSIONS:
        return f"not an image ({extension or 'no extension'})"
    try:
        with _BoundedMember(archive, info, path) as member:  # unbuffered: reads only what it needs
            head = member.read(SNIFF_BYTES) or b""
    except ImageRejected as error:
        return f"the member cannot be read ({error.__cause__ or error})"
    if not _looks_like_image(head):
        return "not an image: its content is not JPEG, PNG, GIF, WebP, BMP or TIFF"
    return ""


def _looks_like_image(head: bytes) -> bool:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return any(head.startswith(prefix) for prefixes in SIGNATURES for prefix in prefixes)


def _refused_by_end_record(source: BinaryIO, limits: ZipLimits) -> str:
    """Refuse a ZIP listing too many entries from its end record, before zipfile makes an object of each."""
    size = source.seek(0, io.SEEK_END)
    source.seek(max(0, size - 22 - 0xFFFF))  # the end record and the longest comment it can have
    tail = source.read()
    at = tail.rfind(END_RECORD)
    if at < 0 or len(tail) - at < 22:
        return ""  # zipfile says what is wrong with it
    (entries,) = struct.unpack_from("<H", tail, at + 10)
    if entries == 0xFFFF and at >= 76 and tail[at - 20 : at - 16] == ZIP64_LOCATOR:
        record = tail[at - 76 : at - 20]  # where zipfile looks for it too: just before the locator
        if record.startswith(ZIP64_END_RECORD):
            (entries,) = struct.unpack_from("<Q", record, 32)
    if entries > limits.max_entries:
        return f"The ZIP lists {entries} entries; the limit is {limits.max_entries}."
    return ""


def _opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> Callable[[], BinaryIO]:
    def open_member() -> BinaryIO:
        return io.BufferedReader(_BoundedMember(archive, info, path), COPY_CHUNK)

    return open_member


class _BoundedMember(io.RawIOBase):
    """A member read as its header declares: one byte more than declared fails it (a lying header),
    and so does any corruption, as ImageRejected, so the caller fails this item alone."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> None:
        self._path, self._declared, self._read = path, info.file_size, 0
        probe = copy(info)
        # zipfile cuts a member at its declared size, then fails it on its checksum; read a
        # little past it instead, to fail it for what it is.
        probe.file_size = info.file_size + COPY_CHUNK
        with self._failures_refused():
            self._stream = archive.open(probe)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        with self._failures_refused():
            data = self._stream.read(min(len(buffer), self._declared - self._read + 1))
        count = len(data)
        buffer[:count] = data
        self._read += count
        if self._read > self._declared:
            raise ImageRejected(f"{self._path} holds more than the {self._declared} bytes its ZIP header declares.")
        return count

    def close(self) -> None:
        if not self.closed and hasattr(self, "_stream"):  # not there when opening it failed
            self._stream.close()
        super().close()

    @contextmanager
    def _failures_refused(self) -> Iterator[None]:
        try:
            yield
        except (*ZIP_ERRORS, NotImplementedError) as error:
            raise ImageRejected(f"{self._path} cannot be read from the ZIP ({error}).") from error


def _size(size: int) -> str:
    return f"{size / MEGABYTE:.3g} MB"


# --- export ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRow:
    """One job as exported: its path, its image (None when it has none), the kept and original captions."""

    path: str
    open_image: Callable[[], BinaryIO] | None
    caption: str
    original_caption: str
    model: str
    prompt: str
    state: str
    duration: float | None
    job_id: int


def export_csv(rows: Iterable[ExportRow]) -> Iterator[str]:
    """captions.csv line by line: RFC 4180 (CRLF, quotes where needed), the header first."""
    line = _CsvLine()
    yield line(EXPORT_FIELDS)
    for row in rows:
        yield line(_record(row, row.path).values())


def export_jsonl(rows: Iterable[ExportRow]) -> Iterator[str]:
    """captions.jsonl line by line: one JSON object per row, with the CSV's keys, non-ASCII kept as is."""
    for row in rows:
        yield _json_line(_record(row, row.path))


def export_zip(rows: Iterable[ExportRow]) -> Iterator[bytes]:
    """The dataset as a ZIP, streamed: each image under its path with its caption in a .txt beside it,
    then captions.csv and captions.jsonl.

    A sidecar holds the caption as kept, trailing white space trimmed, then one "\\n" (UTF-8, no
    BOM); rows not Completed get none. A path already used (letter case aside: archives are
    unpacked on macOS and Windows too) gets " (2)" before its extension, and its sidecar alike;
    the CSV and JSONL give the paths as they are in the archive. The CSV and JSONL lines are
    spooled to temporary files (on disk past 1 MB) until the images are written.
    """
    sink, moment = _Sink(), time.localtime()[:6]
    with ExitStack() as stack:
        spools = [stack.enter_context(tempfile.SpooledTemporaryFile(MEGABYTE)) for _ in range(2)]
        archive = stack.enter_context(zipfile.ZipFile(sink, "w"))
        csv_line, taken = _CsvLine(), set[str]()
        spools[0].write(csv_line(EXPORT_FIELDS).encode())
        for row in rows:
            path = _unique(row.path, taken)
            if row.open_image is not None:
                yield from _write_image(archive, sink, row, path, moment)
            record = _record(row, path)
            spools[0].write(csv_line(record.values()).encode())
            spools[1].write(_json_line(record).encode())
        for name, spool in zip(("captions.csv", "captions.jsonl"), spools):
            spool.seek(0)
            yield from _write_member(archive, sink, _entry(name, moment, zipfile.ZIP_DEFLATED), spool)
    yield from sink.drained()  # the central directory, written as the archive closed


def _write_image(
    archive: zipfile.ZipFile, sink: _Sink, row: ExportRow, path: str, moment: tuple[int, ...]
) -> Iterator[bytes]:
    """The image stored as it is (already compressed), then its sidecar if it has a caption to give."""
    assert row.open_image is not None
    try:
        image = row.open_image()
    except OSError as error:  # its file is gone: the others are still worth having
        logger.warning("Exporting job %s without its image %s: %s", row.job_id, path, error)
        return
    with image:
        yield from _write_member(archive, sink, _entry(path, moment, zipfile.ZIP_STORED), image)
    if row.state == COMPLETED:
        sidecar = io.BytesIO((row.caption.rstrip() + "\n").encode())
        yield from _write_member(archive, sink, _entry(_sidecar(path), moment, zipfile.ZIP_DEFLATED), sidecar)


def _write_member(archive: zipfile.ZipFile, sink: _Sink, entry: zipfile.ZipInfo, source: IO[bytes]) -> Iterator[bytes]:
    with archive.open(entry, "w") as member:
        while chunk := source.read(COPY_CHUNK):
            member.write(chunk)
            yield from sink.drained()
    yield from sink.drained()


def _entry(name: str, moment: tuple[int, ...], method: int) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name, moment)  # type: ignore[arg-type]
    entry.compress_type = method
    entry.external_attr = 0o644 << 16
    return entry


def _unique(path: str, taken: set[str]) -> str:
    """The path, or with " (2)", " (3)"... before its extension when its name (sidecar included) is taken."""
    stem, extension = posixpath.splitext(path)
    candidate, number = stem, 1
    while candidate.casefold() in taken:
        number += 1
        candidate = f"{stem} ({number})"
    taken.add(candidate.casefold())
    return candidate + extension


def _sidecar(path: str) -> str:
    return posixpath.splitext(path)[0] + ".txt"


def _record(row: ExportRow, path: str) -> dict[str, object]:
    duration = None if row.duration is None else round(row.duration, 3)
    values = (path, row.caption, row.original_caption, row.model, row.prompt, row.state, duration, row.job_id)
    return dict(zip(EXPORT_FIELDS, values))


def _json_line(record: dict[str, object]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


class _CsvLine:
    """One CSV line at a time from csv.writer, which only writes to files."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer)

    def __call__(self, values: Iterable[object]) -> str:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(["" if value is None else value for value in values])
        return self._buffer.getvalue()


class _Sink(io.RawIOBase):
    """A write-only, unseekable file that zipfile writes to (with data descriptors) and we empty."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        return len(data)

    def drained(self) -> Iterator[bytes]:
        """What was written since last time, as one chunk, or nothing."""
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            yield data


__all__ = [
    "ExportRow",
    "Skipped",
    "ZipContents",
    "ZipLimits",
    "ZipMember",
    "export_csv",
    "export_jsonl",
    "export_zip",
    "read_zip",
    "sanitised_path",
]
