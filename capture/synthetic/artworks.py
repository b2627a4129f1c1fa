"""Procedural artworks: real, clearly different paintings for the demo and the tests.

The built-in virtual camera (``capture.synthetic.camera.DemoCamera``) hangs these on a
wall; tests and ``art2mus bench`` use them as stand-ins for photographed works.
Each style is chosen to sit at a different corner of the descriptor space
(warm/cool, bright/dark, saturated/grey, calm/busy, symmetric or not), so the
music the demo plays differs audibly from one painting to the next.

``make_artwork(index, seed, size)`` is deterministic: the style is
``ARTWORK_STYLES[index % len(ARTWORK_STYLES)]`` and the composition is drawn
from ``(seed, index)``, so index 8 is a different painting in the style of index 0.

Works ``0 .. CLASSIC_WORKS - 1`` are painted as they always were (the demo,
the tests, the 50-work catalogue and the classic scene bench's outsiders
50-57 use them; their pixels must not change). A classic style has few free
parameters (a seascape is 3 skies x 3 seas, a horizon and a rock), which is
fine for a few works per style but not for a museum: a 2,000-work catalogue
would hold ~250 near-identical seascapes and mandalas sharing whole rings,
and recognition would be measured against twins no real collection has.
Works from ``CLASSIC_WORKS`` on are drawn with the per-work freedom real
works in one style have: continuous palettes, and objects whose count,
place, size and shape are drawn (clouds, islands and boats on a seascape;
per-ring folds, petal shapes and colours on a mandala; hair, pose, a window
and a background object on a portrait; ...), while each keeps the corner of
the descriptor space its style stands for.
"""

from __future__ import annotations

import colorsys
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
#: Works below this index are painted by the classic (few-parameter) painters, bit for bit
#: as before; from it on, with more per-work freedom (see the module docstring). 64 = eight
#: works of each style, covering the 50-work catalogue and the classic scene bench's
#: outsiders (works 50-57).
CLASSIC_WORKS = 64


def artwork_style(index: int) -> str:
    """The style name of artwork ``index``."""
    return ARTWORK_STYLES[index % len(ARTWORK_STYLES)]


def make_artwork(index: int, seed: int, size: tuple[int, int]) -> np.ndarray:
    """Paint artwork ``index`` as a BGR uint8 image; ``size`` is (width, height) in pixels."""
    width, height = int(size[0]), int(size[1])
    if width < 16 or height < 16:
        raise ValueError(f"artwork size must be at least 16x16, got {width}x{height}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, index & 0xFFFFFFFF])
    painters = _PAINTERS if index < CLASSIC_WORKS else _VARIED_PAINTERS
    painter = painters[index % len(painters)]
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


# -- the styles with more per-work freedom (works >= CLASSIC_WORKS) ---------------------------
#
# Each keeps its classic counterpart's corner of the descriptor space (warm, dark, saturated,
# cool and calm, busy, symmetric, pastel, grey) but draws its palette from continuous ranges and
# its composition from objects whose count, place, size and shape vary, so that two works of one
# style share no large identical region.


def _colour(rng: np.random.Generator, hue: tuple[float, float], saturation: tuple[float, float],
            value: tuple[float, float]) -> tuple[int, int, int]:
    """A BGR colour drawn from ranges of hue (degrees, may pass 360), saturation and value."""
    red, green, blue = colorsys.hsv_to_rgb((rng.uniform(*hue) % 360.0) / 360.0,
                                           rng.uniform(*saturation), rng.uniform(*value))
    return int(blue * 255), int(green * 255), int(red * 255)


def _blend(image: np.ndarray, layer: np.ndarray, mask: np.ndarray, opacity: float) -> np.ndarray:
    """``layer`` over ``image`` where ``mask`` (0-1 float, same height and width) says."""
    alpha = (mask.astype(np.float32) * opacity)[..., None]
    return image.astype(np.float32) * (1.0 - alpha) + layer.astype(np.float32) * alpha


def _ridge(rng: np.random.Generator, width: int, base: float, amplitude: float) -> np.ndarray:
    """A skyline: the sum of 2-4 sines of drawn frequency and phase, ``amplitude`` px high."""
    xs = np.arange(width, dtype=np.float64)
    heights = np.zeros(width)
    for _ in range(int(rng.integers(2, 5))):
        cycles = rng.uniform(0.4, 6.0)
        heights += rng.uniform(0.2, 1.0) * np.sin(xs / width * 2 * np.pi * cycles
                                                  + rng.uniform(0, 2 * np.pi))
    return base - amplitude * heights / max(float(np.abs(heights).max()), 1e-6)


def _warm_abstract_varied(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    s = _scale(width, height)
    base = rng.uniform(-8.0, 30.0)  # red .. orange: the painting's key
    top = _colour(rng, (base - 8, base + 8), (0.7, 0.95), (0.55, 0.85))
    bottom = _colour(rng, (base, base + 18), (0.7, 0.95), (0.75, 0.98))
    image = _vertical_gradient(width, height, top, bottom)
    if rng.random() < 0.5:
        image = np.ascontiguousarray(image[::-1])
    image = image.astype(np.uint8)
    palette = [_colour(rng, (base - 18, base + 28), (0.55, 1.0), (0.45, 1.0))
               for _ in range(int(rng.integers(4, 9)))]
    # Rothko-like stacked fields on some, free colour fields and gestures on all.
    for _ in range(int(rng.integers(0, 4))):
        x0, y0 = rng.uniform(0.02, 0.4) * width, rng.uniform(0.02, 0.7) * height
        x1, y1 = x0 + rng.uniform(0.4, 0.95) * width, y0 + rng.uniform(0.12, 0.4) * height
        cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)),
                      palette[rng.integers(len(palette))], -1)
    for _ in range(int(rng.integers(6, 22))):
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = (int(rng.uniform(20, 170) * s), int(rng.uniform(10, 80) * s))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                    palette[rng.integers(len(palette))], -1, cv2.LINE_AA)
    for _ in range(int(rng.integers(15, 45))):
        start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        step = rng.normal(0, rng.uniform(25, 90) * s, 2)
        points = [start + step * k + rng.normal(0, 10 * s, 2)
                  for k in range(int(rng.integers(2, 7)))]
        cv2.polylines(image, [np.array(points, np.int32)], False,
                      palette[rng.integers(len(palette))],
                      max(2, int(rng.uniform(4, 26) * s)), cv2.LINE_AA)
    return _canvas_grain(rng, cv2.GaussianBlur(image, (0, 0), rng.uniform(0.8, 2.0) * s), 5.0)


def _nocturne_varied(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    s = _scale(width, height)
    hue = rng.uniform(200.0, 290.0)  # blue .. violet night
    top = _colour(rng, (hue - 10, hue + 10), (0.6, 0.9), (0.1, 0.22))
    bottom = _colour(rng, (hue - 20, hue + 20), (0.4, 0.8), (0.25, 0.42))
    horizon = int(height * rng.uniform(0.4, 0.78))
    image = _vertical_gradient(width, height, top, bottom).astype(np.uint8)
    for _ in range(int(rng.uniform(15, 130) * width * height / 160000)):
        x, y = int(rng.uniform(0, width)), int(rng.uniform(0, horizon))
        cv2.circle(image, (x, y), int(rng.integers(1, 3)), (200, 210, 220), -1, cv2.LINE_AA)
    # Clouds: dark soft banks drifting across the sky.
    clouds = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(0, 5))):
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0.05, 0.6) * horizon))
        axes = (int(rng.uniform(40, 160) * s), int(rng.uniform(8, 30) * s))
        cv2.ellipse(clouds, centre, axes, float(rng.uniform(-10, 10)), 0, 360, 1.0, -1)
    image = _blend(image, np.full_like(image, bottom), cv2.GaussianBlur(clouds, (0, 0), 8 * s),
                   0.7).astype(np.uint8)
    moon = (int(width * rng.uniform(0.1, 0.9)), int(horizon * rng.uniform(0.15, 0.6)))
    radius = int(rng.uniform(7, 24) * s)
    glow = np.zeros((height, width), np.float32)
    cv2.circle(glow, moon, int(radius * rng.uniform(1.5, 3.0)), 1.0, -1)
    halo = cv2.GaussianBlur(glow, (0, 0), rng.uniform(12, 35) * s)[..., None]
    image = np.clip(image + halo * np.array([60, 70, 70], np.float32), 0, 255).astype(np.uint8)
    cv2.circle(image, moon, radius, (170, 225, 240), -1, cv2.LINE_AA)
    if rng.random() < 0.4:  # a crescent: the sky covers part of the disc
        offset = int(radius * rng.uniform(0.4, 0.9)) * (1 if rng.random() < 0.5 else -1)
        cv2.circle(image, (moon[0] + offset, moon[1] - radius // 3), radius,
                   tuple(int(v) for v in image[moon[1], min(width - 1, max(0, moon[0] - 3
                                                                         * radius))]),
                   -1, cv2.LINE_AA)
    if rng.random() < 0.4:  # a lake: the sky again, darker, with the moon's path on it
        lake_top = horizon + int(rng.uniform(5, 40) * s)
        image[lake_top:] = (image[lake_top:].astype(np.float32) * 0.7).astype(np.uint8)
        for k in range(int(rng.integers(5, 14))):
            y = lake_top + int(k * rng.uniform(4, 9) * s)
            half = int(rng.uniform(4, 16) * s)
            cv2.line(image, (moon[0] - half, y), (moon[0] + half, y), (120, 160, 170),
                     max(1, int(1.5 * s)), cv2.LINE_AA)
    xs = np.arange(width)
    layers = int(rng.integers(1, 4))
    front = np.zeros(width)
    for layer in range(layers):
        shade = tuple(int(v * (1.0 - 0.45 * (layer + 1) / layers)) for v in top)
        front = _ridge(rng, width, horizon + layer * rng.uniform(10, 35) * s,
                       rng.uniform(10, 45) * s)
        polygon = np.concatenate([np.stack([xs, front], 1), [[width, height], [0, height]]])
        cv2.fillPoly(image, [polygon.astype(np.int32)], shade, cv2.LINE_AA)
    black = (8, 8, 5)
    for _ in range(int(rng.integers(0, 14))):  # conifers on the nearest ridge
        x = int(rng.uniform(0, width))
        tree_h, tree_w = rng.uniform(15, 55) * s, rng.uniform(5, 14) * s
        base = front[min(width - 1, x)] + 3 * s
        cv2.fillPoly(image, [np.array([[x - tree_w, base], [x, base - tree_h],
                                       [x + tree_w, base]], np.int32)], black, cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 6))):  # houses with lit windows
        x = int(rng.uniform(0.05, 0.9) * width)
        house_w, house_h = int(rng.uniform(18, 50) * s), int(rng.uniform(12, 35) * s)
        base = int(front[min(width - 1, x)] + rng.uniform(5, 40) * s)
        cv2.rectangle(image, (x, base - house_h), (x + house_w, base), black, -1)
        cv2.fillPoly(image, [np.array([[x - 2 * s, base - house_h], [x + house_w / 2,
                                       base - house_h - rng.uniform(6, 20) * s],
                                       [x + house_w + 2 * s, base - house_h]], np.int32)], black)
        for _ in range(int(rng.integers(1, 4))):
            wx = x + int(rng.uniform(0.1, 0.75) * house_w)
            wy = base - int(rng.uniform(0.3, 0.8) * house_h)
            cv2.rectangle(image, (wx, wy), (wx + int(4 * s), wy + int(5 * s)),
                          _colour(rng, (30, 50), (0.6, 0.9), (0.8, 1.0)), -1)
    return _canvas_grain(rng, image, 3.0)


def _geometric_grid_varied(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    s = _scale(width, height)
    image = np.full((height, width, 3), _colour(rng, (30, 60), (0.0, 0.08), (0.9, 0.97)),
                    np.uint8)
    most, least = rng.uniform(0.06, 0.16), int(rng.integers(6, 14))
    blocks = [(0, 0, width, height)]
    for _ in range(60):
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in blocks]
        i = int(np.argmax(areas))
        if areas[i] < most * width * height and len(blocks) >= least:
            break
        x0, y0, x1, y1 = blocks.pop(i)
        if (x1 - x0) * rng.uniform(0.7, 1.4) >= (y1 - y0):
            cut = int(rng.uniform(0.2, 0.8) * (x1 - x0)) + x0
            blocks += [(x0, y0, cut, y1), (cut, y0, x1, y1)]
        else:
            cut = int(rng.uniform(0.2, 0.8) * (y1 - y0)) + y0
            blocks += [(x0, y0, x1, cut), (x0, cut, x1, y1)]
    colours = [_colour(rng, (hue - 10, hue + 10), (0.8, 1.0), (0.72, 0.97))
               for hue in rng.permutation([0.0, 225.0, 52.0])]
    if rng.random() < 0.25:
        colours.append(_colour(rng, (0, 360), (0.0, 0.1), (0.08, 0.3)))  # a black block
    order = rng.permutation(len(blocks))
    filled = max(4, int(len(blocks) * rng.uniform(0.4, 0.6)))
    for k, i in enumerate(order[:filled]):
        x0, y0, x1, y1 = blocks[i]
        cv2.rectangle(image, (x0, y0), (x1, y1), colours[k % len(colours)], -1)
    bar = max(3, int(rng.uniform(4, 15) * s))
    for x0, y0, x1, y1 in blocks:
        cv2.rectangle(image, (x0, y0), (x1, y1), (20, 20, 20), bar)
    return _canvas_grain(rng, image, 2.0)


def _seascape_varied(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    s = _scale(width, height)
    horizon = int(height * rng.uniform(0.25, 0.7))
    sky = _vertical_gradient(width, horizon, _colour(rng, (195, 230), (0.2, 0.6), (0.6, 0.9)),
                             _colour(rng, (185, 235), (0.04, 0.3), (0.75, 0.97)))
    sea = _vertical_gradient(width, height - horizon,
                             _colour(rng, (170, 215), (0.35, 0.85), (0.42, 0.7)),
                             _colour(rng, (190, 225), (0.6, 0.95), (0.22, 0.48)))
    image = np.concatenate([sky, sea], 0)
    if rng.random() < 0.5:  # the sun (or a bright patch of cloud) low in the sky
        glow = np.zeros((height, width), np.float32)
        cv2.circle(glow, (int(rng.uniform(0, width)), int(rng.uniform(0.2, 0.9) * horizon)),
                   int(rng.uniform(10, 40) * s), 1.0, -1)
        image = _blend(image, np.full_like(image, 245.0), cv2.GaussianBlur(
            glow, (0, 0), rng.uniform(10, 30) * s), rng.uniform(0.4, 0.9))
    clouds = np.zeros((height, width), np.float32)
    for _ in range(int(rng.integers(0, 7))):  # clouds: clusters of soft puffs
        cx, cy = rng.uniform(0, width), rng.uniform(0.05, 0.8) * horizon
        for _ in range(int(rng.integers(2, 6))):
            centre = (int(cx + rng.normal(0, 25 * s)), int(cy + rng.normal(0, 6 * s)))
            axes = (int(rng.uniform(15, 60) * s), int(rng.uniform(6, 20) * s))
            cv2.ellipse(clouds, centre, axes, 0, 0, 360, 1.0, -1)
    image = _blend(image, np.full_like(image, 240.0), cv2.GaussianBlur(clouds, (0, 0), 4 * s),
                   rng.uniform(0.5, 0.9))
    for _ in range(int(rng.integers(0, 4))):  # islands and headlands of drawn outline
        middle, span = rng.uniform(-0.1, 1.1) * width, rng.uniform(0.08, 0.5) * width
        xs = np.linspace(middle - span / 2, middle + span / 2, int(rng.integers(5, 11)))
        tops = horizon - rng.uniform(3, 30) * s * np.sin(np.linspace(0, np.pi, len(xs))) \
            * rng.uniform(0.5, 1.0, len(xs))
        outline = np.concatenate([np.stack([xs, tops], 1), [[xs[-1], horizon + 2],
                                                            [xs[0], horizon + 2]]])
        cv2.fillPoly(image, [outline.astype(np.int32)],
                     _colour(rng, (150, 230), (0.1, 0.35), (0.3, 0.55)), cv2.LINE_AA)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(1.2, 2.5) * s)
    for _ in range(int(rng.integers(4, 15))):  # swells
        y = int(rng.uniform(horizon + 8 * s, height - 5))
        x0 = int(rng.uniform(-0.1, 0.9) * width)
        cv2.line(image, (x0, y), (x0 + int(rng.uniform(30, 200) * s), y),
                 _colour(rng, (180, 210), (0.2, 0.45), (0.6, 0.8)), max(1, int(2 * s)),
                 cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 5))):  # sailing boats, bigger nearer the viewer
        keel = rng.uniform(horizon + 4 * s, height * 0.95)
        size = s * (4 + 40 * (keel - horizon) / max(height - horizon, 1)) * rng.uniform(0.6, 1.3)
        bow = rng.uniform(0.05, 0.95) * width
        hull = np.array([[bow - size, keel - 0.3 * size], [bow + size, keel - 0.3 * size],
                         [bow + 0.7 * size, keel], [bow - 0.7 * size, keel]])
        cv2.fillPoly(image, [hull.astype(np.int32)], (60, 50, 40), cv2.LINE_AA)
        lean = rng.uniform(-0.4, 0.4) * size
        for sail in range(int(rng.integers(1, 3))):
            mast = bow + (sail - 0.3) * 0.6 * size
            cv2.fillPoly(image, [np.array([[mast, keel - 0.35 * size],
                                           [mast + lean, keel - rng.uniform(1.4, 2.4) * size],
                                           [mast + rng.uniform(0.5, 0.9) * size,
                                            keel - 0.35 * size]], np.int32)],
                         _colour(rng, (180, 230), (0.0, 0.12), (0.85, 0.98)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 6))):  # gulls
        bird_x, bird_y = rng.uniform(0, width), rng.uniform(0.1, 0.9) * horizon
        wing = rng.uniform(3, 8) * s
        cv2.polylines(image, [np.array([[bird_x - wing, bird_y - wing / 2], [bird_x, bird_y],
                                        [bird_x + wing, bird_y - wing / 2]], np.int32)], False,
                      (70, 60, 55), max(1, int(s)), cv2.LINE_AA)
    image = cv2.GaussianBlur(image, (0, 0), 1.0 * s)
    return _canvas_grain(rng, np.clip(image, 0, 255).astype(np.uint8), 1.5)


def _drip_painting_varied(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    s = _scale(width, height)
    ground = _colour(rng, (15, 50), (0.1, 0.28), (0.68, 0.84))  # raw canvas
    image = np.full((height, width, 3), ground, np.uint8)
    # Mostly earth colours and greys, as in the classic palette, with one drawn accent.
    palette = [(15, 15, 15), (240, 240, 240), _colour(rng, (0, 360), (0.0, 0.08), (0.3, 0.8))]
    palette += [_colour(rng, (15, 45), (0.3, 0.8), (0.25, 0.7))
                for _ in range(int(rng.integers(1, 4)))]
    palette.append(_colour(rng, (0, 360), (0.2, 0.5), (0.3, 0.8)))
    weights = rng.dirichlet(np.ones(len(palette)) * 1.5)
    wander = rng.uniform(0.5, 1.3)
    for _ in range(int(rng.uniform(160, 300) * width * height / 160000)):
        colour = palette[rng.choice(len(palette), p=weights)]
        start = rng.uniform([0, 0], [width, height])
        heading = rng.uniform(0, 2 * np.pi)
        points = [start]
        for _ in range(int(rng.integers(4, 20))):
            heading += rng.normal(0, wander)
            points.append(points[-1] + rng.uniform(6, 34) * s
                          * np.array([np.cos(heading), np.sin(heading)]))
        cv2.polylines(image, [np.array(points, np.int32)], False, colour,
                      max(1, int(rng.uniform(1, 5) * s)), cv2.LINE_AA)
    for _ in range(int(rng.uniform(300, 700) * width * height / 160000)):
        colour = palette[rng.choice(len(palette), p=weights)]
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        cv2.circle(image, centre, max(1, int(rng.uniform(1, 5) * s)), colour, -1)
    return _canvas_grain(rng, image, 6.0)


def _mandala_varied(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    # Every ring draws its own fold count, petal shape, reach, size, rotation and colours,
    # and the ring radii are a drawn partition of the radius: two mandalas share no ring.
    s = _scale(width, height)
    image = np.full((height, width, 3), _colour(rng, (0, 360), (0.6, 0.95), (0.2, 0.32)),
                    np.uint8)
    centre = np.array([width / 2, height / 2])
    radius = min(width, height) * rng.uniform(0.44, 0.49)
    # Two warm colours (gold, orange, magenta, red) lead, as in the classic palettes; the
    # rest are spread round the hue circle from a drawn key.
    palette = [_colour(rng, (-60, 60), (0.6, 1.0), (0.8, 1.0)) for _ in range(2)]
    key = rng.uniform(0, 360)
    palette += [_colour(rng, (key + k * 137.5 - 25, key + k * 137.5 + 25), (0.55, 1.0),
                        (0.8, 1.0)) for k in range(int(rng.integers(2, 6)))]
    palette.append(_colour(rng, (0, 360), (0.0, 0.12), (0.9, 1.0)))
    rings = int(rng.integers(3, 9))
    edges = np.concatenate([[0.0], np.cumsum(rng.uniform(0.5, 1.5, rings))])
    radii = radius * edges[1:] / edges[-1]
    for ring in range(rings - 1, -1, -1):
        r = float(radii[ring])
        folds = int(rng.integers(5, 25))
        turn = rng.uniform(0, 360.0 / folds)
        reach, length = rng.uniform(0.45, 0.9), rng.uniform(0.25, 0.6) * r
        fatness = rng.uniform(0.1, 0.35) * r
        first, second = (palette[int(i)] for i in rng.choice(len(palette), 2, replace=False))
        shape = int(rng.integers(4))
        if rng.random() < 0.7:
            cv2.circle(image, (int(centre[0]), int(centre[1])), int(r),
                       palette[rng.integers(len(palette))], max(1, int(rng.uniform(1, 6) * s)),
                       cv2.LINE_AA)
        for k in range(folds):
            angle = np.radians(360.0 * k / folds + turn)
            along = np.array([np.cos(angle), np.sin(angle)])
            across = np.array([-along[1], along[0]])
            middle = centre + reach * r * along
            colour = first if k % 2 == 0 or rng.random() < 0.2 else second
            if shape == 0:  # an oval petal
                cv2.ellipse(image, (int(middle[0]), int(middle[1])),
                            (max(1, int(length / 2)), max(1, int(fatness / 2))),
                            float(np.degrees(angle)), 0, 360, colour, -1, cv2.LINE_AA)
            elif shape == 1:  # a pointed leaf (a diamond)
                leaf = np.array([middle - along * length / 2, middle + across * fatness / 2,
                                 middle + along * length / 2, middle - across * fatness / 2])
                cv2.fillPoly(image, [leaf.astype(np.int32)], colour, cv2.LINE_AA)
            elif shape == 2:  # a dot with a smaller one beyond it
                cv2.circle(image, (int(middle[0]), int(middle[1])), max(1, int(fatness / 2)),
                           colour, -1, cv2.LINE_AA)
                tip = middle + along * length / 2
                cv2.circle(image, (int(tip[0]), int(tip[1])), max(1, int(fatness / 4)), second,
                           -1, cv2.LINE_AA)
            else:  # a triangle pointing outwards
                spike = np.array([middle - along * length / 2 + across * fatness / 2,
                                  middle + along * length / 2,
                                  middle - along * length / 2 - across * fatness / 2])
                cv2.fillPoly(image, [spike.astype(np.int32)], colour, cv2.LINE_AA)
    points = int(rng.integers(5, 13))  # an inner star
    outer, inner = radii[0] * rng.uniform(0.5, 0.9), radii[0] * rng.uniform(0.2, 0.45)
    angles = np.radians(np.arange(2 * points) * 180.0 / points + rng.uniform(0, 360))
    lengths = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    star = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * lengths[:, None]
    cv2.fillPoly(image, [star.astype(np.int32)], palette[rng.integers(len(palette))],
                 cv2.LINE_AA)
    half = image[:, : width // 2]
    image[:, width - width // 2:] = half[:, ::-1]
    image[height - height // 2:, :] = image[: height // 2][::-1]
    return image  # no grain, as the classic mandala: the symmetry stays exact


def _pointillist_varied(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    s = _scale(width, height)
    horizon = int(height * rng.uniform(0.25, 0.6))
    sky = _vertical_gradient(width, horizon, _colour(rng, (180, 340), (0.08, 0.25), (0.9, 1.0)),
                             _colour(rng, (180, 260), (0.05, 0.2), (0.93, 1.0)))
    grass_hue = rng.uniform(70, 160)
    grass = _vertical_gradient(width, height - horizon,
                               _colour(rng, (grass_hue - 10, grass_hue + 10), (0.2, 0.4),
                                       (0.8, 0.92)),
                               _colour(rng, (grass_hue - 15, grass_hue + 15), (0.25, 0.45),
                                       (0.72, 0.85)))
    scene = np.concatenate([sky, grass], 0).astype(np.uint8)
    if rng.random() < 0.6:  # a river or the sea, sometimes with a sail on it
        band = int(rng.uniform(0.06, 0.22) * height)
        scene[horizon:horizon + band] = _colour(rng, (190, 215), (0.2, 0.4), (0.85, 0.95))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0.1, 0.9) * width, horizon + band * rng.uniform(0.5, 0.9)
            size = rng.uniform(8, 20) * s
            cv2.fillPoly(scene, [np.array([[x, y], [x + size * 0.4, y - size * 1.6],
                                           [x + size, y]], np.int32)], (240, 240, 245))
    if rng.random() < 0.3:
        cv2.circle(scene, (int(rng.uniform(0.1, 0.9) * width),
                           int(rng.uniform(0.2, 0.7) * horizon)),
                   int(rng.uniform(12, 30) * s), (190, 235, 250), -1)
    for _ in range(int(rng.integers(1, 7))):  # trees: a trunk and a round crown
        x = int(rng.uniform(0.03, 0.97) * width)
        base = int(horizon + rng.uniform(-0.02, 0.25) * height)
        crown = int(rng.uniform(20, 75) * s)
        trunk = int(rng.uniform(0.8, 1.6) * crown)
        cv2.rectangle(scene, (x - max(2, crown // 8), base - trunk), (x + max(2, crown // 8),
                      base), _colour(rng, (20, 40), (0.2, 0.35), (0.55, 0.7)), -1)
        cv2.ellipse(scene, (x, base - trunk), (crown, int(crown * rng.uniform(0.7, 1.2))), 0,
                    0, 360, _colour(rng, (grass_hue - 25, grass_hue + 25), (0.2, 0.4),
                                    (0.7, 0.85)), -1)
    for _ in range(int(rng.integers(1, 8))):  # strollers, some under a parasol
        y = rng.uniform(horizon + 0.08 * height, 0.92 * height)
        size = (0.4 + (y - horizon) / max(height - horizon, 1)) * rng.uniform(0.8, 1.2)
        x = rng.uniform(0.05, 0.95) * width
        axes = (int(0.035 * width * size), int(0.11 * height * size))
        colour = _colour(rng, (0, 360), (0.2, 0.45), (0.5, 0.8))
        cv2.ellipse(scene, (int(x), int(y)), axes, 0, 0, 360, colour, -1)
        if rng.random() < 0.4:
            cv2.ellipse(scene, (int(x), int(y - axes[1] * 1.1)), (int(axes[0] * 2.2),
                        int(axes[0] * 1.2)), 0, 180, 360,
                        _colour(rng, (0, 360), (0.2, 0.4), (0.75, 0.95)), -1)
    border = max(3, int(rng.uniform(0.012, 0.03) * min(width, height)))
    edge = _colour(rng, (200, 340), (0.15, 0.35), (0.5, 0.65))
    scene[:border], scene[-border:] = edge, edge
    scene[:, :border], scene[:, -border:] = edge, edge
    wash = rng.uniform(0.48, 0.62)
    image = cv2.addWeighted(scene, wash, np.full_like(scene, 235), 1.0 - wash, 0.0)
    count = int(rng.uniform(7000, 11000) * width * height / 160000)
    xs = rng.integers(0, width, count)
    ys = rng.integers(0, height, count)
    jitter = rng.normal(0, rng.uniform(12, 24), (count, 3))
    colours = np.clip(scene[ys, xs].astype(np.float64) + jitter, 0, 255).astype(np.uint8)
    radius = max(2, int(rng.uniform(2.6, 3.8) * s))
    oy, ox = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disc = ox * ox + oy * oy <= radius * radius
    oy, ox = oy[disc], ox[disc]
    py = np.clip(ys[:, None] + oy[None, :], 0, height - 1).ravel()
    px = np.clip(xs[:, None] + ox[None, :], 0, width - 1).ravel()
    image[py, px] = np.repeat(colours, len(oy), axis=0)
    return image


def _portrait_study_varied(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    s = _scale(width, height)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    light = rng.uniform(0, 2 * np.pi)  # where the light comes from, any direction
    ramp = (np.cos(light) * xs / width + np.sin(light) * ys / height)
    image = rng.uniform(40, 95) + rng.uniform(30, 80) * (ramp - ramp.min()) / max(
        float(np.ptp(ramp)), 1e-6)
    image = np.ascontiguousarray(image, np.float32)
    if rng.random() < 0.5:  # a window behind the sitter
        x0, y0 = rng.uniform(0.0, 0.7) * width, rng.uniform(0.0, 0.4) * height
        w, h = rng.uniform(0.18, 0.35) * width, rng.uniform(0.2, 0.4) * height
        cv2.rectangle(image, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)),
                      float(rng.uniform(150, 210)), -1)
        bar = max(2, int(4 * s))
        cv2.line(image, (int(x0 + w / 2), int(y0)), (int(x0 + w / 2), int(y0 + h)), 60.0, bar)
        cv2.line(image, (int(x0), int(y0 + h / 2)), (int(x0 + w), int(y0 + h / 2)), 60.0, bar)
    if rng.random() < 0.4:  # a curtain with folds down one side
        left = rng.random() < 0.5
        span = rng.uniform(0.1, 0.3) * width
        for k in range(int(rng.integers(3, 7))):
            x = (k / 6) * span if left else width - (k / 6) * span
            cv2.line(image, (int(x), 0), (int(x + rng.normal(0, 10 * s)), height),
                     float(rng.uniform(20, 70)), max(2, int(rng.uniform(4, 12) * s)))
    if rng.random() < 0.4:  # a vase, a bust or a second figure in the background
        x, y = rng.uniform(0.08, 0.92) * width, rng.uniform(0.35, 0.75) * height
        size = rng.uniform(0.05, 0.12) * width
        tone = float(rng.uniform(25, 140))
        cv2.ellipse(image, (int(x), int(y)), (int(size), int(size * 1.3)), 0, 0, 360, tone, -1)
        cv2.circle(image, (int(x), int(y - size * 1.7)), int(size * 0.6), tone, -1)
    cx, cy = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.28, 0.48)
    face = (int(width * rng.uniform(0.12, 0.23)), int(height * rng.uniform(0.14, 0.22)))
    tilt = float(rng.uniform(-15, 15))
    shoulders = (int(width * rng.uniform(0.3, 0.5)), int(height * rng.uniform(0.2, 0.32)))
    cv2.ellipse(image, (int(cx + rng.normal(0, 0.05 * width)), int(height * rng.uniform(0.9, 1.0))),
                shoulders, 0, 0, 360, float(rng.uniform(25, 75)), -1)
    hair_tone, hair = float(rng.uniform(15, 80)), int(rng.integers(5))
    if hair == 1:  # long hair falls behind the face to the shoulders
        cv2.ellipse(image, (int(cx), int(cy + face[1] * 0.4)), (int(face[0] * 1.3),
                    int(face[1] * 1.6)), tilt, 0, 360, hair_tone, -1)
    cv2.ellipse(image, (int(cx), int(cy)), face, tilt, 0, 360, float(rng.uniform(150, 200)), -1)
    if hair in (0, 1):  # a cap of hair
        cv2.ellipse(image, (int(cx), int(cy - face[1] * 0.45)), (int(face[0] * 1.1),
                    int(face[1] * 0.65)), tilt, 180, 360, hair_tone, -1)
    elif hair == 2:  # a bun on top
        cv2.ellipse(image, (int(cx), int(cy - face[1] * 0.5)), (int(face[0] * 1.05),
                    int(face[1] * 0.55)), tilt, 180, 360, hair_tone, -1)
        cv2.circle(image, (int(cx), int(cy - face[1] * 1.15)), int(face[0] * 0.45), hair_tone, -1)
    elif hair == 3:  # a hat: a brim and a crown
        brim_y = int(cy - face[1] * 0.6)
        cv2.ellipse(image, (int(cx), brim_y), (int(face[0] * rng.uniform(1.4, 2.0)),
                    int(face[1] * 0.18)), tilt, 0, 360, hair_tone, -1)
        cv2.rectangle(image, (int(cx - face[0] * 0.8), int(brim_y - face[1] * rng.uniform(0.6,
                      1.1))), (int(cx + face[0] * 0.8), brim_y), hair_tone, -1)
    eye_gap, eye_y = face[0] * rng.uniform(0.3, 0.45), cy - face[1] * rng.uniform(-0.05, 0.15)
    for dx in (-1, 1):
        cv2.circle(image, (int(cx + dx * eye_gap), int(eye_y)), max(2, int(rng.uniform(3, 7) * s)),
                   float(rng.uniform(30, 70)), -1)
    mouth_y = int(cy + face[1] * rng.uniform(0.4, 0.6))
    half_mouth = int(face[0] * rng.uniform(0.15, 0.35))
    cv2.line(image, (int(cx) - half_mouth, mouth_y), (int(cx) + half_mouth, mouth_y),
             float(rng.uniform(70, 110)), max(1, int(3 * s)))
    image = np.asarray(cv2.GaussianBlur(image, (0, 0), rng.uniform(3, 7) * s), np.float32)
    angle = rng.uniform(0, np.pi)
    stroke = rng.uniform(12, 40) * s * np.array([np.cos(angle), -np.sin(angle)])
    tone = float(rng.uniform(25, 55))
    for _ in range(int(rng.integers(30, 130))):  # hatching in one drawn direction
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        cv2.line(image, (int(x0), int(y0)), (int(x0 + stroke[0]), int(y0 + stroke[1])), tone, 1,
                 cv2.LINE_AA)
    grey = np.clip(image, 0, 255)
    warm = rng.uniform(0.02, 0.09)  # how sepia: saturation stays low
    toned = np.stack([grey * (1.0 - 1.3 * warm), grey * (1.0 - 0.4 * warm), grey * (1.0 + warm)],
                     -1)
    return _canvas_grain(rng, np.clip(toned, 0, 255).astype(np.uint8), 4.0)


_VARIED_PAINTERS: tuple[Callable[[np.random.Generator, int, int], np.ndarray], ...] = (
    _warm_abstract_varied,
    _nocturne_varied,
    _geometric_grid_varied,
    _seascape_varied,
    _drip_painting_varied,
    _mandala_varied,
    _pointillist_varied,
    _portrait_study_varied,
)
