"""Procedural artworks: real, clearly different paintings for the demo and the tests.

The built-in virtual camera (``capture.synthetic.camera.DemoCamera``) hangs these on a
wall; tests and ``art2mus bench`` use them as stand-ins for photographed works.
Each style is chosen to sit at a different corner of the descriptor space
(warm/cool, bright/dark, saturated/grey, calm/busy, symmetric or not), so the
music the demo plays differs audibly from one painting to the next.

``make_artwork(index, seed, size)`` is deterministic: the style is
``ARTWORK_STYLES[index % len(ARTWORK_STYLES)]`` and the composition is drawn
from ``(seed, index)``, so index 8 is a different painting in the style of index 0.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

ARTWORK_STYLES: tuple[str, ...] = (
    "warm abstract expressionist",
    "dark nocturne landscape",
    "saturated geometric grid",
    "cool minimal seascape",
    "high-entropy drip painting",
    "symmetric mandala",
    "pastel pointillist",
    "near-monochrome portrait study",
)

#: Width / height of each style as the demo hangs it (portraits are upright).
ARTWORK_ASPECTS: tuple[float, ...] = (4 / 3, 1.6, 1.0, 1.5, 1.4, 1.0, 4 / 3, 0.75)


def artwork_style(index: int) -> str:
    """The style name of artwork ``index``."""
    return ARTWORK_STYLES[index % len(ARTWORK_STYLES)]


def make_artwork(index: int, seed: int, size: tuple[int, int]) -> np.ndarray:
    """Paint artwork ``index`` as a BGR uint8 image; ``size`` is (width, height) in pixels."""
    width, height = int(size[0]), int(size[1])
    if width < 16 or height < 16:
        raise ValueError(f"artwork size must be at least 16x16, got {width}x{height}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, index & 0xFFFFFFFF])
    painter = _PAINTERS[index % len(_PAINTERS)]
    image = painter(rng, width, height)
    return np.ascontiguousarray(image, dtype=np.uint8)


# -- helpers ---------------------------------------------------------------


def _vertical_gradient(width: int, height: int, top: tuple, bottom: tuple) -> np.ndarray:
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    top_a = np.array(top, np.float32)[None, None, :]
    bottom_a = np.array(bottom, np.float32)[None, None, :]
    column = top_a * (1.0 - t) + bottom_a * t
    return np.repeat(column, width, axis=1)


def _canvas_grain(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Add a fine canvas weave / paint grain so no painting is digitally flat."""
    noise = rng.normal(0.0, sigma, image.shape[:2]).astype(np.float32)[..., None]
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _scale(width: int, height: int) -> float:
    return min(width, height) / 400.0


# -- the styles ------------------------------------------------------------


def _warm_abstract(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # Big warm colour fields and gestural strokes (after de Kooning / Rothko).
    s = _scale(width, height)
    image = _vertical_gradient(width, height, (30, 60, 190), (20, 120, 230)).astype(np.uint8)
    palette = [(20, 40, 200), (30, 140, 245), (60, 200, 250), (20, 20, 120), (40, 90, 220),
               (90, 170, 240), (25, 45, 90)]
    for _ in range(14):
        colour = palette[rng.integers(len(palette))]
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = (int(rng.uniform(40, 140) * s), int(rng.uniform(20, 70) * s))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1,
                    cv2.LINE_AA)
    for _ in range(30):
        colour = palette[rng.integers(len(palette))]
        start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        step = rng.normal(0, 60 * s, 2)
        points = [start + step * k + rng.normal(0, 8 * s, 2) for k in range(4)]
        cv2.polylines(image, [np.array(points, np.int32)], False, colour,
                      max(2, int(rng.uniform(6, 22) * s)), cv2.LINE_AA)
    return _canvas_grain(rng, cv2.GaussianBlur(image, (0, 0), 1.2 * s), 5.0)


def _nocturne(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # A dark blue night: gradient sky, stars, a moon, black hills, a few windows.
    s = _scale(width, height)
    skies = [((45, 18, 8), (95, 55, 25)), ((55, 12, 30), (100, 45, 75)),
             ((40, 30, 5), (95, 85, 20))]
    top, bottom = skies[rng.integers(len(skies))]
    image = _vertical_gradient(width, height, top, bottom)
    horizon = int(height * rng.uniform(0.45, 0.75))
    image = image.astype(np.uint8)
    for _ in range(int(60 * width * height / 160000)):
        x, y = int(rng.uniform(0, width)), int(rng.uniform(0, horizon))
        cv2.circle(image, (x, y), 1, (200, 210, 220), -1, cv2.LINE_AA)
    moon = (int(width * rng.uniform(0.15, 0.85)), int(height * rng.uniform(0.12, 0.3)))
    glow = np.zeros((height, width), np.float32)
    cv2.circle(glow, moon, int(40 * s), 1.0, -1)
    halo = cv2.GaussianBlur(glow, (0, 0), 25 * s)[..., None]
    image = np.clip(image + halo * np.array([60, 70, 70], np.float32), 0, 255).astype(np.uint8)
    cv2.circle(image, moon, int(16 * s), (170, 225, 240), -1, cv2.LINE_AA)
    xs = np.arange(width)
    for layer, shade in enumerate([(30, 28, 12), (14, 14, 6)]):
        phase = rng.uniform(0, 2 * np.pi, 3)
        ridge = (horizon + layer * 25 * s
                 + 30 * s * np.sin(xs / width * 2 * np.pi * 1.3 + phase[0])
                 + 14 * s * np.sin(xs / width * 2 * np.pi * 3.7 + phase[1]))
        polygon = np.concatenate([np.stack([xs, ridge], 1), [[width, height], [0, height]]])
        cv2.fillPoly(image, [polygon.astype(np.int32)], shade, cv2.LINE_AA)
    for _ in range(int(rng.integers(4, 9))):
        x = int(rng.uniform(0.05, 0.95) * width)
        y = int(rng.uniform(horizon + 45 * s, height - 10))
        if y < height:
            cv2.rectangle(image, (x, y), (x + int(4 * s), y + int(5 * s)), (60, 190, 235), -1)
    return _canvas_grain(rng, image, 3.0)


def _geometric_grid(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # A Mondrian-like grid: white field, black bars, primary blocks. Blocks are
    # split until each is under ~30% of the picture so none of them looks like
    # the picture itself to the detector.
    s = _scale(width, height)
    image = np.full((height, width, 3), (235, 240, 242), np.uint8)
    blocks = [(0, 0, width, height)]
    for _ in range(40):
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in blocks]
        i = int(np.argmax(areas))
        if areas[i] < 0.12 * width * height and len(blocks) >= 7:
            break
        x0, y0, x1, y1 = blocks.pop(i)
        if (x1 - x0) >= (y1 - y0):
            cut = int(rng.uniform(0.3, 0.7) * (x1 - x0)) + x0
            blocks += [(x0, y0, cut, y1), (cut, y0, x1, y1)]
        else:
            cut = int(rng.uniform(0.3, 0.7) * (y1 - y0)) + y0
            blocks += [(x0, y0, x1, cut), (x0, cut, x1, y1)]
    colours = [(30, 30, 215), (150, 50, 20), (20, 205, 245)]  # red, blue, yellow (BGR)
    order = rng.permutation(len(blocks))
    for k, i in enumerate(order[: max(4, len(blocks) // 2)]):
        x0, y0, x1, y1 = blocks[i]
        cv2.rectangle(image, (x0, y0), (x1, y1), colours[k % 3], -1)
    bar = max(3, int(9 * s))
    for x0, y0, x1, y1 in blocks:
        cv2.rectangle(image, (x0, y0), (x1, y1), (20, 20, 20), bar)
    return _canvas_grain(rng, image, 2.0)


def _seascape(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # Cool and quiet: a blue sky over a teal sea, a soft horizon, a few low swells.
    s = _scale(width, height)
    horizon = int(height * rng.uniform(0.3, 0.65))
    skies = [((200, 150, 95), (225, 205, 180)), ((165, 140, 120), (205, 200, 190)),
             ((215, 165, 140), (235, 215, 205))]
    seas = [((150, 130, 60), (110, 70, 25)), ((120, 110, 70), (80, 60, 35)),
            ((170, 120, 40), (120, 60, 10))]
    sky = _vertical_gradient(width, horizon, *skies[rng.integers(len(skies))])
    sea = _vertical_gradient(width, height - horizon, *seas[rng.integers(len(seas))])
    image = np.concatenate([sky, sea], 0)
    # A distant headland or rock on one side breaks the horizon.
    side = rng.uniform(0.05, 0.95)
    rock = np.array([
        [width * (side - 0.18), horizon + 2], [width * (side - 0.05), horizon - 18 * s],
        [width * (side + 0.08), horizon - 10 * s], [width * (side + 0.2), horizon + 2],
    ])
    cv2.fillPoly(image, [rock.astype(np.int32)], (110, 100, 85))
    image = cv2.GaussianBlur(image, (0, 0), 2.0 * s)
    for _ in range(10):
        y = int(rng.uniform(horizon + 10 * s, height - 5))
        x0 = int(rng.uniform(0, width * 0.7))
        x1 = x0 + int(rng.uniform(40, 160) * s)
        cv2.line(image, (x0, y), (x1, y), (175, 160, 105), max(1, int(2 * s)), cv2.LINE_AA)
    image = cv2.GaussianBlur(image, (0, 0), 1.0 * s)
    return _canvas_grain(rng, image.astype(np.uint8), 1.5)


def _drip_painting(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # Pollock-like: raw canvas covered by hundreds of looping drips and splatters.
    s = _scale(width, height)
    image = np.full((height, width, 3), (150, 175, 190), np.uint8)
    palette = [(15, 15, 15), (240, 240, 240), (40, 120, 170), (90, 90, 90), (30, 60, 120),
               (200, 210, 215)]
    for _ in range(int(220 * width * height / 160000)):
        colour = palette[rng.integers(len(palette))]
        start = rng.uniform([0, 0], [width, height])
        heading = rng.uniform(0, 2 * np.pi)
        points = [start]
        for _ in range(int(rng.integers(6, 18))):
            heading += rng.normal(0, 0.9)
            points.append(points[-1] + rng.uniform(8, 30) * s
                          * np.array([np.cos(heading), np.sin(heading)]))
        cv2.polylines(image, [np.array(points, np.int32)], False, colour,
                      max(1, int(rng.uniform(1, 4) * s)), cv2.LINE_AA)
    for _ in range(int(500 * width * height / 160000)):
        colour = palette[rng.integers(len(palette))]
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        cv2.circle(image, centre, max(1, int(rng.uniform(1, 4) * s)), colour, -1)
    return _canvas_grain(rng, image, 6.0)


def _mandala(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # Radial, mirror-symmetric ornament in magenta, cyan and gold on deep purple.
    # Everything is drawn on one half and mirrored so the symmetry is exact.
    s = _scale(width, height)
    grounds = [(70, 15, 45), (60, 25, 10), (20, 15, 75), (35, 45, 15)]
    image = np.full((height, width, 3), grounds[rng.integers(len(grounds))], np.uint8)
    centre = (width // 2, height // 2)
    radius = min(width, height) * 0.47
    palettes = [
        [(200, 40, 220), (220, 210, 40), (40, 190, 240), (240, 240, 250), (120, 30, 160)],
        [(30, 120, 250), (160, 170, 20), (200, 235, 245), (40, 40, 200), (60, 200, 240)],
        [(60, 190, 60), (40, 200, 240), (245, 245, 235), (200, 120, 30), (20, 120, 200)],
    ]
    palette = palettes[rng.integers(len(palettes))]
    folds = int(rng.choice([8, 10, 12, 16]))
    # Ring count, petal placement and shape, and a rotation per ring are drawn
    # too, so that many mandalas (a catalogue of fifty works has six) differ.
    rings = int(rng.integers(4, 8))
    reach, fatness = rng.uniform(0.55, 0.85), rng.uniform(0.08, 0.2)
    for ring in range(rings, 0, -1):
        r = radius * ring / rings
        colour = palette[rng.integers(len(palette))]
        cv2.circle(image, centre, int(r), colour, max(2, int(4 * s)), cv2.LINE_AA)
        petal = (int(r * 0.32), int(r * fatness))
        turn = 180.0 / folds * float(rng.integers(2))
        for k in range(folds):
            angle = 360.0 * k / folds + turn
            px = centre[0] + reach * r * np.cos(np.radians(angle))
            py = centre[1] + reach * r * np.sin(np.radians(angle))
            cv2.ellipse(image, (int(px), int(py)), petal, angle, 0, 360,
                        palette[(ring + k % 2) % len(palette)], -1, cv2.LINE_AA)
    half = image[:, : width // 2]
    image[:, width - width // 2:] = half[:, ::-1]
    image[height - height // 2:, :] = image[: height // 2][::-1]
    return image  # no grain: grain would break the exact symmetry the style is about


def _pointillist(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # Seurat-like: a pastel park scene rebuilt from thousands of small dots.
    s = _scale(width, height)
    horizon = int(height * rng.uniform(0.3, 0.6))
    skies = [((235, 200, 225), (215, 225, 245)), ((240, 215, 190), (225, 230, 240)),
             ((215, 205, 245), (200, 225, 250))]
    grasses = [((170, 225, 200), (140, 205, 185)), ((150, 215, 225), (120, 190, 210)),
               ((200, 220, 170), (170, 200, 150))]
    sky = _vertical_gradient(width, horizon, *skies[rng.integers(len(skies))])
    grass = _vertical_gradient(width, height - horizon, *grasses[rng.integers(len(grasses))])
    scene = np.concatenate([sky, grass], 0).astype(np.uint8)
    if rng.random() < 0.6:  # a river or the sea just below the horizon
        band = int(rng.uniform(0.08, 0.2) * height)
        scene[horizon:horizon + band] = (225, 190, 150)
    for _ in range(int(rng.integers(1, 4))):
        centre = (int(rng.uniform(0.1, 0.9) * width), int(horizon - rng.uniform(0, 30) * s))
        cv2.circle(scene, centre, int(rng.uniform(35, 70) * s), (165, 210, 175), -1)
    figures = [(130, 95, 120), (95, 120, 175), (150, 130, 95), (110, 110, 200)]
    for _ in range(int(rng.integers(2, 5))):  # strollers in their Sunday best
        centre = (int(rng.uniform(0.1, 0.9) * width), int(rng.uniform(horizon + 0.1 * height,
                                                                      0.85 * height)))
        axes = (int(rng.uniform(0.03, 0.05) * width), int(rng.uniform(0.09, 0.14) * height))
        cv2.ellipse(scene, centre, axes, 0, 0, 360, figures[rng.integers(len(figures))], -1)
    # Dots go over a thin wash of the scene, as on a primed canvas. Seurat often
    # painted a dotted border in darker, complementary tones around his canvases.
    border = max(3, int(0.02 * min(width, height)))
    scene[:border], scene[-border:] = (150, 110, 120), (150, 110, 120)
    scene[:, :border], scene[:, -border:] = (150, 110, 120), (150, 110, 120)
    image = cv2.addWeighted(scene, 0.6, np.full_like(scene, 235), 0.4, 0.0)
    count = int(9000 * width * height / 160000)
    xs = rng.integers(0, width, count)
    ys = rng.integers(0, height, count)
    jitter = rng.normal(0, 18, (count, 3))
    colours = np.clip(scene[ys, xs].astype(np.float64) + jitter, 0, 255).astype(np.uint8)
    # Stamp all dots at once (a disc of offsets around each centre) instead of
    # thousands of cv2.circle calls: the same picture, ten times faster.
    radius = max(2, int(3 * s))
    oy, ox = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disc = ox * ox + oy * oy <= radius * radius
    oy, ox = oy[disc], ox[disc]
    py = np.clip(ys[:, None] + oy[None, :], 0, height - 1).ravel()
    px = np.clip(xs[:, None] + ox[None, :], 0, width - 1).ravel()
    image[py, px] = np.repeat(colours, len(oy), axis=0)
    return image


def _portrait_study(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # A sepia charcoal study: dark ground, a lit oval face, shoulders, hatching.
    s = _scale(width, height)
    image = np.zeros((height, width), np.float32)
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    if rng.random() < 0.5:
        xs = xs[:, ::-1]  # light from the left instead of the right
    image += rng.uniform(50, 90) + 60 * xs
    cx, cy = int(width * rng.uniform(0.36, 0.64)), int(height * rng.uniform(0.33, 0.45))
    cv2.ellipse(image, (cx, int(height * 0.95)), (int(width * 0.42), int(height * 0.28)), 0, 0,
                360, 45.0, -1)
    cv2.ellipse(image, (cx, cy), (int(width * 0.2), int(height * 0.2)), 0, 0, 360, 175.0, -1)
    cv2.ellipse(image, (cx, cy - int(height * 0.1)), (int(width * 0.22), int(height * 0.13)), 0,
                180, 360, 40.0, -1)
    for dx in (-1, 1):
        cv2.circle(image, (cx + dx * int(width * 0.07), cy), max(2, int(5 * s)), 50.0, -1)
    image = np.asarray(cv2.GaussianBlur(image, (0, 0), 6 * s), np.float32)
    for _ in range(60):
        x0 = rng.uniform(0, width)
        y0 = rng.uniform(0, height)
        cv2.line(image, (int(x0), int(y0)), (int(x0 + 25 * s), int(y0 - 25 * s)), 35.0, 1,
                 cv2.LINE_AA)
    grey = np.clip(image, 0, 255)
    # Sepia tint: a slight warm cast, saturation kept low on purpose.
    toned = np.stack([grey * 0.88, grey * 0.96, grey * 1.04], -1)
    return _canvas_grain(rng, np.clip(toned, 0, 255).astype(np.uint8), 4.0)


_PAINTERS: tuple[Callable[[np.random.Generator, int, int], np.ndarray], ...] = (
    _warm_abstract,
    _nocturne,
    _geometric_grid,
    _seascape,
    _drip_painting,
    _mandala,
    _pointillist,
    _portrait_study,
)
