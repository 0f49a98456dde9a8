"""Uploaded images: what we accept, what we refuse, and what backends and the page receive."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import ExifTags, Image, ImageDraw, ImageFile

from imagetotext.conf import Conf
from imagetotext.images import ImageRejected, prepare, read_upload, thumbnail

RED = (255, 0, 0)
WHITE = (255, 255, 255)
# What ImageOps.exif_transpose undoes for each orientation; applying it makes the stored file.
STORED_AS = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def encode(im: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, image_format, **options)
    return buffer.getvalue()


def photo(size: tuple[int, int] = (64, 48), image_format: str = "JPEG") -> bytes:
    return encode(Image.new("RGB", size, (40, 120, 200)), image_format)


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def marked(size: tuple[int, int]) -> Image.Image:
    """A white image with a red square in its top-left corner, to see which way is up."""
    im = Image.new("RGB", size, WHITE)
    side = min(size) // 4
    ImageDraw.Draw(im).rectangle((0, 0, side, side), fill=RED)
    return im


def rotated_jpeg(upright: Image.Image, orientation: int) -> bytes:
    """A JPEG that displays as upright once its EXIF orientation is applied."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encode(upright.transpose(STORED_AS[orientation]), "JPEG", exif=exif, quality=95)


def is_red(pixel: tuple[int, ...]) -> bool:
    return pixel[0] > 180 and pixel[1] < 80 and pixel[2] < 80


def is_white(pixel: tuple[int, ...]) -> bool:
    return min(pixel[:3]) > 220


def png_claiming(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG whose header claims the given size."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b""))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


def rejection(data: bytes) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        read_upload(data)
    return caught.value


@pytest.fixture
def loading_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any pixel data is decoded."""

    def refuse(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)


# Accepted uploads


@pytest.mark.parametrize(
    ("image_format", "content_type"),
    [
        ("JPEG", "image/jpeg"),
        ("PNG", "image/png"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_each_accepted_format_reports_its_content_type_and_size(image_format: str, content_type: str) -> None:
    upload = read_upload(photo((64, 48), image_format))
    assert (upload.content_type, upload.width, upload.height) == (content_type, 64, 48)


def test_the_uploaded_bytes_are_kept_exactly() -> None:
    data = photo()
    assert read_upload(data).data is data


def test_the_content_type_comes_from_the_bytes_not_the_client() -> None:
    upload = SimpleUploadedFile("cat.jpg", photo(image_format="PNG"), content_type="image/jpeg")
    assert read_upload(upload.read()).content_type == "image/png"


def test_an_animated_gif_is_accepted() -> None:
    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert read_upload(data).content_type == "image/gif"


def test_a_multi_picture_phone_jpeg_is_reported_as_jpeg() -> None:
    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, (0, 0, 255))]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    assert read_upload(data).content_type == "image/jpeg"


# Refused uploads


def test_an_empty_upload_is_refused_as_no_image() -> None:
    error = rejection(b"")
    assert (error.status, error.message) == (400, "No image was uploaded.")


def test_a_text_file_is_refused_naming_the_accepted_formats() -> None:
    error = rejection(b"Dear diary, today I uploaded a text file.\n")
    assert error.status == 400
    assert "JPEG, PNG, GIF, WebP, BMP, TIFF" in error.message


def test_random_bytes_are_refused() -> None:
    error = rejection(os.urandom(4096))
    assert (error.status, error.code) == (400, "UnsupportedImageFormat")


def test_an_image_format_we_do_not_accept_is_refused() -> None:
    error = rejection(encode(Image.new("RGB", (32, 32)), "PCX"))
    assert (error.status, error.code) == (400, "UnsupportedImageFormat")


def test_a_truncated_jpeg_is_refused_as_unreadable() -> None:
    data = encode(Image.effect_noise((400, 300), 64).convert("RGB"), "JPEG")
    error = rejection(data[: len(data) // 2])
    assert error.status == 400
    assert "could not be read as an image" in error.message


def test_an_upload_over_the_byte_limit_is_refused_naming_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Conf, "MAX_UPLOAD_BYTES", 2 * 1024 * 1024)
    error = rejection(b"x" * (2 * 1024 * 1024 + 1))
    assert (error.status, error.code) == (413, "ImageTooLarge")
    assert "the limit is 2 MB" in error.message


def test_a_header_claiming_forty_thousand_pixels_square_is_refused_unread(
    loading_forbidden: None,
) -> None:
    started = time.monotonic()
    error = rejection(png_claiming(40_000, 40_000))
    assert (error.status, error.code) == (413, "ImageTooLarge")
    assert time.monotonic() - started < 0.5


def test_a_header_just_over_our_pixel_limit_is_refused_naming_it(
    loading_forbidden: None,
) -> None:
    error = rejection(png_claiming(8000, 8000))
    assert error.status == 413
    assert f"the limit is {Conf.MAX_PIXELS:,} pixels" in error.message


@pytest.fixture(scope="module")
def compressible_bomb() -> bytes:
    """64 million blank pixels in a few kilobytes, built before any test forbids loading."""
    return encode(Image.new("1", (8000, 8000)), "PNG")


def test_a_highly_compressible_huge_png_is_refused_unread(compressible_bomb: bytes, loading_forbidden: None) -> None:
    assert len(compressible_bomb) < 10_000
    assert rejection(compressible_bomb).status == 413


def test_our_pixel_limit_governs_when_lowered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Conf, "MAX_PIXELS", 100 * 100)
    assert rejection(photo((101, 100), "PNG")).status == 413


# Orientation


@pytest.mark.parametrize(("orientation", "size"), [(6, (40, 80)), (8, (40, 80)), (3, (80, 40))])
def test_the_reported_size_is_the_displayed_size(orientation: int, size: tuple[int, int]) -> None:
    upload = read_upload(rotated_jpeg(Image.new("RGB", size), orientation))
    assert (upload.width, upload.height) == size


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_prepared_image_is_upright(orientation: int) -> None:
    data, _ = prepare(rotated_jpeg(marked((80, 40)), orientation), 1024)
    im = decoded(data)
    assert im.size == (80, 40)
    assert is_red(im.getpixel((3, 3)))
    assert is_white(im.getpixel((76, 3))) and is_white(im.getpixel((3, 36)))


# Size


@pytest.mark.parametrize("longest_side", [Conf.RESIZE_LONGEST_SIDE, Conf.OCR_LONGEST_SIDE])
def test_a_large_image_is_downscaled_to_the_longest_side(longest_side: int) -> None:
    data, _ = prepare(photo((3000, 1500)), longest_side)
    assert decoded(data).size == (longest_side, longest_side // 2)


def test_a_small_image_is_not_upscaled() -> None:
    data, _ = prepare(photo((300, 200)), 1024)
    assert decoded(data).size == (300, 200)


# Colour, format and metadata


def test_transparent_pixels_become_white_rgb() -> None:
    im = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    data, _ = prepare(encode(im, "PNG"), 1024)
    out = decoded(data)
    assert (out.mode, out.getpixel((10, 10))) == ("RGB", WHITE)


def test_a_transparent_gif_becomes_white() -> None:
    im = Image.new("P", (20, 20), 0)
    data, _ = prepare(encode(im, "GIF", transparency=0), 1024)
    assert decoded(data).getpixel((10, 10)) == WHITE


@pytest.mark.parametrize(
    ("source_format", "content_type", "output_format"),
    [
        ("PNG", "image/png", "PNG"),
        ("GIF", "image/png", "PNG"),
        ("BMP", "image/png", "PNG"),
        ("TIFF", "image/png", "PNG"),
        ("JPEG", "image/jpeg", "JPEG"),
        ("WEBP", "image/jpeg", "JPEG"),
    ],
)
def test_lossless_sources_stay_lossless_and_photos_become_jpeg(
    source_format: str, content_type: str, output_format: str
) -> None:
    data, returned_type = prepare(photo(image_format=source_format), 1024)
    assert (returned_type, decoded(data).format) == (content_type, output_format)


def test_exif_and_gps_are_stripped_from_the_prepared_image() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SnoopPhone"
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"
    source = encode(Image.new("RGB", (64, 48)), "JPEG", exif=exif)
    data, _ = prepare(source, 1024)
    assert len(decoded(data).getexif()) == 0
    assert b"SnoopPhone" not in data


def test_exif_is_stripped_from_a_png_too() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SnoopPhone"
    data, _ = prepare(encode(Image.new("RGB", (64, 48)), "PNG", exif=exif), 1024)
    assert b"SnoopPhone" not in data


def test_comments_and_colour_profiles_are_stripped_too() -> None:
    im = Image.new("RGB", (64, 48))
    source = encode(im, "JPEG", comment=b"taken at home", icc_profile=b"x" * 64)
    info = decoded(prepare(source, 1024)[0]).info
    assert "comment" not in info and "icc_profile" not in info


def test_only_the_first_frame_of_an_animated_gif_is_prepared() -> None:
    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, (0, 255, 0), (0, 0, 255))]
    source = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    data, _ = prepare(source, 1024)
    assert is_red(decoded(data).getpixel((15, 10)))


def test_only_the_first_frame_of_an_animated_webp_is_prepared() -> None:
    frames = [Image.new("RGB", (30, 20), colour) for colour in (RED, (0, 0, 255))]
    source = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    data, _ = prepare(source, 1024)
    assert is_red(decoded(data).getpixel((15, 10)))


def test_preparing_the_same_image_twice_gives_the_same_bytes() -> None:
    source = rotated_jpeg(marked((900, 1300)), 6)
    assert prepare(source, 1024) == prepare(source, 1024)


def test_a_corrupt_image_cannot_be_prepared_either() -> None:
    with pytest.raises(ImageRejected):
        prepare(b"not an image", 1024)


# Thumbnail


def test_the_thumbnail_is_a_small_webp() -> None:
    im = decoded(thumbnail(photo((4000, 3000))))
    assert (im.format, im.size) == ("WEBP", (320, 240))


def test_the_thumbnail_is_upright() -> None:
    im = decoded(thumbnail(rotated_jpeg(marked((800, 400)), 6)))
    assert im.size == (320, 160)
    assert is_red(im.getpixel((10, 10))) and is_white(im.getpixel((310, 10)))


def test_the_thumbnail_of_a_sixteen_bit_grey_png_is_a_gradient_not_white() -> None:
    gradient = Image.new("I", (256, 8))
    gradient.putdata([x * 257 for _ in range(8) for x in range(256)])
    im = decoded(thumbnail(encode(gradient.convert("I;16"), "PNG"), 256))
    greys = [im.getpixel((x, 4))[0] for x in (0, 64, 128, 255)]
    assert all(abs(grey - want) <= 3 for grey, want in zip(greys, (0, 64, 128, 255), strict=True)), greys
