"""N-of-M confirmation, the grace period before 'empty', and identity by memory."""

from __future__ import annotations

import numpy as np
import pytest

from capture.config import StabilityConfig
from capture.descriptor import VECTOR_LENGTH, Descriptor
from capture.stability import (
    GLANCE_SIZE,
    ArtworkMemory,
    Sighting,
    StabilityTracker,
    glance_distance,
    glance_signature,
)

QUAD = np.array([[100, 100], [400, 100], [400, 300], [100, 300]], np.float32)


def _sighting(look: float, shift: float = 0.0, score: float = 0.9) -> Sighting:
    """A sighting whose glance is a flat colour ``look`` (0..1); looks tell views apart."""
    glance = np.full(GLANCE_SIZE * GLANCE_SIZE * 3, look, np.float32)
    return Sighting(QUAD + shift, score, glance)


def _feed(tracker: StabilityTracker, pattern: str, t0: float = 0.0, dt: float = 0.1,
          looks: dict[str, float] | None = None) -> list:
    """Feed one sighting per character: '.' none, any letter a view with that look."""
    looks = looks or {"A": 0.2, "B": 0.8}
    states = []
    for k, char in enumerate(pattern):
        sighting = None if char == "." else _sighting(looks[char])
        states.append(tracker.update(t0 + k * dt, sighting))
    return states


def test_a_view_counts_once_it_holds_n_of_the_last_m_frames() -> None:
    tracker = StabilityTracker(StabilityConfig(hold_frames=4, window_frames=6, lost_after_s=2.0))
    states = _feed(tracker, "A.A.AA")
    assert [s.changed for s in states] == [False] * 5 + [True]
    assert states[-1].state == "artwork" and states[-1].track is not None
    assert states[-1].quad is not None and np.allclose(states[-1].quad, QUAD)
    assert 0.0 < states[-1].confidence <= 1.0


def test_three_of_six_is_not_enough() -> None:
    tracker = StabilityTracker(StabilityConfig(hold_frames=4, window_frames=6, lost_after_s=5.0))
    states = _feed(tracker, "A..A..A..A..A..")
    assert not any(s.changed for s in states)
    assert states[-1].state == "unknown"


def test_a_flicker_of_another_view_does_not_switch() -> None:
    tracker = StabilityTracker(StabilityConfig(hold_frames=4, window_frames=6))
    states = _feed(tracker, "AAAAAABBAAAAAB.AA")
    assert sum(s.changed for s in states) == 1
    assert len({s.track for s in states if s.track is not None}) == 1


def test_a_new_view_takes_over_after_n_frames() -> None:
    tracker = StabilityTracker(StabilityConfig(hold_frames=4, window_frames=6))
    states = _feed(tracker, "AAAABBBBBB")
    changes = [k for k, s in enumerate(states) if s.changed]
    assert changes == [3, 7]
    assert states[3].track != states[7].track


def test_a_view_reframed_by_recognition_is_followed_as_the_same_view() -> None:
    """The quad finder saw a piece of a picture (look A, a small quad); recognition placed
    the whole picture (look B, a larger quad, its centre moved) and the loop follows
    that: one view, not a second arrival; without the reframe, a second one."""
    whole = np.array([[40, 60], [520, 60], [520, 380], [40, 380]], np.float32)
    looks = {"A": 0.2, "B": 0.8}
    for reframed in (True, False):
        tracker = StabilityTracker(StabilityConfig(hold_frames=4, window_frames=6))
        states = _feed(tracker, "AAAA", looks=looks)
        assert states[-1].changed
        if reframed:
            glance = np.full(GLANCE_SIZE * GLANCE_SIZE * 3, looks["B"], np.float32)
            tracker.reframe(0.35, whole, glance)
            assert np.allclose(tracker.update(0.35, None).quad, whole)  # at once, unsmoothed
        later = [tracker.update(0.4 + 0.1 * k, Sighting(whole + 3, 0.9, np.full(
            GLANCE_SIZE * GLANCE_SIZE * 3, looks["B"], np.float32))) for k in range(8)]
        assert sum(s.changed for s in later) == (0 if reframed else 1), reframed
        assert {s.track for s in later} == {states[-1].track} or not reframed
        assert later[-1].state == "artwork"
    # nothing confirmed: nothing to reframe
    idle = StabilityTracker(StabilityConfig(hold_frames=4, window_frames=6))
    idle.reframe(0.0, whole, np.zeros(GLANCE_SIZE * GLANCE_SIZE * 3, np.float32))
    assert idle.update(0.1, None).quad is None


def test_lost_view_turns_empty_only_after_the_grace_period() -> None:
    config = StabilityConfig(hold_frames=4, window_frames=6, lost_after_s=1.0)
    tracker = StabilityTracker(config)
    _feed(tracker, "AAAA", t0=0.0)  # confirmed at t=0.3, last seen at 0.3
    during = [tracker.update(t, None) for t in (0.5, 0.9, 1.29)]
    assert all(s.state == "artwork" and not s.changed for s in during)
    after = tracker.update(1.35, None)
    assert after.changed and after.state == "empty" and after.track is None
    assert after.quad is None
    assert tracker.update(1.4, None).changed is False  # said once


def test_a_short_gap_keeps_the_track_and_a_long_one_asks_again() -> None:
    tracker = StabilityTracker(StabilityConfig(hold_frames=4, window_frames=6, lost_after_s=2.0))
    states = _feed(tracker, "AAAA" + "." * 3 + "AAAA")  # the track is still in the window
    assert sum(s.changed for s in states) == 1
    # After the window has emptied, the view is confirmed afresh as a new track
    # (the loop identifies it again; the memory gives the same artwork id),
    # and it never went "empty" in between.
    more = _feed(tracker, "." * 10 + "AAAA", t0=1.1)
    assert [s.changed for s in more].count(True) == 1
    assert all(s.state == "artwork" for s in more)
    assert more[-1].track != states[-1].track


def test_a_similar_looking_view_elsewhere_is_another_track() -> None:
    tracker = StabilityTracker(StabilityConfig(hold_frames=2, window_frames=3))
    first = [tracker.update(0.1 * k, _sighting(0.2)) for k in range(3)]
    moved = [tracker.update(0.3 + 0.1 * k, _sighting(0.2, shift=250.0)) for k in range(3)]
    assert first[-1].track != moved[-1].track and moved[1].changed


def test_nothing_at_start_becomes_empty_after_the_grace_period() -> None:
    tracker = StabilityTracker(StabilityConfig(lost_after_s=1.0))
    states = _feed(tracker, "." * 12)  # t = 0.0 .. 1.1
    assert [s.state for s in states[:10]] == ["unknown"] * 10
    assert states[11].changed and states[11].state == "empty"


def test_quad_is_smoothed_but_follows_a_jump() -> None:
    tracker = StabilityTracker(StabilityConfig(hold_frames=2, window_frames=3))
    tracker.update(0.0, _sighting(0.2))
    state = tracker.update(0.1, _sighting(0.2, shift=4.0))
    moved = float((state.quad - QUAD).mean())
    assert 0.5 < moved < 3.5  # smoothed (One Euro), not the raw corners
    state = tracker.update(0.2, _sighting(0.2, shift=40.0))
    assert np.allclose(state.quad, QUAD + 40.0)  # a re-framing is followed at once
    assert not state.changed


def test_hold_larger_than_window_is_refused() -> None:
    with pytest.raises(ValueError, match="hold_frames must be <= window_frames"):
        StabilityTracker(StabilityConfig(hold_frames=7, window_frames=6))


def test_glance_signature_tells_views_apart() -> None:
    red = np.full((32, 32, 3), (30, 30, 200), np.uint8)
    noisy_red = np.clip(red + np.random.default_rng(0).normal(0, 4, red.shape), 0, 255)
    blue = np.full((32, 32, 3), (200, 60, 30), np.uint8)
    a, b, c = (glance_signature(x.astype(np.uint8)) for x in (red, noisy_red, blue))
    assert a.shape == (GLANCE_SIZE * GLANCE_SIZE * 3,)
    assert glance_distance(a, b) < 0.02 < 0.1 < glance_distance(a, c)


def _descriptor(direction: int, noise: float = 0.0) -> Descriptor:
    vector = np.zeros(VECTOR_LENGTH, np.float32)
    vector[direction] = 1.0
    vector += noise
    vector /= np.linalg.norm(vector)
    return Descriptor(features={"brightness": float(direction)}, vector=vector)


def test_memory_reuses_ids_for_the_same_artwork_and_numbers_new_ones() -> None:
    memory = ArtworkMemory(same_artwork_distance=0.12)
    first, _, new = memory.identify(_descriptor(0))
    assert (first, new) == ("art-001", True)
    second, _, new = memory.identify(_descriptor(1))
    assert (second, new) == ("art-002", True)
    again, remembered, new = memory.identify(_descriptor(0, noise=0.005))
    assert (again, new) == ("art-001", False)
    assert remembered.features == {"brightness": 0.0}  # the first view's features
    assert len(memory) == 2 and memory.get("art-002") is not None


def test_memory_is_bounded_and_forgets_the_longest_unseen() -> None:
    memory = ArtworkMemory(same_artwork_distance=0.12, capacity=2)
    memory.identify(_descriptor(0))
    memory.identify(_descriptor(1))
    memory.identify(_descriptor(0))  # art-001 seen again: art-002 is now the oldest
    memory.identify(_descriptor(2))
    assert len(memory) == 2
    assert memory.get("art-002") is None and memory.get("art-001") is not None
    assert memory.identify(_descriptor(1))[0] == "art-004"  # forgotten, so new
