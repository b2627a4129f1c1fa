"""Line-based quad finder: rectangles seen in perspective, from straight edge segments.

Where it sits: :func:`capture.detect.detect_artworks` traces the contours of
its edge map and keeps those that simplify to quads. A contour breaks when a
visitor stands in front of a painting (the silhouette joins the outline), when
a stretch of a side has too little contrast to close it, or when glare washes
out a corner; then no contour is a quad, although the sides are still plainly
visible as straight edges. :func:`line_quads` finds those quads.

How: every contour of the edge map is simplified to a polyline; its straight
pieces are segments. Collinear segments (same direction, within a pixel or two
of one line) are merged into lines, each remembering which stretches of it are
edge (its *support*: every piece of the polylines lying along it, short or
tilted ones too, as a bumpy outline gives): a side partly hidden by a visitor
is one line with a gap.
Lines are split into near-horizontal and near-vertical families (a rectangle
on a wall, seen with the camera's yaw, pitch and roll, keeps that split); the
longest of each are kept, and each quarter of the frame's own longest too (a
big frame's moulding steps or a railing elsewhere would crowd out a small
picture's sides), and every choice of two of each is a candidate quad, its
corners the four line crossings. All candidates are scored at once with
numpy: the fraction of each side that is supported (a visitor may hide most of
one side, or a corner: the stretches of its two sides next to it, or visitors
the lower part), whether the corners are Ls (support reaches them and no line
runs on through them), whether two opposite sides break at the same place with
an edge crossing the quad there (two paintings side by side, not one), and the
quad's shape. Those that pass are returned best first, near-duplicates
suppressed.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

_SEGMENT_EPS = 1.5  # px: polyline tolerance; a straight edge stays one segment
_MERGE_ANGLE = np.deg2rad(2.0)  # collinear segments differ by at most this
_MERGE_OFFSET = 3.0  # px: and lie this close to the line
_JOIN_ANGLE = np.deg2rad(5.0)  # pieces of one side (short, so roughly fitted) differ by this
_H_TILT = np.deg2rad(40.0)  # a painting's top and bottom stay within this of horizontal
_V_TILT = np.deg2rad(25.0)  # its sides within this of vertical (pitch, roll, perspective)
_MAX_LINES = 16  # per family, longest support first...
_PER_QUARTER = 4  # ...and each quarter's longest: n <= 32 bounds the quad count (n^4 / 4)
_MIN_SIDE_COVER = 0.35  # every side must be at least this much edge (visitors hide the rest)
_MIN_HIDDEN_COVER = 0.2  # ...except one, a visitor hiding most of it, when the other three
_WHOLE_COVER = 0.9  # are this whole (else partial quads of occluded works creep in)
_MIN_MEAN_COVER = 0.75  # and the four together this much
_CORNER_WINDOW = 8.0  # px: an L corner has some support this close to it on a side
_CORNER_GAP = 3.0  # px past a corner before looking for a line running on through it
_OVERRUN = 6.0  # px beyond that looked at for a line running on through the corner
_GAP_BINS = 16  # a side is looked at in this many stretches for a break in the middle
_EMPTY_BIN = 0.2  # a stretch with less support than this is a break
_ACROSS_COVER = 0.6  # an edge this well supported from side to side splits a quad in two
_MAX_QUADS = 120  # best supported quads kept for duplicate suppression
_MAX_COS = 0.6  # corners within about 90 +- 53 degrees


def line_segments(contours: Sequence[np.ndarray], min_length: float) -> np.ndarray:
    """Straight pieces (x1, y1, x2, y2) of the contours, at least ``min_length`` long, that
    run near-horizontally or near-vertically (the only ways a painting's sides run)."""
    polys = []
    for contour in contours:
        if len(contour) < 4:
            continue
        _, _, w, h = cv2.boundingRect(contour)
        if max(w, h) >= min_length:
            polys.append(cv2.approxPolyDP(contour, _SEGMENT_EPS, True).reshape(-1, 2))
    if not polys:
        return np.zeros((0, 4), np.float64)
    points = np.concatenate(polys).astype(np.float64)
    # Each vertex joins the next one of its (closed) polyline.
    sizes = np.array([len(p) for p in polys])
    following = np.arange(1, len(points) + 1)
    following[np.cumsum(sizes) - 1] -= sizes
    segments = np.hstack([points, points[following]])
    dx, dy = segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1]
    slope = np.abs(np.arctan2(dy, dx))
    slope = np.minimum(slope, np.pi - slope)  # 0 horizontal .. pi/2 vertical
    keep = (np.hypot(dx, dy) >= min_length) \
        & ((slope <= _H_TILT) | (slope >= np.pi / 2 - _V_TILT))
    return segments[keep]


class _Lines:
    """Collinear segments merged into lines: a point and unit direction for each (horizontal
    ones pointing right, vertical ones down), and the cumulative support along it."""

    def __init__(self, segments: np.ndarray, span: int, min_length: float,
                 per_family: int, pieces: np.ndarray) -> None:
        self.span = span  # the parameter t along a line runs over [-span, span)
        self.direction: np.ndarray  # (n, 2) unit vectors
        self.point: np.ndarray  # (n, 2) a point on each line, where t = 0
        self.cumulative: np.ndarray  # (n, 2 * span + 1) supported length below each t
        self.length: np.ndarray  # (n,) total supported length
        d = segments[:, 2:] - segments[:, :2]
        lengths = np.hypot(d[:, 0], d[:, 1])
        order = np.argsort(-lengths)
        segments, d, lengths = segments[order], d[order], lengths[order]
        # Orient: mostly-horizontal segments point right, mostly-vertical ones down.
        flip = np.where(np.abs(d[:, 0]) >= np.abs(d[:, 1]), d[:, 0] < 0, d[:, 1] < 0)
        segments[flip] = segments[flip][:, [2, 3, 0, 1]]
        d[flip] = -d[flip]
        unit = d / lengths[:, None]
        normals = np.stack([-unit[:, 1], unit[:, 0]], axis=1)
        rho = (normals * segments[:, :2]).sum(1)
        # compatible[i, j]: segment j lies along segment i's line (direction and offset).
        compatible = (unit @ unit.T >= np.cos(_MERGE_ANGLE)) \
            & (np.abs(normals @ segments[:, :2].T - rho[:, None]) <= _MERGE_OFFSET) \
            & (np.abs(normals @ segments[:, 2:].T - rho[:, None]) <= _MERGE_OFFSET)
        # Greedy, longest segment first: each unassigned segment takes its compatible ones.
        group = np.full(len(segments), -1)
        count = 0
        # Only a segment whose compatible ones add up to a side's length can start a line.
        seeds = np.nonzero(compatible.astype(np.float32) @ lengths.astype(np.float32)
                           >= min_length)[0]
        for k in seeds:
            if group[k] != -1:
                continue
            members = compatible[k] & (group == -1)
            if lengths[members].sum() < min_length:
                group[members] = -2  # too little edge to be a side
                continue
            group[members] = count
            count += 1
        used = group >= 0
        if count == 0:
            self.direction = np.zeros((0, 2))
            self.point = np.zeros((0, 2))
            self.cumulative = np.zeros((0, 2 * span + 1), np.float32)
            self.length = np.zeros(0)
            return
        segments, unit, lengths, group = segments[used], unit[used], lengths[used], group[used]
        direction, point, weights = _fit_lines(segments, unit, lengths, group, count)
        # A side broken by a wide gap (a visitor in front of it) is two pieces whose
        # first segments' directions were too rough to reach across the gap; refit,
        # the pieces of one side lie on one line: join them.
        group, count = _join_collinear(segments, group, direction, point, weights)
        direction, point, weights = _fit_lines(segments, unit, lengths, group, count)
        # Keep the lines with the most edge in each family (summed segment length; the
        # support below is what counts, but it costs a row of 2 * span per line).
        horizontal = np.abs(direction[:, 0]) >= np.cos(_H_TILT)
        vertical = np.abs(direction[:, 1]) >= np.cos(_V_TILT)
        keep = np.zeros(count, bool)
        for family in (horizontal, vertical):
            members = np.nonzero(family)[0]
            keep[members[np.argsort(-weights[members], kind="stable")[:per_family]]] = True
        direction, point, count = direction[keep], point[keep], int(keep.sum())
        self.direction, self.point = direction, point
        # Support: every piece of edge along a line (both its ends near it), whatever
        # its length or tilt, not only the segments that made the line: a bumpy
        # outline (strokes touching it, a shadow's edge beside it) leaves short
        # pieces zig-zagging about the side.
        normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
        rho = (normal * point).sum(1)
        near = (np.abs(pieces[:, :2] @ normal.T - rho) <= _MERGE_OFFSET) \
            & (np.abs(pieces[:, 2:] @ normal.T - rho) <= _MERGE_OFFSET)
        which, group = np.nonzero(near)
        segments = pieces[which]
        # Mark each piece's stretch [t1, t2) on its line, then accumulate.
        t1 = ((segments[:, :2] - point[group]) * direction[group]).sum(1)
        t2 = ((segments[:, 2:] - point[group]) * direction[group]).sum(1)
        row = 2 * span + 1
        lo = _bin(np.minimum(t1, t2), span) + group * row
        hi = _bin(np.maximum(t1, t2), span) + group * row
        marks = np.bincount(lo, minlength=count * row) - np.bincount(hi, minlength=count * row)
        covered = (np.cumsum(marks.reshape(count, row), axis=1) > 0).astype(np.float32)
        self.cumulative = np.zeros((count, 2 * span + 1), np.float32)
        np.cumsum(covered[:, :-1], axis=1, out=self.cumulative[:, 1:])
        self.length = self.cumulative[:, -1].astype(np.float64)

    def cover(self, index: np.ndarray, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
        """Supported length of line ``index`` between parameters ``t1`` and ``t2`` (any order)."""
        return np.abs(self.cumulative[index, _bin(t2, self.span)]
                      - self.cumulative[index, _bin(t1, self.span)])


def _chosen(lines: _Lines, family: np.ndarray, width: int, height: int) -> np.ndarray:
    """Of ``family`` (line indices), the ``_MAX_LINES`` with the most support, and the
    ``_PER_QUARTER`` with the most in each quarter of the frame (by the line's centre),
    longest first."""
    order = family[np.argsort(-lines.length[family], kind="stable")]
    quarter = (lines.point[order, 0] >= width / 2) + 2 * (lines.point[order, 1] >= height / 2)
    keep = np.arange(len(order)) < _MAX_LINES
    for k in range(4):
        keep[np.nonzero(quarter == k)[0][:_PER_QUARTER]] = True
    return order[keep]


def _bin(t: np.ndarray, span: int) -> np.ndarray:
    """Index of parameter ``t`` in a row of support, clipped to [0, 2 * span]."""
    index = np.rint(t).astype(np.intp)
    index += span
    np.minimum(index, 2 * span, out=index)
    np.maximum(index, 0, out=index)
    return index


def _fit_lines(segments: np.ndarray, unit: np.ndarray, lengths: np.ndarray, group: np.ndarray,
               count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group of segments: the length-weighted mean direction, the weighted centre, and
    the summed length."""
    weights = np.bincount(group, lengths, count)
    direction = np.stack([np.bincount(group, unit[:, 0] * lengths, count),
                          np.bincount(group, unit[:, 1] * lengths, count)], axis=1)
    direction = direction / np.linalg.norm(direction, axis=1, keepdims=True)
    middle = (segments[:, :2] + segments[:, 2:]) / 2
    point = np.stack([np.bincount(group, middle[:, 0] * lengths, count),
                      np.bincount(group, middle[:, 1] * lengths, count)], axis=1)
    return direction, point / weights[:, None], weights


def _join_collinear(segments: np.ndarray, group: np.ndarray, direction: np.ndarray,
                    point: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber groups so that lines that are pieces of one longer line (end to end, each
    one's ends on the other's line) share a number; returns (group, count)."""
    count = len(weights)
    ends = np.concatenate([segments[:, :2], segments[:, 2:]])
    owner = np.concatenate([group, group])
    t = ((ends - point[owner]) * direction[owner]).sum(1)
    low, high = np.full(count, np.inf), np.full(count, -np.inf)
    np.minimum.at(low, owner, t)
    np.maximum.at(high, owner, t)
    first = point + low[:, None] * direction  # (count, 2): each line's support ends
    last = point + high[:, None] * direction
    normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
    rho = (normal * point).sum(1)
    # Line i against line j's ends: how far off line i, and how far along it beyond its
    # support (a fitted direction is good to a degree or two, so the allowed offset
    # grows with that distance).
    tolerance, alongs = [], []
    for end in (first, last):
        along = direction @ end.T - (direction * point).sum(1)[:, None]  # (i, j)
        beyond = np.maximum(np.maximum(low[:, None] - along, along - high[:, None]), 0.0)
        off = np.abs(normal @ end.T - rho[:, None])
        tolerance.append(off <= _MERGE_OFFSET + np.tan(_MERGE_ANGLE) * beyond)
        alongs.append(along)
    # Pieces of one side lie end to end; parallel edges side by side (a moulding's
    # steps) overlap along their length and stay apart.
    overlap = np.minimum(high[:, None], np.maximum(alongs[0], alongs[1])) \
        - np.maximum(low[:, None], np.minimum(alongs[0], alongs[1]))
    end_to_end = overlap <= _MERGE_OFFSET
    near = tolerance[0] & tolerance[1] & end_to_end
    compatible = (direction @ direction.T >= np.cos(_JOIN_ANGLE)) & near & near.T
    np.fill_diagonal(compatible, True)
    joined = np.full(count, -1)
    total = 0
    for k in np.argsort(-weights, kind="stable"):
        if joined[k] == -1:
            joined[compatible[k] & (joined == -1)] = total
            total += 1
    return joined[group], total


def _corner_tables(lines: _Lines, index: np.ndarray, t: np.ndarray,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """For line ``index[a]`` at its crossing ``t[a, b]`` and each direction s (+1, -1) along it:
    whether its support reaches the crossing from direction s, and whether it runs on past
    the crossing in direction s. Both (A, B, 2)."""
    idx = index[:, None, None]
    sign = np.array([1.0, -1.0])
    t = t[..., None]
    reach = lines.cover(idx, t, t + sign * _CORNER_WINDOW) > 0.3 * _CORNER_WINDOW
    runs_on = lines.cover(idx, t + sign * _CORNER_GAP,
                          t + sign * (_CORNER_GAP + _OVERRUN)) > 0.5 * _OVERRUN
    return reach, runs_on


def _hidden_corner(lines: _Lines, covers: np.ndarray, horizontal: np.ndarray,
                   vertical: np.ndarray, th: np.ndarray, tv: np.ndarray, a: np.ndarray,
                   b: np.ndarray, c: np.ndarray, e: np.ndarray) -> np.ndarray:
    """For each candidate (horizontal lines a, b; vertical c, e; side covers (4, N) in the
    order a, e, b, c), whether a visitor hides one of its corners.

    Corner k + 1 is hidden when the sides k and k + 1 that meet there are each at least
    _MIN_HIDDEN_COVER supported, with no support along the stretch next to that corner
    (half of what each side misses), and the other two sides are whole.
    """
    # Side k runs from corner k to corner k + 1; corners (a, c), (a, e), (b, e), (b, c).
    index = (horizontal[a], vertical[e], horizontal[b], vertical[c])
    start = (th[a, c], tv[a, e], th[b, e], tv[b, c])
    end = (th[a, e], tv[b, e], th[b, c], tv[a, c])
    result = np.zeros(covers.shape[1], bool)
    for k in range(4):
        first, second = k, (k + 1) % 4
        possible = (covers[first] >= _MIN_HIDDEN_COVER) & (covers[second] >= _MIN_HIDDEN_COVER) \
            & (covers[(k + 2) % 4] >= _WHOLE_COVER) & (covers[(k + 3) % 4] >= _WHOLE_COVER) \
            & ~result
        if not possible.any():
            continue
        where = np.nonzero(possible)[0]
        bare = np.ones(len(where), bool)
        # The first side ends at the corner, the second starts there.
        for side, corner_t, far_t in ((first, end[first], start[first]),
                                      (second, start[second], end[second])):
            t0, t1 = corner_t[where], far_t[where]
            stretch = 0.5 * (1.0 - covers[side, where]) * (t1 - t0)
            bare &= lines.cover(index[side][where], t0, t0 + stretch) \
                <= _EMPTY_BIN * np.abs(stretch)
        result[where[bare]] = True
    return result


def _hidden_below(lines: _Lines, covers: np.ndarray, vertical: np.ndarray, tv: np.ndarray,
                  corner: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray,
                  e: np.ndarray) -> np.ndarray:
    """For each candidate (as :func:`_hidden_corner`), whether visitors standing in front
    hide its lower part: the upper side whole, the lower one at least
    _MIN_SIDE_COVER supported, and each vertical side whole or supported from its
    upper corner down (at least _MIN_HIDDEN_COVER) with no support next to its lower one.
    """
    a_upper = corner[a, c, 1] + corner[a, e, 1] < corner[b, c, 1] + corner[b, e, 1]
    possible = (np.where(a_upper, covers[0], covers[2]) >= _WHOLE_COVER) \
        & (np.where(a_upper, covers[2], covers[0]) >= _MIN_SIDE_COVER)
    for side, v in ((1, e), (3, c)):
        cover = covers[side]
        upper_t = np.where(a_upper, tv[a, v], tv[b, v])
        lower_t = np.where(a_upper, tv[b, v], tv[a, v])
        reach = cover * (lower_t - upper_t)  # supported from the upper corner this far
        attached = lines.cover(vertical[v], upper_t, upper_t + reach) >= 0.8 * np.abs(reach)
        stretch = 0.5 * (1.0 - cover) * (upper_t - lower_t)
        bare = lines.cover(vertical[v], lower_t, lower_t + stretch) \
            <= _EMPTY_BIN * np.abs(stretch)
        possible &= (cover >= _WHOLE_COVER) | ((cover >= _MIN_HIDDEN_COVER) & attached & bare)
    return possible


def line_quads(contours: Sequence[np.ndarray], shape: tuple[int, int], min_area: float,
               border: float) -> list[tuple[np.ndarray, float]]:
    """Quads (TL, TR, BR, BL; float32) whose sides are well supported straight edges, with a
    0..1 support score, best first. ``shape`` is (height, width); corners stay ``border`` px
    inside it; quads smaller than ``min_area`` px are left out."""
    height, width = shape
    min_side = 0.5 * float(np.sqrt(min_area))  # a 2:1 quad at the smallest area, seen at 45 deg
    segments = line_segments(contours, 0.5 * min_side)
    if len(segments) < 4:
        return []
    span = int(np.hypot(width, height)) + 1
    lines = _Lines(segments, span, min_side, 2 * _MAX_LINES, line_segments(contours, 0.0))
    direction = lines.direction
    is_horizontal = np.abs(direction[:, 0]) >= np.cos(_H_TILT)
    is_vertical = np.abs(direction[:, 1]) >= np.cos(_V_TILT)
    horizontal = np.nonzero(is_horizontal)[0]
    vertical = np.nonzero(is_vertical)[0]
    horizontal = _chosen(lines, horizontal, width, height)
    vertical = _chosen(lines, vertical, width, height)
    if len(horizontal) < 2 or len(vertical) < 2:
        return []

    # Crossings of every horizontal with every vertical line, as parameters on both.
    ph, dh = lines.point[horizontal][:, None], direction[horizontal][:, None]
    pv, dv = lines.point[vertical][None], direction[vertical][None]
    cross = dh[..., 0] * dv[..., 1] - dh[..., 1] * dv[..., 0]  # (H, V); never near 0 here
    diff = pv - ph
    th = (diff[..., 0] * dv[..., 1] - diff[..., 1] * dv[..., 0]) / cross  # along horizontal
    tv = (diff[..., 0] * dh[..., 1] - diff[..., 1] * dh[..., 0]) / cross  # along vertical
    corner = ph + th[..., None] * dh  # (H, V, 2)

    # Side support: horizontal h between verticals a and b; vertical v likewise.
    side_h = np.abs(th[:, :, None] - th[:, None, :])
    cover_h = lines.cover(horizontal[:, None, None], th[:, :, None], th[:, None, :]) \
        / np.maximum(side_h, 1.0)
    tvt = tv.T
    side_v = np.abs(tvt[:, :, None] - tvt[:, None, :])
    cover_v = lines.cover(vertical[:, None, None], tvt[:, :, None], tvt[:, None, :]) \
        / np.maximum(side_v, 1.0)

    # Every pair of horizontals with every pair of verticals: first, whether each of the
    # four sides is long and supported enough (booleans, cheap), then the mean support.
    h1, h2 = np.triu_indices(len(horizontal), 1)
    v1, v2 = np.triu_indices(len(vertical), 1)
    side_ok_h = ((cover_h >= _MIN_HIDDEN_COVER) & (side_h >= min_side))[:, v1, v2]  # (H, Q)
    side_ok_v = ((cover_v >= _MIN_HIDDEN_COVER) & (side_v >= min_side))[:, h1, h2]  # (V, P)
    good = (side_ok_h[h1] & side_ok_h[h2]) & (side_ok_v[v1] & side_ok_v[v2]).T  # (P, Q)
    i, j = np.nonzero(good)
    a, b, c, e = h1[i], h2[i], v1[j], v2[j]
    covers = np.stack([cover_h[a, c, e], cover_v[e, a, b], cover_h[b, c, e], cover_v[c, a, b]])
    score = covers.mean(axis=0)
    # A visitor may hide most of one side (down to _MIN_HIDDEN_COVER) of an otherwise
    # whole outline; not of two sides, nor of an outline that is broken elsewhere too.
    ranked = np.sort(covers, axis=0)
    well_supported = (score >= _MIN_MEAN_COVER) & (ranked[1] >= _MIN_SIDE_COVER) \
        & ((ranked[0] >= _MIN_SIDE_COVER) | (ranked[1] >= _WHOLE_COVER))
    # ...or a corner: the two sides that meet there lose the stretches next to it,
    # down to _MIN_HIDDEN_COVER each, while the other two stay whole.
    well_supported |= _hidden_corner(lines, covers, horizontal, vertical, th, tv, a, b, c, e)
    # ...or its lower part, where visitors stand (then only its top corners show).
    below = _hidden_below(lines, covers, vertical, tv, corner, a, b, c, e) & ~well_supported
    well_supported |= below
    if not well_supported.any():
        return []
    a, b, c, e = a[well_supported], b[well_supported], c[well_supported], e[well_supported]
    score, below = score[well_supported], below[well_supported]

    # Top line first, then left line first (lines are numbered by length, not position).
    swap = corner[a, c, 1] + corner[a, e, 1] > corner[b, c, 1] + corner[b, e, 1]
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    swap = corner[a, c, 0] + corner[b, c, 0] > corner[a, e, 0] + corner[b, e, 0]
    c, e = np.where(swap, e, c), np.where(swap, c, e)
    quads = np.stack([corner[a, c], corner[a, e], corner[b, e], corner[b, c]], axis=1)

    # Shape: inside the frame, convex, clockwise, corners not too sharp, big enough.
    nxt = [1, 2, 3, 0]
    vectors = quads[:, nxt] - quads  # side k runs from corner k to corner k + 1
    lengths = np.hypot(vectors[..., 0], vectors[..., 1])
    prev = [3, 0, 1, 2]
    cosine = -(vectors * vectors[:, prev]).sum(-1) / (lengths * lengths[:, prev] + 1e-9)
    turn = vectors[..., 0] * vectors[:, nxt, 1] - vectors[..., 1] * vectors[:, nxt, 0]
    area = 0.5 * (quads[..., 0] * quads[:, nxt, 1] - quads[:, nxt, 0] * quads[..., 1]).sum(1)
    ok = (quads[..., 0] >= border).all(1) & (quads[..., 0] <= width - 1 - border).all(1) \
        & (quads[..., 1] >= border).all(1) & (quads[..., 1] <= height - 1 - border).all(1) \
        & (turn > 0).all(1) & (np.abs(cosine).max(1) <= _MAX_COS) & (area >= min_area)

    a, b, c, e, quads, score, area = a[ok], b[ok], c[ok], e[ok], quads[ok], score[ok], area[ok]
    below = below[ok]

    # Corners: Ls, not crossings. Support reaches at least three corners along one of
    # their sides (an occluder may hide a corner; visitors in front of the lower part,
    # both lower ones), and no line runs on past a corner.
    reach_h, runs_h = _corner_tables(lines, horizontal, th)
    reach_v, runs_v = _corner_tables(lines, vertical, tvt)
    reached = np.zeros((4, len(a)), bool)
    ok = np.ones(len(a), bool)
    for k, (hor, ver, along_h, along_v) in enumerate(((a, c, 0, 0), (a, e, 1, 0), (b, e, 1, 1),
                                                      (b, c, 0, 1))):
        # along = 0: the quad lies in the +t direction from this corner on that line.
        reached[k] = reach_h[hor, ver, along_h] | reach_v[ver, hor, along_v]
        ok &= ~(runs_h[hor, ver, 1 - along_h] | runs_v[ver, hor, 1 - along_v])
    ok &= (reached.sum(axis=0) >= 3) | (below & reached[0] & reached[1])
    a, b, c, e, quads, score, area = a[ok], b[ok], c[ok], e[ok], quads[ok], score[ok], area[ok]

    # Two paintings side by side with aligned tops and bottoms make a quad whose top and
    # bottom both break at the same place (the wall between them). An occluder breaks one
    # side, or sides meeting at a corner; glare or a faint stretch breaks a side somewhere,
    # seldom two opposite sides at the same place.
    steps = np.arange(1, _GAP_BINS - 1)[None] / _GAP_BINS
    empty = []
    for index, t0, t1 in ((horizontal[a], th[a, c], th[a, e]), (vertical[e], tv[a, e], tv[b, e]),
                          (horizontal[b], th[b, c], th[b, e]), (vertical[c], tv[a, c], tv[b, c])):
        step = (t1 - t0)[:, None]
        start = t0[:, None] + steps * step
        empty.append(lines.cover(index[:, None], start, start + step / _GAP_BINS)
                     < _EMPTY_BIN * np.abs(step) / _GAP_BINS)
    # Only a break with an edge crossing the quad from side to side there (the facing
    # sides of the two paintings) is that; glare at the top and a visitor at the bottom
    # leave none.
    margin = 0.5 * min_side
    across_v = (cover_v[:, a, b].T >= _ACROSS_COVER) \
        & (th[a] > np.minimum(th[a, c], th[a, e])[:, None] + margin) \
        & (th[a] < np.maximum(th[a, c], th[a, e])[:, None] - margin)  # (N, V)
    across_h = (cover_h[:, c, e].T >= _ACROSS_COVER) \
        & (tv[:, c].T > np.minimum(tv[a, c], tv[b, c])[:, None] + margin) \
        & (tv[:, c].T < np.maximum(tv[a, c], tv[b, c])[:, None] - margin)  # (N, H)
    ok = ~(((empty[0] & empty[2]).any(1) & across_v.any(1))
           | ((empty[1] & empty[3]).any(1) & across_h.any(1)))
    if not ok.any():
        return []
    quads, score, area = quads[ok], score[ok], area[ok]

    # Near-duplicates (an edge band's two contours give two lines a pixel or two apart):
    # keep the best supported.
    order = np.argsort(-score, kind="stable")[:_MAX_QUADS]
    quads, score, area = quads[order], score[order], area[order]
    close = np.abs(quads[:, None] - quads[None]).max(axis=(2, 3)) \
        < np.maximum(3.0, 0.03 * np.sqrt(area))[:, None]
    kept: list[tuple[np.ndarray, float]] = []
    dropped = np.zeros(len(quads), bool)
    for k in range(len(quads)):
        if not dropped[k]:
            kept.append((quads[k].astype(np.float32), float(score[k])))
            dropped |= close[k]
    return kept
