"""The real-photo bench (``art2mus bench capture --photos DIR``): its scoring, its input checks,
and the regression floors on ``../shared/data/galleries-estense``.

The scoring tests need no shared data: a blank photo with a hand-made ``truth.json``, and
``detect_and_recognise`` replaced by a fake that returns chosen detections, so every count
(located, precision with its "don't care" regions, false ids, consistency) is known in
advance. The regression test runs the real pipeline on the 13 gallery photos at 1280x720
and 1920x1080 and holds it to floors (what the pipeline reached when the floors were set,
rounded down; the issue's targets are located >= 0.9 at IoU 0.7, >= 0.8 at 0.85,
recognised >= 0.95, no false ids).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import capture.recognise
from capture.bench import (
    PhotoDetection,
    read_photo_set,
    read_truth,
    run_capture_bench,
    run_photo_bench,
    score_photo,
)
from capture.catalogue import INDEX_FILE
from capture.cli import bench_capture_command
from capture.recognise import RecognisedArtwork
from capture.synthetic.scenes import write_catalogue
from ground.errors import InputError

GALLERIES = Path(__file__).resolve().parents[1] / "../shared/data/galleries-estense"
NEEDS_GALLERIES = pytest.mark.skipif(
    not (GALLERIES / "truth.json").is_file(),
    reason=f"the real-photo set is not here ({GALLERIES.resolve()}): "
           f"../shared/data beside the checkout holds it")

# Floors on galleries-estense, per frame size (raise them as the method improves).
LOCATED_FLOOR = 0.95  # at IoU 0.7; the issue's target is 0.9
LOCATED_STRICT_FLOOR = 0.95  # at IoU 0.85; target 0.8
RECOGNISED_FLOOR = 0.95  # end to end; target 0.95
PRECISION_FLOOR = 0.75  # no target; partial and other_paintings regions are don't care
MAX_FALSE_IDS = 0  # target 0

PHOTO = "wall.jpg"
W, H = 1920, 1080


def _quad(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


TRUTH = {"galleries": [{
    "name": PHOTO, "size": [W, H],
    "paintings": [{"name": "cat-000.png", "points": _quad(200, 200, 600, 600)},
                  {"name": "cat-001.png", "points": _quad(800, 200, 1100, 500)}],
    "partial": [{"name": "cat-002.png", "points": _quad(1700, 100, 2100, 400)}],
    "other_paintings": [{"outline": _quad(200, 700, 500, 1000)},
                        {"outline": _quad(1750, 600, W, 1000)}],
}]}

# (quad at 1920x1080, id): what each is scored as
DETECTIONS: list[tuple[list[list[float]], str | None]] = [
    (_quad(205, 205, 605, 605), "cat-000"),  # located, right id, 5 px corner error
    (_quad(700, 100, 1200, 600), "cat-001"),  # frame + shadow: badly located, right id
    (_quad(210, 710, 490, 990), "cat-002"),  # on another painting: don't care, id too
    (_quad(1650, 80, 2150, 420), "cat-000"),  # on the partial: don't care, but a false id
    (_quad(1300, 700, 1500, 900), None),  # bare wall: false positive
    (_quad(1550, 700, 1700, 900), "cat-001"),  # bare wall: false positive and false id
    # cut by the border: its whole centre is off the photo, its visible part is on the
    # other painting there
    (_quad(1750, 600, 2300, 1000), "cat-002"),
]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three reference images, ids cat-000 .. cat-002."""
    return write_catalogue(tmp_path_factory.mktemp("photo-bench") / "catalogue", 3)


def _photos(folder: Path, truth: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / PHOTO), np.full((H, W, 3), 180, np.uint8))
    (folder / "truth.json").write_text(json.dumps(truth or TRUTH))
    return folder


def _fake(drop_first_at: int | None = None) -> Any:
    """A detect_and_recognise that returns DETECTIONS scaled to the frame it is given."""
    def detect_and_recognise(frame: np.ndarray, catalogue: Any, detect_width: int = 640,
                             lens: Any = None) -> list[RecognisedArtwork]:
        assert lens is None
        scale = frame.shape[1] / W
        chosen = DETECTIONS[1:] if frame.shape[1] == drop_first_at else DETECTIONS
        return [RecognisedArtwork(np.array(quad, np.float32) * scale, artwork_id, 0.9,
                                  False, "quad") for quad, artwork_id in chosen]
    return detect_and_recognise


def _finding_nothing(seen: list[Any], keep: str) -> Any:
    """A detect_and_recognise that finds nothing and keeps what it was given, by name
    (``frame``, ``catalogue`` or ``lens``), in ``seen``."""
    def detect_and_recognise(frame: np.ndarray, catalogue: Any, detect_width: int = 640,
                             lens: Any = None) -> list[Any]:
        seen.append({"frame": frame, "catalogue": catalogue, "lens": lens}[keep])
        return []
    return detect_and_recognise


def test_scoring_counts_dont_care_regions_and_false_ids(
        tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture.recognise, "detect_and_recognise", _fake())
    result = run_photo_bench(_photos(tmp_path / "photos"), catalogue)
    assert list(result["sizes"]) == ["1280x720", "1920x1080"]
    assert [f["frame_sizes"] for f in result["sizes"].values()] == [{"1280x720": 1},
                                                                     {"1920x1080": 1}]
    for figures in result["sizes"].values():
        assert figures["truths"] == 2 and figures["located"] == 1
        assert figures["recall"] == 0.5 and figures["recall_strict"] == 0.5
        # true: 1; false positives: badly located + 2 on bare wall; don't care: 3
        assert (figures["true_detections"], figures["false_positives"],
                figures["dont_care"]) == (1, 3, 3)
        assert figures["precision"] == 0.25
        assert figures["top1"] == 1.0
        assert figures["recognised"] == 2 and figures["recognised_rate"] == 1.0
        assert figures["false_ids"] == 2
        assert figures["corner_error_pct"] == pytest.approx(5 * 2 ** 0.5 / np.hypot(W, H) * 100,
                                                            abs=0.01)
    row = result["per_photo"][0]["sizes"]["1920x1080"]
    assert row["kinds"] == ["located", "badly_located", "other_painting", "partial",
                            "false_positive", "false_positive", "other_painting"]
    assert [(f["artwork_id"], f["on"]) for f in row["false_ids"]] == [
        ("cat-000", "cat-002"), ("cat-001", None)]
    assert [t["located"] for t in row["truths"]] == [True, False]
    assert row["truths"][1]["recognised"] and row["truths"][1]["iou"] == pytest.approx(0.36)
    assert result["consistency"] == {"consistent": True, "differing": []}


def test_a_catalogue_marked_read_only_is_indexed_elsewhere_even_by_root(
        tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The shared data beside a CI checkout is read-only; root may write there all the
    # same, and a bench run left a 17 MB index in it.

    monkeypatch.setattr(capture.recognise, "detect_and_recognise", _fake())
    shelf = tmp_path / "catalogue"
    shelf.mkdir()
    for image in catalogue.glob("*.png"):
        (shelf / image.name).write_bytes(image.read_bytes())
    shelf.chmod(0o555)
    try:
        result = run_photo_bench(_photos(tmp_path / "photos"), shelf)
    finally:
        shelf.chmod(0o755)
    assert result["catalogue_size"] == 3
    assert not (shelf / INDEX_FILE).exists()


@pytest.mark.parametrize(("shot", "frames"), [
    ((W, 1440), ["1280x960", "1920x1440"]),  # a phone's 4:3 photo: 1280 wide, not 1280x720
    ((1080, 1920), ["720x1280", "1080x1920"]),  # upright: a 1280x720 camera held upright
])
def test_a_photo_of_another_aspect_keeps_it_and_the_table_says_so(
        tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch,
        shot: tuple[int, int], frames: list[str]) -> None:
    # A photo keeps its aspect, its longer side at the size's: never more pixels than the
    # nominal size's longer side squared.
    from rich.console import Console

    from capture.bench import print_photo_bench

    monkeypatch.setattr(capture.recognise, "detect_and_recognise", _fake())
    truth = json.loads(json.dumps(TRUTH))
    truth["galleries"][0]["size"] = list(shot)
    folder = _photos(tmp_path / "photos", truth)
    cv2.imwrite(str(folder / PHOTO), np.full((shot[1], shot[0], 3), 180, np.uint8))
    result = run_photo_bench(folder, catalogue)
    assert [f["frame_sizes"] for f in result["sizes"].values()] == [{frames[0]: 1},
                                                                     {frames[1]: 1}]
    console = Console(record=True, width=140)
    print_photo_bench(result, console)
    text = console.export_text()
    assert "1280 px long side" in text and "1920 px long side" in text
    assert f"{frames[0]} (1)" in text


def test_consistency_lists_photos_that_differ_across_sizes_and_overlays_are_written(
        tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture.recognise, "detect_and_recognise", _fake(drop_first_at=1280))
    result = run_photo_bench(_photos(tmp_path / "photos"), catalogue,
                             overlays=tmp_path / "overlays")
    assert result["sizes"]["1280x720"]["located"] == 0
    assert result["sizes"]["1920x1080"]["located"] == 1
    assert result["consistency"] == {"consistent": False, "differing": [PHOTO]}
    written = sorted(p.name for p in (tmp_path / "overlays").iterdir())
    assert written == ["wall_1280x720.png", "wall_1920x1080.png"]
    overlay = cv2.imread(str(tmp_path / "overlays" / written[0]))
    assert overlay is not None and overlay.shape == (720, 1280, 3)


def test_the_references_can_be_shrunk_before_they_are_indexed(
        tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # --reference-side: the photos searched against a catalogue of thumbnails, which the
    # index (built afresh, elsewhere) reports as small; the catalogue itself is untouched.
    searched: list[Any] = []

    monkeypatch.setattr(capture.recognise, "detect_and_recognise",
                        _finding_nothing(searched, "catalogue"))
    before = sorted(p.name for p in catalogue.iterdir())
    result = run_photo_bench(_photos(tmp_path / "photos"), catalogue, reference_side=60)
    assert result["reference_side"] == 60
    assert searched and searched[0].small == ["cat-000", "cat-001", "cat-002"]
    assert sorted(p.name for p in catalogue.iterdir()) == before
    run_photo_bench(_photos(tmp_path / "photos"), catalogue)
    assert searched[-1].small == []
    with pytest.raises(InputError, match="^reference_side: not without a catalogue"):
        run_photo_bench(_photos(tmp_path / "photos"), catalogue, reference_side=60,
                        quads_only=True)


def test_cli_prints_a_table_by_default_and_json_on_request(
        tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture.recognise, "detect_and_recognise", _fake())
    photos = _photos(tmp_path / "photos")
    args = ["--photos", str(photos), "--catalogue", str(catalogue)]
    table = CliRunner().invoke(bench_capture_command, args)
    assert table.exit_code == 0, table.output
    assert "located @ IoU 0.7" in table.output and "1/2 (0.5)" in table.output
    printed = CliRunner().invoke(bench_capture_command, [*args, "--json"])
    assert json.loads(printed.output)["sizes"]["1280x720"]["false_ids"] == 2


def test_without_a_catalogue_the_quad_finder_alone_is_scored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--no-catalogue``: no catalogue folder is needed or opened, the detections are
    scored as located or not, nothing is named, and no catalogue search is timed."""
    given: list[Any] = []

    def quads(frame: np.ndarray, catalogue: Any, detect_width: int = 640,
              lens: Any = None) -> list[RecognisedArtwork]:
        given.append(catalogue)
        return [RecognisedArtwork(np.array(quad, np.float32) * frame.shape[1] / W, None, 0.9,
                                  False, "quad") for quad, _ in DETECTIONS]

    monkeypatch.setattr(capture.recognise, "detect_and_recognise", quads)
    photos = _photos(tmp_path / "photos")  # no catalogue/ beside it
    printed = CliRunner().invoke(bench_capture_command,
                                 ["--photos", str(photos), "--no-catalogue", "--json"])
    assert printed.exit_code == 0, printed.output
    result = json.loads(printed.output)
    assert given and all(c is None for c in given)
    assert (result["catalogue"], result["catalogue_size"], result["quads_only"]) == (None, 0, True)
    for figures in result["sizes"].values():
        assert (figures["located"], figures["truths"], figures["false_ids"]) == (1, 2, 0)
        assert figures["recognised"] == 0 and figures["search_ms_median"] is None
        assert figures["arrival_ms_median"] is None
    table = CliRunner().invoke(bench_capture_command, ["--photos", str(photos), "--no-catalogue"])
    assert table.exit_code == 0, table.output
    assert "no catalogue (the quad finder alone)" in table.output
    assert "false ids" not in table.output and "1/2 (0.5)" in table.output


@pytest.mark.parametrize(("args", "option"), [
    (["--photos", "PHOTOS", "--scenes", "5"], "--scenes"),
    (["--photos", "PHOTOS", "--style", "rooms"], "--style"),
    (["--overlays", "OUT"], "--overlays"),
    (["--degrade", "blur"], "--degrade"),
    (["--catalogue", "PHOTOS"], "--catalogue"),
    (["--photos", "NOWHERE"], "--photos"),
    (["--photos", "PHOTOS", "--catalogue", "NOWHERE"], "--catalogue"),
    (["--no-catalogue"], "--no-catalogue"),
    (["--photos", "PHOTOS", "--no-catalogue", "--catalogue", "PHOTOS"], "--catalogue"),
    (["--reference-side", "90"], "--reference-side"),
    (["--photos", "PHOTOS", "--no-catalogue", "--reference-side", "90"], "--reference-side"),
    (["--photos", "PHOTOS", "--distractors", "PHOTOS", "--reference-side", "90"],
     "--reference-side"),
])
def test_cli_refuses_bad_options_naming_them(tmp_path: Path, args: list[str],
                                             option: str) -> None:
    photos = _photos(tmp_path / "photos")
    names = {"PHOTOS": str(photos), "OUT": str(tmp_path / "out"),
             "NOWHERE": str(tmp_path / "nowhere")}
    result = CliRunner().invoke(bench_capture_command, [names.get(a, a) for a in args])
    assert isinstance(result.exception, InputError), result.output
    assert str(result.exception).startswith(option)


def test_synthetic_bench_refuses_an_unknown_style() -> None:
    with pytest.raises(InputError, match=r"^style: expected one of .*'baroque'"):
        run_capture_bench(scenes=1, style="baroque")


def _gallery(**change: Any) -> dict[str, Any]:
    gallery = json.loads(json.dumps(TRUTH["galleries"][0]))  # a deep copy
    gallery.update(change)
    return gallery


def test_a_truth_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # A truth.json written by a Windows tool may start with a byte-order mark, which
    # Python's JSON parser refuses ("Unexpected UTF-8 BOM"): the whole set was refused.
    path = tmp_path / "truth.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"galleries": [_gallery()]}).encode())
    assert [truth.name for truth in read_truth(path)] == ["wall.jpg"]


@pytest.mark.parametrize(("document", "field"), [
    ("{", "PATH: not valid JSON"),
    ({"galleries": {}}, "truth.json: galleries: expected a list"),
    ({"galleries": [7]}, "truth.json: galleries[0]: expected an object"),
    ({"galleries": [_gallery(name="")]}, "truth.json: galleries[0].name:"),
    ({"galleries": [_gallery(), _gallery()]}, "truth.json: galleries[1].name: 'wall.jpg' appears"),
    ({"galleries": [_gallery(size=[1920])]}, "truth.json: galleries[0].size:"),
    ({"galleries": [_gallery(paintings=[{"name": "a.jpg", "points": [[0, 0]] * 3}])]},
     "truth.json: galleries[0].paintings[0].points: expected 4 [x, y] pairs"),
    ({"galleries": [_gallery(paintings=[{"name": "a.jpg", "points": [[0, 0]] * 3 + [[1]]}])]},
     "truth.json: galleries[0].paintings[0].points: expected 4 [x, y] pairs"),
    ({"galleries": [_gallery(partial=[{"name": 3, "points": _quad(0, 0, 1, 1)}])]},
     "truth.json: galleries[0].partial[0].name:"),
    ({"galleries": [_gallery(other_paintings=[{"outline": [[0, 0], [1, "a"], [2, 2]]}])]},
     "truth.json: galleries[0].other_paintings[0].outline: expected >= 3 [x, y] pairs"),
    ({"galleries": [_gallery(other_paintings={})]},
     "truth.json: galleries[0].other_paintings: expected a list"),
    ({"galleries": [_gallery(partial=[{"name": "a.jpg", "points": _quad(0, 0, 1, 1)}],
                             paintings=[{"name": "a.png", "points": _quad(5, 5, 9, 9)}])]},
     "truth.json: galleries[0]: work 'a' is named twice"),
])
def test_truth_errors_name_the_field(tmp_path: Path, document: Any, field: str) -> None:
    path = tmp_path / "truth.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(InputError) as error:
        read_truth(path)
    assert str(error.value).startswith(field.replace("PATH", str(path)))
    assert "\n" not in str(error.value)


# (the bottom-right corner moved far out to the right or below: moved past its neighbours, to
# the far left, the quad's edges cross, and it is refused as no quad before this check)
@pytest.mark.parametrize("corner", [[1e30, 300.0], [3 * W, 500.0], [300.0, 3 * H]])
def test_truth_corners_far_outside_the_photo_are_refused(tmp_path: Path,
                                                         corner: list[float]) -> None:
    # A corner a little past the border is a frame cut by it (the partial work here, to
    # 2100 of 1920 px); far beyond it is a slip, which would count a found work as a
    # false id.
    truth = json.loads(json.dumps(TRUTH))
    # a partial work only excuses what is found on it: a cropped set's may lie anywhere
    truth["galleries"][0]["partial"][0]["points"] = _quad(-5000, 100, -4000, 400)
    assert len(read_photo_set(_photos(tmp_path / "fine", truth), None)) == 1
    truth["galleries"][0]["paintings"][1]["points"][2] = corner
    with pytest.raises(InputError, match=r"^truth.json: galleries\[0\]\.paintings\[1\]\."
                                         r"points: expected corners in wall.jpg \(1920x1080"):
        read_photo_set(_photos(tmp_path / "slip", truth), None)


def test_truth_reads_ids_by_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(TRUTH))
    (truth,) = read_truth(path)
    assert [w.artwork_id for w in truth.paintings] == ["cat-000", "cat-001"]
    assert truth.size == (W, H) and len(truth.others) == 2
    half = truth.scaled(0.5, 0.5)
    assert half.paintings[0].quad[2].tolist() == [300.0, 300.0] and half.size == (960, 540)


@pytest.mark.parametrize("damage", ["truncate", "empty", "missing"])
def test_a_bad_photo_is_refused_naming_the_file(tmp_path: Path, catalogue: Path,
                                                damage: str) -> None:
    photos = _photos(tmp_path / "photos")
    photo = photos / PHOTO
    if damage == "truncate":
        photo.write_bytes(photo.read_bytes()[:2000])
    elif damage == "empty":
        photo.write_bytes(b"")
    else:
        photo.unlink()
    with pytest.raises(InputError, match=rf"^cannot read image .*{PHOTO}:") as error:
        run_photo_bench(photos, catalogue)
    assert "\n" not in str(error.value)


def _turned_by_exif(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an EXIF orientation tag (6: a phone held upright; a viewer turns it)."""
    import struct

    tiff = (b"MM\x00\x2a\x00\x00\x00\x08\x00\x01"
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00\x00\x00\x00")
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_a_phone_photo_the_truth_was_drawn_on_as_stored_is_read_as_stored(
        tmp_path: Path) -> None:
    # A phone held upright stores a landscape image and an EXIF orientation: viewers (and
    # OpenCV) turn it to portrait, but an annotation tool may have drawn the truth on the
    # image as stored. Its size says so; the photo is then read as stored, not refused.
    from capture.images import read_image

    photos = _photos(tmp_path / "phone")
    photo = photos / PHOTO
    stored = cv2.imread(str(photo))
    stored[200:600, 200:600] = (20, 40, 200)  # where the truth's first painting is
    photo.write_bytes(_turned_by_exif(cv2.imencode(".jpg", stored)[1].tobytes(), 6))
    assert read_image(photo).shape[:2] == (W, H)  # upright: portrait
    [(truth, image)] = read_photo_set(photos, None)
    assert image.shape[:2] == (H, W) and truth.size == (W, H)
    assert image[400, 400, 2] > 150  # the painting is where the truth says
    # A truth with the upright (portrait) size takes the photo upright.
    portrait = {"galleries": [dict(TRUTH["galleries"][0], size=[H, W], paintings=[], partial=[],
                                   other_paintings=[])]}
    (photos / "truth.json").write_text(json.dumps(portrait))
    [(_, image)] = read_photo_set(photos, None)
    assert image.shape[:2] == (W, H)


def test_truth_that_does_not_fit_the_photo_or_catalogue_is_refused(
        tmp_path: Path, catalogue: Path) -> None:
    photos = _photos(tmp_path / "wrong-size", {"galleries": [_gallery(size=[1280, 960])]})
    with pytest.raises(InputError, match=r"^truth.json: galleries\[0\].size: \[1280, 960\] but "
                                         r"wall.jpg is 1920x1080, of another aspect$"):
        run_photo_bench(photos, catalogue)
    stranger = {"galleries": [_gallery(paintings=[{"name": "999.jpg",
                                                   "points": _quad(0, 0, 9, 9)}])]}
    photos = _photos(tmp_path / "stranger", stranger)
    with pytest.raises(InputError, match=r"paintings\[0\].name: '999' is not in the catalogue"):
        run_photo_bench(photos, catalogue)
    with pytest.raises(InputError, match=r"truth.json: no ground truth here"):
        run_photo_bench(tmp_path, catalogue)


def test_truth_of_a_set_downscaled_after_it_was_made_is_scaled_to_the_photos(
        tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Truth made on 3840x2160 originals, photos shared at 1920x1080: the points are scaled,
    and the bench scores as on a truth made at 1920x1080."""
    monkeypatch.setattr(capture.recognise, "detect_and_recognise", _fake())
    doubled = json.loads(json.dumps(TRUTH))
    gallery = doubled["galleries"][0]
    gallery["size"] = [2 * W, 2 * H]
    for key in ("paintings", "partial"):
        for work in gallery[key]:
            work["points"] = [[2 * x, 2 * y] for x, y in work["points"]]
    for other in gallery["other_paintings"]:
        other["outline"] = [[2 * x, 2 * y] for x, y in other["outline"]]
    same = run_photo_bench(_photos(tmp_path / "as-made"), catalogue)
    scaled = run_photo_bench(_photos(tmp_path / "downscaled", doubled), catalogue)
    def scores(result: dict[str, Any]) -> dict[str, Any]:
        return {size: {k: v for k, v in figures.items() if "_ms" not in k}
                for size, figures in result["sizes"].items()}

    assert scores(scaled) == scores(same) and scores(same)["1920x1080"]["located"] == 1
    assert [s["truths"] for s in scaled["per_photo"][0]["sizes"].values()] == \
        [s["truths"] for s in same["per_photo"][0]["sizes"].values()]


def test_truth_names_works_by_the_catalogues_files_and_photos_in_sub_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalogue whose metadata gives its works inventory numbers: the truth names their
    files, and each is scored under the catalogue's id (it was refused as not in the
    catalogue). A photo may sit in a sub-folder of the set."""
    catalogue = write_catalogue(tmp_path / "catalogue", 3, with_metadata=False)
    (catalogue / "export.csv").write_text(
        "Inventory No.;Title;File\nINV-7;The first;cat-000.png\nINV-8;The second;cat-001.png\n"
        "INV-9;The third;cat-002.png\n", encoding="utf-8")
    monkeypatch.setattr(capture.recognise, "detect_and_recognise", _fake())
    nested = json.loads(json.dumps(TRUTH))
    nested["galleries"][0]["name"] = f"room-1/{PHOTO}"
    photos = tmp_path / "photos"
    _photos(photos / "room-1")
    (photos / "truth.json").write_text(json.dumps(nested))
    result = run_photo_bench(photos, catalogue)
    row = result["per_photo"][0]
    assert row["name"] == f"room-1/{PHOTO}"
    assert [t["artwork_id"] for t in row["sizes"]["1920x1080"]["truths"]] == ["INV-7", "INV-8"]
    for bad in ("../wall.jpg", "/tmp/wall.jpg", "room-1\\wall.jpg"):
        nested["galleries"][0]["name"] = bad
        (photos / "truth.json").write_text(json.dumps(nested))
        with pytest.raises(InputError, match=r"^truth.json: galleries\[0\].name: expected a "
                                             r"photo file name in the folder"):
            run_photo_bench(photos, catalogue)


@pytest.fixture(scope="module")
def estense(estense_index: Path) -> Any:
    """The real catalogue, opened once for this module (it lies read-only beside the
    checkout, so its index goes to the session's temporary folder)."""
    from capture.catalogue import Catalogue

    return Catalogue.open(GALLERIES / "catalogue", cache_dir=estense_index)


@NEEDS_GALLERIES
def test_galleries_estense_floors(estense_index: Path) -> None:
    result = run_photo_bench(GALLERIES, cache_dir=estense_index)
    assert result["photo_count"] == 13
    for label, figures in result["sizes"].items():
        failures = [(p["name"], [t["artwork_id"] for t in p["sizes"][label]["truths"]
                                 if not t["located"]], p["sizes"][label]["false_ids"])
                    for p in result["per_photo"]]
        failures = [f for f in failures if f[1] or f[2]]
        assert figures["truths"] == 22, label
        assert figures["recall"] >= LOCATED_FLOOR, (label, figures, failures)
        assert figures["recall_strict"] >= LOCATED_STRICT_FLOOR, (label, figures, failures)
        assert figures["recognised_rate"] >= RECOGNISED_FLOOR, (label, figures, failures)
        assert figures["precision"] >= PRECISION_FLOOR, (label, figures)
        assert figures["false_ids"] <= MAX_FALSE_IDS, (label, failures)
    # The same truth works located and recognised at 1280x720 and 1920x1080...
    for photo in result["per_photo"]:
        seen = {label: sorted((t["artwork_id"], t["located"], t["recognised"])
                              for t in scored["truths"])
                for label, scored in photo["sizes"].items()}
        assert len({tuple(v) for v in seen.values()}) == 1, (photo["name"], seen)
    # ...and the same works found, counting those in "don't care" regions (a small portrait
    # at the top of gopr5827_013 was once named at 1920x1080 only).
    assert result["consistency"] == {"consistent": True, "differing": []}, result["consistency"]


@NEEDS_GALLERIES
def test_an_oval_painting_on_a_real_wall_is_the_primary_not_the_caption_card(
        estense: Any) -> None:
    """In `20180206_114306_002.jpg` the visitor faces an oval painting (not in the
    catalogue) between two caption cards; before ovals were found, a card was the primary."""
    from capture.detect import quad_iou

    truth = next(t for t in read_truth(GALLERIES / "truth.json")
                 if t.name == "20180206_114306_002.jpg")
    image = cv2.imread(str(GALLERIES / truth.name))
    scale = 1280 / image.shape[1]
    frame = cv2.resize(image, (1280, round(image.shape[0] * scale)),
                       interpolation=cv2.INTER_AREA)
    found = capture.recognise.detect_and_recognise(frame, estense)
    primary = next(f for f in found if f.primary)
    centre = primary.quad.mean(axis=0)
    ovals = [outline * scale for outline in truth.others
             if cv2.pointPolygonTest(np.asarray(outline * scale, np.float32).reshape(-1, 1, 2),
                                     (float(centre[0]), float(centre[1])), False) >= 0]
    assert ovals and primary.artwork_id is None, (primary, found)
    # its quad is the oval's bounding box
    low, high = ovals[0].min(axis=0), ovals[0].max(axis=0)
    box = np.float32([[low[0], low[1]], [high[0], low[1]], [high[0], high[1]], [low[0], high[1]]])
    assert quad_iou(primary.quad, box) > 0.85


def test_a_degraded_bench_moves_the_truth_with_the_pixels(
        tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--degrade turn``: the photo is warped, the truth with it, and a painting the turn
    takes partly out of view is partial (don't care) from then on."""
    seen: list[np.ndarray] = []

    monkeypatch.setattr(capture.recognise, "detect_and_recognise",
                        _finding_nothing(seen, "frame"))
    photos = _photos(tmp_path / "photos")
    plain = run_photo_bench(photos, catalogue)
    turned = run_photo_bench(photos, catalogue, degradation="turn")
    assert plain["degradation"] is None and turned["degradation"] == "turn"
    assert seen[-1].shape == (1080, 1920, 3) and (seen[-1] == 0).any()  # black wedges came in
    for label in ("1280x720", "1920x1080"):
        assert plain["sizes"][label]["truths"] == 2
        # both paintings stay in view once the whole turned view is fitted into the frame
        assert turned["sizes"][label]["truths"] == 2
    with pytest.raises(InputError, match=r"^degradation: expected one of .*'smudge'"):
        run_photo_bench(photos, catalogue, degradation="smudge")
    result = CliRunner().invoke(bench_capture_command, [
        "--photos", str(photos), "--catalogue", str(catalogue), "--degrade", "jpeg", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["degradation"] == "jpeg"


def test_a_lens_is_taken_out_of_every_frame_and_refused_where_it_does_not_fit(
        tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--lens``: each frame is detected through the camera's lens (as the loop does); a
    calibration of another aspect than the photos' is refused naming the photo."""
    from capture.config import LensConfig
    from capture.lens import Lens

    given: list[Any] = []

    monkeypatch.setattr(capture.recognise, "detect_and_recognise",
                        _finding_nothing(given, "lens"))
    photos = _photos(tmp_path / "photos")
    wide = {"model": "fisheye", "width": 1280, "height": 720, "focal": (1000.0, 1000.0),
            "centre": (640.0, 360.0), "distortion": (-0.1, 0.05, 0.0, 0.0)}
    result = run_photo_bench(photos, catalogue, lens=LensConfig(**wide))
    assert result["lens"]["model"] == "fisheye"
    assert given and all(isinstance(lens, Lens) for lens in given)
    square = LensConfig(**wide | {"width": 960, "height": 960, "centre": (480.0, 480.0)})
    with pytest.raises(InputError, match=rf"^--lens: measured at 960x960, not the aspect of "
                                         rf"{PHOTO} \(1280x720\)"):
        run_photo_bench(photos, catalogue, lens=square)
    result = CliRunner().invoke(bench_capture_command, ["--lens", str(tmp_path / "l.toml")])
    assert "--lens: only for the real-photo bench" in str(result.exception)


def test_a_painting_moved_out_of_view_becomes_partial() -> None:
    truth = read_truth_document(TRUTH)[0]
    shifted = truth.warped(lambda points: np.asarray(points) + (1500.0, 0.0), (W, H))
    # cat-000 (200..600) lands at 1700..2100: mostly outside a 1920-px frame
    assert [w.artwork_id for w in shifted.paintings] == []
    assert sorted(w.artwork_id for w in shifted.partial) == ["cat-000", "cat-001", "cat-002"]
    kept = truth.warped(lambda points: np.asarray(points) + (10.0, 5.0), (W, H))
    assert [w.artwork_id for w in kept.paintings] == ["cat-000", "cat-001"]
    assert np.allclose(kept.paintings[0].quad[0], (210, 205))
    assert np.allclose(kept.others[0][0], (210, 705))


def test_what_lies_beyond_the_photo_in_a_degraded_frame_is_not_judged() -> None:
    """``far`` leaves wall round the photo: a painting the photo's border cuts, located whole,
    runs on past that border, and only its part on the photo's own pixels says what it is
    on (a painting outside the catalogue here: don't care, not a false id)."""
    truth = read_truth_document(TRUTH)[0]
    far = truth.warped(lambda points: np.asarray(points) * 0.5 + (480.0, 270.0), (W, H))
    assert far.view is not None and np.allclose(
        cv2.boundingRect(far.view.astype(np.float32)), (480, 270, 960, 540), atol=1)
    # the painting beyond the photo's right edge (x 1750..2150 of the photo), found whole
    whole = PhotoDetection(np.float32(_quad(1355, 570, 1555, 770)), "cat-002")
    assert score_photo(far, [whole], (W, H))["extras"][0]["kind"] == "other_painting"
    assert score_photo(far, [whole], (W, H))["false_ids"] == []
    unmoved = truth.warped(lambda points: np.asarray(points), (W, H))
    assert cv2.contourArea(unmoved.view) == W * H
    found = PhotoDetection(np.float32(_quad(1750, 600, 2150, 1000)), "cat-002")
    assert score_photo(unmoved, [found], (W, H))["extras"][0]["kind"] == "other_painting"


def read_truth_document(document: dict[str, Any]) -> list[Any]:
    """``read_truth`` of a document held in memory."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "truth.json"
        path.write_text(json.dumps(document))
        return read_truth(path)


@NEEDS_GALLERIES
def test_galleries_estense_through_a_panning_camera(estense_index: Path) -> None:
    """The photos with a 1.2 %-of-width motion streak: the streak is taken out before SIFT
    and before the outlines are traced (located 8 of 22 without that, 21 with it), never a
    false id. At 1280x720 only, as the other degradations here: both sizes took a minute
    of the suite, and `bench capture --degrade blur` gives the 1920x1080 figures."""
    result = run_photo_bench(GALLERIES, degradation="blur", sizes=((1280, 720),),
                             cache_dir=estense_index)
    figures = result["sizes"]["1280x720"]
    assert figures["truths"] == 22
    assert figures["recall"] >= 0.85, figures
    assert figures["recognised_rate"] >= 0.8, figures
    assert figures["false_ids"] == 0, figures


@NEEDS_GALLERIES
def test_galleries_estense_from_twice_as_far(estense_index: Path) -> None:
    """Every work half as big (``--degrade far``): the whole frame is also searched twice as
    finely (located 20 of 22 with the coarse search alone, 21 with the fine one), and what
    the photo's border cuts is judged on the photo's own pixels only (0 false ids)."""
    result = run_photo_bench(GALLERIES, degradation="far", sizes=((1280, 720),),
                             cache_dir=estense_index)
    figures = result["sizes"]["1280x720"]
    assert figures["truths"] == 22
    assert figures["located"] >= 21 and figures["recognised"] >= 21, figures
    assert figures["false_ids"] == 0, figures


@NEEDS_GALLERIES
def test_galleries_estense_turned_away_stay_exact(estense_index: Path) -> None:
    """The camera turned 35 degrees (``--degrade turn``): two works of 20180206_113800_010
    are placed, coarsely, on the votes of the index's simulated reference views, and
    would stay there (IoU 0.71 and 0.80) but for the finer look at them that fits the
    frontal features: 20 of the 22 at IoU 0.85 (as before those views were held), none
    named wrong."""
    result = run_photo_bench(GALLERIES, degradation="turn", sizes=((1280, 720),),
                             cache_dir=estense_index)
    figures = result["sizes"]["1280x720"]
    assert figures["truths"] == 22
    assert figures["located_strict"] >= 20 and figures["recognised"] >= 20, figures
    assert figures["false_ids"] == 0, figures


@NEEDS_GALLERIES
def test_galleries_estense_behind_visitors(estense_index: Path) -> None:
    """Two visitors in front of the wall (``--degrade visitors``) hide 14-39 % of 11 works
    and more than half of 2 (not asked for): the works' own features still place and name
    them, whole (20 of 20 at IoU 0.85), and nothing is named wrong."""
    result = run_photo_bench(GALLERIES, degradation="visitors", sizes=((1280, 720),),
                             cache_dir=estense_index)
    figures = result["sizes"]["1280x720"]
    assert figures["truths"] == 20
    assert figures["located_strict"] >= 19 and figures["recognised"] >= 19, figures
    assert figures["false_ids"] == 0, figures


@NEEDS_GALLERIES
def test_a_frame_reaching_the_photos_edge_still_gives_its_picture() -> None:
    """Without a catalogue: at 1920x1080 the carved frame of 046 in 20180206_113600_003
    reaches the photo's bottom edge (at the quad finder's 640 px), so its outline was
    taken for a work cut by the edge and nothing was found; the picture in it is wholly
    in view, and is found."""
    from capture.detect import detect_artworks, quad_iou
    from capture.images import read_image

    truth = next(t for t in read_truth(GALLERIES / "truth.json")
                 if t.name == "20180206_113600_003.jpg")
    image = read_image(GALLERIES / truth.name)
    frame = cv2.resize(image, (1920, 1080), interpolation=cv2.INTER_AREA)
    work = truth.scaled(1920 / image.shape[1], 1080 / image.shape[0]).paintings[0]
    assert work.artwork_id == "046"
    found = detect_artworks(frame)
    assert max((quad_iou(d.quad, work.quad) for d in found), default=0.0) >= 0.85, \
        [np.round(d.quad).tolist() for d in found]


@NEEDS_GALLERIES
def test_galleries_estense_works_tracked_through_a_moving_camera() -> None:
    """``bench tracking --photos``: every painting large enough to film is followed from its
    true quad through the camera's drift and a visitor hiding about half of it."""
    from capture.bench_video import run_tracking_photos

    result = run_tracking_photos(GALLERIES, frames=30, repeats=1)
    assert result["works"] == 22 and result["tracked"] >= 20, result["per_work"]
    assert result["kept_through_occlusion"] == result["tracked"], result["per_work"]
    assert result["lost_frames"] == 0 and result["corner_error_pct"] < 0.2, result


@NEEDS_GALLERIES
@pytest.mark.parametrize(("photo", "work"), [("20180206_112930_007.jpg", "036"),
                                             ("20180206_112930_016.jpg", "005"),
                                             ("20180206_113800_014.jpg", "070")])
def test_a_work_cut_by_the_frame_edge_is_named_at_either_frame_size(
        estense: Any, photo: str, work: str) -> None:
    """Half out of view, these works give a whole-frame fit too weak to stand, even finer;
    among their own features (not against the whole catalogue's, where the ratio test
    refuses a dim work's true matches) they are placed, at 1280 and at 1920 px wide alike,
    where a person outlined a painting. Once they were named at 1920 px only, or not at all.
    """
    truth = next(t for t in read_truth(GALLERIES / "truth.json") if t.name == photo)
    image = cv2.imread(str(GALLERIES / photo))
    for width in (1280, 1920):
        scale = width / image.shape[1]
        frame = cv2.resize(image, (width, round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        found = {f.artwork_id: f for f in estense.locate(frame, fine=True)}
        assert work in found, (width, sorted(found))
        # most of its evidence lies inside a person's outline of a painting
        support = found[work].support
        outlines = [np.asarray(o * scale, np.float32).reshape(-1, 1, 2) for o in truth.others]
        inside = [any(cv2.pointPolygonTest(o, (float(x), float(y)), False) >= 0
                      for o in outlines) for x, y in support]
        assert np.mean(inside) > 0.8, (width, np.mean(inside))



def _others(folder: Path, count: int, stem: str = "other") -> Path:
    """``count`` generated works of another catalogue, ``{stem}-NNN.png``, no metadata."""
    write_catalogue(folder, count, with_metadata=False)
    for k, image in enumerate(sorted(folder.glob("cat-*.png"))):
        image.rename(folder / f"{stem}-{k:03d}.png")
    return folder


def test_distractors_are_indexed_beside_the_catalogue_and_their_index_is_kept(
        tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A technician measures the photos as a museum of thousands of works would search them.
    monkeypatch.setattr(capture.recognise, "detect_and_recognise", _fake())
    others = _others(tmp_path / "others", 4)
    photos = _photos(tmp_path / "photos")
    first = run_photo_bench(photos, catalogue, distractors=others)
    assert first["catalogue_size"] == 3 + 4 and first["distractors"] == str(others)
    assert first["sizes"]["1280x720"]["located"] == 1  # scored against the truth as before
    kept = [p for p in others.iterdir() if p.name.startswith(".art2mus-with-")]
    assert len(kept) == 1 and (kept[0] / INDEX_FILE).is_file()
    assert not list(others.glob(INDEX_FILE)) and not (catalogue / "+others").exists()
    built = (kept[0] / INDEX_FILE).stat().st_mtime_ns
    run_photo_bench(photos, catalogue, distractors=others)  # the kept index is reused
    assert (kept[0] / INDEX_FILE).stat().st_mtime_ns == built
    from rich.console import Console

    from capture.bench import print_photo_bench

    console = Console(record=True, width=200)
    print_photo_bench(first, console)
    title = "".join(console.export_text().split())  # the title wraps
    assert f"7cataloguedworks(withthedistractorsof{others})" in title


def test_a_distractor_with_a_catalogue_id_is_refused_naming_both_files(
        tmp_path: Path, catalogue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture.recognise, "detect_and_recognise", _fake())
    clash = _others(tmp_path / "others", 2, stem="cat")  # cat-000.png: an id of the catalogue
    with pytest.raises(InputError, match=r"'cat-000' for both \+others/cat-000\.png and "
                                         r"cat-000\.png"):
        run_photo_bench(_photos(tmp_path / "photos"), catalogue, distractors=clash)


@pytest.mark.parametrize(("args", "message"), [
    (["--distractors", "{others}"], "--distractors: only for the real-photo bench"),
    (["--photos", "{photos}", "--no-catalogue", "--distractors", "{others}"],
     "--distractors: not with --no-catalogue"),
    (["--photos", "{photos}", "--catalogue", "{catalogue}", "--distractors", "{others}/none"],
     "--distractors: expected a folder of reference images, got nothing at"),
    (["--photos", "{photos}", "--catalogue", "{catalogue}", "--distractors", "{empty}"],
     "distractors: expected a folder of reference images, got none at"),
])
def test_the_cli_refuses_distractors_it_cannot_use(
        tmp_path: Path, catalogue: Path, args: list[str], message: str) -> None:
    folders = {"photos": _photos(tmp_path / "photos"), "others": _others(tmp_path / "o", 1),
               "empty": tmp_path / "empty", "catalogue": catalogue}
    folders["empty"].mkdir()
    result = CliRunner().invoke(bench_capture_command, [a.format(**folders) for a in args])
    assert result.exit_code != 0
    assert message in str(result.exception or result.output)


def test_a_small_photo_is_enlarged_smoothly_and_a_big_one_averaged() -> None:
    # A set of 640x360 video frames benched at 1280x720: a camera's scaler interpolates,
    # where INTER_AREA would repeat each pixel into a 2x2 block with steps of its own.
    from capture.bench import _resized

    ramp = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (10, 1))
    grown = _resized(ramp, 50)[5].astype(int)
    assert grown.shape == (50,) and np.all(np.abs(np.diff(grown[1:-1]) - 5) <= 1)
    halved = _resized(np.tile(np.array([0, 200], np.uint8), (4, 8)), 8)
    assert np.all(halved == 100)  # each output pixel the mean of the two it covers
