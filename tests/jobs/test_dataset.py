"""Datasets: what read_zip takes from a hostile or sloppy ZIP, and what export_zip hands back.

No database: both halves work on files and rows alone. ZIPs are built in memory with zipfile;
lying headers are made by changing a member's central-directory entry before the archive closes.
"""

from __future__ import annotations

import csv
import io
import json
import stat
import struct
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from imagetotext.dataset import (
    COMPLETED,
    ExportRow,
    Skipped,
    ZipContents,
    ZipLimits,
    export_csv,
    export_jsonl,
    export_zip,
    read_zip,
)
from imagetotext.errors import ImageRejected

MB = 1024 * 1024


def image(image_format: str, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, image_format)
    return buffer.getvalue()


JPEG, PNG = image("JPEG"), image("PNG")


def build_zip(
    members: list[tuple[str, bytes]],
    change: Callable[[zipfile.ZipFile], None] = lambda archive: None,
    method: int = zipfile.ZIP_DEFLATED,
) -> io.BytesIO:
    """A ZIP of these members; change() may rewrite their central-directory entries before it closes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members:
            archive.writestr(name, data)
        change(archive)
    buffer.seek(0)
    return buffer


def paths(contents: ZipContents) -> list[str]:
    return [item.path for item in contents.items]


# --- reading ---------------------------------------------------------------------------------------


def test_it_keeps_each_image_under_its_folder_path_in_path_order() -> None:
    originals = {
        "dogs/b.png": PNG,
        "cats/tabby/01.jpg": JPEG,
        "cats/tabby/02.GIF": image("GIF"),
        "cats/03.webp": image("WEBP"),
        "bitmaps/old.bmp": image("BMP"),
        "scans/page.tiff": image("TIFF"),
    }
    contents = read_zip(build_zip(list(originals.items())))

    assert contents.refused is None
    assert contents.skipped == []
    assert paths(contents) == [
        "bitmaps/old.bmp",
        "cats/03.webp",
        "cats/tabby/01.jpg",
        "cats/tabby/02.GIF",
        "dogs/b.png",
        "scans/page.tiff",
    ]
    for item in contents.items:
        assert item.size == len(originals[item.path])
        with item.open() as member:
            assert member.read() == originals[item.path]


def test_it_refuses_members_whose_path_leads_out_or_is_absolute() -> None:
    names = ["../evil.jpg", "cats/../../evil.jpg", "/abs.jpg", "C:/windows.jpg", "D:\\drive.jpg", "cats/ok.jpg"]
    contents = read_zip(build_zip([(name, JPEG) for name in names]))

    assert paths(contents) == ["cats/ok.jpg"]
    assert contents.skipped == [
        Skipped("../evil.jpg", "the path leads out of the archive (..)"),
        Skipped("cats/../../evil.jpg", "the path leads out of the archive (..)"),
        Skipped("/abs.jpg", "the path is absolute"),
        Skipped("C:/windows.jpg", "the path is absolute"),
        Skipped("D:\\drive.jpg", "the path is absolute"),
    ]


def test_it_cleans_paths_and_skips_the_second_of_two_that_end_up_the_same() -> None:
    names = [
        "./cats//01.jpg",
        "dogs\\02.jpg",
        "bell\x07\u202e.jpg",
        "cafe\u0301.jpg",
        "cats/01.jpg",
    ]
    contents = read_zip(build_zip([(name, JPEG) for name in names]))

    assert paths(contents) == ["bell.jpg", "caf\u00e9.jpg", "cats/01.jpg", "dogs/02.jpg"]
    assert contents.skipped == [Skipped("cats/01.jpg", "another member has the same path")]


def test_it_leaves_out_folders_and_operating_system_litter_silently_but_names_hidden_files() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.mkdir("cats")
        for name in ["__MACOSX/._a.jpg", "__MACOSX/cats/._b.jpg", ".DS_Store", "cats/._c.jpg", "cats/Thumbs.db"]:
            archive.writestr(name, JPEG)
        archive.writestr(".cache/d.jpg", JPEG)
        archive.writestr("cats/a.jpg", JPEG)

    contents = read_zip(buffer)

    assert paths(contents) == ["cats/a.jpg"]
    assert contents.skipped == [Skipped(".cache/d.jpg", "hidden files are not read")]


def test_it_skips_non_images_by_extension_and_by_content() -> None:
    members = [
        ("notes.txt", b"a caption"),
        ("README", b"hello"),
        ("fake.png", b"hello world, not a PNG"),
        ("a.png", PNG),
    ]
    contents = read_zip(build_zip(members))

    assert paths(contents) == ["a.png"]
    assert contents.skipped == [
        Skipped("notes.txt", "not an image (.txt)"),
        Skipped("README", "not an image (no extension)"),
        Skipped("fake.png", "not an image: its content is not JPEG, PNG, GIF, WebP, BMP or TIFF"),
    ]


def test_it_skips_symbolic_links_encrypted_members_and_unknown_compression() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("link.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("secret.jpg", JPEG)
        archive.writestr("odd.jpg", JPEG)
        archive.writestr("fine.jpg", JPEG)
        archive.getinfo("secret.jpg").flag_bits |= 0x1  # zipfile clears it while writing
        archive.getinfo("odd.jpg").compress_type = 99  # AES, which zipfile cannot read

    contents = read_zip(buffer)

    assert paths(contents) == ["fine.jpg"]
    assert contents.skipped == [
        Skipped("link.jpg", "symbolic links are not followed"),
        Skipped("secret.jpg", "the member is encrypted"),
        Skipped("odd.jpg", "the member is compressed with a method we do not read (method 99)"),
    ]


def test_it_skips_a_member_too_large_or_compressed_like_a_bomb_but_keeps_a_small_blank_image() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, megabytes in [("huge.jpg", 50), ("bomb.jpg", 10)]:
            with archive.open(name, "w") as member:
                member.write(b"\xff\xd8\xff")
                for _ in range(megabytes):
                    member.write(bytes(MB))
        archive.writestr("blank.bmp", image("BMP", (255, 255, 255))[:54] + bytes(500_000))
    bomb = zipfile.ZipFile(buffer).getinfo("bomb.jpg")

    contents = read_zip(buffer)

    assert bomb.file_size // bomb.compress_size > 200
    assert paths(contents) == ["blank.bmp"]
    assert contents.skipped == [
        Skipped("huge.jpg", "the member unpacks to 50 MB; the limit is 20 MB"),
        Skipped(
            "bomb.jpg", f"the member unpacks to {bomb.file_size // bomb.compress_size} times its size (a zip bomb?)"
        ),
    ]


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_member_that_holds_more_than_its_header_declares_fails_when_read(method: int) -> None:
    data = JPEG + bytes(5000)

    def understate(archive: zipfile.ZipFile) -> None:
        archive.getinfo("liar.jpg").file_size = 1000

    contents = read_zip(build_zip([("liar.jpg", data), ("ok.jpg", JPEG)], understate, method))

    assert paths(contents) == ["liar.jpg", "ok.jpg"]
    assert contents.items[0].size == 1000
    with pytest.raises(ImageRejected) as refused:
        contents.items[0].open().read()
    assert refused.value.message == "liar.jpg holds more than the 1000 bytes its ZIP header declares."
    assert contents.items[1].open().read() == JPEG


def test_a_corrupt_member_fails_alone_when_read_or_when_listed_if_it_is_small() -> None:
    def corrupt(archive: zipfile.ZipFile) -> None:
        archive.getinfo("bad.jpg").CRC ^= 1
        archive.getinfo("small.jpg").CRC ^= 1

    members = [("bad.jpg", JPEG + bytes(10_000)), ("small.jpg", JPEG), ("ok.jpg", PNG)]
    contents = read_zip(build_zip(members, corrupt))

    # zipfile unpacks at least 4 kB at a time, so checking a small member's first bytes reads it all
    assert contents.skipped == [Skipped("small.jpg", "the member cannot be read (Bad CRC-32 for file 'small.jpg')")]
    assert paths(contents) == ["bad.jpg", "ok.jpg"]
    with pytest.raises(ImageRejected) as refused:
        contents.items[0].open().read()
    assert refused.value.message == "bad.jpg cannot be read from the ZIP (Bad CRC-32 for file 'bad.jpg')."
    assert contents.items[1].open().read() == PNG


def test_it_refuses_a_file_that_is_not_a_zip_or_whose_directory_is_broken() -> None:
    whole = build_zip([("a.jpg", JPEG)]).getvalue()
    broken = whole.replace(b"PK\x01\x02", b"PK\x00\x00")

    assert read_zip(io.BytesIO(JPEG)).refused == "The file is not a ZIP archive we can read (File is not a zip file)."
    assert read_zip(io.BytesIO(b"")).refused == "The file is not a ZIP archive we can read (File is not a zip file)."
    assert read_zip(io.BytesIO(whole[:-10])).refused == (
        "The file is not a ZIP archive we can read (File is not a zip file)."
    )
    assert read_zip(io.BytesIO(broken)).refused == (
        "The file is not a ZIP archive we can read (Bad magic number for central directory)."
    )


def test_it_refuses_more_images_than_the_limit_with_the_count() -> None:
    contents = read_zip(build_zip([(f"{n}.jpg", JPEG) for n in range(4)]), ZipLimits(max_items=3))

    assert contents.refused == "The ZIP holds 4 images; the limit is 3."
    assert contents.items == []


def test_it_refuses_a_zip_declaring_more_bytes_in_all_than_the_limit() -> None:
    members = [(f"{n}.jpg", JPEG + bytes(MB - len(JPEG))) for n in range(3)]
    contents = read_zip(build_zip(members), ZipLimits(max_total_bytes=2 * MB))

    assert contents.refused == "The ZIP unpacks to 3 MB; the limit is 2 MB."


def test_it_refuses_too_many_entries_from_the_end_record_before_listing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    source = build_zip([(f"{n}.txt", b"x") for n in range(11)])
    monkeypatch.setattr(zipfile, "ZipFile", None)  # listing them would fail the test

    assert read_zip(source, ZipLimits(max_items=1)).refused == "The ZIP lists 11 entries; the limit is 10."


def test_it_reads_the_entry_count_of_a_zip64_end_record_too(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = build_zip([(f"{n}.txt", b"x") for n in range(11)]).getvalue()
    directory_size, directory_offset = struct.unpack_from("<2L", plain, len(plain) - 22 + 12)
    zip64_end = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 11, 11, directory_size, directory_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(plain) - 22, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    source = io.BytesIO(plain[:-22] + zip64_end + locator + end)

    assert len(zipfile.ZipFile(source).infolist()) == 11  # a ZIP64 archive zipfile itself reads
    monkeypatch.setattr(zipfile, "ZipFile", None)
    assert read_zip(source, ZipLimits(max_items=1)).refused == "The ZIP lists 11 entries; the limit is 10."


# --- exporting -------------------------------------------------------------------------------------


def row(
    path: str, data: bytes | None, caption: str, job_id: int, state: str = "Completed", **fields: object
) -> ExportRow:
    values: dict[str, object] = {
        "original_caption": caption.upper(),
        "model": "llava:7b",
        "prompt": "Describe this image.",
        "duration": 1.25,
        **fields,
    }
    opener = None if data is None else (lambda: io.BytesIO(data))
    return ExportRow(path, opener, caption, state=state, job_id=job_id, **values)  # type: ignore[arg-type]


def exported(rows: list[ExportRow]) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(b"".join(export_zip(rows))))


def test_the_export_holds_each_image_under_its_path_with_a_sidecar_and_both_indexes() -> None:
    rows = [
        row("cats/tabby/01.jpg", JPEG, "a tabby cat, asleep  \n", 7),
        row("dogs/02.png", PNG, 'a dog "Rex", café', 8, duration=None),
        row("cats/03.jpg", JPEG, "", 9, state="Failed", original_caption=""),
        row("gone.jpg", None, "", 10, state="Cancelled", original_caption="", duration=None),
    ]

    archive = exported(rows)

    assert archive.namelist() == [
        "cats/tabby/01.jpg",
        "cats/tabby/01.txt",
        "dogs/02.png",
        "dogs/02.txt",
        "cats/03.jpg",
        "captions.csv",
        "captions.jsonl",
    ]
    assert archive.testzip() is None
    assert archive.read("cats/tabby/01.jpg") == JPEG
    assert archive.read("cats/03.jpg") == JPEG
    assert archive.read("cats/tabby/01.txt") == b"a tabby cat, asleep\n"
    assert archive.read("dogs/02.txt") == 'a dog "Rex", café\n'.encode()
    methods = {info.filename: info.compress_type for info in archive.infolist()}
    assert methods["dogs/02.png"] == zipfile.ZIP_STORED
    assert methods["dogs/02.txt"] == methods["captions.csv"] == zipfile.ZIP_DEFLATED
    assert list(csv.reader(io.StringIO(archive.read("captions.csv").decode(), newline=""))) == [
        ["path", "caption", "original_caption", "model", "prompt", "state", "duration_seconds", "job_id"],
        ["cats/tabby/01.jpg", "a tabby cat, asleep  \n", "A TABBY CAT, ASLEEP  \n", "llava:7b", "Describe this image.", "Completed", "1.25", "7"],
        ["dogs/02.png", 'a dog "Rex", café', 'A DOG "REX", CAFÉ', "llava:7b", "Describe this image.", "Completed", "", "8"],
        ["cats/03.jpg", "", "", "llava:7b", "Describe this image.", "Failed", "1.25", "9"],
        ["gone.jpg", "", "", "llava:7b", "Describe this image.", "Cancelled", "", "10"],
    ]  # fmt: skip
    assert [json.loads(line) for line in archive.read("captions.jsonl").decode().splitlines()] == [
        {"path": "cats/tabby/01.jpg", "caption": "a tabby cat, asleep  \n", "original_caption": "A TABBY CAT, ASLEEP  \n", "model": "llava:7b", "prompt": "Describe this image.", "state": "Completed", "duration_seconds": 1.25, "job_id": 7},
        {"path": "dogs/02.png", "caption": 'a dog "Rex", café', "original_caption": 'A DOG "REX", CAFÉ', "model": "llava:7b", "prompt": "Describe this image.", "state": "Completed", "duration_seconds": None, "job_id": 8},
        {"path": "cats/03.jpg", "caption": "", "original_caption": "", "model": "llava:7b", "prompt": "Describe this image.", "state": "Failed", "duration_seconds": 1.25, "job_id": 9},
        {"path": "gone.jpg", "caption": "", "original_caption": "", "model": "llava:7b", "prompt": "Describe this image.", "state": "Cancelled", "duration_seconds": None, "job_id": 10},
    ]  # fmt: skip


def test_a_path_used_twice_gets_a_number_for_its_image_and_its_sidecar() -> None:
    rows = [
        row("cats/01.jpg", JPEG, "first", 1),
        row("cats/01.jpg", PNG, "second", 2),
        row("cats/01.png", PNG, "third", 3),
        row("CATS/01.JPG", JPEG, "fourth", 4),
    ]

    archive = exported(rows)

    assert archive.namelist()[:8] == [
        "cats/01.jpg",
        "cats/01.txt",
        "cats/01 (2).jpg",
        "cats/01 (2).txt",
        "cats/01 (3).png",
        "cats/01 (3).txt",
        "CATS/01 (4).JPG",
        "CATS/01 (4).txt",
    ]
    assert archive.read("cats/01 (2).jpg") == PNG
    assert archive.read("cats/01 (3).txt") == b"third\n"
    paths_in_csv = [line[0] for line in csv.reader(io.StringIO(archive.read("captions.csv").decode()))][1:]
    assert paths_in_csv == ["cats/01.jpg", "cats/01 (2).jpg", "cats/01 (3).png", "CATS/01 (4).JPG"]


def test_an_image_whose_file_is_gone_is_left_out_and_the_rest_exported() -> None:
    def missing() -> io.BytesIO:
        raise FileNotFoundError("media/jobs/2.jpg")

    rows = [row("a.jpg", JPEG, "one", 1), ExportRow("b.jpg", missing, "two", "", "m", "p", "Completed", 1.0, 2)]

    archive = exported(rows)

    assert archive.namelist() == ["a.jpg", "a.txt", "captions.csv", "captions.jsonl"]
    assert archive.read("captions.jsonl").decode().count("\n") == 2


def test_the_export_streams_each_row_as_it_comes() -> None:
    consumed: list[int] = []

    def rows() -> Iterator[ExportRow]:
        for n in range(3):
            consumed.append(n)
            yield row(f"{n}.jpg", JPEG, f"caption {n}", n)

    chunks = export_zip(rows())
    first = next(chunks)

    assert consumed == [0]
    assert first.startswith(b"PK\x03\x04")
    rest = b"".join(chunks)
    assert consumed == [0, 1, 2]
    assert zipfile.ZipFile(io.BytesIO(first + rest)).read("2.txt") == b"caption 2\n"


def test_exporting_200_images_of_1_mb_stays_far_below_their_size_in_memory(tmp_path: Path) -> None:
    data = JPEG + bytes(MB - len(JPEG))
    rows = [row(f"set/{n // 50}/{n:03}.jpg", data, f"caption {n}", n) for n in range(200)]
    target = tmp_path / "export.zip"

    largest = 0
    tracemalloc.start()
    try:
        with target.open("wb") as sink:
            for chunk in export_zip(rows):
                sink.write(chunk)
                largest = max(largest, len(chunk))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 4 * MB
    assert largest < 100_000  # each image goes out as it is read, not whole
    archive = zipfile.ZipFile(target)
    assert len(archive.namelist()) == 402
    assert archive.read("set/3/199.jpg") == data
    assert archive.read("set/3/199.txt") == b"caption 199\n"


def test_csv_and_jsonl_alone_give_the_paths_as_stored_quoted_per_rfc_4180() -> None:
    rows = [
        row("a/1.jpg", None, 'line one\r\nline two, "quoted"', 1),
        row("a/1.jpg", None, "日本語の説明", 2, state="Failed", duration=None),
    ]

    text = "".join(export_csv(rows))
    lines = list(export_jsonl(rows))

    assert text == (
        "path,caption,original_caption,model,prompt,state,duration_seconds,job_id\r\n"
        'a/1.jpg,"line one\r\nline two, ""quoted""","LINE ONE\r\nLINE TWO, ""QUOTED""",llava:7b,Describe this image.,Completed,1.25,1\r\n'
        "a/1.jpg,日本語の説明,日本語の説明,llava:7b,Describe this image.,Failed,,2\r\n"
    )
    assert lines == [
        '{"path": "a/1.jpg", "caption": "line one\\r\\nline two, \\"quoted\\"", "original_caption": "LINE ONE\\r\\nLINE TWO, \\"QUOTED\\"", "model": "llava:7b", "prompt": "Describe this image.", "state": "Completed", "duration_seconds": 1.25, "job_id": 1}\n',
        '{"path": "a/1.jpg", "caption": "日本語の説明", "original_caption": "日本語の説明", "model": "llava:7b", "prompt": "Describe this image.", "state": "Failed", "duration_seconds": null, "job_id": 2}\n',
    ]  # fmt: skip


def test_the_state_that_earns_a_sidecar_is_the_jobs_own_completed_state() -> None:
    from imagetotext.models import State

    assert COMPLETED == State.COMPLETED
