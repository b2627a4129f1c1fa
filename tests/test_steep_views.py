"""benchmarks/steep_views.py: it runs from a clean checkout on a generated catalogue, and
refuses options it cannot honour. Its figures are the benchmark's, reported in the README."""

from __future__ import annotations

import pytest
from benchmark_scripts import load


def test_the_tilted_views_are_what_finds_a_work_seen_from_far_to_its_side() -> None:
    result = load("steep_views").run(None, [0.0, 66.0], 0.33, generated=8)
    frontal, steep = result["rows"]
    assert result["left_out"] == "tilted"
    assert frontal["works"] == steep["works"] == 8
    for key in ("without", "with"):
        assert frontal[key]["near_quad"] >= 5  # facing the camera: both find the textured works
    # The same index, less its tilted views, finds next to nothing at 66 degrees.
    assert steep["with"]["near_quad"] >= steep["without"]["near_quad"] + 3
    assert steep["with"]["iou_median"] >= 0.85


def test_the_far_views_find_small_works_the_frontal_ones_miss() -> None:
    # 65 px tall in a 1280x720 frame: the reference's own features are too fine for it.
    (row,) = load("steep_views").run(None, [0.0], 0.09, generated=12, leave_out="far")["rows"]
    counts = {key: sum(row[key][k] for k in ("whole_frame", "whole_frame_fine", "near_quad"))
              for key in ("without", "with")}
    assert counts["with"] >= counts["without"] + 6, row
    assert row["with"]["whole_frame_fine"] >= row["with"]["whole_frame"]


@pytest.mark.parametrize(("args", "named"), [
    (["--angles", "0,x"], "--angles"),
    (["--angles", "90"], "--angles"),
    (["--angles", "nan"], "--angles"),
    (["--height", "0"], "--height"),
    (["--height", "inf"], "--height"),
    (["--catalogue", "/nowhere/at/all"], "--catalogue"),
    (["--leave-out", "frontal"], "--leave-out"),
])
def test_bad_options_are_refused_naming_the_option(args: list[str], named: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        load("steep_views").main(args)
    assert refused.value.code == 2 and named in capsys.readouterr().err
