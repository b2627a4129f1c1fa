"""Artwork detection: find painting-like quadrilaterals in a camera frame and rectify them.

Where it sits: for every frame, ``capture.loop`` calls :func:`detect_artworks`,
picks the :func:`choose_primary` detection, and rectifies it (:func:`rectify`)
for the stability tracker's glance and, on a change, for the descriptor.

How, in four steps:

1. Edges. The frame is downscaled to ``detect_width`` (640 px; corners are
   then accurate to about 2 px at 1280) and Canny edges are taken, after a
   blur that silences sensor noise and wall texture, on luminance (levels
   stretched in low light), on the yellow-blue opponent channel (a pale blue
   sky against a white mount differs in colour, not luminance); the
   luminance gradient is amplified where local contrast is low (a dark
   canvas on a dark wall), see :func:`_luminance_edges`.
2. Candidate quads, two ways. (a) Contours of the edge map whose convex hull
   simplifies to a plausible quad that fills it, with every side running
   along edges (a hull that bridges a painting and the caption card touching
   it has a side over bare wall); where every side runs along edges all the
   way, the hull may bulge more (a drop shadow's edge, strokes touching the
   outline). (b) :func:`capture.quads.line_quads`:
   quads assembled from straight edge lines, which still finds a picture
   whose outline no contour closes: a visitor standing in front of a corner
   or a side, a faint stretch of edge, glare. It is given only the contours
   that no contour quad explains: not a contour quad's own outline, nor
   anything inside a contour quad that stands alone (no other one beside
   it; side by side they may be pieces of one picture, a Mondrian's blocks).
3. The picture in each nest. Framed works give nested quads: the moulding's
   outer edge, its steps, the mount, the picture (and, from the lines, mixes
   of their sides). For each outermost quad, the picture is the smallest
   nested quad (covering at least ``_NEST_MIN_AREA_RATIO`` of it) that it
   surrounds with a mounting: a band of roughly even width all round,
   measured with perspective taken out (one side may be shared where a mount
   edge is too faint to trace, or two that meet at a corner, the lit ones, if
   the band is narrow), that is plain along its sides (a moulding or
   a mount, not painted content; one side may be busy where a visitor stands
   in front of it). A region of the painting, like the field
   below a horizon or a block of a Mondrian, fails one or the other. Of
   several tracings of that outline, the best supported is kept.
   :func:`_peel_to_picture` then steps in further where the picture's own
   edge never became a quad (a busy painting touching its frame). An outline
   reaching the view's edge (a large frame filling the view) is looked into
   too; a picture found in it clear of that edge is kept, the rest is taken
   for a work the edge cuts.
4. One detection per painting: of detections that overlap, the best stays.
5. Oval and round pictures (:func:`_ovals`): an outline an ellipse fits
   closely, painted inside, with a frame or a plain wall round it, and not
   inside or around a picture already found; its quad is the ellipse's
   bounding box.
6. Caption cards and stretches of wall (:func:`_without_cards`): a quad no
   mounting was traced round that is a plain card with print on it, hung bare
   on a plain wall, and a small thing beside a bigger picture in view, is a
   card, not a picture; one that is bare wall inside, the wall it continues
   across one of its sides (rails of a barrier, a bench, a doorway's jambs
   round a stretch of wall), is wall.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from capture.quads import line_quads

MIN_AREA_FRACTION = 0.01  # of the frame; smaller quads are too far away to describe
_MIN_FILL = 0.92  # a contour's quad covers at least this much of its hull (and vice versa)
_LOOSE_FILL = 0.85  # ...or this much, when every side runs along the edge map:
_WHOLE_SIDE_GAP = 0.1  # no stretch off it longer than this fraction of the side
_MAX_SIDE_GAP = 0.25  # of a contour quad's side: a longer stretch off the edge map is a bridge
_CUT_CORNER = 0.6  # of the sides it joins: the largest cut corner of an octagonal frame
_MAX_BOW = 0.06  # of a side's length: how far a lens may bend it off its chord
_BOWED_CORNER_COS = float(np.cos(np.radians(20.0)))  # ...and leave a corner this far off it
_GAP_SAMPLES = np.linspace(0.05, 0.95, 48, dtype=np.float32)  # along a side; corners are round
_SIDE_TOLERANCE = (0.0, 1.0, 2.0)  # px inward: a hull's side may pass this far off its edge
_SAME_OUTLINE = 0.85  # IoU: two quads trace the same outline
_CLEARER = 0.05  # support (fill) by which another tracing of an outline beats the first found
_INSIDE_FRACTION = 0.95  # of a quad's area within another: it is nested in it
_OVERLAP_FRACTION = 0.5  # of the smaller detection's area: two detections of one painting
_NEST_MIN_AREA_RATIO = 0.4  # a picture covers at least this much of its frame's outline
_BAND_RECTIFIED_SIDE = 160  # px: the band test looks at the outer quad rectified to this size
_ALONG_BAND_STEP = 6.0  # grey levels per px along a side: more is painted content, not moulding
_BUSY_BAND_FRACTION = 0.03  # a band with more such pixels than this is painted content
_PEEL_STEP = 8.0  # along-side change (contrast-normalised levels/px) that marks painted content
_PEEL_BUSY = 0.15  # fraction of a line that must change along it to be painted content
_PEEL_EDGE = 8.0  # across-side step (levels/px) of a moulding step or the picture's edge
_PEEL_CONTINUOUS = 0.75  # fraction of the side's length such an edge must run
_PEEL_PARTLY_CONTINUOUS = 0.5  # on one side, where a visitor hides the rest of the edge
_PEEL_MIN_BAND = 0.04  # of the quad's side: thinner bands are not peeled
_MIN_INSET = 1.5  # px at detection scale: a thinner band is one edge traced twice
_BAND_EVENNESS = 0.35  # a mount's narrowest side is at least this fraction of its widest
_MATERIAL_APART = 0.7  # Bhattacharyya distance of the band's colours from the picture's, at least
_MATERIAL_ALIKE = 0.1  # ...and each side nearer the rest of the band than the picture by this
_MATERIAL_BINS = 8  # per channel of the Lab histograms; chroma over +-_MATERIAL_CHROMA
_MATERIAL_CHROMA = 40.0
_RIM = 0.03  # of the quad's short side: its outer rim, what a frame is made of
_FRAME_DEPTH = 0.3  # of the short side: the deepest a frame's band is looked for
_CHROMA_EDGE_GAIN = 2.0  # Lab chroma steps count this much against stretched lightness ones
_EDGE_WINDOW = 2  # px: a straight edge's step is the strongest of its column this far round
_SNAP = 3  # px at the band side: how far a colour step is moved to a straight edge
_SURFACE_CLEAR = 0.02  # of its sides (2 px at least): what hangs on a surface stands clear of it
_SURFACE_HELD = 0.6  # of its area: what hangs on a surface covers at most this much of it
_SURFACE_SHADOW = 0.03  # of its short side: grown round each outline on it (a drop shadow)
_SURFACE_DENSE = 0.1  # share of changing pixels round a point that makes it content
_SURFACE_CONTENT = 0.4  # of a surface round its outlines: content there (works not traced)
_SURFACE_RIM = 0.08  # of its short side: the band inside its edge...
_SURFACE_RIM_CONTENT = 0.1  # ...that is plain (content there: a picture's painted matter)
_EVENER = 0.2  # band evenness (narrowest / widest) by which a picture beats a region in it
_NARROW_BAND = 0.15  # of the outer quad's short side: a band with two sides shared is this thin
_CARD_BESIDE = 4.0  # a caption card is this many times smaller than a picture in view, at least
_CARD_SIDE = 96  # px: the card test looks at the quad rectified to this size at most
_CARD_RIM = 0.04  # of each side: the card's edge, left out
_CARD_NOISE = 8.0  # grey levels: within this of the ground, plain whatever the print's contrast
_CARD_PLAIN = 0.2  # of the 2-98 % spread: within this of the ground (median), plain
_CARD_MARK = 0.35  # ...and this far from it, print
_CARD_GROUND = 0.8  # share of a card that is plain, at least
_CARD_MARKS = 0.01  # ...and that is print
_CARD_RING = 0.15  # of its size: the ring round a card looked at for a frame or a wall
_CARD_EDGE = 0.03  # of its size: the card's own edge (and its shadow), left out of the ring
_CARD_WALL = 0.75  # share of that ring without a step: a wall (a card may touch a frame on a side)
_WALL_CONTENT = 0.1  # share of changing pixels inside a stretch of wall, at most
_WALL_SAME = 5.0  # CIE76 delta E: the wall just outside one side is the inside's colour
_APART_SHARE = 0.15  # of an outer quad: a work beside the wall its outline crosses, at least
_APART_MARGIN = 0.05  # of a side, at each end: its corners, looked at by the sides they join
_APART_STEP = 2.0  # px at detection scale: where two opposite sides are looked at
_APART_GAP = 6.0  # px at detection scale: the narrowest wall between two works' outlines
_WALL_STRIP = (1.05, 1.15)  # of the quad's size about its centre: that strip outside a side
_NEXT = np.array([1, 2, 3, 0])  # the following corner of a quad
_PREV = np.array([3, 0, 1, 2])
_ADJACENT = 8.0  # px: a contour quad this close to another is one piece of a bigger outline
_EXPLAINED_GROW = 3.0  # px: contours within a contour quad grown by this are explained by it
_GAIN_CELL = 8  # px: local contrast is measured on the frame shrunk by this factor
_GAIN_WINDOW = 3  # cells: over this neighbourhood (24 px at detection scale)
_GAIN_CONTRAST = 25.0  # grey-level spread below which the gradient is amplified
_GAIN_MAX = 3.0  # at most this much (noise grows with it)
_BORDER_MARGIN = 2  # px at detection scale; quads closer to the frame edge are cut off
_STRETCH_BELOW = 100.0  # grey levels: a frame whose 1-99 % range is narrower is stretched
_OVAL_MIN_POINTS = 12  # hull points an oval's outline has at least (a quad's hull has ~4-8)
_OVAL_MIN_ASPECT = 0.3  # an oval's minor axis is at least this fraction of its major
_OVAL_AREA = 0.1  # the outline's hull covers the fitted ellipse's area to within this
_OVAL_DEVIATION = 0.02  # mean radial distance of the hull's points from the ellipse, relative
_OVAL_CONCENTRIC = 0.05  # of the oval's size: how far its frame's centre may be off its own
_OVAL_BAND = 5.0  # px at detection scale: the narrowest frame band round an oval
_OVAL_INSIDE = (0.0, 0.8)  # of an oval's axes: the inside looked at for painted content
_OVAL_AROUND = (1.05, 1.25)  # ...and the ring round it, a wall or more painted content
_OVAL_PAINTED = 40.0  # grey levels between the 10th and 90th percentiles of painted content
_OVAL_FRAME = 2.5  # the frame's ellipse's area over the picture's, at most
_OVAL_SCORE = 0.8  # as a bare rectangle: a frame, but no mounting band traced


@dataclass(frozen=True, eq=False)  # holds arrays: == is identity
class Detection:
    """One artwork candidate: its quad in full-resolution pixels (TL, TR, BR, BL), score, size."""

    quad: np.ndarray  # float32 (4, 2)
    score: float  # 0..1, how painting-like (rectangular, framed)
    area_fraction: float  # quad area / frame area


def detect_artworks(frame_bgr: np.ndarray, detect_width: int = 640,
                    min_area_fraction: float = MIN_AREA_FRACTION,
                    beside: Sequence[np.ndarray] = ()) -> list[Detection]:
    """Painting-like quadrilaterals in ``frame_bgr``, best first, pictures rather than frames.

    ``min_area_fraction`` (of the frame) is the smallest quad looked at: below the
    default, caption cards, tiles and window panes come too, so a caller that asks
    for less keeps such a quad only where something else (a catalogue) vouches for it.
    ``beside``: quads (frame px) of pictures known to be in view that the quad finder
    may not trace (works the catalogue located): a caption card beside one of them is a
    card (:func:`_without_cards`) as it is beside a picture traced here.
    """
    height, width = frame_bgr.shape[:2]
    scale = min(1.0, detect_width / width)
    if scale < 1.0:
        small = cv2.resize(frame_bgr, (int(round(width * scale)), int(round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    else:
        small = frame_bgr
    small_h, small_w = small.shape[:2]
    # Edges on luminance, plus on the yellow-blue opponent channel: a pale blue
    # sky against a white mount differs little in luminance but clearly in
    # colour. (Canny on all three BGR channels finds the same, at 3x the cost.)
    # The opponent channel is B - (R + G) / 2 around mid-grey, as uint8.
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    blue, green, red = cv2.split(small)
    yellow_blue = cv2.addWeighted(blue, 1.0, cv2.addWeighted(green, 0.5, red, 0.5, 0.0), -1.0,
                                  128.0)
    # Low light: stretch the levels so the fixed Canny thresholds still see the
    # edges of a dim room (a gain of 0.25 would otherwise put most below them).
    low, high = _percentiles(grey[::4, ::4], 1.0, 99.0)
    if high - low < _STRETCH_BELOW:
        gain = _STRETCH_BELOW / max(float(high - low), 16.0)
        grey = cv2.convertScaleAbs(grey, alpha=gain, beta=-gain * float(low))
        yellow_blue = cv2.convertScaleAbs(yellow_blue, alpha=gain, beta=128.0 * (1 - gain))
    edges = cv2.bitwise_or(
        _luminance_edges(cv2.GaussianBlur(grey, (5, 5), 0)),
        cv2.Canny(cv2.GaussianBlur(yellow_blue, (5, 5), 0), 30, 80, L2gradient=True),
    )
    # Close one-pixel gaps (a corner lost in the blur) before tracing contours.
    closed = cv2.dilate(edges, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(closed, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)

    min_area = min_area_fraction * small_w * small_h
    candidates: list[tuple[np.ndarray, float, float]] = []  # (quad, area, fill)
    at_edges: list[tuple[np.ndarray, float, float]] = []  # ...of outlines reaching the edge
    # Only contours long enough to hold a piece of a side feed the line finder.
    min_piece = 0.25 * float(np.sqrt(min_area))
    line_contours = []
    for contour in contours:
        if len(contour) < 4:
            continue
        x, y, w, h = cv2.boundingRect(contour)
        if max(w, h) < min_piece:
            continue
        if w * h < min_area:
            line_contours.append(contour)
            continue
        line_contours.append(contour)
        # An outline touching the view's edge is a picture cut by it, or a frame reaching
        # it round a picture wholly in view: looked into, and only a picture in its nest
        # clear of the edge is kept.
        at_edge = _at_edge(np.array([[x, y], [x + w, y + h]]), small_w, small_h)
        hull = cv2.convexHull(contour)
        hull_area = cv2.contourArea(hull)
        if hull_area < min_area:
            continue
        quad = _approx_quad(hull)
        if quad is None:
            continue
        quad_area = float(cv2.contourArea(quad))
        if quad_area < min_area or not _plausible_angles(quad):
            continue
        # How well the quad explains the outline: ~1 for a rectangle's edge,
        # lower for a blob whose hull happened to simplify to four points.
        fill = min(hull_area, quad_area) / max(hull_area, quad_area)
        if fill < _LOOSE_FILL:
            continue
        # A hull bridges the gaps between things that touch (a caption card, the
        # painting beside): its sides must run along edges nearly all the way.
        # Where they run along edges all the way, the outline is the quad's own
        # and a lower fill is bumps on it (a drop shadow's edge, a card touching
        # it, painted content reaching the edge), not a blob.
        gap = _side_gaps(closed, quad).max()
        if gap > _WHOLE_SIDE_GAP:  # or the sides are arcs: a wide lens's barrel distortion
            bowed = _bowed_side_gaps(closed, quad, hull)
            gap = min(gap, float(bowed.max())) if bowed is not None else gap
        if gap > _MAX_SIDE_GAP or (fill < _MIN_FILL and gap > _WHOLE_SIDE_GAP):
            continue
        if at_edge:
            at_edges.append((quad, quad_area, fill))
            continue
        candidates.append((quad, quad_area, fill))
        line_contours.pop()  # its sides are found: the line finder need not trace them
    # The line finder looks only where no contour quad already explains the outlines.
    if candidates and line_contours:
        line_contours = _unexplained(line_contours, _isolated([c[0] for c in candidates]),
                                     (small_h, small_w))
    for quad, support in line_quads(line_contours, (small_h, small_w), min_area,
                                    _BORDER_MARGIN):
        candidates.append((quad, abs(float(cv2.contourArea(quad))), support))

    candidates = _deduplicate(candidates)
    # Ovals first: a stretch of wall holding an oval picture is a surface, not a picture.
    ovals = _ovals(contours, min_area, (small_h, small_w), grey)
    held = [oval[0] for oval in ovals]
    pictures = [(_peel(grey, small, quad), area, score, framed)
                for quad, area, score, framed in _pick_pictures(candidates, grey, small, closed,
                                                                held)]
    if at_edges:
        # Nests round a frame that reaches the edge: a picture found there that is clear of
        # it and not already found is new (the other quads of such a nest were judged in
        # nests of their own above). Only those nests are judged again: the quad finder
        # runs on the live loop's frames.
        nested = [c for c in candidates if any(_inside(c[0], e[0]) for e in at_edges)]
        for quad, area, score, framed in _pick_pictures(_deduplicate(nested + at_edges),
                                                        grey, small, closed, held):
            quad = _peel(grey, small, quad)
            if not _at_edge(quad, small_w, small_h) and not _overlaps(quad, area, pictures):
                pictures.append((quad, area, score, framed))
    kept = _suppress_overlaps(pictures)
    # an oval is never a card: counted as framed; none inside or around a picture found (a
    # round motif in a painting, an oval mount in a rectangular frame)
    kept += [(*oval, True) for oval in ovals if not any(
        _inside(oval[0], picture) or _inside(picture, oval[0]) for picture, *_ in kept)]
    known = [abs(float(cv2.contourArea(np.asarray(q, np.float32) * scale))) for q in beside]
    detections = _without_cards(kept, grey, small, known)
    result = []
    for quad, area, score in detections:
        full = (quad / scale).astype(np.float32)
        result.append(Detection(quad=full, score=float(np.clip(score, 0.0, 1.0)),
                                area_fraction=float(area / (small_w * small_h))))
    result.sort(key=lambda d: d.score * d.area_fraction, reverse=True)
    return result


def primary_weight(detection: Detection, frame_shape: tuple[int, ...]) -> float:
    """How much a detection looks like what the visitor is looking at: large, central, confident."""
    height, width = frame_shape[:2]
    centre = np.array([width / 2, height / 2])
    half_diagonal = float(np.hypot(width, height)) / 2
    offset = float(np.linalg.norm(detection.quad.mean(axis=0) - centre)) / half_diagonal
    return detection.score * float(np.sqrt(detection.area_fraction)) \
        * (1.0 - 0.8 * min(offset, 1.0))


def choose_primary(detections: list[Detection], frame_shape: tuple[int, ...]) -> Detection | None:
    """The detection the visitor is looking at (one frame, no memory): the highest weight."""
    if not detections:
        return None
    return max(detections, key=lambda d: primary_weight(d, frame_shape))


class PrimarySelector:
    """:func:`choose_primary` with hysteresis, so two similar paintings do not flicker.

    The current primary is followed from frame to frame by overlap. Another
    painting takes over only when its :func:`primary_weight` beats the current
    one's by ``switch_ratio`` for ``switch_frames`` frames in a row; if the
    current one is not seen, nothing is primary for up to ``switch_frames``
    frames (a missed detection, a visitor passing) before the best other one
    takes over.
    """

    def __init__(self, switch_ratio: float = 1.3, switch_frames: int = 3) -> None:
        self.switch_ratio = switch_ratio
        self.switch_frames = switch_frames
        self._current: np.ndarray | None = None  # quad of the current primary
        self._challenger_frames = 0
        self._missing_frames = 0

    def select(self, detections: list[Detection],
               frame_shape: tuple[int, ...]) -> Detection | None:
        """This frame's primary detection (or None)."""
        best = choose_primary(detections, frame_shape)
        if self._current is None:
            return self._take(best)
        current = self._current
        followed = max(detections, key=lambda d: quad_iou(d.quad, current), default=None)
        if followed is not None and quad_iou(followed.quad, current) < 0.5:
            followed = None
        if followed is None:
            self._missing_frames += 1
            if self._missing_frames > self.switch_frames:
                return self._take(best)
            return None
        self._missing_frames = 0
        assert best is not None  # followed exists, so detections is not empty
        if best is not followed and primary_weight(best, frame_shape) \
                > self.switch_ratio * primary_weight(followed, frame_shape):
            self._challenger_frames += 1
            if self._challenger_frames >= self.switch_frames:
                return self._take(best)
        else:
            self._challenger_frames = 0
        self._current = followed.quad
        return followed

    def _take(self, detection: Detection | None) -> Detection | None:
        self._current = detection.quad if detection is not None else None
        self._challenger_frames = 0
        self._missing_frames = 0
        return detection


def rectify(frame_bgr: np.ndarray, quad: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Warp the quad (TL, TR, BR, BL, full-res px) of ``frame_bgr`` to a ``size`` image.

    ``size`` is a side length or (width, height). Large downscales go through an
    intermediate twice-size warp and an area resize, so fine texture averages
    instead of aliasing.
    """
    out_w, out_h = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    quad = np.asarray(quad, np.float32).reshape(4, 2)
    quad_w = max(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[2] - quad[3]))
    quad_h = max(np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1]))
    factor = 2 if (quad_w > 3 * out_w or quad_h > 3 * out_h) else 1
    work_w, work_h = out_w * factor, out_h * factor
    target = np.array([[0, 0], [work_w, 0], [work_w, work_h], [0, work_h]], np.float32)
    homography = cv2.getPerspectiveTransform(quad, target)
    warped = cv2.warpPerspective(frame_bgr, homography, (work_w, work_h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    if factor > 1:
        warped = cv2.resize(warped, (out_w, out_h), interpolation=cv2.INTER_AREA)
    return warped


def quad_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two convex quads."""
    a = np.asarray(a, np.float32).reshape(4, 2)
    b = np.asarray(b, np.float32).reshape(4, 2)
    area_a = abs(float(cv2.contourArea(a)))
    area_b = abs(float(cv2.contourArea(b)))
    inter, _ = cv2.intersectConvexConvex(a, b)
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


def order_corners(points: np.ndarray) -> np.ndarray:
    """Four points as TL, TR, BR, BL (clockwise in image coordinates from the top-left)."""
    points = np.asarray(points, np.float32).reshape(4, 2)
    centre = points.mean(axis=0)
    angles = np.arctan2(points[:, 1] - centre[1], points[:, 0] - centre[0])
    points = points[np.argsort(angles)]  # clockwise on screen (y points down)
    start = int(np.argmin(points.sum(axis=1)))  # top-left has the smallest x + y
    return points[(np.arange(4) + start) % 4]


# -- internals ---------------------------------------------------------------


def _spread(grey: np.ndarray, centre: tuple[float, float], axes: tuple[float, float],
            angle: float, within: tuple[float, float]) -> float:
    """Grey levels between the 10th and 90th percentiles in the band of an ellipse between
    ``within`` (fractions of its axes: (0, 0.8) is its inside, (1.05, 1.25) a ring round it)."""
    outer, inner = np.zeros(grey.shape, np.uint8), np.zeros(grey.shape, np.uint8)
    cv2.ellipse(outer, (centre, (axes[0] * within[1], axes[1] * within[1]), angle), 255, -1)
    if within[0] > 0:
        cv2.ellipse(inner, (centre, (axes[0] * within[0], axes[1] * within[0]), angle), 255, -1)
    values = grey[(outer > 0) & (inner == 0)]
    return float(np.percentile(values, 90) - np.percentile(values, 10)) if values.size else 0.0


def _ovals(contours: Sequence[np.ndarray], min_area: float, shape: tuple[int, int],
           grey: np.ndarray) -> list[tuple[np.ndarray, float, float]]:
    """Oval and round pictures (a tondo, an oval portrait): (the picture's bounding quad,
    the ellipse's area, score).

    An ellipse must fit an outline closely; its inside must be painted (a head, a lamp or
    a mirror is plain), and round it a frame (a second ellipse on the same centre, a band
    of at least ``_OVAL_BAND`` px out) or a plain wall (a ring painted inside a bigger
    picture has more painting round it). The innermost of a nest is the picture.
    """
    height, width = shape
    found: list[tuple[float, float, float, float, float]] = []  # cx, cy, major, minor, angle
    for contour in contours:
        if len(contour) < 5:
            continue
        x, y, w, h = cv2.boundingRect(contour)
        if w * h < min_area or x < _BORDER_MARGIN or y < _BORDER_MARGIN \
                or x + w > width - _BORDER_MARGIN or y + h > height - _BORDER_MARGIN:
            continue
        hull = cv2.convexHull(contour)
        if len(hull) < _OVAL_MIN_POINTS:
            continue
        (cx, cy), (major, minor), angle = cv2.fitEllipse(hull)
        if not (min(major, minor) >= _OVAL_MIN_ASPECT * max(major, minor) > 0):
            continue
        area = float(np.pi * major * minor / 4.0)
        if area < min_area or not (1 - _OVAL_AREA <= cv2.contourArea(hull) / area
                                   <= 1 + _OVAL_AREA):
            continue
        # the hull's points, radially, against the ellipse: a rectangle's corners stand
        # out by ~25 %, a rounded one's by several; an oval's traced edge by under 1 %
        theta = np.deg2rad(angle)
        rotation = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
        points = (hull.reshape(-1, 2).astype(np.float64) - (cx, cy)) @ rotation.T
        radius = np.hypot(points[:, 0] / (major / 2), points[:, 1] / (minor / 2))
        if float(np.abs(radius - 1).mean()) <= _OVAL_DEVIATION:
            found.append((cx, cy, major, minor, angle))
    kept: list[tuple[np.ndarray, float, float]] = []
    for cx, cy, major, minor, angle in sorted(found, key=lambda f: f[2] * f[3]):
        size = max(major, minor)
        # a frame's band has a width: an outline's own two tracings (the edge band's
        # outside and hole) lie a few px apart, and a lone round thing has nothing else
        framed = any(np.hypot(ox - cx, oy - cy) <= _OVAL_CONCENTRIC * size
                     and np.sqrt(om * on) - np.sqrt(major * minor) >= 2 * _OVAL_BAND
                     and (om * on) / (major * minor) <= _OVAL_FRAME
                     for ox, oy, om, on, _ in found)
        # painted inside (not a head, a lamp, a mirror), and a frame round it or a plain
        # wall (not a ring painted inside a larger picture the quad finder missed)
        ellipse = ((cx, cy), (major, minor), angle)
        if _spread(grey, *ellipse, _OVAL_INSIDE) < _OVAL_PAINTED or not (
                framed or _spread(grey, *ellipse, _OVAL_AROUND) < _OVAL_PAINTED):
            continue
        if major < minor * 1.02 and minor < major * 1.02:
            angle = 0.0  # a circle: its fitted axes point anywhere; the picture is upright
        quad = order_corners(cv2.boxPoints(((cx, cy), (major, minor), angle)))
        if any(_inside(inner, quad) for inner, _, _ in kept):
            continue  # the frame round an oval kept already
        kept.append((quad, float(np.pi * major * minor / 4.0), _OVAL_SCORE))
    return kept


def _isolated(quads: list[np.ndarray]) -> list[np.ndarray]:
    """The quads with no other quad beside them (within ``_ADJACENT`` px, by bounding boxes),
    other than ones nested in them or around them."""
    corners = np.array(quads, np.float32)
    low, high = corners.min(axis=1), corners.max(axis=1)  # (n, 2) boxes
    near = ((low[:, None] - _ADJACENT <= high[None])
            & (low[None] <= high[:, None] + _ADJACENT)).all(axis=2)
    within = ((low[:, None] >= low[None] - _ADJACENT)
              & (high[:, None] <= high[None] + _ADJACENT)).all(axis=2)  # [i, j]: i in j
    beside = near & ~within & ~within.T
    return [q for q, b in zip(quads, beside.any(axis=1), strict=True) if not b]


def _unexplained(contours: list[np.ndarray], quads: list[np.ndarray],
                 shape: tuple[int, int]) -> list[np.ndarray]:
    """The contours that do not lie wholly inside one of ``quads`` (grown by a few px)."""
    mask = np.zeros(shape, np.uint8)
    for quad in quads:
        centre = quad.mean(axis=0)
        away = quad - centre
        grown = quad + _EXPLAINED_GROW * away / np.linalg.norm(away, axis=1, keepdims=True)
        cv2.fillConvexPoly(mask, np.round(grown).astype(np.int32), 1)
    points = np.concatenate(contours).reshape(-1, 2)
    inside = mask[points[:, 1], points[:, 0]]
    starts = np.cumsum([0] + [len(c) for c in contours[:-1]])
    wholly = np.minimum.reduceat(inside, starts)
    return [c for c, w in zip(contours, wholly, strict=True) if not w]


def _luminance_edges(blurred: np.ndarray) -> np.ndarray:
    """Canny edges of blurred luminance, with the gradient amplified where local contrast is low.

    A dark canvas on a dark wall, or a pale one on a pale wall, has an outline
    well below the global thresholds. Local equalisation would lift it, but
    costs more than the edges themselves; the gradient is scaled instead by a
    smooth gain, 1 where the neighbourhood has contrast and up to
    ``_GAIN_MAX`` where it is flat, and one Canny runs on the result (it finds
    everything the plain gradient would, since the gain is never below 1).
    """
    height, width = blurred.shape
    coarse = cv2.resize(blurred, (max(1, width // _GAIN_CELL), max(1, height // _GAIN_CELL)),
                        interpolation=cv2.INTER_AREA).astype(np.float32)
    mean = cv2.blur(coarse, (_GAIN_WINDOW, _GAIN_WINDOW), borderType=cv2.BORDER_REFLECT)
    square = cv2.blur(coarse * coarse, (_GAIN_WINDOW, _GAIN_WINDOW),
                      borderType=cv2.BORDER_REFLECT)
    spread = np.sqrt(np.maximum(square - mean * mean, 0.0))
    # In 1/32 steps, as int16 (the gradients' type: multiplying them stays integer).
    gain = np.rint(32.0 * np.clip(_GAIN_CONTRAST / np.maximum(spread, 1.0), 1.0, _GAIN_MAX))
    gain = cv2.resize(gain.astype(np.int16), (width, height), interpolation=cv2.INTER_LINEAR)
    dx, dy = cv2.spatialGradient(blurred)  # 3x3 Sobel, as Canny takes it
    return cv2.Canny(cv2.multiply(dx, gain, scale=1 / 32), cv2.multiply(dy, gain, scale=1 / 32),
                     40, 100, L2gradient=True)


def _percentiles(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """``np.percentile(values, (low, high))`` of a uint8 array, from its histogram (faster)."""
    counts = np.cumsum(np.bincount(values.ravel(), minlength=256))
    result = []
    for q in (low, high):
        rank = q / 100.0 * (counts[-1] - 1)
        below = int(np.floor(rank))
        lower, upper = np.searchsorted(counts, (below + 1, below + 2))  # values at both ranks
        result.append(float(lower + (rank - below) * (upper - lower)))
    return result[0], result[1]


def _approx_quad(hull: np.ndarray) -> np.ndarray | None:
    """The quad a convex outline simplifies to, coarser and coarser; an octagonal frame's
    outline (a rectangle with its corners cut) gives the rectangle it cuts."""
    perimeter = cv2.arcLength(hull, True)
    for eps in (0.02, 0.035, 0.05):
        approx = cv2.approxPolyDP(hull, eps * perimeter, True)
        if len(approx) == 4:
            if not cv2.isContourConvex(approx):
                return None
            return order_corners(approx.reshape(4, 2).astype(np.float32))
        if len(approx) == 8 and (quad := _cut_corner_quad(approx)) is not None:
            return quad
        if len(approx) < 4:
            return None
    return None


def _cut_corner_quad(polygon: np.ndarray) -> np.ndarray | None:
    """The quad whose corners an eight-sided outline cuts off (an octagonal frame, seen in
    perspective): its four long sides extended to meet; None unless long sides alternate
    with short cuts, each at most ``_CUT_CORNER`` of the sides it joins.

    Baroque galleries hang octagonal frames among rectangular ones; simplified
    further, their outline loses two of its cuts and gives a skewed quad through
    the others, so the picture was never found by its outline.
    """
    points = polygon.reshape(-1, 2).astype(np.float64)
    if len(points) != 8:
        return None
    sides = np.roll(points, -1, axis=0) - points
    lengths = np.hypot(sides[:, 0], sides[:, 1])
    first = 0 if lengths[0::2].sum() >= lengths[1::2].sum() else 1
    corners = []
    for side in range(first, 8, 2):
        cut, after = (side + 1) % 8, (side + 2) % 8
        if lengths[cut] > _CUT_CORNER * min(lengths[side], lengths[after]):
            return None
        # points[side] + s sides[side] = points[after] + t sides[after]
        system = np.column_stack([sides[side], -sides[after]])
        if abs(float(np.linalg.det(system))) < 1e-9 * lengths[side] * lengths[after]:
            return None
        s, t = np.linalg.solve(system, points[after] - points[side])
        # the corner lies beyond the side's end and before the next side's start
        if s < 1.0 - 1e-6 or t > 1e-6:
            return None
        corners.append(points[side] + s * sides[side])
    quad = np.array(corners, np.float32)
    if not cv2.isContourConvex(quad.reshape(-1, 1, 2)):
        return None
    return order_corners(quad)


def _side_gaps(edges: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Per side of ``quad``, the longest stretch that runs off the edge map, as a fraction of
    the side."""
    starts = quad.astype(np.float32)
    ends = starts[_NEXT]
    points = starts[:, None] + _GAP_SAMPLES[None, :, None] * (ends - starts)[:, None]  # (4, n, 2)
    return _gaps_along(edges, points, quad.mean(axis=0))


def _bowed_side_gaps(edges: np.ndarray, quad: np.ndarray, hull: np.ndarray) -> np.ndarray | None:
    """:func:`_side_gaps` along the hull's own path from corner to corner, where each side
    bows off its chord by at most ``_MAX_BOW`` of its length and leaves its corners
    along it (else None).

    A wide or action camera's lens bends a picture's straight sides into gentle
    arcs (barrel distortion), so the chord between two corners leaves the edge in
    the middle of the side; the outline itself still runs along it. A hull that
    bridges a painting and a card touching it has a straight stretch over bare
    wall here too.
    """
    path = hull.reshape(-1, 2).astype(np.float32)
    if len(path) < 4:
        return None
    if cv2.contourArea(path, oriented=True) * cv2.contourArea(
            quad.astype(np.float32), oriented=True) < 0:
        path = path[::-1]
    at = [int(np.argmin(np.linalg.norm(path - corner, axis=1))) for corner in quad]
    points = np.empty((4, len(_GAP_SAMPLES), 2), np.float32)
    for side in range(4):
        first, last = at[side], at[(side + 1) % 4]
        steps = (last - first) % len(path)
        stretch = path[(first + np.arange(steps + 1)) % len(path)]
        chord = quad[(side + 1) % 4] - quad[side]
        length = float(np.linalg.norm(chord))
        if steps < 1 or length < 1.0:
            return None
        normal = np.array([-chord[1], chord[0]], np.float32) / length
        if float(np.abs((stretch - quad[side]) @ normal).max()) > _MAX_BOW * length:
            return None
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(stretch, axis=0), axis=1))])
        if arc[-1] < 1.0:
            return None
        wanted = _GAP_SAMPLES * arc[-1]
        points[side, :, 0] = np.interp(wanted, arc, stretch[:, 0])
        points[side, :, 1] = np.interp(wanted, arc, stretch[:, 1])
        # A bent side still meets the next in a corner; a rounded outline (a head, an
        # oval, a rounded screen) leaves its "corners" along the curve.
        for end, toward in ((quad[side], points[side, 0]),
                            (quad[(side + 1) % 4], points[side, -1])):
            leaving = toward - end
            cosine = abs(float(leaving @ chord)) / max(
                float(np.linalg.norm(leaving)) * length, 1e-6)
            if cosine < _BOWED_CORNER_COS:
                return None
    return _gaps_along(edges, points, quad.mean(axis=0))


def _gaps_along(edges: np.ndarray, points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Per row of ``points`` (a side sampled along its length), the longest stretch of samples
    off the edge map, as a fraction of the samples."""
    samples = int(points.shape[1])
    on_edge = _on_edges(edges, points, centre)
    # Distance from each sample back to the last one on an edge (or the side's start).
    index = np.arange(samples)
    last_hit = np.maximum.accumulate(np.where(on_edge, index, -1), axis=1)
    return np.asarray((index - last_hit).max(axis=1), np.float64) / samples


def _on_edges(edges: np.ndarray, points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Whether each of ``points`` (rows of samples along sides) is on the edge map, or a
    pixel or two in from it towards ``centre`` (``_SIDE_TOLERANCE``)."""
    height, width = edges.shape
    # A hull's side touches the outline's bumps and may pass a pixel or two outside
    # the edge between them: look that far in as well.
    inward = centre - points  # towards the centre (past a corner, both sides)
    inward /= np.maximum(np.linalg.norm(inward, axis=2, keepdims=True), 1e-6)
    on_edge = np.zeros(points.shape[:2], bool)
    for depth in _SIDE_TOLERANCE:
        # Inside the frame: contour quads keep _BORDER_MARGIN px clear of its edge.
        shifted = np.rint(points + depth * inward).astype(np.intp)
        np.minimum(shifted, (width - 1, height - 1), out=shifted)
        np.maximum(shifted, 0, out=shifted)
        on_edge |= edges[shifted[..., 1], shifted[..., 0]] > 0
    return on_edge


def _at_edge(points: np.ndarray, width: int, height: int) -> bool:
    """Whether ``points`` (px at detection scale) come within ``_BORDER_MARGIN`` of the
    view's edge: an outline there may be cut by it."""
    low = points.min(axis=0)
    high = points.max(axis=0)
    return bool(low[0] < _BORDER_MARGIN or low[1] < _BORDER_MARGIN
                or high[0] > width - _BORDER_MARGIN or high[1] > height - _BORDER_MARGIN)


def _plausible_angles(quad: np.ndarray) -> bool:
    # A rectangle seen at up to ~35 degrees off-axis keeps its corners within
    # about 90 +- 35 degrees; sharper corners are not a framed picture.
    to_prev = quad[_PREV] - quad
    to_next = quad[_NEXT] - quad
    cosine = (to_prev * to_next).sum(1) / (np.hypot(*to_prev.T) * np.hypot(*to_next.T) + 1e-9)
    return bool(np.abs(cosine).max() <= 0.57)  # cos(55 degrees)


def _deduplicate(
    candidates: list[tuple[np.ndarray, float, float]],
) -> list[tuple[np.ndarray, float, float]]:
    # Each edge band yields two contours (its outside and its hole) a couple of
    # pixels apart; keep the inner one, which hugs the picture side of the edge.
    candidates = sorted(candidates, key=lambda c: c[1])  # smallest first
    if not candidates:
        return []
    quads = np.array([c[0] for c in candidates], np.float32)
    tolerance = np.maximum(4.0, 0.025 * np.sqrt([c[1] for c in candidates]))
    close = np.abs(quads[:, None] - quads[None]).max(axis=(2, 3)) < tolerance[:, None]
    kept: list[tuple[np.ndarray, float, float]] = []
    taken = np.zeros(len(candidates), bool)
    for k, candidate in enumerate(candidates):
        if (close[k] & taken).any():
            continue
        taken[k] = True
        kept.append(candidate)
    return kept


def _suppress_overlaps(
    detections: list[tuple[np.ndarray, float, float, bool]],
) -> list[tuple[np.ndarray, float, float, bool]]:
    """One detection per painting, of (quad, area, score, framed): two nests can hold
    the same picture (a quad that strays partly outside the frame's outline is not
    nested in it); the best scored, then largest, stays."""
    kept: list[tuple[np.ndarray, float, float, bool]] = []
    for detection in sorted(detections, key=lambda d: (-d[2], -d[1])):
        if not _overlaps(detection[0], detection[1], kept):
            kept.append(detection)
    return kept


def _overlaps(quad: np.ndarray, area: float,
              others: Sequence[tuple[Any, ...]]) -> bool:
    """Whether ``quad`` (of ``area``) and one of ``others`` (quad, area, ...) are one
    painting: they share ``_OVERLAP_FRACTION`` of the smaller one's area."""
    return any(cv2.intersectConvexConvex(quad.astype(np.float32), other[0].astype(np.float32))[0]
               >= _OVERLAP_FRACTION * min(area, other[1]) for other in others)


def _inside(inner: np.ndarray, outer: np.ndarray) -> bool:
    # By area, not corner by corner: two tracings of one outline cross each other.
    inner_area = abs(float(cv2.contourArea(inner)))
    overlap, _ = cv2.intersectConvexConvex(inner.astype(np.float32), outer.astype(np.float32))
    return overlap >= _INSIDE_FRACTION * inner_area


def _side_insets(inner: np.ndarray, outer: np.ndarray) -> list[float]:
    """How far each side of ``inner`` (top, right, bottom, left) lies inside ``outer``.

    A mount or moulding surrounds the picture with a band of roughly even width
    on all four sides; a region of the painting (the field below a horizon)
    shares sides with the picture, or sits much deeper on one side. Measured
    in the outer quad's rectified frame, so that perspective, which widens the
    near side of a frame, does not make an even band look uneven.
    """
    outer = outer.astype(np.float32)
    width = float(np.linalg.norm(outer[1] - outer[0]) + np.linalg.norm(outer[2] - outer[3])) / 2
    height = float(np.linalg.norm(outer[3] - outer[0]) + np.linalg.norm(outer[2] - outer[1])) / 2
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    flat = cv2.perspectiveTransform(inner.astype(np.float32)[None],
                                    cv2.getPerspectiveTransform(outer, target))[0]
    return [float(flat[0, 1] + flat[1, 1]) / 2, width - float(flat[1, 0] + flat[2, 0]) / 2,
            height - float(flat[2, 1] + flat[3, 1]) / 2, float(flat[0, 0] + flat[3, 0]) / 2]


def _even_band(inner: np.ndarray, outer: np.ndarray) -> bool:
    """Whether ``outer`` surrounds ``inner`` with a band of roughly even width all round.

    One side may be shared (inset about 0): where a mount's or a paper's edge is
    too faint to trace, the outline found runs along the picture's own edge there.
    Two may, if they meet at a corner and the band is narrow (see below).
    """
    insets = _side_insets(inner, outer)
    ordered = sorted(insets)
    if ordered[0] >= _MIN_INSET:
        return ordered[0] >= _BAND_EVENNESS * ordered[-1]
    if abs(ordered[0]) >= _MIN_INSET:
        return False
    if ordered[1] >= 2 * _MIN_INSET:
        return ordered[1] >= _BAND_EVENNESS * ordered[-1]
    # Two sides shared: a paper's or a mount's edges on the lit side can be too faint
    # to trace while the shadowed ones are plain; they meet at a corner (top or
    # bottom with left or right), and the other two make an even band.
    shared = [k for k, inset in enumerate(insets) if abs(inset) < 2 * _MIN_INSET]
    # A block of a painting in its corner shares two such sides too, but is seldom
    # this narrow a strip short of the whole.
    outer = outer.astype(np.float32)
    short = min(np.linalg.norm(outer[1] - outer[0]) + np.linalg.norm(outer[2] - outer[3]),
                np.linalg.norm(outer[3] - outer[0]) + np.linalg.norm(outer[2] - outer[1])) / 2
    return len(shared) == 2 and (shared[1] - shared[0]) % 2 == 1 \
        and ordered[2] >= 2 * _MIN_INSET and ordered[2] >= _BAND_EVENNESS * ordered[3] \
        and ordered[3] <= _NARROW_BAND * float(short)


def _same_outline(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two quads trace one outline: they overlap by ``_SAME_OUTLINE`` (IoU) and
    share a side (the others taken from lines of painted content a few px in), where
    the steps of a moulding lie apart all round."""
    if quad_iou(a, b) < _SAME_OUTLINE:
        return False
    outer, inner = (a, b) if cv2.contourArea(a) >= cv2.contourArea(b) else (b, a)
    return any(abs(inset) < 2 * _MIN_INSET for inset in _side_insets(inner, outer))


def _one_side_apart(inner: np.ndarray, outer: np.ndarray) -> bool:
    """Whether ``inner`` shares three sides with ``outer`` and lies well in from the fourth."""
    insets = sorted(abs(inset) for inset in _side_insets(inner, outer))
    return insets[2] < 2 * _MIN_INSET and insets[3] >= 4 * _MIN_INSET


def _evenness(inner: np.ndarray, outer: np.ndarray) -> float:
    """The narrowest side of the band between two nested quads over its widest (1: even)."""
    insets = _side_insets(inner, outer)
    return max(min(insets), 0.0) / max(max(insets), 1e-6)


def _pick_pictures(
    candidates: list[tuple[np.ndarray, float, float]], grey: np.ndarray,
    colour: np.ndarray | None = None, edges: np.ndarray | None = None,
    held: Sequence[np.ndarray] = (),
) -> list[tuple[np.ndarray, float, float, bool]]:
    """For each outermost quad, find the picture in its nest; return (quad, area, score,
    framed: whether a mounting was traced round it).

    The picture is the smallest nested quad that the outer one surrounds with a
    mounting: a band of even width all round that is plain along its sides or
    (``colour``, the BGR frame ``grey`` was made of) one material all round,
    unlike the picture (:func:`_band_is_mounting`), unless a bigger such quad
    shares three of its sides in a clearly more even band (then the smaller one
    is a region of the picture).
    An outer quad that is a surface works hang on (:func:`_is_surface`), or that
    joins two works hung side by side (:func:`_spans_two`; ``edges``, the edge map the
    quads were traced on), is no nest: what is inside it is judged on its own. Of the
    outlines inside it, ``held`` are those no quad traces (oval pictures).
    Each candidate is judged against the outer quad, not the previous step in,
    because line quads mix the sides of neighbouring moulding steps, and a
    step-by-step walk can wander into such a mix and find no way on. Of the
    quads that trace the picture's outline (:func:`_same_outline`), the
    clearly best supported one is taken.
    """
    by_area = sorted(candidates, key=lambda c: c[1], reverse=True)
    claimed = [False] * len(by_area)
    pictures = []
    for i, (quad, area, fill) in enumerate(by_area):
        if claimed[i]:
            continue
        claimed[i] = True
        inside = [j for j in range(i + 1, len(by_area))
                  if not claimed[j] and _inside(by_area[j][0], quad)]
        holds = [by_area[j][0] for j in inside] + [o for o in held if _inside(o, quad)]
        if holds and (_is_surface(grey, quad, holds) or (
                edges is not None and _spans_two(edges, quad, holds))):
            continue  # a panel or a stretch of wall, or two works' outlines joined: what
            # hangs on it, each work, is judged on its own
        nest = []
        for j in inside:
            claimed[j] = True  # everything inside this nest belongs to it
            nest.append(by_area[j])
        current, current_area, current_fill = quad, area, fill
        nested = False
        for inner, inner_area, inner_fill in reversed(nest):  # smallest first
            if inner_area < _NEST_MIN_AREA_RATIO * area:
                continue
            # Once found, a region of the picture (the sea below a plain sky) can pass
            # for it with a band deep on one side: the picture round it shares its
            # other three sides and sits in a band more even all round.
            if nested and not (_one_side_apart(current, inner) and _evenness(inner, quad)
                               > _evenness(current, quad) + _EVENER):
                continue
            if not _even_band(inner, quad):
                continue  # not an even band all round: a region of the painting, not a mount
            if not _band_is_mounting(grey, quad, inner, colour):
                continue
            current, current_area, current_fill = inner, inner_area, inner_fill
            nested = True
        if nested:
            # Line quads trace one outline several ways (a side taken from a line of
            # painted content a few pixels in); of those, the best supported.
            for inner, inner_area, inner_fill in nest:
                if inner_fill > current_fill + _CLEARER \
                        and _same_outline(inner, current) \
                        and _even_band(inner, quad):
                    current, current_area, current_fill = inner, inner_area, inner_fill
        # Framed (nested) pictures are the most painting-like; a bare rectangle
        # could also be a door or a window.
        score = current_fill * (1.0 if nested else 0.8)
        pictures.append((current, current_area, score, nested))
    return pictures


def _without_cards(pictures: list[tuple[np.ndarray, float, float, bool]], grey: np.ndarray,
                   colour: np.ndarray, known: Sequence[float] = (),
                   ) -> list[tuple[np.ndarray, float, float]]:
    """``pictures`` (quad, area, score, framed) as (quad, area, score), less the caption
    cards and the stretches of wall, among the quads no mounting was traced round.

    A card is a plain card with print on it (:func:`_is_plain_card`), hung bare
    on a plain wall (:func:`_on_plain_wall`), and a small thing beside a picture
    in view (one ``_CARD_BESIDE`` times its area: of ``pictures``, or of
    ``known``, the areas of pictures in view found otherwise, px of ``grey``; a
    light's reflection or pool can take a picture's outline away and leave its
    card's). A dark portrait's plain ground sits in a frame, a drawing's paper in
    a mount, and a work with a plain field (a monochrome with a slash) is not so
    much smaller than what hangs beside it: none is taken for a card.

    A stretch of wall is bare inside, the wall continuing across one of its sides
    (:func:`_is_bare_wall`; ``colour``: the BGR image ``grey`` was made of).
    """
    kept = []
    for quad, area, score, framed in pictures:
        if not framed and any(other >= _CARD_BESIDE * area
                              for other in [*(p[1] for p in pictures), *known]) \
                and _is_plain_card(grey, quad) and _on_plain_wall(grey, quad):
            continue
        if not framed and _is_bare_wall(grey, colour, quad):
            continue
        kept.append((quad, area, score))
    return kept


def _change(patch: np.ndarray) -> np.ndarray:
    """How much a rectified patch changes at each pixel (float32, grey levels): the
    larger step to its right or below neighbour, lightly smoothed first (noise is not
    change). What :func:`_is_surface` and :func:`_is_bare_wall` count as painted matter."""
    flat = np.asarray(cv2.GaussianBlur(patch.astype(np.float32), (0, 0), 1.0), np.float32)
    return np.maximum(np.pad(np.abs(np.diff(flat, axis=1)), ((0, 0), (0, 1))),
                      np.pad(np.abs(np.diff(flat, axis=0)), ((0, 1), (0, 0))))


def _is_bare_wall(grey: np.ndarray, colour: np.ndarray, quad: np.ndarray) -> bool:
    """Whether ``quad`` outlines a stretch of wall, not a picture: inside it, few
    pixels change (``_WALL_CONTENT``, in its rectified frame, as :func:`_is_surface`
    measures change) and its colour (median, Lab) is the wall's just outside one of
    its sides (``_WALL_SAME``; a strip ``_WALL_STRIP`` of its size out, within the
    image): the wall runs on under a barrier's rail, a bench, a doorway's jamb.

    The Estense paintings change at 15 % of their pixels or more; a plain seascape
    (4-6 %) or a monochrome is a colour of its own, unlike the wall on every side. A
    bare work the colour of its wall with almost nothing on it cannot be told from it."""
    patch, _ = _rectified_patch(grey, quad, _BAND_RECTIFIED_SIDE)
    height, width = patch.shape[:2]
    rim = max(1, round(_RIM * min(width, height)))
    change = _change(patch)
    if float(np.mean(change[rim:-rim, rim:-rim] > _ALONG_BAND_STEP)) > _WALL_CONTENT:
        return False
    near, far = _WALL_STRIP
    centre = quad.astype(np.float32).mean(axis=0)
    reach = centre + (quad - centre) * far  # what the strips cover, within the image
    left, top = (int(max(0.0, v)) for v in np.floor(reach.min(axis=0)))
    right, bottom = (int(v) for v in np.ceil(reach.max(axis=0)) + 1)
    lab = cv2.cvtColor(colour[top:bottom, left:right], cv2.COLOR_BGR2LAB).astype(np.float32)
    lab[..., 0] *= 100.0 / 255.0  # 8-bit L is scaled to 0-255; a and b are CIE's, offset

    def median(polygon: np.ndarray) -> np.ndarray | None:
        mask = np.zeros(lab.shape[:2], np.uint8)
        cv2.fillConvexPoly(mask, np.round(polygon - (left, top)).astype(np.int32), 1)
        return np.median(lab[mask > 0], axis=0) if mask.sum() >= 16 else None

    inside = median(centre + (quad - centre) * (2.0 - near))
    if inside is None:
        return False
    for k in range(4):
        side = quad[[k, (k + 1) % 4]].astype(np.float32) - centre
        outside = median(np.concatenate([centre + side * near, centre + side[::-1] * far]))
        if outside is not None and float(np.linalg.norm(outside - inside)) <= _WALL_SAME:
            return True
    return False


def _on_plain_wall(grey: np.ndarray, quad: np.ndarray) -> bool:
    """Whether ``quad`` of ``grey`` hangs bare on a plain surface: the ring round it
    (``_CARD_RING`` of its size out) is mostly (``_CARD_WALL``) without a step of
    ``_ALONG_BAND_STEP`` levels per px, as a wall is and a frame's moulding, a carved
    frame or the painting a region is cut from is not. Seen in the grown quad's
    rectified frame, the quad's own edge left out."""
    centre = quad.mean(axis=0)
    grown = (centre + (quad - centre) * (1.0 + 2.0 * _CARD_RING)).astype(np.float32)
    patch, _ = _rectified_patch(grey, grown, _CARD_SIDE)
    height, width = patch.shape[:2]
    flat = cv2.GaussianBlur(patch.astype(np.float32), (0, 0), 1.0)
    steps = np.hypot(cv2.Sobel(flat, cv2.CV_32F, 1, 0, ksize=3),
                     cv2.Sobel(flat, cv2.CV_32F, 0, 1, ksize=3)) / 8.0  # levels per px
    ring = np.ones((height, width), bool)
    # the quad, and a pixel or two round its edge, in the grown quad's frame
    inner = (_CARD_RING - _CARD_EDGE) / (1.0 + 2.0 * _CARD_RING)
    ring[round(inner * height):height - round(inner * height),
         round(inner * width):width - round(inner * width)] = False
    ring[:1], ring[-1:], ring[:, :1], ring[:, -1:] = False, False, False, False
    if ring.sum() < 32:
        return False
    return float(np.mean(steps[ring] < _ALONG_BAND_STEP)) >= _CARD_WALL


def _is_plain_card(grey: np.ndarray, quad: np.ndarray) -> bool:
    """Whether ``quad`` of ``grey`` looks like a printed card: inside its very edge
    (``_CARD_RIM``), most of it (``_CARD_GROUND``) one plain level, the paper or board,
    its margins included, and some of it (``_CARD_MARKS``) clearly off it, the print.
    Painted matter, even a dark background in dim light, varies more than that, and so
    does a frame's outline with the moulding inside its edge; a blank wall or a
    monochrome has no marks. The light across it is taken out first, as a plane of
    levels fitted to it: a lamp's pool or a reflection nearby brightens a card from one
    side (a plane takes out no painted matter but a ramp)."""
    patch, _ = _rectified_patch(grey, quad, _CARD_SIDE)
    height, width = patch.shape[:2]
    inset_x, inset_y = round(_CARD_RIM * width), round(_CARD_RIM * height)
    inside = patch[inset_y:height - inset_y, inset_x:width - inset_x].astype(np.float32)
    if inside.size < 64:
        return False
    rows, columns = np.mgrid[0:inside.shape[0], 0:inside.shape[1]].astype(np.float32)
    design = np.stack([np.ones(inside.size, np.float32), columns.ravel(), rows.ravel()], 1)
    levels = inside.ravel()
    low, high = np.percentile(levels, (2.0, 98.0))
    band = max(_CARD_NOISE, _CARD_PLAIN * float(high - low))
    # fitted to the paper alone (what is plain about the median, then about the plane):
    # the print, a dark tab or a sliver of wall at its edge would tilt it
    paper = np.abs(levels - np.median(levels)) < band
    for _ in range(2):
        if paper.sum() < 16:
            return False
        plane = np.linalg.lstsq(design[paper], levels[paper], rcond=None)[0]
        residual = levels - design @ plane
        paper = np.abs(residual - np.median(residual)) < band
    inside = inside - (design[:, 1:] @ plane[1:]).reshape(inside.shape)
    ground = float(np.median(inside))
    low, high = np.percentile(inside, (2.0, 98.0))
    spread = float(high - low)
    off = np.abs(inside - ground)
    plain = float(np.mean(off < max(_CARD_NOISE, _CARD_PLAIN * spread)))
    marks = float(np.mean(off >= max(2.0 * _CARD_NOISE, _CARD_MARK * spread)))
    return plain >= _CARD_GROUND and marks >= _CARD_MARKS


def _is_surface(grey: np.ndarray, outer: np.ndarray, inner: list[np.ndarray]) -> bool:
    """Whether ``outer`` is a surface works hang on, not a picture: a coloured panel, a
    stretch of wall between mouldings, a doorway's far wall.

    Such a quad holds outlines of its own (``inner``: the quads inside it)
    that stand clear of its edge, and round them (and their drop shadows) it
    is plain, as a wall is: along its edge (:data:`_SURFACE_RIM`), and mostly
    elsewhere (a work no outline was traced round is content there, up to
    :data:`_SURFACE_CONTENT`). A region of a painting shares or touches the
    painting's edge (the sea below a sky) and is left in what must be plain;
    painted content is not plain; a frame's moulding round its picture covers
    more than :data:`_SURFACE_HELD` of it, and is judged as a nest. Looked at in
    ``outer``'s rectified frame, so perspective does not bend "clear of the edge".
    """
    patch, homography = _rectified_patch(grey, outer, _BAND_RECTIFIED_SIDE)
    height, width = patch.shape[:2]
    size = np.array([width, height], np.float32)
    clear = np.maximum(_SURFACE_CLEAR * size, 2.0)
    held = np.zeros((height, width), np.uint8)
    for quad in inner:
        if any(other is not quad and _inside(quad, other) for other in inner):
            continue  # a step of a frame already counted, or a picture inside it
        corners = cv2.perspectiveTransform(quad.astype(np.float32)[None], homography)[0]
        if (corners < clear).any() or (corners > size - clear).any():
            continue  # on its edge: lines of it mixed with a work's, or a region of a picture
        cv2.fillConvexPoly(held, np.round(corners).astype(np.int32), 1)
    if not held.any() or held.mean() > _SURFACE_HELD:
        return False
    window = 2 * max(1, round(_SURFACE_SHADOW * min(width, height))) + 1
    rest = cv2.dilate(held, np.ones((window, window), np.uint8)) == 0
    rim = max(1, round(_RIM * min(width, height)))
    rest[:rim] = rest[-rim:] = False
    rest[:, :rim] = rest[:, -rim:] = False
    change = _change(patch)
    # Content: where changes are dense (a work no outline was traced round, painted
    # matter), as opposed to a stray mark or a fixing on a plain wall.
    content = cv2.blur((change > _ALONG_BAND_STEP).astype(np.float32),
                       (window, window)) > _SURFACE_DENSE
    depth = max(rim + 1, round(_SURFACE_RIM * min(width, height)))
    border = np.zeros_like(rest)
    border[:depth] = border[-depth:] = True
    border[:, :depth] = border[:, -depth:] = True
    border &= rest
    if not rest.any():
        return False
    return bool(content[rest].mean() <= _SURFACE_CONTENT) and (
        not border.any() or bool(content[border].mean() <= _SURFACE_RIM_CONTENT))


def _spans_two(edges: np.ndarray, outer: np.ndarray, inner: list[np.ndarray]) -> bool:
    """Whether ``outer`` joins works hung side by side (or one above the other), not a
    picture: its outline is off the edge map on both of two opposite sides at the same
    place (over ``_APART_GAP`` px at least, with edges past it on both sides), the wall
    running on through it there and across it from side to side (no edge on the way),
    and a quad inside it (``_APART_SHARE`` of it at least) stands wholly to one side of
    that place.

    Frames hung in a row line up: the line finder joins the first's left side and the
    last's right side with the tops and bottoms they share, over the wall between
    them. A picture's own outline is an edge all round, whatever it holds (a
    Mondrian's blocks stand apart inside an unbroken outline); where a visitor hides
    it, from top to bottom, no quad inside stands clear of the visitor."""
    unit = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    to_unit = cv2.getPerspectiveTransform(outer.astype(np.float32), unit)
    from_unit = np.linalg.inv(to_unit)
    least = _APART_SHARE * abs(float(cv2.contourArea(outer.astype(np.float32))))
    spans = [(corners.min(axis=0), corners.max(axis=0)) for corners in (
        cv2.perspectiveTransform(quad.astype(np.float32)[None], to_unit)[0]
        for quad in inner if abs(float(cv2.contourArea(quad.astype(np.float32)))) >= least)]
    if not spans:
        return False
    quad = outer.astype(np.float32)
    centre = quad.mean(axis=0)
    for axis, sides in ((0, ((0, 1), (3, 2))), (1, ((0, 3), (1, 2)))):
        # along x: where the top and bottom sides are both off the edges; along y, the left
        # and right ones
        length = max(float(np.linalg.norm(quad[end] - quad[start])) for start, end in sides)
        along = np.linspace(_APART_MARGIN, 1.0 - _APART_MARGIN,
                            max(8, round(length / _APART_STEP)), dtype=np.float32)
        points = np.empty((2, len(along), 2), np.float32)
        for row, side in enumerate((0.0, 1.0)):
            points[row, :, axis] = along
            points[row, :, 1 - axis] = side
        image = cv2.perspectiveTransform(points.reshape(1, -1, 2), from_unit)
        on = _on_edges(edges, image.reshape(points.shape), centre)
        # Runs off both sides as long as the narrowest wall between two works, at least,
        # with the outline going on past them on both (not a side running on past its
        # corner: a quad a little too long).
        within = (np.logical_or.accumulate(on, axis=1)
                  & np.logical_or.accumulate(on[:, ::-1], axis=1)[:, ::-1]).all(axis=0)
        off = ~on.any(axis=0) & within
        run = max(2, round(_APART_GAP / _APART_STEP))
        runs = np.convolve(off.astype(np.int32), np.ones(run, np.int32), "valid")
        # ...and the wall there runs across from one side to the other, no edge on the
        # way (a painting's pale field meeting its pale mount is crossed by its drawing)
        breaks = [float(at) for at in along[np.flatnonzero(runs == run) + run // 2]
                  if _clear_across(edges, from_unit, axis, float(at))]
        if any(at < low[axis] or at > high[axis] for at in breaks for low, high in spans):
            return True
    return False


def _clear_across(edges: np.ndarray, from_unit: np.ndarray, axis: int, at: float) -> bool:
    """Whether the line across a quad (``from_unit``: its unit square to the image) at
    ``at`` along ``axis`` is off the edge map all the way (but at its two ends)."""
    height, width = edges.shape
    across = np.linspace(_APART_MARGIN, 1.0 - _APART_MARGIN, 64, dtype=np.float32)
    points = np.empty((len(across), 2), np.float32)
    points[:, axis] = at
    points[:, 1 - axis] = across
    image = np.rint(cv2.perspectiveTransform(points[None], from_unit)[0]).astype(np.intp)
    np.minimum(image, (width - 1, height - 1), out=image)
    np.maximum(image, 0, out=image)
    return not bool((edges[image[:, 1], image[:, 0]] > 0).any())


def _band_is_mounting(grey: np.ndarray, outer: np.ndarray, inner: np.ndarray,
                      colour: np.ndarray | None = None) -> bool:
    """Whether the band between two nested quads looks like a moulding, mount or margin.

    A moulding is extruded along its length and a mount or paper margin is
    plain, so along each side of the band the brightness hardly changes
    (bevels, steps and the mitred corners change it *across* the band or at
    the corners, which are left out); painted content changes along it too.
    One side may be busy where the other three are plain, or two that meet at
    a corner: a visitor standing in front of them.
    The band is looked at in the outer quad's rectified frame, so perspective
    does not tilt "along" and "across".

    A carved frame is busy along its sides too; given ``colour`` (the BGR frame
    ``grey`` was made of), a band that fails the plain test is still a
    mounting where it is one material all round and unlike the picture
    (:func:`_band_is_one_material`).
    """
    if _band_is_plain(grey, outer, inner):
        return True
    return colour is not None and _band_is_one_material(colour, outer, inner)


def _band_strips(patch: np.ndarray, homography: np.ndarray,
                 inner: np.ndarray) -> list[np.ndarray]:
    """The band's four sides (top, bottom, left, right) in the outer quad's rectified
    ``patch`` (any channels), the mitred corners left out."""
    height, width = patch.shape[:2]
    corners = cv2.perspectiveTransform(inner.astype(np.float32)[None], homography)[0]
    top = int(min(corners[0, 1], corners[1, 1])) - 1
    bottom = int(np.ceil(max(corners[2, 1], corners[3, 1]))) + 1
    left = int(min(corners[0, 0], corners[3, 0])) - 1
    right = int(np.ceil(max(corners[1, 0], corners[2, 0]))) + 1
    x0, x1 = max(left, 0) + 2, min(right, width - 1) - 2
    y0, y1 = max(top, 0) + 2, min(bottom, height - 1) - 2
    return [patch[1:max(top, 1), x0:x1], patch[min(bottom, height - 1):height - 1, x0:x1],
            patch[y0:y1, 1:max(left, 1)], patch[y0:y1, min(right, width - 1):width - 1]]


def _band_is_plain(grey: np.ndarray, outer: np.ndarray, inner: np.ndarray) -> bool:
    """The plain test of :func:`_band_is_mounting`: brightness barely changes along the band."""
    patch, homography = _rectified_patch(grey, outer, _BAND_RECTIFIED_SIDE)
    flat = np.asarray(cv2.GaussianBlur(patch.astype(np.float32), (0, 0), 1.0), np.float32)
    # change along a horizontal side, and along a vertical one (padded back to the patch)
    along_x = np.pad(np.abs(np.diff(flat, axis=1)), ((0, 0), (0, 1)))
    along_y = np.pad(np.abs(np.diff(flat, axis=0)), ((0, 1), (0, 0)))
    top, bottom, _, _ = _band_strips(along_x, homography, inner)
    _, _, left, right = _band_strips(along_y, homography, inner)
    strips = [top, bottom, left, right]
    sizes = np.array([s.size for s in strips])
    if sizes.sum() < 20:
        return True  # a band too thin to hold content: nested outlines of one edge
    busy = np.array([int(np.count_nonzero(s > _ALONG_BAND_STEP)) for s in strips])
    if busy.sum() < _BUSY_BAND_FRACTION * sizes.sum():
        return True
    # A visitor in front of one side, or of two that meet at a corner, fills those
    # stretches of the band with a body's edges; the other sides still show the
    # mounting. Strips: top, bottom, left, right.
    share = busy / np.maximum(sizes, 1)
    for hidden in ([0], [1], [2], [3], [0, 2], [0, 3], [1, 2], [1, 3]):
        rest = np.ones(4, bool)
        rest[hidden] = False
        if share[hidden].min() >= share[rest].max() \
                and busy[rest].sum() < _BUSY_BAND_FRACTION * max(int(sizes[rest].sum()), 20):
            return True
    return False


def _peel(grey: np.ndarray, colour: np.ndarray, quad: np.ndarray, rounds: int = 2) -> np.ndarray:
    """The picture inside ``quad``: plain bands peeled (:func:`_peel_to_picture`), then a
    carved or gilt frame (:func:`_peel_frame`) and what plain bands lie inside it."""
    quad = _peel_to_picture(grey, quad)
    for _ in range(rounds):
        stepped = _peel_frame(colour, quad)
        if stepped is quad:
            break
        quad = _peel_to_picture(grey, stepped)
    return quad


def _peel_frame(colour: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The picture inside a carved or gilt frame's outline, where no quad traced it.

    A carved frame's relief is busy along its sides, so its inner edge merges
    with the carving in the edge map and the plain-band peel
    (:func:`_peel_to_picture`) sees painted content from the first pixel.
    Colour tells them apart: the frame is one material, seen on its outer rim
    all round, the picture is what fills the middle (deeper than any frame).
    Each pixel of the rectified quad is taken as frame-like or picture-like (Lab
    histograms of the rim and the middle); per side, the depth where frame-like rows give way
    to picture-like ones (the best single step between them) is moved to the
    nearest straight edge running along the side, the picture's edge (all the
    way along, or on one side half way: a visitor in front of it). The quad
    steps in only where all four sides have one and the band they leave passes
    :func:`_band_is_one_material`; else ``quad`` is returned as it was.
    """
    patch, homography = _rectified_patch(colour, quad, _BAND_RECTIFIED_SIDE)
    height, width = patch.shape[:2]
    if min(height, width) < 24:
        return quad
    lab = cv2.cvtColor(patch, cv2.COLOR_BGR2LAB)
    codes = _colour_codes(lab)
    rim = max(2, int(_RIM * min(height, width)))
    frame_codes = np.concatenate([codes[:rim].ravel(), codes[-rim:].ravel(),
                                  codes[:, :rim].ravel(), codes[:, -rim:].ravel()])
    reach = int(_FRAME_DEPTH * min(height, width))
    middle = codes[reach:height - reach, reach:width - reach].ravel()  # all picture
    bins = _MATERIAL_BINS ** 3
    frame_model = np.bincount(frame_codes, minlength=bins) / max(len(frame_codes), 1)
    picture_model = np.bincount(middle, minlength=bins) / max(len(middle), 1)
    picture_like = (picture_model > frame_model)[codes].astype(np.float32)
    splits = []
    for like in (picture_like, picture_like[::-1], picture_like.T, picture_like.T[::-1]):
        across_len, along_len = like.shape
        lo, hi = int(0.12 * along_len), int(0.88 * along_len)  # leave the corners out
        fraction = like[:2 * reach, lo:hi].mean(axis=1)  # picture-like share of each row
        # the best step from frame-like (0) to picture-like (1) rows
        before = np.concatenate([[0.0], np.cumsum(1.0 - fraction)])
        after = np.concatenate([[0.0], np.cumsum(fraction[::-1])])[::-1]
        first = max(2, int(_PEEL_MIN_BAND * across_len))
        if first >= reach:
            return quad
        split = first + int(np.argmax((before + after)[first:reach + 1]))
        if fraction[:split].mean() > 0.5 or fraction[split:2 * split].mean() < 0.5:
            return quad  # no frame-like band ending in picture: nothing to peel (most quads)
        splits.append((split, lo, hi))
    # Edges in lightness (stretched as the plain peel's) and in chroma: gilt against
    # a brown varnished picture can differ more in colour than in brightness.
    stretched = lab.astype(np.float32)
    low, high = _percentiles(lab[..., 0][::2, ::2], 2.0, 98.0)
    stretched[..., 0] = (stretched[..., 0] - low) * (200.0 / max(high - low, 10.0))
    stretched[..., 1:] *= _CHROMA_EDGE_GAIN
    level = np.asarray(cv2.GaussianBlur(stretched, (0, 0), 1.0), np.float32)
    depths = []
    occluded = False  # one side may show its edge only in part: a visitor in front of it
    for (split, lo, hi), side in zip(splits, (level, level[::-1], level.transpose(1, 0, 2),
                                              level.transpose(1, 0, 2)[::-1]), strict=True):
        across = np.abs(np.diff(side[:2 * reach, lo:hi], axis=0)).max(axis=2)  # rows d, d+1
        near = range(max(1, split - _SNAP), min(len(across) - 1, split + _SNAP + 1))
        straight = {d: _straight_edge(across, d) for d in near}
        edge = max(straight, key=straight.__getitem__, default=None)
        if edge is None or straight[edge] < _PEEL_PARTLY_CONTINUOUS \
                or straight[edge] < _PEEL_CONTINUOUS and occluded:
            return quad
        occluded = occluded or straight[edge] < _PEEL_CONTINUOUS
        depths.append(edge + 1.0)
    top, bottom, left, right = depths
    inner = np.array([[left, top], [width - right, top], [width - right, height - bottom],
                      [left, height - bottom]], np.float32)
    if abs(float(cv2.contourArea(inner))) < _NEST_MIN_AREA_RATIO * height * width:
        return quad
    inner_frame = cv2.perspectiveTransform(inner[None], np.linalg.inv(homography))[0]
    if not _band_is_one_material(colour, quad, inner_frame):
        return quad
    return inner_frame.astype(np.float32)


def _straight_edge(across: np.ndarray, row: int) -> float:
    """The share of a side's length along which an edge runs at ``row`` of ``across`` (the
    change between rows, a side's depth by its length): a step there (within a pixel,
    for a homography's slack) that is the strongest of its column nearby. Busy content
    or a curve touching the row has steps too, at other depths column by column."""
    local = across[max(0, row - 1):row + 2].max(axis=0)
    around = across[max(0, row - _EDGE_WINDOW):row + _EDGE_WINDOW + 1].max(axis=0)
    return float(np.mean((local > _PEEL_EDGE) & (local >= around)))


def _colour_codes(lab: np.ndarray) -> np.ndarray:
    """Each pixel's bin of a Lab image (``_MATERIAL_BINS`` per channel) as one int:
    lightness stretched over the image, chroma over +-``_MATERIAL_CHROMA``."""
    low, high = _percentiles(lab[..., 0][::2, ::2], 2.0, 98.0)
    light = (lab[..., 0].astype(np.float32) - low) * (_MATERIAL_BINS / max(high - low, 16.0))
    chroma = (lab[..., 1:].astype(np.float32) - (128.0 - _MATERIAL_CHROMA)) * (
        _MATERIAL_BINS / (2 * _MATERIAL_CHROMA))
    top = _MATERIAL_BINS - 1
    light_bin = np.clip(light, 0, top).astype(np.int64)
    a_bin = np.clip(chroma[..., 0], 0, top).astype(np.int64)
    b_bin = np.clip(chroma[..., 1], 0, top).astype(np.int64)
    return (light_bin * _MATERIAL_BINS + a_bin) * _MATERIAL_BINS + b_bin


def _band_is_one_material(colour: np.ndarray, outer: np.ndarray, inner: np.ndarray) -> bool:
    """Whether the band between two nested quads is one material all round, unlike the picture.

    A carved or gilt frame is the same stuff on every side (its relief and the
    light make it busy, but not painted), and the picture inside is something
    else; a region of a painting inside its outline is bordered by more
    painting, which differs from side to side (sky above, ground below) or
    looks like the inside. Compared as colour histograms (Lab, lightness
    stretched over the patch so a dim room compares as a lit one): the band
    against the picture, and each side against the rest of the band.
    """
    patch, homography = _rectified_patch(colour, outer, _BAND_RECTIFIED_SIDE)
    lab = cv2.cvtColor(patch, cv2.COLOR_BGR2LAB)
    sides = [s.reshape(-1, 3) for s in _band_strips(lab, homography, inner)]
    if min(len(s) for s in sides) < 10:
        return False  # a side too thin to judge: the plain test has had its say
    picture, _ = _rectified_patch(colour, inner, _BAND_RECTIFIED_SIDE)
    ph, pw = picture.shape[:2]
    inside = cv2.cvtColor(picture[ph // 10:ph - ph // 10, pw // 10:pw - pw // 10],
                          cv2.COLOR_BGR2LAB).reshape(-1, 3)
    low, high = _percentiles(np.concatenate([*sides, inside])[:, 0], 2.0, 98.0)

    def histogram(points: np.ndarray) -> np.ndarray:
        scaled = points.astype(np.float32)
        scaled[:, 0] = (points[:, 0] - low) * (255.0 / max(high - low, 16.0))
        scaled[:, 1:] = (points[:, 1:] - (128.0 - _MATERIAL_CHROMA)) * (
            255.0 / (2 * _MATERIAL_CHROMA))
        values = np.clip(scaled, 0, 255).astype(np.uint8).reshape(-1, 1, 3)
        counts = cv2.calcHist([values], [0, 1, 2], None, [_MATERIAL_BINS] * 3, [0, 256] * 3)
        return counts / max(float(counts.sum()), 1.0)

    def apart(a: np.ndarray, b: np.ndarray) -> float:
        return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))

    in_picture = histogram(inside)
    if apart(histogram(np.concatenate(sides)), in_picture) < _MATERIAL_APART:
        return False
    for k, side in enumerate(sides):
        rest = histogram(np.concatenate([other for j, other in enumerate(sides) if j != k]))
        own = histogram(side)
        if apart(own, in_picture) - apart(own, rest) < _MATERIAL_ALIKE:
            return False
    return True


def _rectified_patch(grey: np.ndarray, quad: np.ndarray,
                     max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """``quad`` of ``grey`` warped to a rectangle (at most ``max_side`` px); and the homography."""
    side_w = float(max(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[2] - quad[3])))
    side_h = float(max(np.linalg.norm(quad[3] - quad[0]), np.linalg.norm(quad[2] - quad[1])))
    factor = min(1.0, max_side / max(side_w, side_h))
    width, height = max(8, int(side_w * factor)), max(8, int(side_h * factor))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    homography = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    flat = cv2.warpPerspective(grey, homography, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
    return flat, homography


def _peel_to_picture(grey: np.ndarray, quad: np.ndarray, steps: int = 3) -> np.ndarray:
    """Step from a frame's outline in to the picture where contours could not.

    A busy painting touching its frame merges the picture's edge with its own
    strokes, so no contour traces the picture. Seen in the quad's rectified
    frame, though, a moulding or mount is a band whose brightness does not
    change along the side, ended on the inside by a straight edge parallel to
    the side and running its whole length: the picture's edge. Per side, find
    where painted content begins (brightness changing along the side) and the
    innermost continuous parallel edge before it; step in when all four sides
    have one (on one side it may run only half the length: a visitor standing
    in front of it). Repeated, this peels stepped mouldings one band at a time.
    """
    for _ in range(steps):
        flat, homography = _rectified_patch(grey, quad, _BAND_RECTIFIED_SIDE * 2)
        height, width = flat.shape
        low, high = _percentiles(flat[::2, ::2], 2.0, 98.0)  # every 4th pixel is plenty
        patch = cv2.GaussianBlur((flat.astype(np.float32) - low) * (200.0 / max(high - low, 10.0)),
                                 (0, 0), 1.0)
        depths = []
        occluded = False  # one side may show its edge only in part: a visitor in front of it
        # Each side as (rows = depth into the quad, columns = along the side).
        for band in (patch, patch[::-1], patch.T, patch.T[::-1]):
            along_len = band.shape[1]
            max_depth = int(0.22 * band.shape[0])
            if max_depth < 4:
                return quad
            lo, hi = int(0.12 * along_len), int(0.88 * along_len)  # leave the corners out
            region = band[:max_depth + 2, lo:hi]
            across = np.abs(np.diff(region, axis=0))  # [d]: between depth d and d + 1
            along = np.abs(np.diff(region, axis=1))
            busy = (along > _PEEL_STEP).mean(axis=1)
            continuous = (across > _PEEL_EDGE).mean(axis=1)
            content = next((d for d in range(1, max_depth) if busy[d] > _PEEL_BUSY), max_depth)
            edges = [d for d in range(1, min(content + 1, len(continuous)))
                     if continuous[d] >= _PEEL_CONTINUOUS]
            if not edges and not occluded:
                edges = [d for d in range(1, min(content + 1, len(continuous)))
                         if continuous[d] >= _PEEL_PARTLY_CONTINUOUS]
                occluded = bool(edges)
            if not edges or edges[-1] + 1 < _PEEL_MIN_BAND * band.shape[0]:
                # No band, or one too thin to be a mounting: a line painted
                # along the picture's edge (a Mondrian's bars) is not a frame.
                return quad
            depths.append(edges[-1] + 1.0)
        top, bottom, left, right = depths
        inner = np.array([[left, top], [width - right, top], [width - right, height - bottom],
                          [left, height - bottom]], np.float32)
        if min(depths[:2]) < 0.25 * max(depths[:2]) or min(depths[2:]) < 0.25 * max(depths[2:]):
            return quad  # a band deep on one side only is part of the painting
        quad = cv2.perspectiveTransform(inner[None], np.linalg.inv(homography))[0]
    return quad
