"""``art2mus index DIR`` (build, up to date, --force, errors) and the big-catalogue bench."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from capture.bench_catalogue import (
    _kept_catalogue,
    make_view,
    run_catalogue_bench,
    run_own_catalogue_bench,
)
from capture.catalogue import INDEX_FILE, SQUARE
from capture.cli import bench_commands, commands
from capture.synthetic.scenes import write_catalogue
from installation.cli import cli

WORKS = 6


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_catalogue(tmp_path_factory.mktemp("index") / "catalogue", WORKS)


def index(*args: str) -> Result:
    return CliRunner().invoke(cli, ["index", *args])


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_commands_are_registered() -> None:
    assert "index" in {c.name for c in commands}
    assert "catalogue" in {c.name for c in bench_commands}


def test_index_builds_then_is_up_to_date_then_force_rebuilds(catalogue: Path,
                                                            tmp_path: Path) -> None:
    folder = shutil.copytree(catalogue, tmp_path / "works")
    built = index(str(folder), "--json")
    assert built.exit_code == 0, built.output
    summary = json.loads(built.stdout)
    assert summary["rebuilt"] is True and summary["works"] == WORKS
    assert summary["features"] == summary["square_features"] + summary["native_features"] > 0
    assert summary["index_mb"] > 0 and (folder / INDEX_FILE).is_file()
    built_at = (folder / INDEX_FILE).stat().st_mtime_ns

    again = index(str(folder))
    assert again.exit_code == 0, again.output
    assert "up to date" in again.stdout and f"works     {WORKS}" in again.stdout
    assert (folder / INDEX_FILE).stat().st_mtime_ns == built_at  # nothing was written

    forced = index(str(folder), "--force", "--json")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["rebuilt"] is True
    assert json.loads(forced.stdout)["reused"] == 0  # --force indexes every work
    assert (folder / INDEX_FILE).stat().st_mtime_ns != built_at

    shutil.copy(folder / "cat-001.png", folder / "new-work.png")  # the folder changed
    changed = json.loads(index(str(folder), "--json").stdout)
    assert changed["rebuilt"] is True and changed["works"] == WORKS + 1
    assert changed["reused"] == WORKS  # only the new work was indexed
    shutil.copy(folder / "cat-002.png", folder / "newer-work.png")
    text = index(str(folder)).stdout
    assert f"indexed   1 new or changed ({WORKS + 1} unchanged" in text, text


def test_a_damaged_index_is_rebuilt_saying_so_and_the_capture_then_opens_it_as_it_is(
        catalogue: Path, tmp_path: Path) -> None:
    # 64 bytes spoilt in the middle of the index (a bad sector, a copy cut short): its
    # fingerprint still read as current, so `index` said "up to date", and the capture,
    # loading it whole, found a bad CRC and re-indexed every work at its start.
    from capture.catalogue import Catalogue

    folder = shutil.copytree(catalogue, tmp_path / "works")
    assert index(str(folder)).exit_code == 0
    cache = folder / INDEX_FILE
    data = bytearray(cache.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    cache.write_bytes(data)

    result = index(str(folder))
    assert result.exit_code == 0, result.output
    assert "index rebuilt" in result.stdout, result.stdout
    assert "warning   the index was damaged (Bad CRC-32 for file " in result.stdout
    assert "): rebuilt" in result.stdout
    opened = Catalogue.open(folder)  # as the capture opens it: nothing to index
    assert not opened.rebuilt and len(opened) == WORKS
    again = json.loads(index(str(folder), "--json").stdout)
    assert again["rebuilt"] is False and again["damaged"] is None


def test_index_says_when_it_waits_for_a_room_building_the_index(
        catalogue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A room's capture builds a changed index under a lock; `index` run meanwhile waited
    # without a word.
    import threading

    from filelock import FileLock

    import capture.catalogue

    folder = shutil.copytree(catalogue, tmp_path / "works")
    held, asked = threading.Event(), threading.Event()
    current_index = capture.catalogue.current_index

    def told_when_waiting(*args: Any, waiting: Any = None, **kwargs: Any) -> Any:
        def wait() -> None:
            waiting()
            asked.set()  # the room may finish now

        return current_index(*args, waiting=wait, **kwargs)

    def room() -> None:  # another process, as far as the lock is concerned
        with FileLock(folder / (INDEX_FILE + ".lock")):
            held.set()
            asked.wait(30.0)

    monkeypatch.setattr(capture.catalogue, "current_index", told_when_waiting)
    building = threading.Thread(target=room)
    building.start()
    assert held.wait(10.0)
    result = index(str(folder))
    building.join()
    assert result.exit_code == 0, result.output
    assert asked.is_set()
    assert "is building the index" in result.stderr and "waiting for it" in result.stderr
    assert "index rebuilt" in result.stdout


def test_only_the_images_to_index_are_read_first(catalogue: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Every image was decoded to be checked before each build: 6 of the 9 s a corrected
    # title took at 2,000 works. The unchanged ones were read when they were indexed.
    import capture.images

    folder = shutil.copytree(catalogue, tmp_path / "works")
    checked: list[str] = []
    read_image = capture.images.read_image

    def counted(path: Path, *args: object, **kwargs: object) -> object:
        checked.append(Path(path).name)
        return read_image(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(capture.images, "read_image", counted)
    assert index(str(folder)).exit_code == 0
    assert len(checked) == WORKS
    checked.clear()
    shutil.copy(folder / "cat-001.png", folder / "new-work.png")
    assert index(str(folder)).exit_code == 0 and checked == ["new-work.png"]
    checked.clear()
    assert index(str(folder), "--force").exit_code == 0 and len(checked) == WORKS + 1


def test_cache_dir_holds_the_index(catalogue: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(catalogue, tmp_path / "works")
    result = index(str(folder), "--cache-dir", str(tmp_path / "cache"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["index_file"] == str(tmp_path / "cache" / INDEX_FILE)
    assert (tmp_path / "cache" / INDEX_FILE).is_file() and not (folder / INDEX_FILE).exists()


def test_bad_folders_are_one_line_errors_naming_the_file(catalogue: Path,
                                                         tmp_path: Path) -> None:
    missing = index(str(tmp_path / "nowhere"))
    assert missing.exit_code == 3
    assert error_lines(missing) == [f"Error: catalogue {tmp_path / 'nowhere'}: expected a "
                                    f"folder of reference images, it does not exist"]

    (tmp_path / "empty").mkdir()
    empty = index(str(tmp_path / "empty"))
    assert empty.exit_code == 3 and len(error_lines(empty)) == 1
    assert "found none" in empty.stderr and str(tmp_path / "empty") in empty.stderr

    broken = shutil.copytree(catalogue, tmp_path / "broken")
    (broken / "cat-002.png").write_bytes(b"\x89PNG not really")
    unreadable = index(str(broken))
    assert unreadable.exit_code == 3 and len(error_lines(unreadable)) == 1
    assert "cat-002.png" in unreadable.stderr and not (broken / INDEX_FILE).exists()

    (broken / "cat-002.png").write_bytes((catalogue / "cat-002.png").read_bytes()[:-40])
    truncated = index(str(broken))
    assert truncated.exit_code == 3 and len(error_lines(truncated)) == 1
    assert "cat-002.png" in truncated.stderr and "truncated" in truncated.stderr

    # every unreadable image in one line, not one per run
    (broken / "cat-004.png").write_bytes(b"")
    (broken / "cat-005.png").write_bytes(b"GIF89a")
    several = index(str(broken))
    assert several.exit_code == 3 and len(error_lines(several)) == 1
    line = error_lines(several)[0]
    assert "3 reference images cannot be read" in line and "truncated" in line
    assert all(f"cat-00{k}.png (" in line for k in (2, 4, 5)), line
    assert not (broken / INDEX_FILE).exists()
    for k in (4, 5):
        (broken / f"cat-00{k}.png").write_bytes((catalogue / f"cat-00{k}.png").read_bytes())

    # Only the images the catalogue reads: macOS's hidden ``._NAME`` beside each image
    # copied to a shared drive is not one (it once stopped the index), one in a
    # sub-folder is, named by its path in the folder.
    (broken / "._cat-004.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (broken / "room 2").mkdir()
    (broken / "room 2" / "cat-009.png").write_bytes(b"")
    nested = index(str(broken))
    assert nested.exit_code == 3 and len(error_lines(nested)) == 1
    line = error_lines(nested)[0]
    assert "2 reference images cannot be read" in line, line
    assert "cat-002.png (" in line and "room 2/cat-009.png (" in line and "._cat" not in line
    (broken / "room 2" / "cat-009.png").unlink()

    (broken / "cat-002.png").unlink()
    (broken / "catalogue.toml").write_text("[[artwork]\nfile =")
    bad_toml = index(str(broken))
    assert bad_toml.exit_code == 3 and len(error_lines(bad_toml)) == 1
    assert "catalogue.toml" in bad_toml.stderr


def test_bench_views_are_damaged_rectified_squares() -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    views = [make_view(5, "cat-005", rng) for _ in range(4)]
    assert all(v.image.shape == (SQUARE, SQUARE, 3) for v in views)
    assert len({v.damage for v in views}) == 4  # each view is damaged its own way
    assert not np.array_equal(views[0].image, views[1].image)


def test_catalogue_bench_reports_its_figures(tmp_path: Path) -> None:
    result = run_catalogue_bench(works=60, views=20, keep=tmp_path, explain=True)
    assert result["works"] == 60 and result["small"]["works"] == 50
    index_figures = result["index"]
    assert index_figures["works"] == 60 and index_figures["build_s"] > 0
    assert index_figures["size_mb"] > 0 and index_figures["features"] > 1000
    big, small = result["recognition"], result["small"]
    assert big["catalogued_views"] == 20 and big["uncatalogued_views"] == 20
    assert small["catalogued_views"] == 10  # the views of works 0-49
    assert big["top1"] >= 0.7 and small["top1"] >= 0.7  # damaged, but mostly recognised
    assert big["top1"] + (big["no_id"] + big["wrong_ids"]) / 20 == pytest.approx(1.0)
    assert 0 <= big["false_id_rate"] <= 1 and big["false_ids"] <= 20
    assert 0 < big["ms_p50"] <= big["ms_p95"]
    assert sum(big["methods"].values()) == 40
    assert sum(big["false_ids_by"].values()) == big["false_ids"]
    assert set(result["targets"]) == {"build_s", "recognise_ms_p50", "top1_not_lower_than_50",
                                      "false_ids", "located_not_lower_than_50",
                                      "false_locations"}
    # Location: each view's camera image on a wall, the whole frame searched.
    located, small_located = result["location"], result["small_location"]
    assert located["catalogued"]["catalogued_frames"] == 20
    assert located["first_50"]["catalogued_frames"] == small_located["catalogued_frames"] == 10
    assert located["catalogued"]["located"] >= 8  # small, damaged works: not all of them
    assert located["catalogued"]["wrong_ids"] == 0
    assert located["catalogued"]["false_locations"] == len(result["false_location_frames"]) == 0
    assert 0 < located["ms_p50"] <= located["ms_p95"]
    with pytest.raises(Exception, match="--works"):
        run_catalogue_bench(works=50, views=20)

    # --explain: every wrong answer at each size, with the stages' trace.
    explained = result["explained"]
    at_60 = [e for e in explained if e["catalogue_works"] == 60]
    at_50 = [e for e in explained if e["catalogue_works"] == 50]
    assert len(at_60) == big["no_id"] + big["wrong_ids"] + big["false_ids"]
    assert len(at_50) == small["no_id"] + small["wrong_ids"] + small["false_ids"] \
        + small["false_ids_on_works_beyond_50"]
    for wrong in explained:
        assert wrong["kind"] in ("false id", "no id", "wrong id")
        assert wrong["trace"] and wrong["trace"][0]["stage"] == "features"
        assert (wrong["expected"] is None) == (wrong["kind"] == "false id")

    # --keep: the catalogues and their indexes are reused, and the figures are the same.
    index_file = tmp_path / "works-60" / INDEX_FILE
    assert result["kept_in"] == str(tmp_path) and (tmp_path / "works-50" / INDEX_FILE).is_file()
    built_at = index_file.stat().st_mtime_ns
    again = run_catalogue_bench(works=60, views=20, keep=tmp_path)
    assert index_file.stat().st_mtime_ns == built_at and "explained" not in again
    assert again["recognition"]["top1"] == big["top1"]
    assert again["recognition"]["false_ids"] == big["false_ids"]
    assert again["small"]["top1"] == small["top1"]
    assert again["location"]["catalogued"] == located["catalogued"]  # the same frames


def test_catalogue_bench_on_the_rooms_own_catalogue(tmp_path: Path) -> None:
    folder = write_catalogue(tmp_path / "own", 20)
    result = run_own_catalogue_bench(folder, views=10, held_out=4)
    assert result["catalogue"] == str(folder) and result["works"] == 16
    held = result["held_out"]
    assert len(held) == 4 and all((folder / name).is_file() for name in held)
    assert result["small"]["works"] == 8  # under 50 works: half of them
    big = result["recognition"]
    assert big["catalogued_views"] == 10 and big["uncatalogued_views"] == 10
    assert big["top1"] >= 0.7
    assert sum(result["missed_works"].values()) == big["no_id"] + big["wrong_ids"]
    assert all(name.endswith(".png") and name not in held for name in result["missed_works"])
    assert len(result["false_id_views"]) == big["false_ids"]
    assert result["location"]["catalogued"]["uncatalogued_frames"] == 10
    assert all(v["work"] in held for v in result["false_id_views"])
    # The folder is only read: links to its images, no index written into it.
    assert not (folder / INDEX_FILE).exists()
    with pytest.raises(Exception, match="--held-out: expected 1 to 18"):
        run_own_catalogue_bench(folder, views=10, held_out=19)


def test_catalogue_bench_options_are_refused_together(tmp_path: Path) -> None:
    def bench(*args: str) -> Result:
        return CliRunner().invoke(cli, ["bench", "catalogue", *args])

    folder = str(tmp_path)
    for args, field in (((f"--catalogue={folder}", "--works=60"), "--works"),
                        ((f"--catalogue={folder}", f"--keep={folder}"), "--keep"),
                        (("--held-out=3",), "--held-out")):
        refused = bench(*args)
        assert refused.exit_code == 2 and field in refused.output, refused.output
    missing = bench(f"--catalogue={tmp_path / 'nowhere'}")
    assert missing.exit_code != 0 and "--catalogue" in missing.output


def test_kept_catalogues_are_rewritten_when_they_no_longer_hold_the_works(
        tmp_path: Path) -> None:
    import cv2

    writes: list[int] = []

    def write(folder: Path, works: int) -> Path:
        writes.append(works)
        return write_catalogue(folder, works)

    folder = _kept_catalogue(tmp_path, 3, write)
    assert folder == tmp_path / "works-3" and writes == [3]
    assert _kept_catalogue(tmp_path, 3, write) == folder and writes == [3]  # reused
    image = cv2.imread(str(folder / "cat-002.png"))
    cv2.imwrite(str(folder / "cat-002.png"), 255 - image)  # the generator changed
    assert _kept_catalogue(tmp_path, 3, write) == folder and writes == [3, 3]
    (folder / "cat-001.png").unlink()  # a work missing
    assert _kept_catalogue(tmp_path, 3, write) == folder and writes == [3, 3, 3]
    (tmp_path / "works-4").write_text("not a folder")
    with pytest.raises(Exception, match="--keep: expected a folder"):
        _kept_catalogue(tmp_path, 4, write)


def test_a_big_scan_is_decoded_smaller_and_turned_as_shown(tmp_path: Path) -> None:
    # A museum's reference may be a 12,000 px scan: the index looks at 400 px, and decoding
    # it whole took seconds and over a GB. A JPEG whose shorter side is at least twice
    # `at_least` is decoded at a half, quarter or eighth (never below `at_least`), and its
    # EXIF orientation is still applied.
    import cv2
    import numpy as np
    from PIL import Image

    from capture.images import read_image

    rng = np.random.default_rng(0)
    picture = cv2.resize(rng.integers(0, 255, (60, 90, 3), np.uint8), (4500, 3000),
                         interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "scan.jpg"
    cv2.imwrite(str(path), picture)
    assert read_image(path).shape == (3000, 4500, 3)
    for at_least, shape in ((100, (375, 563)), (400, (750, 1125)), (1024, (1500, 2250)),
                            (2000, (3000, 4500))):
        reduced = read_image(path, at_least)
        assert reduced.shape[:2] == shape, at_least
        whole = cv2.resize(picture, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        assert float(np.abs(reduced.astype(float) - whole).mean()) < 6  # the same picture
    turned = tmp_path / "turned.jpg"
    image = Image.fromarray(np.ascontiguousarray(picture[:, :, ::-1]))
    exif = image.getexif()
    exif[0x0112] = 6  # shown turned a quarter clockwise
    image.save(turned, exif=exif.tobytes())
    assert read_image(turned).shape == (4500, 3000, 3)
    assert read_image(turned, 400).shape == (1125, 750, 3)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), picture[:500, :700])
    assert read_image(small, 100).shape == (500, 700, 3)  # not a JPEG: decoded whole


def test_two_references_of_one_picture_are_reported_as_twins(catalogue: Path,
                                                             tmp_path: Path) -> None:
    # A collection's export may hold one image under two records: a view of it may then
    # be named either, so the index says so.
    import cv2

    from capture.catalogue import Catalogue

    folder = shutil.copytree(catalogue, tmp_path / "twins")
    assert json.loads(index(str(folder), "--json").stdout)["twins"] == []
    cv2.imwrite(str(folder / "same-record.jpg"), cv2.imread(str(folder / "cat-003.png")),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    result = index(str(folder), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["twins"] == [["cat-003.png", "same-record.jpg"]]
    text = index(str(folder)).output
    assert "warning   cat-003.png and same-record.jpg show the same picture" in text
    assert Catalogue.open(folder).twins == [("cat-003", "same-record")]


def test_a_plain_reference_is_indexed_and_reported_and_the_rest_still_recognised(
        catalogue: Path, tmp_path: Path) -> None:
    # A collection's export may hold a placeholder (one colour, no detail) for a work
    # without a photo: SIFT gives it no keypoints and an empty descriptor array, which
    # once stopped the whole index with a traceback. It is indexed, reported, and no
    # view is named as it; the other works are still recognised.
    import cv2
    import numpy as np

    from capture.catalogue import Catalogue

    folder = shutil.copytree(catalogue, tmp_path / "plain")
    assert json.loads(index(str(folder), "--json").stdout)["plain"] == []
    grey = np.full((300, 240, 3), 128, np.uint8)
    cv2.imwrite(str(folder / "no-photo.png"), grey)
    result = index(str(folder), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plain"] == ["no-photo.png"]
    assert "warning   no-photo.png is plain" in index(str(folder), "--force").output
    opened = Catalogue.open(folder)
    assert opened.plain == ["no-photo"] and len(opened) == WORKS + 1
    assert opened.recognise(cv2.resize(grey, (SQUARE, SQUARE))) is None
    view = make_view(2, "cat-002", np.random.default_rng(0))
    assert (match := opened.recognise(view.image)) is not None
    assert match.artwork_id == "cat-002"


def test_a_small_reference_image_is_indexed_and_reported(catalogue: Path,
                                                          tmp_path: Path) -> None:
    # A collection's web thumbnails: a reference under SMALL_REFERENCE px gives few
    # features (the Estense works shrunk to 60 px: 2 of 22 lost). It is indexed, and the
    # index, the CLI and the capture's log say which, so a technician replaces it.
    import cv2

    from capture.catalogue import SMALL_REFERENCE, Catalogue
    from capture.synthetic.scenes import catalogue_artwork

    folder = shutil.copytree(catalogue, tmp_path / "small")
    assert json.loads(index(str(folder), "--json").stdout)["small"] == []
    work = catalogue_artwork(40)
    height, width = work.shape[:2]
    factor = (SMALL_REFERENCE - 20) / max(height, width)
    cv2.imwrite(str(folder / "thumbnail.png"),
                cv2.resize(work, (round(width * factor), round(height * factor)),
                           interpolation=cv2.INTER_AREA))
    factor = SMALL_REFERENCE / max(height, width)  # just big enough: not reported
    cv2.imwrite(str(folder / "enough.png"),
                cv2.resize(catalogue_artwork(41), (round(width * factor),
                                                   round(height * factor))))
    result = index(str(folder), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["small"] == ["thumbnail.png"]
    assert (f"warning   1 reference image under {SMALL_REFERENCE} px on the long side "
            in (shown := index(str(folder), "--force").output)
            and shown.rstrip().endswith("bigger images of the works): thumbnail.png"))
    opened = Catalogue.open(folder)
    assert opened.small == ["thumbnail"] and len(opened) == WORKS + 2
    # an unchanged work taken from the index before keeps its size; a changed one is measured
    cv2.imwrite(str(folder / "enough.png"), cv2.resize(catalogue_artwork(41), (40, 30)))
    rebuilt = Catalogue.open(folder)
    assert rebuilt.reused == WORKS + 1 and rebuilt.small == ["enough", "thumbnail"]


ESTENSE_CATALOGUE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / \
    "galleries-estense" / "catalogue"


@pytest.mark.skipif(not ESTENSE_CATALOGUE.is_dir(),
                    reason=f"the real catalogue is not here ({ESTENSE_CATALOGUE.resolve()}): "
                           f"../shared/data beside the checkout holds it")
def test_a_real_work_photographed_again_is_a_twin_and_distinct_works_are_not(
        tmp_path: Path, estense_index: Path) -> None:
    # The same painting photographed again (cropped a little, smaller, darker, a poor JPEG)
    # is found; the 95 distinct Estense works hold no twins.
    import cv2
    import numpy as np

    from capture.catalogue import Catalogue

    assert Catalogue.open(ESTENSE_CATALOGUE, cache_dir=estense_index).twins == []
    folder = tmp_path / "twenty"
    folder.mkdir()
    for path in sorted(ESTENSE_CATALOGUE.glob("*.jpg"))[:20]:
        shutil.copy(path, folder / path.name)
    picture = cv2.imread(str(folder / "003.jpg"))
    h, w = picture.shape[:2]
    again = cv2.resize(picture[h // 50:h - h // 50, w // 50:w - w // 50], None, fx=0.8, fy=0.8,
                       interpolation=cv2.INTER_AREA)
    again = np.clip(again.astype(np.float32) * 0.85 + 10, 0, 255).astype(np.uint8)
    cv2.imwrite(str(folder / "photographed-again.jpg"), again, [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert Catalogue.open(folder).twins == [("003", "photographed-again")]
