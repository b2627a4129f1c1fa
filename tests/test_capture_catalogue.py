"""The catalogue: index build, cache reuse and invalidation, recognition, no-match, location."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import capture.recognise
from capture.bench_catalogue import make_view
from capture.catalogue import (
    INDEX_FILE,
    SQUARE,
    Catalogue,
    CatalogueEntry,
    catalogue_images,
    read_entries,
    whole_view,
)
from capture.detect import Detection, quad_iou, rectify
from capture.synthetic.rooms import seen_from_the_side
from capture.synthetic.scenes import SceneGenerator, catalogue_artwork, write_catalogue
from ground.errors import InputError

SIZE = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalogue(tmp_path_factory.mktemp("catalogue"), SIZE)


@pytest.fixture(scope="module")
def catalogue(folder: Path) -> Catalogue:
    return Catalogue.open(folder)


@pytest.fixture(scope="module")
def generator() -> SceneGenerator:
    return SceneGenerator(catalogue_size=SIZE, outsiders=6)


def test_index_is_cached_and_rebuilt_when_the_folder_changes(folder: Path,
                                                             tmp_path: Path) -> None:
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    (copy / INDEX_FILE).unlink(missing_ok=True)
    first = Catalogue.open(copy)
    assert first.rebuilt and (copy / INDEX_FILE).is_file() and len(first) == SIZE
    assert not Catalogue.open(copy).rebuilt  # reused from the cache
    stat = (copy / "cat-003.png").stat()
    os.utime(copy / "cat-003.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert Catalogue.open(copy).rebuilt  # a reference was touched
    cv2.imwrite(str(copy / "extra.png"), catalogue_artwork(40))
    grown = Catalogue.open(copy)
    assert grown.rebuilt and len(grown) == SIZE + 1 and "extra" in grown.ids
    assert not Catalogue.open(copy).rebuilt
    (copy / "catalogue.toml").write_text((copy / "catalogue.toml").read_text()
                                         .replace("Studio A", "Studio Z"))
    renamed = Catalogue.open(copy)
    assert renamed.rebuilt and renamed.entry("cat-000").artist == "Studio Z"
    # saved by Windows' Notepad, with a byte-order mark: read the same (it was refused)
    (copy / "catalogue.toml").write_bytes(b"\xef\xbb\xbf" + (copy / "catalogue.toml")
                                          .read_bytes())
    assert Catalogue.open(copy).entry("cat-000").artist == "Studio Z"
    elsewhere = Catalogue.open(copy, cache_dir=tmp_path / "cache")
    assert elsewhere.rebuilt and (tmp_path / "cache" / INDEX_FILE).is_file()
    # an index cut short (a copy of the folder interrupted) is no zip file: rebuilt, where
    # it raised BadZipFile (the capture's catalogue thread ended on it)
    index = copy / INDEX_FILE
    index.write_bytes(index.read_bytes()[:4096])
    damaged = Catalogue.open(copy)
    assert damaged.rebuilt and damaged.reused == 0 and len(damaged) == SIZE + 1


def test_a_full_disk_leaves_no_half_written_index(folder: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The disk fills while the index is written: the catalogue still opens (re-indexed per
    # start), and the part written is removed, not left taking the space a recording needs.
    import errno

    import capture.catalogue as catalogue_module

    def savez_on_a_full_disk(path: Path, **arrays: np.ndarray) -> None:
        Path(path).write_bytes(b"PK" + bytes(64 * 1024))  # as far as it got
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(catalogue_module.np, "savez", savez_on_a_full_disk)
    cache = tmp_path / "cache"
    opened = Catalogue.open(folder, cache_dir=cache)
    assert opened.rebuilt and len(opened) == SIZE
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == []


def _open_in_a_process(folder: str) -> tuple[bool, int]:
    """Open the catalogue as a room's capture process does: (rebuilt, works)."""
    opened = Catalogue.open(folder)
    return opened.rebuilt, len(opened)


def test_the_rooms_of_one_machine_build_a_changed_index_once(folder: Path,
                                                             tmp_path: Path) -> None:
    # Each room's capture is a process, and all open the one catalogue at start or when it
    # changed: each built the index (minutes, at thousands of works) into one file at once.
    # One builds it; the others wait for it and load what it wrote.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    (copy / INDEX_FILE).unlink(missing_ok=True)
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as rooms:
        opened = list(rooms.map(_open_in_a_process, [str(copy)] * 3))
    assert sorted(opened) == [(False, SIZE), (False, SIZE), (True, SIZE)], opened
    assert not Catalogue.open(copy).rebuilt
    assert catalogue_images(copy) == [f"cat-{k:03d}.png" for k in range(SIZE)]  # no lock there


def test_a_rebuild_indexes_only_what_changed_and_gives_the_index_a_full_build_gives(
        folder: Path, tmp_path: Path) -> None:
    # A museum's technician corrects a title or adds a work to thousands: indexing every
    # work again took minutes. The unchanged works' features are taken from the index
    # before, and the index is the one a build from nothing gives, array for array.
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    (copy / INDEX_FILE).unlink(missing_ok=True)
    assert Catalogue.open(copy).reused == 0

    def same_as_a_full_build(name: str) -> None:
        fresh = Catalogue.open(copy, cache_dir=tmp_path / name)
        assert fresh.rebuilt and fresh.reused == 0
        with np.load(copy / INDEX_FILE) as kept, np.load(tmp_path / name / INDEX_FILE) as full:
            assert set(kept.files) == set(full.files)
            for key in full.files:
                assert kept[key].dtype == full[key].dtype, key
                assert np.array_equal(kept[key], full[key]), key

    (copy / "catalogue.toml").write_text((copy / "catalogue.toml").read_text()
                                         .replace("Studio A", "Studio Z"))
    retitled = Catalogue.open(copy)
    assert retitled.rebuilt and retitled.reused == SIZE
    assert retitled.entry("cat-000").artist == "Studio Z"
    same_as_a_full_build("retitled")

    cv2.imwrite(str(copy / "cat-0025.png"), catalogue_artwork(41))  # sorts in the middle
    (copy / "cat-005.png").unlink()
    (copy / "catalogue.toml").write_text("\n".join(  # and its record
        block for block in (copy / "catalogue.toml").read_text().split("\n\n")
        if '"cat-005.png"' not in block))
    cv2.imwrite(str(copy / "cat-007.png"), catalogue_artwork(42))  # another picture
    changed = Catalogue.open(copy)
    assert changed.rebuilt and len(changed) == SIZE and changed.reused == SIZE - 2
    assert "cat-0025" in changed.ids and "cat-005" not in changed.ids
    same_as_a_full_build("changed")
    view = whole_view(catalogue_artwork(42), SQUARE)
    match = changed.recognise(view)
    assert match is not None and match.artwork_id == "cat-007"


def test_metadata_and_its_errors(folder: Path, catalogue: Catalogue, tmp_path: Path) -> None:
    entry = catalogue.entry("cat-009")
    assert entry is not None and entry.file == "cat-009.png" and entry.year is not None
    assert entry.title.endswith("no. 2")
    bad = Path(shutil.copytree(folder, tmp_path / "bad"))
    (bad / "catalogue.toml").write_text('[[artwork]]\nfile = "missing.png"\n')
    with pytest.raises(InputError, match=r"artwork\[0\]\.file: expected the name of an image"):
        Catalogue.open(bad)
    (bad / "catalogue.toml").write_text('[[artwork]]\nfile = "cat-001.png"\nid = "cat-000"\n')
    with pytest.raises(InputError, match="expected unique artwork ids, got 'cat-000'"):
        Catalogue.open(bad)
    with pytest.raises(InputError, match="expected a folder"):
        Catalogue.open(tmp_path / "nowhere")


def _images_only(folder: Path, tmp_path: Path, name: str = "csv") -> Path:
    """A copy of the catalogue's images, without its TOML or index."""
    copy = tmp_path / name
    copy.mkdir()
    for path in folder.glob("cat-00[0-3].png"):
        shutil.copy(path, copy / path.name)
    return copy


def test_metadata_from_a_collection_systems_csv_export(folder: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A spreadsheet's export as it comes: a BOM, semicolons, its own column names and
    order, quoted cells, a column we do not read, dates that are not years."""
    copy = _images_only(folder, tmp_path)
    (copy / "works.csv").write_text(
        '\ufeffInventory No.;Title;Maker;Date;Image;Room\n'
        'INV-1;"Night; a study";Rembrandt;1642;cat-000.png;12\n'
        'INV-2;Lake;Anon.;c. 1640;cat-001.png;3\n'
        ';Untitled;;99999;cat-002.png;\n', encoding="utf-8")
    with caplog.at_level("WARNING", logger="capture.catalogue"):
        entries = {e.file: e for e in read_entries(copy)}
    assert entries["cat-000.png"] == CatalogueEntry("INV-1", "cat-000.png", "Night; a study",
                                                    "Rembrandt", 1642)
    assert entries["cat-001.png"] == CatalogueEntry("INV-2", "cat-001.png", "Lake", "Anon.")
    # no id: the file's stem, as for an image the export does not list
    assert entries["cat-002.png"] == CatalogueEntry("cat-002", "cat-002.png", "Untitled")
    assert entries["cat-003.png"] == CatalogueEntry("cat-003", "cat-003.png")
    assert "year left out of 2 entries" in caplog.text and "row 3 'c. 1640'" in caplog.text \
        and "row 4 '99999'" in caplog.text
    opened = Catalogue.open(copy)
    assert opened.ids == ["INV-1", "INV-2", "cat-002", "cat-003"]
    assert not Catalogue.open(copy).rebuilt
    (copy / "works.csv").write_text((copy / "works.csv").read_text(encoding="utf-8")
                                    .replace("Lake", "Lake at dusk"), encoding="utf-8")
    changed = Catalogue.open(copy)
    assert changed.rebuilt and changed.entry("INV-2").title == "Lake at dusk"
    # a CSV that names no file column is not metadata (a room list, a log)
    (copy / "rooms.csv").write_text("room,floor\n12,1\n", encoding="utf-8")
    assert [e.artwork_id for e in read_entries(copy)] == opened.ids


def test_a_catalogue_sorted_into_sub_folders_is_read_whole(folder: Path, tmp_path: Path) -> None:
    """A collection's export sorted by room: images in sub-folders, the CSV naming them by
    path or by bare name; hidden folders (a viewer's thumbnails) left out."""
    copy = tmp_path / "by-room"
    for k, room in ((0, "room-1"), (1, "room-1"), (2, "room-2/wall-a"), (3, ".thumbnails")):
        (copy / room).mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / f"cat-{k:03d}.png", copy / room / f"cat-{k:03d}.png")
    shutil.copy(folder / "cat-004.png", copy / "cat-004.png")
    (copy / "export.csv").write_text("file,id,title\nroom-1/cat-000.png,INV-0,Zero\n"
                                     "cat-002.png,INV-2,Two\n", encoding="utf-8")
    # copied from a Mac to a shared drive: a hidden AppleDouble file beside each file,
    # the export's too (it was read as a second export, and refused as not UTF-8)
    for name in ("._export.csv", "room-1/._cat-000.png"):
        (copy / name).write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X\xb0")
    entries = {e.file: e for e in read_entries(copy)}
    assert sorted(entries) == ["cat-004.png", "room-1/cat-000.png", "room-1/cat-001.png",
                               "room-2/wall-a/cat-002.png"]
    assert entries["room-1/cat-000.png"].artwork_id == "INV-0"
    assert entries["room-2/wall-a/cat-002.png"].title == "Two"  # by its bare name
    assert entries["room-1/cat-001.png"].artwork_id == "cat-001"
    opened = Catalogue.open(copy)
    assert opened.ids == ["cat-004", "INV-0", "cat-001", "INV-2"] and len(opened) == 4
    stat = (copy / "room-1" / "cat-001.png").stat()
    os.utime(copy / "room-1" / "cat-001.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert Catalogue.open(copy).rebuilt  # an image in a sub-folder is in the fingerprint
    # one bare name, two images: the row must say which
    shutil.copy(folder / "cat-005.png", copy / "room-1" / "cat-002.png")
    with pytest.raises(InputError, match=r"export.csv, row 3: cat-002.png: two or more images "
                                         r"have that name \(room-1/cat-002.png, "
                                         r"room-2/wall-a/cat-002.png\); give its path"):
        read_entries(copy)
    # and two images under one stem with no ids to tell them apart are refused as before
    (copy / "export.csv").unlink()
    with pytest.raises(InputError, match="expected unique artwork ids, got 'cat-002'"):
        read_entries(copy)


@pytest.mark.parametrize(("files", "error"), [
    ({"a.csv": "file,title\ncat-000.png,A\n", "b.csv": "image,title\ncat-001.png,B\n"},
     r"a.csv and b.csv both describe the works \(a file column\); keep one$"),
    ({"a.csv": "file,title\ncat-000.png,A\n", "catalogue.toml": ""},
     r"both catalogue.toml and a.csv describe the works; keep one$"),
    ({"a.csv": "file,filename\ncat-000.png,cat-000.png\n"},
     r"a.csv: columns file and filename both give the file; keep one$"),
    ({"a.csv": "file,title\ncat-000.png,A\n,B\n"},
     r"a.csv, row 3: file: expected the name of an image, got nothing$"),
    ({"a.csv": "file,title\ncat-000.png,A\ncat-000.png,B\n"},
     r"a.csv, rows 2 and 3: both describe cat-000.png$"),
    ({"a.csv": "file\nold-1.jpg\ncat-000.png\nold-2.jpg\n"},
     r"a.csv: 2 rows name an image that is not in .*: row 2 'old-1.jpg'; row 4 'old-2.jpg'$"),
    ({"a.csv": "file,id\ncat-000.png,X\ncat-001.png,X\n"},
     r"expected unique artwork ids, got 'X' for both cat-000.png and cat-001.png$"),
    ({"a.csv": b"file,title\ncat-000.png,Caf\xe9\n"},
     r"a.csv: expected UTF-8 text \(export it as CSV UTF-8\), got a byte 0xe9 on line 2$"),
])
def test_a_csv_export_that_cannot_be_read_is_refused_naming_the_file_and_row(
        folder: Path, tmp_path: Path, files: dict[str, str | bytes], error: str) -> None:
    copy = _images_only(folder, tmp_path)
    for name, text in files.items():
        if isinstance(text, bytes):
            (copy / name).write_bytes(text)
        else:
            (copy / name).write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=error) as refused:
        Catalogue.open(copy)
    assert str(refused.value).startswith(f"catalogue {copy}") and "\n" not in str(refused.value)


def test_a_toml_year_that_is_no_year_is_refused(folder: Path, tmp_path: Path) -> None:
    copy = _images_only(folder, tmp_path)
    for year in ("99999", "true", '"1642"'):
        (copy / "catalogue.toml").write_text(f'[[artwork]]\nfile = "cat-000.png"\n'
                                             f"year = {year}\n")
        with pytest.raises(InputError, match=r"artwork\[0\]\.year: expected a whole year"):
            read_entries(copy)


def test_a_name_that_differs_only_in_case_is_refused_naming_the_image_meant(
        folder: Path, tmp_path: Path) -> None:
    """An export written where names ignore case (Windows) names ``CAT-000.PNG`` for
    ``cat-000.png``: refused as before, with the image it meant."""
    copy = _images_only(folder, tmp_path)
    (copy / "export.csv").write_text("file,id\nCAT-000.PNG,INV-0\ncat-001.png,INV-1\n"
                                     "old.jpg,X\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"2 rows name an image that is not in .*: row 2 "
                                         r"'CAT-000.PNG' \(did you mean 'cat-000.png'\?\); "
                                         r"row 4 'old.jpg'$"):
        read_entries(copy)
    (copy / "export.csv").unlink()
    (copy / "catalogue.toml").write_text('[[artwork]]\nfile = "Cat-001.PNG"\n')
    with pytest.raises(InputError, match=r"artwork\[0\]\.file: expected the name of an image "
                                         r"in .*, got 'Cat-001.PNG' \(did you mean "
                                         r"'cat-001.png'\?\)$"):
        read_entries(copy)


def test_a_folder_linked_into_the_catalogue_is_read_and_a_loop_of_links_once(
        folder: Path, tmp_path: Path) -> None:
    """A room's export kept on another disk and linked into the catalogue was left out
    unsaid (the walk did not follow links). Linked folders are read; a link back up (a
    loop) or a second link to one folder does not read its images twice, or for ever."""
    copy = tmp_path / "collection"
    (copy / "room-1").mkdir(parents=True)
    shutil.copy(folder / "cat-000.png", copy / "room-1" / "cat-000.png")
    elsewhere = tmp_path / "other-disk" / "room-2"
    elsewhere.mkdir(parents=True)
    for k in (1, 2):
        shutil.copy(folder / f"cat-{k:03d}.png", elsewhere / f"cat-{k:03d}.png")
    (copy / "room-2").symlink_to(elsewhere, target_is_directory=True)
    (copy / "room-2-again").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "up").symlink_to(copy, target_is_directory=True)  # a loop, through the link
    (copy / "room-1" / "here").symlink_to(copy / "room-1", target_is_directory=True)
    assert catalogue_images(copy) == ["room-1/cat-000.png", "room-2/cat-001.png",
                                      "room-2/cat-002.png"]
    opened = Catalogue.open(copy)
    assert opened.ids == ["cat-000", "cat-001", "cat-002"]
    stat = (elsewhere / "cat-002.png").stat()
    os.utime(elsewhere / "cat-002.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = Catalogue.open(copy)  # an image behind the link is in the fingerprint
    assert changed.rebuilt and changed.reused == 2


def test_a_room_opens_its_catalogue_without_the_images_it_cannot_read(
        folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One copy cut short, or a phone's HEIC named .jpg, stopped the whole index at the
    first of them: a room started with no catalogue, and said only that one. A room
    (``leave_out_unreadable``) opens every work it can read and names all it cannot, in
    one warning; the index it saves is never taken as current, so the next open and
    ``art2mus index`` read those images again (and the command refuses, naming them)."""
    from click.testing import CliRunner

    from installation.cli import cli

    copy = _images_only(folder, tmp_path)
    (copy / "new_work.jpg").write_bytes(b"")
    (copy / "IMG_2041.jpg").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    with pytest.raises(InputError, match=r"cannot read image .*IMG_2041\.jpg"):
        Catalogue.open(copy)  # what detect, render and the bench open: refused as before
    with caplog.at_level("WARNING", logger="capture.catalogue"):
        opened = Catalogue.open(copy, leave_out_unreadable=True)
    assert opened.ids == ["cat-000", "cat-001", "cat-002", "cat-003"]
    assert sorted(opened.left_out) == ["IMG_2041.jpg", "new_work.jpg"]
    assert opened.left_out["new_work.jpg"] == "expected an image file, got an empty file"
    said = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(said) == 1 and "2 reference images" in said[0], said
    assert "IMG_2041.jpg (expected an image file" in said[0] and "new_work.jpg (" in said[0]
    square = whole_view(cv2.imread(str(copy / "cat-002.png")), SQUARE)
    match = opened.recognise(square)
    assert match is not None and match.artwork_id == "cat-002"  # the others are recognised

    again = Catalogue.open(copy, leave_out_unreadable=True)
    assert again.rebuilt and again.reused == 4 and sorted(again.left_out) == sorted(
        opened.left_out)
    result = CliRunner().invoke(cli, ["index", str(copy)])
    assert result.exit_code == 3, result.output
    assert "2 reference images cannot be read" in result.stderr
    assert "IMG_2041.jpg (" in result.stderr and "new_work.jpg (" in result.stderr

    shutil.copy(folder / "cat-004.png", copy / "new_work.jpg")  # mended: taken in
    (copy / "IMG_2041.jpg").unlink()
    mended = Catalogue.open(copy, leave_out_unreadable=True)
    assert mended.left_out == {} and mended.reused == 4 and "new_work" in mended.ids
    assert not Catalogue.open(copy).rebuilt  # and current again

    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "a.jpg").write_bytes(b"")
    with pytest.raises(InputError, match=r"^catalogue .*: expected reference images that can "
                                         r"be read, got none: a\.jpg \(expected an image"):
        Catalogue.open(nothing, leave_out_unreadable=True)


def test_recognition_top1_and_no_match_on_scenes(catalogue: Catalogue,
                                                 generator: SceneGenerator) -> None:
    right = known = outsiders = false = 0
    for seed in range(14):
        scene = generator.render(seed)
        for painting in scene.paintings:
            match = catalogue.recognise(rectify(scene.image, painting.quad, SQUARE))
            if painting.artwork_id is None:
                outsiders += 1
                false += match is not None
            else:
                known += 1
                right += match is not None and match.artwork_id == painting.artwork_id
                if match is not None:
                    assert 0.0 < match.score <= 1.0
    # Two of these 17 are hard (13 px motion blur with a visitor; 42 degrees with
    # glare and blur) and come back None, never wrong.
    assert known >= 15 and right / known >= 0.85, (right, known)
    assert false == 0, f"{false} of {outsiders} uncatalogued works were given an id"


def test_no_match_returns_none(catalogue: Catalogue) -> None:
    for index in range(50, 56):  # painted with the catalogue's seed, but not in it
        assert catalogue.recognise(catalogue_artwork(index)) is None
    wall = np.full((300, 300, 3), (150, 160, 168), np.uint8)
    assert catalogue.recognise(wall) is None
    assert catalogue.locate(np.full((720, 1280, 3), 128, np.uint8)) == []


def _occluded_scene(generator: SceneGenerator) -> tuple[np.ndarray, np.ndarray, str]:
    scene = generator.render(7, paintings=1, yaw_deg=25.0, clean=True)
    painting = scene.paintings[0]
    assert painting.artwork_id is not None
    image = scene.image.copy()
    # A visitor in front of the lower right of the picture, down to the frame edge.
    x, y = (int(v) for v in painting.quad[2] - 0.1 * (painting.quad[2] - painting.quad[0]))
    cv2.circle(image, (x, y), 60, (215, 220, 225), -1)  # a visitor in a pale coat
    cv2.rectangle(image, (x - 110, y + 45), (x + 110, 720), (215, 220, 225), -1)
    return image, painting.quad, painting.artwork_id


def test_location_finds_a_known_painting_without_the_quad_finder(
        catalogue: Catalogue, generator: SceneGenerator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    image, truth, artwork_id = _occluded_scene(generator)
    located = catalogue.locate(image)
    assert located and located[0].artwork_id == artwork_id
    assert quad_iou(located[0].quad, truth) > 0.9
    assert catalogue.locate(image, only=[artwork_id])[0].artwork_id == artwork_id
    # And with the quad finder switched off entirely, detect_and_recognise still reports it.
    monkeypatch.setattr(capture.recognise, "detect_artworks", lambda *a, **k: [])
    found = capture.recognise.detect_and_recognise(image, catalogue)
    assert [(f.artwork_id, f.found_by, f.primary) for f in found] == \
        [(artwork_id, "catalogue", True)]
    assert capture.recognise.detect_and_recognise(image, catalogue, locate=False) == []


def test_look_alike_outside_the_catalogue_is_not_matched(tmp_path: Path) -> None:
    # The portrait studies share one composition (the same head and shoulders);
    # only their brush marks and light differ. A portrait from outside the
    # catalogue (index 55) agrees with every catalogued one on the shared
    # outline, so only matches distinctive among the look-alikes may count.
    portraits = (7, 15, 23, 31, 39, 47)
    for index in portraits + (3, 11):
        cv2.imwrite(str(tmp_path / f"cat-{index:03d}.png"), catalogue_artwork(index))
    catalogue = Catalogue.open(tmp_path)
    generator = SceneGenerator(catalogue_size=50)
    for seed in (80, 1076):  # gallery scenes whose first painting is outsider 55
        outsider = generator.render(seed)
        painting = outsider.paintings[0]
        assert painting.artwork == 55
        view = rectify(outsider.image, painting.quad, SQUARE)
        assert catalogue.recognise(view) is None, seed
    scene = generator.render(3)  # a catalogued portrait is still recognised
    match = catalogue.recognise(rectify(scene.image, scene.paintings[0].quad, SQUARE))
    assert match is not None and match.artwork_id == scene.paintings[0].artwork_id


def test_blurred_or_dim_view_is_recognised_by_its_signature(tmp_path: Path) -> None:
    # Too blurred (9 px of motion) or too dim (a quarter of the light, noise)
    # for verified local features: the global signature decides. Seed 1090's
    # view fits its reference at 64 px (0.97, the runner-up about 0.5); seed 110's
    # only wins the thumbnails, by a margin of 0.23 (0.32 against 0.09). A
    # margin alone stands only above the catalogue's own impostor margin: none
    # of these seven works, left out, wins the thumbnails against the others
    # by as much as 0.1.
    distinct = (35, 1, 9, 17, 49, 6, 22)
    for index in distinct:
        cv2.imwrite(str(tmp_path / f"cat-{index:03d}.png"), catalogue_artwork(index))
    catalogue = Catalogue.open(tmp_path)
    assert catalogue.impostor_margin < 0.1
    generator = SceneGenerator(catalogue_size=50)
    views = {}
    for seed, expected in ((1090, "cat-035"), (110, "cat-049")):
        scene = generator.render(seed)
        painting = scene.paintings[0]
        assert painting.artwork_id == expected
        views[seed] = rectify(scene.image, painting.quad, SQUARE)
        match = catalogue.recognise(views[seed])
        assert match is not None and match.artwork_id == expected, seed
        assert match.method == "signature"

    # With look-alikes catalogued (two seascapes one horizon apart, 11 and 27), one of
    # them left out wins the thumbnails against the other by 0.32: a seascape from
    # outside the catalogue could win by as much, so the margin of 0.23 names nothing.
    # The 64 px fit still does.
    for index in (11, 27):
        cv2.imwrite(str(tmp_path / f"cat-{index:03d}.png"), catalogue_artwork(index))
    crowded = Catalogue.open(tmp_path)
    assert crowded.impostor_margin > 0.3
    trace: list[dict[str, object]] = []
    assert crowded.recognise(views[110], trace) is None
    assert trace[-1]["stage"] == "signature" and trace[-1]["coarse"] == "cat-049"
    match = crowded.recognise(views[1090])
    assert match is not None and match.artwork_id == "cat-035"


def test_a_design_outside_the_catalogue_with_the_same_shapes_is_not_named(
        tmp_path: Path) -> None:
    # Work 2029 (not catalogued) and cat-237 are radial designs of the same symmetry
    # in other colours. Their grey shapes fall in the same places, so matches near
    # the same position find 18-30 inliers near the identity (without the
    # appearance check, 8 of 40 damaged views were taken for cat-237); where they
    # matched, the colours and tones do not fit. Catalogued with the six works of
    # the 2,000-work bench most alike to cat-237.
    for index in (237, 1621, 765, 1413, 1685, 1949, 1333):
        cv2.imwrite(str(tmp_path / f"cat-{index:03d}.png"), catalogue_artwork(index))
    catalogue = Catalogue.open(tmp_path)
    for seed in (0, 17, 18, 21, 26, 35):
        view = make_view(2029, None, np.random.default_rng(seed))
        assert catalogue.recognise(view.image) is None, seed
    for seed in range(3):  # damaged views of cat-237 itself still are
        view = make_view(237, "cat-237", np.random.default_rng(seed))
        match = catalogue.recognise(view.image)
        assert match is not None and match.artwork_id == "cat-237", seed


def test_appearance_support_counts_where_the_geometry_matched(catalogue: Catalogue) -> None:
    # The view registered onto a reference, weighted around the inliers: a visitor
    # covering half the picture does not count where nothing matched, and the same
    # shapes in other colours do not fit.
    owner = catalogue.ids.index("cat-005")
    square = cv2.resize(catalogue_artwork(5), (SQUARE, SQUARE), interpolation=cv2.INTER_AREA)
    identity = np.eye(3)
    ys, xs = np.mgrid[20:SQUARE - 20:20, 20:SQUARE - 20:20]
    everywhere = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    top = everywhere[everywhere[:, 1] < SQUARE / 2 - 30]

    def support(view: np.ndarray, points: np.ndarray) -> float:
        value = catalogue._registered_support(view, owner, identity, points, points)
        assert value is not None
        return value

    assert support(square, everywhere) > 0.95
    visitor = square.copy()
    visitor[SQUARE // 2:] = (215, 220, 225)  # a pale coat over the lower half
    assert support(visitor, top) > 0.9
    assert support(visitor, everywhere) < support(visitor, top)
    assert support(square[..., ::-1].copy(), everywhere) < 0.75  # blue for red


def test_dim_seascape_is_told_from_its_look_alikes(tmp_path: Path) -> None:
    # The six catalogued seascapes share one composition (sky over sea, a
    # headland); they differ in horizon height, headland and colours. In low
    # light (gain ~0.3, strong noise) ORB finds nothing and their thumbnails
    # are too close for the signature margin; the fine 64 px comparison
    # tells them apart. The outsider seascape (index 51), dim or lit, still
    # gets no id.
    for index in (3, 11, 19, 27, 35, 43, 1, 9, 17, 49):
        cv2.imwrite(str(tmp_path / f"cat-{index:03d}.png"), catalogue_artwork(index))
    catalogue = Catalogue.open(tmp_path)
    generator = SceneGenerator(catalogue_size=50)
    for seed, at, expected in ((1020, 0, "cat-027"), (1032, 1, "cat-019"),
                               (1078, 1, "cat-011"), (21, 0, None), (161, 0, None),
                               (47, 0, None)):
        scene = generator.render(seed)
        painting = scene.paintings[at]
        assert painting.artwork_id == expected and (expected or painting.artwork == 51)
        match = catalogue.recognise(rectify(scene.image, painting.quad, SQUARE))
        assert (match.artwork_id if match else None) == expected, seed


def test_a_blurred_look_alike_that_wins_the_thumbnails_is_not_matched(tmp_path: Path) -> None:
    # Seed 4086: the outsider seascape (index 51), small and blurred, as the quad
    # finder traced it. Its thumbnail beats the runner-up's by the signature margin
    # and names cat-035, but at 64 px it fits cat-035 barely better than others:
    # the fine comparison does not bear the thumbnails out, so no id.
    for index in (3, 6, 11, 19, 27, 35, 38, 43, 1, 9, 17, 22, 49):
        cv2.imwrite(str(tmp_path / f"cat-{index:03d}.png"), catalogue_artwork(index))
    catalogue = Catalogue.open(tmp_path)
    scene = SceneGenerator(catalogue_size=50).render(4086)
    painting = scene.paintings[1]
    assert painting.artwork == 51
    found = capture.recognise.detect_and_recognise(scene.image, catalogue)
    best = max(found, key=lambda r: quad_iou(r.quad, painting.quad))
    assert quad_iou(best.quad, painting.quad) > 0.85
    assert best.artwork_id is None


def test_the_outline_that_fits_the_reference_best_gives_the_corners(
        catalogue: Catalogue, generator: SceneGenerator) -> None:
    """A homography locked onto a self-similar work's repeats is a few per cent off or
    skewed; the quad finder's outline of the picture, where it fits the reference better,
    gives the corners instead, in the reference's orientation. An outline that is the
    frame around the picture (or a skew) never displaces a true location."""
    scene = generator.render(3, paintings=1, yaw_deg=20.0, clean=True)
    painting = scene.paintings[0]
    assert painting.artwork_id is not None
    truth = painting.quad.astype(np.float32)
    centre = truth.mean(axis=0)
    skewed = truth + np.float32([[40, 25], [10, -20], [-35, 30], [15, 10]])
    frame_outline = centre + 1.25 * (truth - centre)  # the moulding around the picture
    turned = np.roll(truth, 2, axis=0)  # the quad finder's corner order: any of four

    chosen = catalogue.closest_outline(scene.image, painting.artwork_id, [skewed, turned])
    assert np.allclose(chosen, truth, atol=1e-3), chosen
    assert quad_iou(skewed, truth) < 0.85  # a false positive for the benches before
    kept = catalogue.closest_outline(scene.image, painting.artwork_id,
                                     [truth, frame_outline, skewed])
    assert np.array_equal(kept, truth)
    # an id the catalogue does not hold, or nothing to compare: the location stands
    assert np.array_equal(catalogue.closest_outline(scene.image, "no-such-id", [skewed, truth]),
                          skewed)
    assert np.array_equal(catalogue.closest_outline(scene.image, painting.artwork_id,
                                                    [skewed]), skewed)


def _small_work_on_a_wall(artwork: np.ndarray | None) -> np.ndarray:
    """A 1280x720 wall with, where given, ``artwork`` hung 80x60 px (0.5 % of the frame, under
    the quad finder's own floor) in a thin frame, and a 64x84 px caption card beside it."""
    rng = np.random.default_rng(0)
    frame = np.clip(np.full((720, 1280, 3), (178, 186, 192), np.float32)
                    + rng.normal(0.0, 3.0, (720, 1280, 3)), 0, 255).astype(np.uint8)
    if artwork is not None:
        cv2.rectangle(frame, (897, 297), (983, 363), (40, 60, 90), -1)
        frame[300:360, 900:980] = cv2.resize(artwork, (80, 60), interpolation=cv2.INTER_AREA)
    cv2.rectangle(frame, (1020, 300), (1084, 384), (235, 238, 240), -1)
    for line in range(7):  # the caption's lines of text
        cv2.line(frame, (1026, 312 + 10 * line), (1078 - 9 * (line % 3), 312 + 10 * line),
                 (60, 60, 60), 2)
    return frame


def test_a_small_far_work_is_kept_where_the_catalogue_names_it(catalogue: Catalogue) -> None:
    """Under the quad finder's floor (1 % of the frame), a quad counts only where the
    catalogue names it: the far work is reported with its id, the caption card beside it
    (which the lower floor finds too) is not, and without a catalogue neither is."""
    from capture.detect import MIN_AREA_FRACTION, detect_artworks
    from capture.recognise import NAMED_MIN_AREA_FRACTION

    card_only = _small_work_on_a_wall(None)
    assert [d.area_fraction < MIN_AREA_FRACTION for d in detect_artworks(
        card_only, min_area_fraction=NAMED_MIN_AREA_FRACTION)] == [True]  # the card is seen
    assert capture.recognise.detect_and_recognise(card_only, catalogue) == []
    for index in (1, 5, 9):
        frame = _small_work_on_a_wall(catalogue_artwork(index))
        assert detect_artworks(frame) == []  # too small for the quad finder alone
        assert capture.recognise.detect_and_recognise(frame, None) == []
        found = capture.recognise.detect_and_recognise(frame, catalogue)
        assert [f.artwork_id for f in found] == [catalogue.ids[index]], found
        assert quad_iou(found[0].quad, np.float32([[900, 300], [980, 300], [980, 360],
                                                   [900, 360]])) > 0.7


def test_the_features_matched_in_a_view_place_the_picture_inside_its_frame(
        catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quad the quad finder took may be a carved frame's outer edge; where the view's
    features matched the reference, their homography gives the picture's own corners,
    kept where they fit the reference clearly better than the quad's outline."""
    from capture.recognise import picture_in_view

    # the geometry: a homography onto the middle 80 % of the view is the middle of the quad
    quad = np.float32([[100, 100], [500, 120], [480, 420], [110, 400]])
    side = float(SQUARE)
    square = np.float32([[0, 0], [side, 0], [side, side], [0, side]])
    inner = cv2.getPerspectiveTransform(square, 0.1 * side + 0.8 * square)
    picture = picture_in_view(quad, inner)
    to_frame = cv2.getPerspectiveTransform(square, quad)
    assert picture is not None and np.allclose(
        picture, cv2.perspectiveTransform((0.1 * side + 0.8 * square)[None], to_frame)[0],
        atol=1e-3)
    tiny = cv2.getPerspectiveTransform(square, 0.4 * side + 0.2 * square)
    assert picture_in_view(quad, tiny) is None and picture_in_view(quad, None) is None

    # works in carved gilt frames (the rooms scenes' mounting), location switched off: the
    # quad finder's outline is the frame's outer edge, the reported quad is the picture's
    from capture.synthetic.rooms import room_mounting

    for seed, index in ((0, 4), (1, 1), (2, 9)):
        hung, rect = room_mounting(np.random.default_rng(seed), catalogue_artwork(index),
                                   "ornate", (380.0, 280.0))
        frame = np.full((720, 1280, 3), (170, 180, 188), np.float32)
        height, width = hung.shape[:2]
        left, top = 640 - width // 2, 360 - height // 2
        frame[top:top + height, left:left + width] = hung
        image = np.clip(frame, 0, 255).astype(np.uint8)
        truth = np.asarray(rect, np.float32).reshape(4, 2) + (left, top)
        # the quad finder traced the frame's outer edge (as where neither of its peels
        # can tell the carving from the picture)
        outline = np.float32([[left, top], [left + width, top], [left + width, top + height],
                              [left, top + height]])
        assert quad_iou(outline, truth) < 0.75
        traced = [Detection(outline, 0.8, float(width * height) / (1280 * 720))]
        monkeypatch.setattr(capture.recognise, "detect_artworks",
                            lambda *a, traced=traced, **k: traced)
        found = capture.recognise.detect_and_recognise(image, catalogue, locate=False)
        assert [f.artwork_id for f in found] == [catalogue.ids[index]], found
        assert quad_iou(found[0].quad, truth) > 0.9, (found[0].quad, truth)


def test_a_sliver_at_the_frame_edge_is_not_reported_but_a_close_up_is(folder: Path) -> None:
    from capture.catalogue import _in_view

    # The rule on quads (frame 1280x720): a work 7 % in view at a corner is a sliver; the
    # middle of a large work filling the frame is a close-up; half a work is in view.
    assert not _in_view(np.float32([[1180, 620], [1680, 620], [1680, 1120], [1180, 1120]]),
                        1280, 720)
    assert _in_view(np.float32([[-800, -600], [2080, -600], [2080, 1320], [-800, 1320]]),
                    1280, 720)
    assert _in_view(np.float32([[1000, 100], [1560, 100], [1560, 500], [1000, 500]]), 1280, 720)

    catalogue = Catalogue.open(folder)
    reference = cv2.imread(str(folder / "cat-004.png"))
    wall = np.full((720, 1280, 3), (150, 160, 168), np.uint8)

    def placed(x: int, y: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        height = round(width * reference.shape[0] / reference.shape[1])
        picture = cv2.resize(reference, (width, height), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((720 + 2 * height, 1280 + 2 * width, 3), np.uint8)
        canvas[height:height + 720, width:width + 1280] = wall
        canvas[height + y:2 * height + y, width + x:2 * width + x] = picture
        quad = np.float32([[x, y], [x + width, y], [x + width, y + height], [x, y + height]])
        return canvas[height:height + 720, width:width + 1280].copy(), quad

    # Half of a work cut by the right edge is still located, at its place.
    frame, truth = placed(920, 150, 600)
    located = catalogue.locate(frame)
    assert [loc.artwork_id for loc in located] == ["cat-004"]
    assert quad_iou(located[0].quad, truth) > 0.85
    # A close-up (the frame inside a larger work) is located too.
    frame, _ = placed(-160, -200, 1600)
    assert [loc.artwork_id for loc in catalogue.locate(frame)] == ["cat-004"]
    # A corner of it at the frame's edge, a tenth in view: nothing.
    frame, _ = placed(1280 - 190, 720 - 150, 600)
    assert catalogue.locate(frame) == []


def test_a_small_work_the_quad_finder_saw_is_located_finer_near_its_quad(
        catalogue: Catalogue) -> None:
    """A work 90-100 px wide on a 1280x720 wall has few features at locate_width (the
    whole frame's search may place it, on its far reference views); near the quad the
    quad finder gave, looked at finer, it is, at its place. An uncatalogued picture there
    is not named."""

    def wall_with(artwork: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(0)
        frame = np.clip(np.full((720, 1280, 3), (178, 186, 192), np.float32)
                        + rng.normal(0.0, 3.0, (720, 1280, 3)), 0, 255).astype(np.uint8)
        height = round(width * artwork.shape[0] / artwork.shape[1])
        frame[300:300 + height, 900:900 + width] = cv2.resize(
            artwork, (width, height), interpolation=cv2.INTER_AREA)
        return frame, np.float32([[900, 300], [900 + width, 300], [900 + width, 300 + height],
                                  [900, 300 + height]])

    for index, width in ((5, 90), (7, 100)):
        frame, quad = wall_with(catalogue_artwork(index), width)
        assert all(loc.artwork_id == catalogue.ids[index] and quad_iou(loc.quad, quad) > 0.9
                   for loc in catalogue.locate(frame))
        near = catalogue.locate(frame, near=quad)
        assert [loc.artwork_id for loc in near] == [catalogue.ids[index]]
        assert quad_iou(near[0].quad, quad) > 0.9
    for outsider in (SIZE + 3, SIZE + 7):
        frame, quad = wall_with(catalogue_artwork(outsider), 100)
        assert catalogue.locate(frame, near=quad) == []


def test_a_search_near_a_new_arrival_ends_at_the_work_placed_there(
        catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch) -> None:
    """Near a quad, the search ends at the first work placed exactly where the quad is: a
    new arrival is one work, and the neighbour whose edge is in the margin (or a work with
    chance votes) is not fitted. The whole frame's search still places both."""
    rng = np.random.default_rng(1)
    frame = np.clip(np.full((720, 1280, 3), (178, 186, 192), np.float32)
                    + rng.normal(0.0, 3.0, (720, 1280, 3)), 0, 255).astype(np.uint8)
    quads = {}
    for index, x in ((2, 300), (6, 700)):
        artwork = catalogue_artwork(index)
        height = round(360 * artwork.shape[0] / artwork.shape[1])
        frame[200:200 + height, x:x + 360] = cv2.resize(artwork, (360, height),
                                                        interpolation=cv2.INTER_AREA)
        quads[index] = np.float32([[x, 200], [x + 360, 200], [x + 360, 200 + height],
                                   [x, 200 + height]])
    assert sorted(f.artwork_id for f in catalogue.locate(frame)) == \
        sorted(catalogue.ids[i] for i in (2, 6))
    fitted: list[int] = []
    fit = Catalogue._fit

    def counted(self: Catalogue, owner: int, *args: object) -> object:
        fitted.append(owner)
        return fit(self, owner, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Catalogue, "_fit", counted)
    near = catalogue.locate(frame, near=quads[2])
    assert [f.artwork_id for f in near] == [catalogue.ids[2]]
    assert quad_iou(near[0].quad, quads[2]) > 0.9
    assert [catalogue.ids[owner] for owner in fitted] == [catalogue.ids[2]]


@pytest.mark.parametrize("shape", [(720, 1280), (1280, 960)])
def test_a_work_filling_the_frame_is_searched_no_larger_than_it_needs(
        catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int]) -> None:
    """A camera framing one work (a landscape frame, or a portrait one) sees it at
    600-1100 px: the search near its quad looks at it no larger than _NEAR_SIDE (its
    reference holds 400 px; more pixels only cost SIFT time), and places it exactly."""
    from capture import catalogue as module

    height, width = shape
    artwork = catalogue_artwork(3)
    side = 0.85 * min(height / artwork.shape[0], width / artwork.shape[1])
    w, h = round(artwork.shape[1] * side), round(artwork.shape[0] * side)
    x, y = (width - w) // 2, (height - h) // 2
    frame = np.full((height, width, 3), (178, 186, 192), np.uint8)
    frame[y:y + h, x:x + w] = cv2.resize(artwork, (w, h), interpolation=cv2.INTER_AREA)
    quad = np.float32([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
    seen: list[float] = []
    features = Catalogue._features

    def measured(self: Catalogue, part: np.ndarray, scale: float, *rest: object) -> object:
        seen.append(max(w, h) * scale)  # the work's longer side as SIFT sees it
        return features(self, part, scale, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(Catalogue, "_features", measured)
    near = catalogue.locate(frame, near=quad)
    assert [f.artwork_id for f in near] == [catalogue.ids[3]]
    assert quad_iou(near[0].quad, quad) > 0.95
    assert seen and max(seen) <= module._NEAR_SIDE + 1


def test_the_fine_search_finds_small_works_the_whole_frame_misses(catalogue: Catalogue) -> None:
    """Works 120 px wide on a 1920x1080 wall (40 px at locate_width: too few features
    there, for most, even for a weak fit to be looked at again) are placed by
    ``locate(fine=True)``,
    which looks at the whole frame twice as finely; works outside the catalogue are not
    named there either."""
    rng = np.random.default_rng(0)
    wall = np.clip(np.full((1080, 1920, 3), (178, 186, 192), np.float32)
                   + rng.normal(0.0, 3.0, (1080, 1920, 3)), 0, 255).astype(np.uint8)
    quads = {}
    for k, index in enumerate((2, 6, SIZE + 3, SIZE + 7)):
        artwork = catalogue_artwork(index)
        height = round(120 * artwork.shape[0] / artwork.shape[1])
        x, y = 200 + 450 * k, 400 + 60 * (k % 2)
        wall[y:y + height, x:x + 120] = cv2.resize(artwork, (120, height),
                                                   interpolation=cv2.INTER_AREA)
        quads[index] = np.float32([[x, y], [x + 120, y], [x + 120, y + height],
                                   [x, y + height]])
    coarse = {f.artwork_id for f in catalogue.locate(wall)}
    assert len(coarse) <= 1, coarse  # most are lost at the whole frame's scale
    found = {f.artwork_id: f.quad for f in catalogue.locate(wall, fine=True)}
    assert sorted(found) == [catalogue.ids[i] for i in (2, 6)]
    for index in (2, 6):
        assert quad_iou(found[catalogue.ids[index]], quads[index]) > 0.9
    # a search near a quad is already at its finest: fine changes nothing there
    assert [(f.artwork_id, f.quad.tolist()) for f in catalogue.locate(
        wall, near=quads[2], fine=True)] == [(f.artwork_id, f.quad.tolist())
                                             for f in catalogue.locate(wall, near=quads[2])]


def test_a_view_inside_the_work_its_reference_shows_gives_the_whole_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalogue shows an octagonal or shaped frame with its work; the quad finder takes the
    picture inside it. The features place the reference round the view: that, larger than
    the view, is the work's outline (the view was part of it), whatever the fit test says."""
    folder = write_catalogue(tmp_path / "catalogue", 4)
    framed = cv2.copyMakeBorder(catalogue_artwork(7), 60, 60, 60, 60, cv2.BORDER_CONSTANT,
                                value=(40, 140, 190))  # the reference: the work in its frame
    cv2.imwrite(str(folder / "framed.png"), framed)
    catalogue = Catalogue.open(folder)
    height, width = framed.shape[:2]
    image = np.full((720, 1280, 3), (170, 180, 188), np.uint8)
    left, top = 640 - width // 2, 360 - height // 2
    image[top:top + height, left:left + width] = framed
    whole = np.float32([[left, top], [left + width, top], [left + width, top + height],
                        [left, top + height]])
    picture = whole + np.float32([[60, 60], [-60, 60], [-60, -60], [60, -60]])
    traced = [Detection(picture, 0.8, float(width - 120) * (height - 120) / (1280 * 720))]
    monkeypatch.setattr(capture.recognise, "detect_artworks", lambda *a, **k: traced)
    found = capture.recognise.detect_and_recognise(image, catalogue, locate=False)
    assert [f.artwork_id for f in found] == ["framed"], found
    assert quad_iou(found[0].quad, whole) > 0.9, (found[0].quad, whole)


@pytest.mark.parametrize("yaw_deg", [0.0, 62.0, 68.0])
def test_a_work_seen_from_far_to_its_side_is_located(folder: Path, catalogue: Catalogue,
                                                     yaw_deg: float) -> None:
    # Frontal SIFT features hold to about 50 degrees off axis: beyond, the work is found
    # by the features of its reference as squeezed by a tilt (the index's tilted views).
    for work in ("cat-000", "cat-004", "cat-008"):  # works with texture enough to fit
        frame, truth = seen_from_the_side(cv2.imread(str(folder / f"{work}.png")), yaw_deg,
                                          0.33, np.random.default_rng(0))
        near = catalogue.locate(frame, near=truth)
        located = catalogue.locate(frame)
        for found in (near, located):
            assert found and found[0].artwork_id == work, (work, yaw_deg)
            assert quad_iou(found[0].quad, truth) > 0.85, (work, yaw_deg)


@pytest.mark.parametrize("work", ["cat-000", "cat-004", "cat-006", "cat-008"])
def test_a_small_far_work_is_located_in_the_whole_frame(folder: Path, catalogue: Catalogue,
                                                        work: str) -> None:
    # 50 px tall in a 1280x720 frame (a work across a big room): under 1/200 of the frame,
    # which a view's homography floor refused in a whole frame's search; its features
    # are those of the reference shrunk (the index's far views).
    frame, truth = seen_from_the_side(cv2.imread(str(folder / f"{work}.png")), 0.0, 0.07,
                                      np.random.default_rng(0))
    assert abs(cv2.contourArea(truth)) < 0.005 * 1280 * 720
    for found in (catalogue.locate(frame, fine=True), catalogue.locate(frame, near=truth)):
        assert found and found[0].artwork_id == work, found
        assert quad_iou(found[0].quad, truth) > 0.85, (found[0].quad, truth)


def test_inliers_at_one_point_count_once() -> None:
    # A frame point SIFT gave two orientations, each matched to a copy of one reference
    # point (a simulated view's): one piece of evidence. Outliers do not count at all.
    from capture.catalogue import _distinct_inliers

    reference = np.float32([[10, 10], [10.5, 10.2], [50, 10], [50, 60], [10, 60], [30, 30]])
    shift = np.float32([100, 40])
    frame = reference + shift
    frame[1] = frame[0]  # the same frame point, matched to the reference point's copy
    frame[5] += 25  # an outlier
    homography = np.float64([[1, 0, 100], [0, 1, 40], [0, 0, 1]])
    assert _distinct_inliers(reference, frame, homography) == 4


def _descriptors(query: np.ndarray, distances: list[float]) -> np.ndarray:
    """Features at exactly ``distances`` from ``query``, each along its own axis."""
    features = np.repeat(query[None], len(distances), axis=0)
    for k, distance in enumerate(distances):
        features[k, k + 1] += distance
    return features


def test_per_work_matches_keep_what_another_work_shares() -> None:
    # Lowe's ratio test against the runner-up of any work refuses a match another work's
    # feature is about as near to (in a big catalogue, most of a work's true matches);
    # tested within each work, the match stands for each. A work's own second feature at
    # another point is a rival; its copy of the same point (a simulated view's) is none.
    from capture.catalogue import _kd_matcher, _matches

    query = np.zeros((1, 128), np.float32)
    query[0, 0] = 1.0
    features = _descriptors(query[0], [0.30, 0.32, 0.40, 0.42, 0.50, 0.51])
    owner = np.array([0, 1, 2, 2, 3, 3])
    xy = np.float32([[10, 10], [10, 10], [5, 5], [50, 50], [20, 20], [21, 20]])
    nearest, per_work = _matches(_kd_matcher(features), query, 0.8, 0, owner, xy,
                                 copies=True)
    assert nearest.tolist() == []  # 0.30 is not under 0.8 x 0.32
    assert per_work.tolist() == [[0, 0], [0, 1], [0, 4]]  # work 2's 0.40 has a rival, 0.42
    # Clearly nearest of all: the ratio test's match, and its work's per-work match.
    clear = _descriptors(query[0], [0.1, 0.5, 0.6])
    nearest, per_work = _matches(_kd_matcher(clear), query, 0.8, 0, np.array([0, 1, 2]),
                                 xy[:3], copies=False)
    assert nearest.tolist() == [[0, 0]]
    assert [0, 0] in per_work.tolist()


def _parts_catalogue(folder: Path, work: np.ndarray) -> Path:
    """``work`` catalogued beside two works each holding all of it, cut in two and the
    halves swapped (across, and top to bottom): as a catalogue holds a detail or a
    reworked copy of a work beside it."""
    height, width = work.shape[:2]
    cv2.imwrite(str(folder / "work.png"), work)
    cv2.imwrite(str(folder / "across.png"), np.roll(work, width // 2, axis=1))
    cv2.imwrite(str(folder / "down.png"), np.roll(work, height // 2, axis=0))
    return folder


@pytest.mark.parametrize("index", [0, 4, 8])
def test_a_work_is_located_whole_where_other_works_hold_parts_of_it(
        tmp_path: Path, index: int) -> None:
    # Every feature of the work has a twin in another work, so the ratio test refuses
    # nearly all its matches: the work was found on a dozen inliers, or missed, and a
    # work holding half of it was reported at a place shifted by half the work. The
    # per-work matches place it on all its features, and a work whose evidence lies on
    # the located one's place is not another work there.
    catalogue = Catalogue.open(_parts_catalogue(tmp_path, catalogue_artwork(index)))
    for yaw_deg in (0.0, 30.0):
        for height in (0.15, 0.2, 0.3):
            frame, truth = seen_from_the_side(catalogue_artwork(index), yaw_deg, height,
                                              np.random.default_rng(1))
            located = catalogue.locate(frame)
            assert [f.artwork_id for f in located] == ["work"], (yaw_deg, height, located)
            assert quad_iou(located[0].quad, truth) > 0.85
            assert located[0].inliers >= 20, (yaw_deg, height, located[0].inliers)


@pytest.mark.parametrize(("was", "placed_by", "expected"), [
    # finer than the pass: the whole catalogue's features, then the work's own finer,
    # then the work's own at the weak fit's scale; the first that places it ends the look
    (0.5, (1.0, False), [(1.0, False)]),
    (0.5, (1.0, True), [(1.0, False), (1.0, True)]),
    (0.5, (0.5, True), [(1.0, False), (1.0, True), (0.5, True)]),
    (0.5, None, [(1.0, False), (1.0, True), (0.5, True)]),
    # the pass was at the frame's own pixels: only the work's own features, there
    (1.0, (1.0, True), [(1.0, True)]),
])
def test_a_weak_fit_is_looked_at_again_among_the_works_own_features(
        catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch, was: float,
        placed_by: tuple[float, bool] | None, expected: list[tuple[float, bool]]) -> None:
    """A weak fit's second look: a dim or small work's true matches fail the ratio test
    against the whole catalogue's features, so where that places nothing, the work's own
    features are searched alone; at the frame's own pixels (no finer look), they are
    searched at once. Each look is near the weak fit, for that work, on ``min_inliers``;
    a weak fit where a work was already placed is not looked at."""
    from capture.catalogue import Location

    weak_quad = np.float32([[100, 100], [200, 100], [200, 220], [100, 220]])
    looks: list[tuple[float, bool]] = []
    placed = Location("w", weak_quad, 1.0, 12)

    def look(self: Catalogue, frame: np.ndarray, scale: float, near: np.ndarray,
             only: list[str], min_area_fraction: float, rule: str = "all",
             guided: bool = False, **_: object) -> tuple[list[Location], list[object]]:
        assert only == ["w"] and rule == "strict" and near is weak_quad
        looks.append((scale, guided))
        return ([placed] if (scale, guided) == placed_by else []), []

    monkeypatch.setattr(Catalogue, "_locate_at", look)
    frame = np.zeros((720, 1280, 3), np.uint8)
    more = catalogue._second_looks(frame, [("w", weak_quad)], was, 1.0, [], 0.002)
    assert looks == expected
    assert more == ([placed] if placed_by else [])
    looks.clear()
    elsewhere = Location("x", weak_quad + 5, 1.0, 30)
    assert catalogue._second_looks(frame, [("w", weak_quad)], was, 1.0, [elsewhere],
                                   0.002) == []
    assert looks == []


def test_the_looks_at_a_weak_fit_compute_each_scales_features_once(
        catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch) -> None:
    """The look among the whole catalogue's features and the one among the work's own,
    at the same place and scale, search the same features: SIFT runs once for both."""
    rng = np.random.default_rng(3)
    frame = np.clip(np.full((720, 1280, 3), (178, 186, 192), np.float32)
                    + rng.normal(0.0, 3.0, (720, 1280, 3)), 0, 255).astype(np.uint8)
    outsider = catalogue_artwork(SIZE + 5)  # not catalogued: every look places nothing
    frame[250:490, 500:820] = cv2.resize(outsider, (320, 240), interpolation=cv2.INTER_AREA)
    quad = np.float32([[500, 250], [820, 250], [820, 490], [500, 490]])
    computed: list[tuple[float, tuple[int, ...]]] = []
    features = Catalogue._features

    def counted(self: Catalogue, part: np.ndarray, scale: float, *rest: object) -> object:
        computed.append((scale, part.shape))
        return features(self, part, scale, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(Catalogue, "_features", counted)
    assert catalogue._second_looks(frame, [(catalogue.ids[0], quad)], 0.5, 1.0, [],
                                   0.002) == []
    assert [scale for scale, _ in computed] == [1.0, 0.5]


def test_a_wall_hung_salon_style_gives_every_catalogued_work_in_view(
        catalogue: Catalogue) -> None:
    """All 12 works on one 1920x1080 wall, three rows of four (a salon hang shows 20 and
    more): each with features to match is reported, where its quad is (the search once
    stopped at 8). The two plain seascapes (3, 11) have too few: the quad finder's outline
    and the thumbnails name those."""
    rng = np.random.default_rng(1)
    wall = np.clip(np.full((1080, 1920, 3), (150, 160, 170), np.float32)
                   + rng.normal(0.0, 3.0, (1080, 1920, 3)), 0, 255).astype(np.uint8)
    quads = {}
    for index in range(SIZE):
        artwork = catalogue_artwork(index)
        row, column = divmod(index, 4)
        scale = min(360 / artwork.shape[1], 260 / artwork.shape[0])
        width, height = round(artwork.shape[1] * scale), round(artwork.shape[0] * scale)
        x, y = 60 + 470 * column, 60 + 340 * row
        wall[y:y + height, x:x + width] = cv2.resize(artwork, (width, height),
                                                     interpolation=cv2.INTER_AREA)
        quads[catalogue.ids[index]] = np.float32([[x, y], [x + width, y],
                                                  [x + width, y + height], [x, y + height]])
    found = {f.artwork_id: f.quad for f in catalogue.locate(wall, fine=True)}
    assert sorted(found) == [catalogue.ids[i] for i in range(SIZE) if i not in (3, 11)]
    assert all(quad_iou(quad, quads[i]) > 0.9 for i, quad in found.items())
