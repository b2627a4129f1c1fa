"""Click parameter types shared by every ``art2mus`` command (installation, capture, engine,
audio_out tools).

:class:`FiniteFloat` is the type of every float option: click's own ``float``
and ``FloatRange`` accept ``nan`` and ``inf`` (a NaN compares false with any
bound), which then surface as a traceback or a run without end. Here they are
a usage error naming the option, like any other bad value. :data:`SEED` and
:data:`DETECT_WIDTH` are shared int ranges.
"""

from __future__ import annotations

import math
from typing import Any

import click

#: The type of every ``--seed`` option: numpy's and torch's generators take 0..2**32 - 1 alike.
SEED = click.IntRange(0, 2**32 - 1)

#: The type of every ``--detect-width``: the quad finder needs 64 px; past 4096 (an 8K frame)
#: it only costs time.
DETECT_WIDTH = click.IntRange(64, 4096)


class FiniteFloat(click.FloatRange):
    """A finite float, optionally within ``min``..``max`` (``min_open``/``max_open``: exclusive).

    ``render --seconds nan`` -> ``Error: Invalid value for '--seconds': expected a
    finite number, got 'nan'``.
    """

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        """``value`` as a float, refused unless finite and in range."""
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"expected a finite number, got {value!r}", param, ctx)
        return super().convert(number, param, ctx)
