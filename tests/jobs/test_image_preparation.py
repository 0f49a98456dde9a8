"""What a backend receives: the upload itself when it suits, else a fast, faithful copy."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
from django.core.files.uploadedfile import TemporaryUploadedFile
from PIL import ExifTags, Image, ImageFile, JpegImagePlugin

from imagetotext.images import (
    ImageRejected,
    _jpeg_without_metadata,
    _png_without_metadata,
    prepare,
    read_upload,
    read_uploaded_file,
)
from tests.jobs.test_images import decoded, encode, loading_forbidden, marked  # noqa: F401 (a fixture)

RED = (255, 0, 0)
WHITE = (255, 255, 255)
# What undoes orientation 6 and 8 when stored; applying it makes the file a camera writes.
STORED_AS = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def exif_with(**tags: object) -> Image.Exif:
    exif = Image.Exif()
    for name, value in tags.items():
        exif[ExifTags.Base[name]] = value
    return exif


def noisy(size: tuple[int, int]) -> Image.Image:
    """Photo-like entropy, quickly: one tile of noise repeated (noise at 24 MP takes 2 s)."""
    tile = Image.effect_noise((500, 500), 20).convert("RGB")
    im = Image.new("RGB", size)
    for x in range(0, size[0], 500):
        for y in range(0, size[1], 500):
            im.paste(tile, (x, y))
    return im


def colour_at(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    pixel = im.getpixel(xy)
    assert isinstance(pixel, tuple)
    return pixel


def is_red(im: Image.Image, xy: tuple[int, int]) -> bool:
    red, green, blue = colour_at(im, xy)[:3]
    return red > 180 and green < 80 and blue < 80


def is_white(im: Image.Image, xy: tuple[int, int]) -> bool:
    return min(colour_at(im, xy)[:3]) > 220


def exif_moved_after_pixels(png: bytes) -> bytes:
    """The same PNG with its eXIf chunk moved after IDAT, where the PNG spec allows it."""
    start = png.index(b"eXIf") - 4
    (length,) = struct.unpack(">I", png[start : start + 4])
    chunk = png[start : start + 12 + length]
    rest = png[:start] + png[start + len(chunk) :]
    end = rest.index(b"IEND") - 4
    return rest[:end] + chunk + rest[end:]


@pytest.fixture
def jpeg_decode_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The size each JPEG is decoded at, recorded as Pillow loads it."""
    sizes: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def recording(self: ImageFile.ImageFile) -> object:
        if self.tile:  # not yet decoded; later calls return at once
            sizes.append(self.size)
        return load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", recording)
    return sizes


# Sent as uploaded


@pytest.mark.parametrize(
    ("source", "content_type"),
    [
        (encode(Image.new("RGB", (800, 600), (40, 120, 200)), "JPEG"), "image/jpeg"),
        (encode(Image.new("L", (800, 600), 90), "JPEG"), "image/jpeg"),
        (encode(Image.new("RGB", (800, 600), (40, 120, 200)), "PNG"), "image/png"),
        (encode(Image.new("P", (800, 600), 3), "PNG"), "image/png"),
    ],
    ids=["colour-jpeg", "grey-jpeg", "colour-png", "palette-png"],
)
def test_an_upright_opaque_image_that_fits_is_sent_as_the_very_bytes_uploaded(source: bytes, content_type: str) -> None:
    data, returned_type = prepare(source, 1024)
    assert data is source
    assert returned_type == content_type


@pytest.mark.parametrize(
    "source",
    [
        encode(Image.new("RGB", (800, 600)), "JPEG"),
        encode(Image.new("RGB", (800, 600)), "PNG"),
    ],
    ids=["jpeg", "png"],
)
def test_passing_an_image_through_decodes_no_pixels(source: bytes, loading_forbidden: None) -> None:
    assert prepare(source, 1024)[0] is source


def with_png_text(png: bytes, keyword: bytes, text: bytes) -> bytes:
    """The PNG with a tEXt chunk added before IEND (after the pixels, where the spec allows it)."""
    body = keyword + b"\0" + text
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    end = png.index(b"IEND") - 4
    return png[:end] + chunk + png[end:]


@pytest.mark.parametrize(
    ("source", "content_type", "trace"),
    [
        (encode(marked((800, 600)), "JPEG", exif=exif_with(Make="SnoopPhone", Orientation=1)), "image/jpeg", b"Snoop"),
        (encode(marked((800, 600)), "JPEG", comment=b"SnoopPhone was here"), "image/jpeg", b"Snoop"),
        (encode(marked((800, 600)), "JPEG", icc_profile=b"SnoopPhone profile" * 10), "image/jpeg", b"Snoop"),
        (encode(marked((800, 600)), "PNG", icc_profile=b"SnoopPhone profile" * 10), "image/png", b"iCCP"),
        (with_png_text(encode(marked((800, 600)), "PNG"), b"Author", b"SnoopPhone"), "image/png", b"Snoop"),
    ],
    ids=["jpeg-exif", "jpeg-comment", "jpeg-icc", "png-icc", "png-text-after-pixels"],
)
def test_metadata_is_cut_out_of_a_photo_that_fits_and_its_pixels_are_kept_byte_for_byte(
    source: bytes, content_type: str, trace: bytes
) -> None:
    assert trace in source
    data, returned_type = prepare(source, 1024)
    assert trace not in data
    assert returned_type == content_type
    assert len(data) < len(source)
    assert decoded(data).tobytes() == decoded(source).tobytes()


WITH_EXIF = encode(Image.new("RGB", (800, 600)), "JPEG", exif=exif_with(Make="SnoopPhone", Orientation=1))


def test_cutting_metadata_out_decodes_no_pixels(loading_forbidden: None) -> None:
    assert b"SnoopPhone" not in prepare(WITH_EXIF, 1024)[0]


def test_a_png_with_exif_is_re_encoded_without_it() -> None:
    source = encode(Image.new("RGB", (800, 600)), "PNG", exif=exif_with(Make="SnoopPhone", Orientation=1))
    data, _ = prepare(source, 1024)
    assert b"SnoopPhone" not in data
    assert decoded(data).size == (800, 600)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_bytes_after_the_image_are_not_sent(image_format: str) -> None:
    clean = encode(marked((300, 200)), image_format)
    data, _ = prepare(clean + b"SnoopPhone trailer", 1024)
    assert data == clean


@pytest.mark.parametrize(
    "broken",
    [
        lambda jpeg: jpeg[:2] + b"\xff\xfe\xea\x60" + jpeg[2:],  # a comment longer than the file
        lambda jpeg: jpeg[:-2],  # no end-of-image marker
        lambda jpeg: jpeg[:2] + b"\x00\x00" + jpeg[2:],  # not a marker where one belongs
    ],
    ids=["segment-past-the-end", "no-end", "no-marker"],
)
def test_a_jpeg_whose_segments_do_not_add_up_is_not_cut_by_bytes(broken: Callable[[bytes], bytes]) -> None:
    assert _jpeg_without_metadata(broken(encode(marked((300, 200)), "JPEG"))) is None


def test_a_png_whose_chunks_do_not_add_up_is_not_cut_by_bytes() -> None:
    png = encode(marked((300, 200)), "PNG")
    assert _png_without_metadata(png[: png.index(b"IEND") - 4]) is None  # cut before its end
    assert _png_without_metadata(png[:40]) is None  # a chunk longer than what is left


def test_a_multi_picture_phone_jpeg_that_fits_is_sent_as_its_first_picture() -> None:
    frames = [marked((300, 200)), Image.new("RGB", (300, 200), (0, 0, 255))]
    source = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    data, content_type = prepare(source, 1024)
    assert content_type == "image/jpeg"
    assert len(data) < len(source) * 0.75
    sent = Image.open(io.BytesIO(data))
    assert sent.format == "JPEG"
    assert getattr(sent, "n_frames", 1) == 1
    assert decoded(data).tobytes() == decoded(source).tobytes()  # the first picture's pixels, as they were


def test_what_fits_depends_on_the_longest_side_asked_for() -> None:
    source = encode(Image.new("RGB", (1500, 1000)), "JPEG")
    assert prepare(source, 2048)[0] is source
    assert decoded(prepare(source, 1024)[0]).size == (1024, 683)


# Re-encoded because it needs work


@pytest.mark.parametrize(
    "source",
    [
        encode(marked((600, 800)), "JPEG", exif=exif_with(Orientation=6)),
        encode(Image.new("RGB", (1100, 800)), "JPEG"),
        encode(Image.new("RGBA", (80, 60), (0, 0, 0, 0)), "PNG"),
        encode(Image.new("P", (80, 60), 0), "PNG", transparency=0),
        encode(Image.new("RGB", (80, 60)), "PNG", transparency=(0, 0, 0)),
        encode(Image.new("CMYK", (80, 60), (0, 200, 200, 0)), "JPEG"),
        encode(Image.new("RGB", (80, 60)), "WEBP"),
        encode(Image.new("RGB", (80, 60)), "GIF"),
        encode(Image.new("I;16", (80, 60), 30_000), "PNG"),
    ],
    ids=[
        "rotated",
        "oversized",
        "alpha",
        "palette-transparency",
        "colour-key",
        "cmyk",
        "webp",
        "gif",
        "16-bit",
    ],
)
def test_an_image_that_needs_work_is_re_encoded(source: bytes) -> None:
    data, _ = prepare(source, 1024)
    assert data != source
    assert decoded(data).mode == "RGB"


def test_a_png_with_exif_after_its_pixels_is_still_turned_upright() -> None:
    stored = marked((80, 40)).transpose(STORED_AS[6])
    source = exif_moved_after_pixels(encode(stored, "PNG", exif=exif_with(Orientation=6)))
    assert source.index(b"eXIf") > source.index(b"IDAT")
    im = decoded(prepare(source, 1024)[0])
    assert im.size == (80, 40)
    assert is_red(im, (3, 3)) and is_white(im, (76, 3))


def test_a_re_encoded_copy_still_loses_exif_and_gps() -> None:
    exif = exif_with(Make="SnoopPhone")
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"
    source = encode(Image.new("RGB", (1200, 900)), "JPEG", exif=exif)
    data, _ = prepare(source, 1024)
    assert b"SnoopPhone" not in data
    assert len(decoded(data).getexif()) == 0


# Large JPEGs


@pytest.fixture(scope="module")
def large_rotated_photos() -> dict[int, bytes]:
    """6000×4000 as displayed, stored on its side the way phones do, by orientation."""
    upright = marked((6000, 4000))
    return {
        orientation: encode(upright.transpose(turn), "JPEG", exif=exif_with(Orientation=orientation))
        for orientation, turn in STORED_AS.items()
    }


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_large_rotated_jpeg_comes_out_upright_at_the_longest_side(
    large_rotated_photos: dict[int, bytes], orientation: int
) -> None:
    data, content_type = prepare(large_rotated_photos[orientation], 1024)
    im = decoded(data)
    assert (content_type, im.size) == ("image/jpeg", (1024, 683))
    assert is_red(im, (10, 10))
    assert is_white(im, (1013, 10)) and is_white(im, (10, 672))


def test_a_large_jpeg_is_decoded_at_the_smallest_scale_still_covering_the_target(
    large_rotated_photos: dict[int, bytes], jpeg_decode_sizes: list[tuple[int, int]]
) -> None:
    prepare(large_rotated_photos[6], 1024)
    # 1/4 of the stored 4000×6000; a square 1024 box would have forced 1/2 (2000×3000).
    assert jpeg_decode_sizes == [(1000, 1500)]


def test_a_phone_photo_whose_quarter_scale_nearly_fits_is_sent_at_that_scale(
    jpeg_decode_sizes: list[tuple[int, int]],
) -> None:
    source = encode(marked((4032, 3024)), "JPEG")
    data, _ = prepare(source, 1024)
    # 1008 px is 1.6 % under 1024: decoded at 1/4 and not resampled, rather than at 1/2 and resized.
    assert jpeg_decode_sizes == [(1008, 756)]
    im = decoded(data)
    assert im.size == (1008, 756)
    assert is_red(im, (10, 10)) and is_white(im, (997, 10))


def test_a_quarter_scale_too_far_under_the_longest_side_is_decoded_larger_and_resized(
    jpeg_decode_sizes: list[tuple[int, int]],
) -> None:
    source = encode(Image.new("RGB", (3800, 2850)), "JPEG")
    data, _ = prepare(source, 1024)
    # At 1/4 it would be 950 px, 7 % under: 1/2 (1900×1425), then resized to the longest side.
    assert jpeg_decode_sizes == [(1900, 1425)]
    assert decoded(data).size == (1024, 768)


def test_a_large_photo_prepared_is_under_a_tenth_of_its_bytes() -> None:
    source = encode(noisy((6000, 4000)), "JPEG", quality=90)
    data, _ = prepare(source, 1024)
    assert len(data) * 10 <= len(source)


def test_the_upload_check_reports_the_full_size_not_the_reduced_decode() -> None:
    upload = read_upload(encode(Image.new("RGB", (1600, 1200)), "JPEG"))
    assert (upload.width, upload.height) == (1600, 1200)


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_a_truncated_large_jpeg_is_still_refused_at_upload(progressive: bool) -> None:
    source = encode(noisy((2000, 1500)), "JPEG", progressive=progressive)
    with pytest.raises(ImageRejected) as caught:
        read_upload(source[: len(source) * 9 // 10])
    assert caught.value.status == 400
    assert "could not be read as an image" in caught.value.message


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
def test_a_truncated_large_jpeg_is_refused_when_prepared_at_upload_too(progressive: bool) -> None:
    source = encode(noisy((2000, 1500)), "JPEG", progressive=progressive)
    with pytest.raises(ImageRejected) as caught:
        read_upload(source[: len(source) * 9 // 10], prepare_for=1024)
    assert "could not be read as an image" in caught.value.message


def test_preparing_at_upload_decodes_a_large_photo_once_and_gives_what_prepare_gives(
    jpeg_decode_sizes: list[tuple[int, int]],
) -> None:
    source = encode(noisy((4000, 3000)), "JPEG")
    upload = read_upload(source, prepare_for=1024)
    assert jpeg_decode_sizes == [(1000, 750)]  # one draft decode (1/4, within DRAFT_SLACK), no 1/8 check before it
    assert upload.prepared is not None and upload.prepared.longest_side == 1024
    assert (upload.prepared.data, upload.prepared.content_type) == prepare(source, 1024)
    assert (upload.width, upload.height) == (4000, 3000)


def test_preparing_at_upload_keeps_a_fitting_photo_as_sent_and_still_checks_it(
    jpeg_decode_sizes: list[tuple[int, int]],
) -> None:
    source = encode(marked((800, 600)), "JPEG", comment=b"SnoopPhone was here")
    upload = read_upload(source, prepare_for=1024)
    upload.check()
    assert upload.prepared is not None
    assert upload.prepared.data == prepare(source, 1024)[0] and b"SnoopPhone" not in upload.prepared.data
    assert jpeg_decode_sizes[0] == (100, 75)  # the 1/8 check: nothing else decodes a passed-through image


def broken_scan(source: bytes) -> bytes:
    """The JPEG with its scan pointing at a Huffman table it never defines: every segment still
    adds up, so only decoding finds it (a scan merely cut short decodes, grey, without error)."""
    start = source.index(b"\xff\xda")  # SOS: marker, length, count, then (component, tables) pairs
    return source[: start + 6] + b"\x33" + source[start + 7 :]


def test_a_broken_photo_sent_as_it_is_fails_its_check_not_its_reading() -> None:
    broken = broken_scan(encode(noisy((800, 600)), "JPEG"))
    upload = read_upload(broken, prepare_for=1024)  # it fits and its segments add up: sent as it is
    assert upload.prepared is not None and upload.prepared.data == broken
    with pytest.raises(ImageRejected, match="truncated or corrupt"):
        upload.check()


def test_without_prepare_for_nothing_is_prepared() -> None:
    assert read_upload(encode(noisy((2000, 1500)), "JPEG")).prepared is None


def test_a_truncated_png_is_still_refused_at_upload() -> None:
    source = encode(noisy((600, 400)), "PNG")
    with pytest.raises(ImageRejected):
        read_upload(source[: len(source) * 9 // 10])


# Uploads spooled to disk


def spooled(data: bytes) -> TemporaryUploadedFile:
    """A file part as Django leaves a large one: in a temporary file."""
    upload = TemporaryUploadedFile("photo.jpg", "image/jpeg", len(data), None)
    upload.write(data)
    upload.seek(0)
    return upload


def test_an_upload_on_disk_is_checked_without_reading_its_bytes_into_memory() -> None:
    data = encode(noisy((3000, 2000)), "JPEG", quality=95)
    with spooled(data) as upload:
        tracemalloc.start()
        try:
            image = read_uploaded_file(upload)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < len(data) // 4
        # Its bytes are read when it is stored, exactly as uploaded.
        assert (image.content_type, image.width, image.height) == ("image/jpeg", 3000, 2000)
        assert image.data == data


@pytest.fixture
def decoder_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The bytes handed to each call of Pillow's decoders (each call lets go of the GIL and wins it back)."""
    calls: list[int] = []
    made = Image._getdecoder

    class Counted:
        def __init__(self, decoder: ImageFile.PyDecoder) -> None:
            self.decoder = decoder

        def decode(self, buffer: bytes) -> tuple[int, int]:
            calls.append(len(buffer))
            return self.decoder.decode(buffer)

        def __getattr__(self, name: str) -> object:
            return getattr(self.decoder, name)

    monkeypatch.setattr(Image, "_getdecoder", lambda *args, **kwargs: Counted(made(*args, **kwargs)))
    return calls


def test_an_upload_in_memory_goes_to_the_decoder_in_one_call(decoder_calls: list[int]) -> None:
    data = encode(noisy((3000, 2000)), "JPEG", quality=95)
    assert len(data) > 16 * 64 * 1024  # Pillow's own blocks: 64 kB a call
    read_upload(data)
    assert len(decoder_calls) == 1


def test_an_upload_on_disk_goes_to_the_decoder_in_blocks_larger_than_pillows(decoder_calls: list[int]) -> None:
    data = encode(noisy((3000, 2000)), "JPEG", quality=95)
    with spooled(data) as upload:
        read_uploaded_file(upload)
    assert 1 < len(decoder_calls) <= len(data) // (256 * 1024) + 2


def test_a_broken_upload_on_disk_is_still_refused() -> None:
    data = encode(noisy((600, 400)), "JPEG")
    with spooled(data[: len(data) * 9 // 10]) as upload, pytest.raises(ImageRejected):
        read_uploaded_file(upload)


# Deep colour


def test_a_sixteen_bit_grey_png_gradient_stays_a_gradient() -> None:
    gradient = Image.new("I", (256, 8))
    gradient.putdata([x * 257 for _ in range(8) for x in range(256)])
    source = encode(gradient.convert("I;16"), "PNG")
    assert Image.open(io.BytesIO(source)).mode == "I;16"
    im = decoded(prepare(source, 1024)[0])
    assert [colour_at(im, (x, 4)) for x in (0, 64, 128, 255)] == [
        (0, 0, 0),
        (64, 64, 64),
        (128, 128, 128),
        (255, 255, 255),
    ]
