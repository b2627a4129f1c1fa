"""Equal-power crossfade math."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio_out.crossfade import crossfade_equal_power, equal_power_gains, fill_equal_power_gains


@given(st.integers(min_value=0, max_value=20000))
def test_gains_conserve_power_and_are_monotonic(n: int) -> None:
    fade_out, fade_in = equal_power_gains(n)
    assert fade_out.shape == fade_in.shape == (n,)
    assert fade_out.dtype == np.float32
    np.testing.assert_allclose(fade_out.astype(np.float64) ** 2 + fade_in.astype(np.float64) ** 2,
                               1.0, atol=1e-6)
    assert np.all(np.diff(fade_out) <= 0) and np.all(np.diff(fade_in) >= 0)
    np.testing.assert_allclose(fade_out[::-1], fade_in, atol=1e-6)
    if n >= 2:
        assert fade_in[0] < 0.5 < fade_out[0] and fade_in[-1] > 0.5 > fade_out[-1]


@given(st.integers(min_value=1, max_value=4096))
def test_preallocated_gains_match(n: int) -> None:
    out, inn = np.zeros(4096, np.float32), np.zeros(4096, np.float32)
    fill_equal_power_gains(n, out, inn, np.arange(4096, dtype=np.float32))
    ref_out, ref_in = equal_power_gains(n)
    np.testing.assert_allclose(out[:n], ref_out, atol=2e-6)
    np.testing.assert_allclose(inn[:n], ref_in, atol=2e-6)


def test_crossfade_of_uncorrelated_noise_keeps_power() -> None:
    rng = np.random.default_rng(0)
    old, new = rng.standard_normal((2, 200_000, 2)).astype(np.float32)
    mixed = crossfade_equal_power(old, new)
    # Power in the middle, where both are at -3 dB, stays at the inputs' power.
    middle = mixed[90_000:110_000]
    assert np.mean(middle**2) == pytest.approx(1.0, rel=0.05)
    np.testing.assert_allclose(mixed[0], old[0], atol=1e-3)
    np.testing.assert_allclose(mixed[-1], new[-1], atol=1e-3)


def test_crossfade_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="equal shapes"):
        crossfade_equal_power(np.zeros((10, 2)), np.zeros((11, 2)))
