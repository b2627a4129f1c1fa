"""benchmarks/salon_wall.py: it runs from a clean checkout on a generated catalogue, and
refuses options it cannot honour. Its figures are the benchmark's, reported in the README."""

from __future__ import annotations

import pytest
from benchmark_scripts import load


def test_a_wall_of_twelve_generated_works_is_counted_with_and_without_the_cap() -> None:
    result = load("salon_wall").run(None, [12], 1, ["none"])
    assert list(result["rows"]) == ["12 works, none, 1280x720", "12 works, none, 1920x1080"]
    for row in result["rows"].values():
        assert row["works"] == 12
        assert row["now_named"] >= 10 and row["now_named"] >= row["capped_named"]
        assert row["now_located"] >= row["now_named"]
        assert row["now_wrong_ids"] == 0


@pytest.mark.parametrize(("args", "named"), [
    (["--works", "12,x"], "--works"),
    (["--works", "0"], "--works"),
    (["--seeds", "0"], "--seeds"),
    (["--conditions", "smudge"], "--conditions"),
    (["--conditions", ","], "--conditions"),
    (["--catalogue", "/nowhere/at/all"], "--catalogue"),
])
def test_bad_options_are_refused_naming_the_option(args: list[str], named: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        load("salon_wall").main(args)
    assert refused.value.code == 2 and named in capsys.readouterr().err
