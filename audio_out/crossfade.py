"""Equal-power crossfades, used by the timeline splice and the hold/resume logic.

Two uncorrelated signals mixed with gains ``g_out = cos(theta)`` and
``g_in = sin(theta)`` keep their summed power constant because
``cos^2 + sin^2 = 1`` (the standard "constant-power pan law", e.g. Zoelzer,
*DAFX*, 2nd ed., sec. 12.2). ``theta`` walks a quarter period, sampled at the
middle of each frame so the curve is symmetric: ``fade_out[::-1] == fade_in``.
"""

from __future__ import annotations

import math

import numpy as np


def equal_power_gains(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 ``(fade_out, fade_in)`` of length ``n`` with ``fade_out**2 + fade_in**2 == 1``."""
    if n < 0:
        raise ValueError(f"crossfade length must be >= 0, got {n}")
    theta = (np.arange(n, dtype=np.float64) + 0.5) * (np.pi / 2.0 / max(n, 1))
    return np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)


def fill_equal_power_gains(n: int, fade_out: np.ndarray, fade_in: np.ndarray,
                           ramp: np.ndarray) -> None:
    """Write the gains of :func:`equal_power_gains` into preallocated buffers.

    ``ramp`` must hold ``0, 1, 2, ...`` (at least ``n`` values); ``fade_out``
    and ``fade_in`` receive the first ``n`` values. Used on the audio thread,
    where building new arrays is not allowed.
    """
    np.add(ramp[:n], 0.5, out=fade_in[:n])
    np.multiply(fade_in[:n], np.pi / 2.0 / max(n, 1), out=fade_in[:n])
    np.cos(fade_in[:n], out=fade_out[:n])
    np.sin(fade_in[:n], out=fade_in[:n])


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of two equal-shape blocks, clamped to [-0.5, 1] (0 if one is silent).

    Allocation-free apart from the Python floats: ``np.vdot`` of contiguous
    views. The floor bounds the boost :func:`correct_for_correlation` may
    give an anti-correlated mix (+3 dB at the middle at most): nearly
    cancelling signals are not worth amplifying.
    """
    ab = float(np.vdot(a, b))
    aa = float(np.vdot(a, a))
    bb = float(np.vdot(b, b))
    if aa <= 1e-20 or bb <= 1e-20:
        return 0.0
    return max(-0.5, min(1.0, ab / math.sqrt(aa * bb)))


def correct_for_correlation(fade_out: np.ndarray, fade_in: np.ndarray, rho: float,
                            scratch: np.ndarray) -> None:
    """Rescale equal-power gains in place so a mix with correlation ``rho`` keeps its power.

    The mix ``a*x + b*y`` of unit-power signals has power ``a^2 + b^2 + 2*rho*a*b``
    = ``1 + 2*rho*a*b`` for equal-power gains; dividing both gains by its
    square root holds it at 1 (``rho = 0``: unchanged; ``rho = 1``: the gains
    sum to 1, an amplitude-preserving fade, so an in-phase seam does not swell
    by 3 dB; ``rho < 0``: the gains grow so partly opposed phases do not dip).
    All three arrays are float32 of one length; audio thread safe.
    """
    if rho == 0.0:
        return
    np.multiply(fade_out, fade_in, out=scratch)
    np.multiply(scratch, 2.0 * rho, out=scratch)
    np.add(scratch, 1.0, out=scratch)
    np.sqrt(scratch, out=scratch)
    np.divide(fade_out, scratch, out=fade_out)
    np.divide(fade_in, scratch, out=fade_in)


def crossfade_equal_power(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Mix ``old`` out and ``new`` in over their common length, equal-power.

    Both are ``(frames,)`` or ``(frames, channels)`` and must have the same
    shape; the result is float32 of that shape.
    """
    old = np.asarray(old, dtype=np.float32)
    new = np.asarray(new, dtype=np.float32)
    if old.shape != new.shape:
        raise ValueError(f"crossfade needs equal shapes, got old {old.shape} and new {new.shape}")
    fade_out, fade_in = equal_power_gains(old.shape[0])
    if old.ndim == 2:
        fade_out, fade_in = fade_out[:, None], fade_in[:, None]
    return (old * fade_out + new * fade_in).astype(np.float32)
