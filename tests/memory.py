"""Helper of the tests that measure what the real-time path allocates: tracemalloc counts
every thread's allocations (a test runner's I/O thread, pytest-xdist's channel), so only
those made from the project's own code are summed."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

#: The packages whose allocations a test measures (numpy's, made for our code, are
#: attributed to the line of ours that called it: the innermost Python frame).
OURS = [str(Path(__file__).resolve().parent.parent / package) for package in
        ("audio_out", "ground", "engine", "capture", "installation")]


def grown_in_our_code(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> int:
    """Bytes the project's own code holds in ``after`` more than in ``before``."""
    keep = [tracemalloc.Filter(True, f"{root}/*") for root in OURS]
    return sum(stat.size_diff for stat in
               after.filter_traces(keep).compare_to(before.filter_traces(keep), "filename"))
