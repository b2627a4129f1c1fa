"""Files a gallery hands us that are wrong in ways a person does not see: a catalogue.toml
of the wrong shape, ids a log or the wire cannot carry, two entries for one image, links
to nothing or to themselves among the references, an image that claims billions of
pixels in a few hundred KB, and a truth.json whose corners are no quad.

Each is one InputError line naming the file and the field (or the image), never a
traceback and never a silent choice; and what is fine still reads.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import capture.images
from capture.bench import read_truth
from capture.catalogue import (
    INDEX_FILE,
    Catalogue,
    folder_fingerprint,
    read_entries,
    unreadable_images,
)
from capture.images import REDUCED_AT_LEAST, read_image, stored_size
from ground.errors import InputError
from ground.protocol import MAX_TEXT_CHARS
from installation.cli import cli


def _works(folder: Path, count: int = 3) -> Path:
    """A catalogue folder of ``count`` small, distinct PNG references (no metadata)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for k in range(count):
        cv2.imwrite(str(folder / f"w{k}.png"), rng.integers(0, 255, (96, 128, 3), np.uint8))
    return folder


def _refused(folder: Path) -> str:
    with pytest.raises(InputError) as refused:
        read_entries(folder)
    message = str(refused.value)
    assert "\n" not in message
    return message


# -- 1. catalogue.toml of the wrong shape, 4. ids, 5. two entries for one image --

@pytest.mark.parametrize(("toml", "got"), [
    ('[artwork]\nfile = "w0.png"\n', "got a single [artwork] table"),
    ("artwork = [1, 2]\n", "got artwork = [1, 2]"),
    ('artwork = "w0.png"\n', "got artwork = 'w0.png'"),
    ('artwork = [{file = "w0.png"}, 3]\n', "got artwork = [{'file': 'w0.png'}, 3]"),
])
def test_an_artwork_that_is_not_a_list_of_tables_is_refused(tmp_path: Path, toml: str,
                                                            got: str) -> None:
    folder = _works(tmp_path / "works")
    (folder / "catalogue.toml").write_text(toml)
    assert _refused(folder) == (f"catalogue {folder / 'catalogue.toml'}: artwork: expected "
                                f"[[artwork]] tables, {got}")


def test_a_catalogue_toml_of_artworks_not_artwork_is_refused_naming_the_slip(
        tmp_path: Path) -> None:
    # [[artworks]] loaded as no metadata at all: every work catalogued under its file
    # name, every title lost, nothing said
    folder = _works(tmp_path / "works")
    (folder / "catalogue.toml").write_text('[[artworks]]\nfile = "w0.png"\ntitle = "Lake"\n')
    assert _refused(folder) == (f"catalogue {folder / 'catalogue.toml'}: expected [[artwork]] "
                                f"tables, got only 'artworks' (did you mean 'artwork'?)")


def test_keys_a_catalogue_toml_entry_does_not_read_are_named_not_lost_unsaid(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a typo's title (titel) was left out unsaid; a key a museum adds on purpose still loads
    folder = _works(tmp_path / "works")
    toml = folder / "catalogue.toml"
    toml.write_text('[museum]\nname = "Estense"\n'
                    '[[artwork]]\nfile = "w0.png"\ntitel = "Lake"\nmedium = "oil"\n'
                    '[[artwork]]\nfile = "w1.png"\ntitle = "Hill"\nmedium = "tempera"\n')
    notes: list[str] = []
    entries = read_entries(folder, notes)
    assert [(e.file, e.title) for e in entries] == [("w0.png", ""), ("w1.png", "Hill"),
                                                     ("w2.png", "")]
    assert notes == [
        f"catalogue {toml}: left out 'museum': only [[artwork]] tables are read",
        f"catalogue {toml}: left out keys it does not read: 'titel' in artwork[0] (did you "
        f"mean 'title'?); 'medium' in 2 entries (artwork[0]...) (read: file, id, title, "
        f"artist, year)"]
    with caplog.at_level("WARNING", logger="capture.catalogue"):
        read_entries(folder)  # no list to take them: they are logged
    assert [r.getMessage() for r in caplog.records] == notes


@pytest.mark.parametrize(("field", "value", "error"), [
    ("id", '""', r"artwork\[0\]\.id: expected an id of 1 to 256 printable characters, got ''$"),
    ("id", '"   "', r"artwork\[0\]\.id: expected an id .*, got '   '$"),
    ("id", '"a\\u0000b"', r"artwork\[0\]\.id: expected an id .*, got 'a\\x00b' \(character 2 is "
                          r"U\+0000\)$"),
    ("id", '"a\\nb"', r"artwork\[0\]\.id: expected an id .*, got 'a\\nb' \(character 2"),
    ("id", '"a\\u2028b"', r"artwork\[0\]\.id: .* \(character 2 is LINE SEPARATOR\)$"),
    ("id", f'"{"x" * 100_000}"', r"artwork\[0\]\.id: expected an id of 1 to 256 printable "
                                 r"characters, got 100000 characters \('xxx"),
    ("id", "123", r"artwork\[0\]\.id: expected an id .* \(text, in quotes\), got 123$"),
    ("id", "1.5", r"artwork\[0\]\.id: expected an id .*, got 1\.5$"),
    ("title", "7", r"artwork\[0\]\.title: expected text \(in quotes\), got 7$"),
    ("artist", '["a", "b"]', r"artwork\[0\]\.artist: expected text \(in quotes\), got "
                             r"\['a', 'b'\]$"),
    ("file", "3", r"artwork\[0\]\.file: expected the name of an image in .*, got 3$"),
])
def test_a_toml_entry_field_of_the_wrong_type_or_an_unusable_id_is_refused(
        tmp_path: Path, field: str, value: str, error: str) -> None:
    folder = _works(tmp_path / "works")
    entry = {"file": '"w0.png"', field: value}
    (folder / "catalogue.toml").write_text(
        "[[artwork]]\n" + "".join(f"{key} = {text}\n" for key, text in entry.items()),
        encoding="utf-8")
    message = _refused(folder)
    assert message.startswith(f"catalogue {folder / 'catalogue.toml'}, artwork[0].{field}: ")
    assert len(message) < 400  # a 100,000-character id is not repeated whole
    assert re.search(error, message), message


def test_ids_the_wire_carries_are_kept_as_written(tmp_path: Path) -> None:
    folder = _works(tmp_path / "works")
    ids = ["x" * MAX_TEXT_CHARS, "Inv.\u00a01642 / b", "SK-C-5 \u00e9\u6f22"]  # a no-break space
    (folder / "catalogue.toml").write_text("".join(
        f'[[artwork]]\nfile = "w{k}.png"\nid = "{artwork_id}"\n'
        for k, artwork_id in enumerate(ids)), encoding="utf-8")
    assert [entry.artwork_id for entry in read_entries(folder)] == ids
    (folder / "catalogue.toml").write_text(f'[[artwork]]\nfile = "w0.png"\n'
                                           f'id = "{"x" * (MAX_TEXT_CHARS + 1)}"\n')
    assert "got 257 characters" in _refused(folder)


@pytest.mark.parametrize(("cell", "error"), [
    ("A\x001", r"row 2: inventory: expected an id .*, got 'A\\x001' \(character 2 is U\+0000\)$"),
    ("x" * 300, r"row 2: inventory: expected an id .*, got 300 characters"),
])
def test_a_csv_id_the_wire_cannot_carry_is_refused_naming_the_row(tmp_path: Path, cell: str,
                                                                  error: str) -> None:
    folder = _works(tmp_path / "works")
    (folder / "index.csv").write_text(f"file,inventory\nw0.png,{cell}\nw1.png,B2\n",
                                      encoding="utf-8")
    message = _refused(folder)
    assert message.startswith(f"catalogue {folder / 'index.csv'}, row 2: inventory: ")
    assert re.search(error, message), message
    # an empty cell is no id given: the file's stem, as before
    (folder / "index.csv").write_text("file,inventory\nw0.png,\nw1.png,B2\n", encoding="utf-8")
    assert [e.artwork_id for e in read_entries(folder)] == ["w0", "B2", "w2"]


def test_a_file_name_that_is_no_id_is_refused_where_no_id_is_given(tmp_path: Path) -> None:
    folder = _works(tmp_path / "works")
    os.rename(folder / "w2.png", folder / "w\x072.png")
    assert _refused(folder) == (f"catalogue {folder}, 'w\\x072.png' (no id given: its file "
                                f"name is its id): expected an id of 1 to 256 printable "
                                f"characters, got 'w\\x072' (character 2 is U+0007)")
    (folder / "catalogue.toml").write_text('[[artwork]]\nfile = "w\\u00072.png"\nid = "W2"\n')
    assert sorted(e.artwork_id for e in read_entries(folder)) == ["W2", "w0", "w1"]


def test_two_toml_entries_for_one_image_are_refused_naming_both(tmp_path: Path) -> None:
    folder = _works(tmp_path / "works")
    (folder / "room 2").mkdir()
    os.rename(folder / "w2.png", folder / "room 2" / "w2.png")
    # the same image, by its path and by its bare name
    (folder / "catalogue.toml").write_text(
        '[[artwork]]\nfile = "w0.png"\nid = "A"\n'
        '[[artwork]]\nfile = "room 2/w2.png"\nid = "first"\n'
        '[[artwork]]\nfile = "w1.png"\nid = "B"\n'
        '[[artwork]]\nfile = "w2.png"\nid = "second"\n')
    assert _refused(folder) == (f"catalogue {folder / 'catalogue.toml'}, artwork[1] and "
                                f"artwork[3]: expected one entry per image, got two for "
                                f"room 2/w2.png")


# -- 2. links to nothing and loops of links among the references --

def _broken_links(folder: Path) -> None:
    (folder / "gone.png").symlink_to(folder / "nowhere.png")
    (folder / "loop.png").symlink_to("loop.png")


def test_links_to_nothing_among_the_references_are_named_not_a_traceback(
        tmp_path: Path) -> None:
    folder = _works(tmp_path / "works")
    fingerprint = folder_fingerprint(folder)
    _broken_links(folder)
    assert unreadable_images(folder) == [
        f"gone.png (it is a link to {folder / 'nowhere.png'}, which does not exist)",
        "loop.png (it is a link that leads back to itself: a loop of links)"]
    changed = folder_fingerprint(folder)  # the live capture looks every few seconds
    assert changed != fingerprint
    with pytest.raises(InputError, match=r"^catalogue .*: cannot read image .*gone\.png: it is "
                                         r"a link to .*nowhere\.png, which does not exist$"):
        Catalogue.open(folder)

    result = CliRunner().invoke(cli, ["index", str(folder)])
    assert result.exit_code == 3, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "2 reference images cannot be read" in lines[0], lines
    assert "gone.png (it is a link to" in lines[0] and "loop.png (it is a link that leads " \
        "back to itself" in lines[0]
    assert not (folder / INDEX_FILE).exists()

    # mended: the fingerprint changes again, and the folder indexes
    (folder / "gone.png").unlink()
    (folder / "loop.png").unlink()
    (folder / "gone.png").symlink_to(folder / "w0.png")
    assert folder_fingerprint(folder) != changed and unreadable_images(folder) == []


def test_a_metadata_file_that_is_a_broken_link_or_a_folder_is_refused(tmp_path: Path) -> None:
    folder = _works(tmp_path / "works")
    (folder / "catalogue.toml").symlink_to("catalogue.toml")
    assert _refused(folder) == (f"catalogue {folder / 'catalogue.toml'}: cannot read it: it is "
                                f"a link that leads back to itself: a loop of links")
    (folder / "catalogue.toml").unlink()
    (folder / "catalogue.toml").mkdir()
    assert _refused(folder).endswith("cannot read it: expected a file, got a folder")
    (folder / "catalogue.toml").rmdir()
    (folder / "export.csv").symlink_to(tmp_path / "moved.csv")
    assert _refused(folder) == (f"catalogue {folder / 'export.csv'}: cannot read it: it is a "
                                f"link to {tmp_path / 'moved.csv'}, which does not exist")


def test_the_deep_check_names_references_that_cannot_be_read(tmp_path: Path) -> None:
    folder = _works(tmp_path / "works")
    _broken_links(folder)
    config = tmp_path / "room.json"
    config.write_text(json.dumps({
        "installation": {"output_dir": str(tmp_path / "out")},
        "network": {name: f"tcp://127.0.0.1:{6470 + i}"
                    for i, name in enumerate(("views", "chunks", "clock", "control"))},
        "audio_out": {"output": "none"}, "metrics": {"port": 6474},
        "engine": {"generator": "sine"},
        "rooms": [{"id": "r0", "capture": {"recognition": {"catalogue": str(folder)}}}],
    }))
    result = CliRunner().invoke(cli, ["check-config", "--deep", str(config)])
    assert result.exit_code != 0
    found = [line for line in result.output.splitlines() if line.startswith("rooms[0]")]
    assert found == [
        f"rooms[0].capture.recognition.catalogue: expected reference images that can be read, "
        f"got 2 that cannot be read: gone.png (it is a link to {folder / 'nowhere.png'}, which "
        f"does not exist); loop.png (it is a link that leads back to itself: a loop of links)"]


# -- 3. an image that claims more pixels than any photo --

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` (grey, 8 bit) over a few rows of
    zeros: what its header gives is all that is read of it before it is refused."""
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                               8, 0, 0, 0, 0))
            + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(cv2, "imdecode", refuse)


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path: Path,
                                                              no_decoding: None) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(30_000, 30_000))
    for at_least in (None, REDUCED_AT_LEAST):
        with pytest.raises(InputError) as refused:
            read_image(path, at_least)
        assert str(refused.value) == (f"cannot read image {path}: expected at most 100 "
                                      f"megapixels, got 30000x30000")


def test_an_image_at_the_limit_reads_and_one_past_it_does_not(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setattr(capture.images, "MAX_IMAGE_PIXELS", 40 * 30)
    image = np.full((30, 40, 3), 90, np.uint8)
    for suffix in (".png", ".jpg", ".webp", ".bmp", ".tif", ".ppm"):
        at_limit = tmp_path / f"at{suffix}"
        cv2.imwrite(str(at_limit), image)
        assert read_image(at_limit).shape == (30, 40, 3)
        past = tmp_path / f"past{suffix}"
        cv2.imwrite(str(past), np.full((30, 41, 3), 90, np.uint8))
        # a PPM's header is not read: it is refused once decoded (it holds its pixels raw,
        # so it is no bomb)
        with pytest.raises(InputError, match=r"expected at most 0 megapixels, got 41x30$"):
            read_image(past)


def test_a_scan_too_big_whole_is_read_at_the_reduction_a_catalogue_asks_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 12,000 px scan in a catalogue is decoded at an eighth (2 MP): the limit is on what
    # is decoded, so such a catalogue still reads; a photo read whole is refused.
    path = tmp_path / "scan.jpg"
    cv2.imwrite(str(path), np.full((240, 320, 3), 90, np.uint8))
    monkeypatch.setattr(capture.images, "MAX_IMAGE_PIXELS", 40 * 30)
    assert read_image(path, at_least=30).shape == (30, 40, 3)
    with pytest.raises(InputError, match=r"expected at most 0 megapixels, got 320x240$"):
        read_image(path)
    with pytest.raises(InputError, match=r"0 megapixels \(at a quarter\), got 320x240$"):
        read_image(path, at_least=60)  # an eighth (40x30) is too small: a quarter is needed


@pytest.mark.parametrize(("suffix", "params"), [
    (".png", []), (".png", [cv2.IMWRITE_PNG_COMPRESSION, 0]),
    (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
    (".bmp", []), (".tif", []), (".tif", [cv2.IMWRITE_TIFF_COMPRESSION, 1]),
])
@pytest.mark.parametrize("shape", [(23, 37, 3), (300, 7, 1), (1, 1, 3)])
def test_the_size_read_from_a_header_is_the_size_decoded(suffix: str, params: list[int],
                                                         shape: tuple[int, int, int]) -> None:
    # OpenCV's own writers: the headers as a real file has them, in every layout written
    image = np.random.default_rng(1).integers(0, 255, shape, np.uint8)
    ok, encoded = cv2.imencode(suffix, image, params)
    assert ok
    decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    assert stored_size(encoded.tobytes()) == (decoded.shape[1], decoded.shape[0])


def test_the_size_read_from_a_jpeg_steps_over_its_exif_thumbnail() -> None:
    main = cv2.imencode(".jpg", np.full((40, 60, 3), 90, np.uint8))[1].tobytes()
    thumbnail = cv2.imencode(".jpg", np.full((8, 12, 3), 90, np.uint8))[1].tobytes()
    exif = b"Exif\0\0" + thumbnail  # an APP1 segment holding a JPEG of its own
    with_exif = main[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + main[2:]
    assert stored_size(with_exif) == (60, 40)
    assert cv2.imdecode(np.frombuffer(with_exif, np.uint8), cv2.IMREAD_COLOR).shape == (40, 60, 3)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"\xff\xd8", b"RIFF\0\0\0\0WEBPVP8X",
                        b"RIFF\0\0\0\0WEBPVP8L", b"RIFF\0\0\0\0WEBPVP8 ", b"GIF89a", b"BM",
                        b"II*\0", b"MM\0*", b"II+\0", b"MM\0+", b""]),
       st.binary(max_size=64))
def test_any_bytes_give_a_size_or_none_never_an_exception(start: bytes, rest: bytes) -> None:
    size = stored_size(start + rest)
    assert size is None or (isinstance(size, tuple) and len(size) == 2
                            and all(isinstance(v, int) and v > 0 for v in size))


def test_a_png_bomb_in_a_catalogue_is_named_by_the_index(tmp_path: Path,
                                                         no_decoding: None) -> None:
    folder = tmp_path / "works"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(_png_claiming(30_000, 30_000))
    with pytest.raises(InputError, match=r"bomb\.png: expected at most 100 megapixels, got "
                                         r"30000x30000$"):
        Catalogue.open(folder)


# -- 6. truth.json corners that are no quad --

_PHOTO = {"name": "wall.jpg", "size": [1920, 1080]}
_SQUARE = [[100, 100], [300, 100], [300, 300], [100, 300]]


def _truth(tmp_path: Path, points: Any, key: str = "paintings") -> Path:
    item = {"outline": points} if key == "other_paintings" else {"name": "a.jpg",
                                                                 "points": points}
    path = tmp_path / "truth.json"
    # json.dumps writes 10**400 as its digits and 1e300 as 1e+300, as a tool would
    path.write_text(json.dumps({"galleries": [{**_PHOTO, key: [item]}]}))
    return path


@pytest.mark.parametrize(("points", "error"), [
    ([[10**400, 0], [1, 1], [0, 1], [0, 0]], r"points: expected 4 \[x, y\] pairs of finite "
                                             r"numbers within ±1e\+30 px, got \[10000000000"),
    ([[1e300, 0], [1e300, 1e300], [0, 1e300], [0, 0]], r"points: expected 4 \[x, y\] pairs of "
                                                       r"finite numbers .*, got \[1e\+300, 0\]$"),
    ([[5, 5]] * 4, r"points: expected 4 distinct corners of a work in wall\.jpg, got"),
    ([[0, 0], [100, 0], [200, 0], [300, 0]], r"points: expected points around a work in "
                                             r"wall\.jpg \(an area of at least 1 px²\), got 0 px²"),
    ([[100, 100], [300, 300], [300, 100], [100, 300]],
     r"points: expected the points in order around a work in wall\.jpg, got edges 0-1 and 2-3 "
     r"crossing"),
])
def test_truth_corners_that_are_no_quad_are_refused_naming_the_photo_and_field(
        tmp_path: Path, points: Any, error: str) -> None:
    # (warnings are errors here: numpy's overflow warning for 1e300 was printed, then refused)
    with pytest.raises(InputError, match=r"^truth\.json: galleries\[0\]\.paintings\[0\]\."
                                         + error) as refused:
        read_truth(_truth(tmp_path, points))
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 300


def test_an_outline_that_crosses_itself_is_refused_and_good_ones_read(tmp_path: Path) -> None:
    bow_tie = [[0, 0], [100, 100], [100, 0], [0, 100]]
    with pytest.raises(InputError, match=r"^truth\.json: galleries\[0\]\.other_paintings\[0\]"
                                         r"\.outline: expected the points in order around a "
                                         r"work in wall\.jpg, got edges 0-1 and 2-3 crossing"):
        read_truth(_truth(tmp_path, bow_tie, "other_paintings"))
    # a concave outline (a frame with a notch), a closed one (the first point again at the
    # end), and a quad drawn either way round all read
    for outline in ([[0, 0], [100, 0], [50, 40], [100, 100], [0, 100]],
                    [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]):
        assert len(read_truth(_truth(tmp_path, outline, "other_paintings"))[0].others) == 1
    for quad in (_SQUARE, _SQUARE[::-1], [[1e6, 1e6], [1e6 + 3, 1e6], [1e6 + 3, 1e6 + 3],
                                          [1e6, 1e6 + 3]]):
        assert read_truth(_truth(tmp_path, quad))[0].paintings[0].quad.tolist() == quad
