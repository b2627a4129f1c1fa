"""The interpretable visual descriptor: what a rectified artwork looks like, in numbers.

Where it sits: ``capture.loop`` rectifies the stable primary artwork to a square
(``CaptureConfig.rectified_size``, 256 px by default) and calls
:func:`describe_image` once per artwork change; the result travels to the engine
in an ``ArtworkView`` (``features`` by name, ``vector`` as ``embedding``), where
the procedural composer maps the named features to musical decisions.

Named features (``FEATURE_NAMES``), each a float in [0, 1]:

``brightness``
    Mean CIE L* (lightness) / 100. 0 is black, 1 is white. A nocturne is low,
    a pastel study high.
``warmth``
    Colour temperature of the chromatic content: ``0.5 + 0.5 * tanh(m / 25)``
    where ``m`` is the mean of ``b* + 0.5 * a*`` (yellow/red push it up,
    blue/green down). 0.5 is neutral grey; above 0.5 warm (reds, oranges,
    ochres), below cool (blues, teals).
``saturation``
    Mean HSV saturation (0 grey, 1 fully saturated). Weighted by value so that
    noisy near-black pixels, whose HSV saturation is meaningless, count less.
``colourfulness``
    Hasler & Süsstrunk's colourfulness metric M ("Measuring colourfulness in
    natural images", SPIE 2003) on the opponent channels rg = R - G and
    yb = (R + G)/2 - B: ``M = sqrt(sd_rg^2 + sd_yb^2) + 0.3 * sqrt(mu_rg^2 + mu_yb^2)``,
    divided by 110 ("extremely colourful" in their scale is about 109) and
    clipped to 1. Unlike ``saturation`` it rewards *variety* of colour.
``contrast``
    RMS contrast: standard deviation of L*/100, times 2 (a half-black,
    half-white image scores 1).
``edge_density``
    Fraction of pixels on a Canny edge (thresholds 50/150 on the grey image
    after a 3x3 blur), times 4 and clipped: 0 for a colour field, 1 for a
    drawing where a quarter of the pixels are edges. Busy, linear works score high.
``texture_entropy``
    Shannon entropy of the gradient-magnitude histogram (32 bins over
    0..255 Sobel magnitude), divided by log2(32). A flat or smoothly graded
    image has all gradients near zero (entropy ~0); noise, brush texture and
    drips spread the gradients over many bins (near 1).
``symmetry``
    Mirror symmetry: the larger of the left-right and top-bottom correlation
    coefficients between the blurred 64x64 grey image and its mirror image,
    clipped at 0. 1 is a perfect mirror (a mandala), ~0 unrelated halves. A
    flat image is perfectly symmetric (1).
``dominant_hue``
    Hue (0..1 around the colour circle: 0 red, 0.17 yellow, 0.33 green, 0.5
    cyan, 0.67 blue, 0.83 magenta) at the peak of the chroma-weighted hue
    histogram (36 bins, circularly smoothed). 0 when the image has next to no
    chroma (mean under 2).
``hue_spread``
    Circular variance of hue, weighted by chroma: 1 minus the length of the
    mean hue vector. 0 for one hue (or no colour at all), towards 1 when hues
    are spread all around the circle. Faded towards 0 when the mean chroma is
    under 8 (a barely visible tint), so that sensor noise on grey is not "spread".
``abstraction``
    How far the picture is made rather than depicted: the mean of two cues,
    each 0..1. **Spread**: how evenly its structure is spread over the canvas;
    an "all-over" composition (a gestural abstract, a colour field, a grid)
    scores high, a subject on a ground (a portrait on a dark background,
    figures in a scene) low. The gradient magnitude of L* (after a Gaussian
    blur of sigma 1 and 2 px) is averaged in a 3x3, 4x4 and 6x6 grid of
    tiles; each grid's Gini coefficient G gives an evenness 1 - G; the six
    are averaged and mapped from 0.6 (a subject) .. 0.95 (all-over) to 0 .. 1.
    **Edge sharpness**: graphic work draws with hard edges, lines and flat
    colour, depiction models forms with soft gradations (shading, sfumato,
    atmosphere). A blur of sigma s leaves a step edge's gradient peak at 1/s
    of its height and a soft edge of width w at 1/sqrt(s^2 + w^2), so at the
    strongest 5 % of edges at sigma 4 the ratio of the sigma-1 gradient (its
    peak within 9 px) to the sigma-4 one is ~4 for a clean step, more for a
    thin line, towards 1 for soft edges; its median is mapped from 3 (soft)
    .. 6 (hard) to 0 .. 1. A picture with no structure at all (a single flat
    colour) is a colour field: 1. Nothing was fitted to rated works: each cue
    and its constants were chosen for what they measure, the ends only set
    the range (Spearman rho ignores them; they keep the mapping's experimental
    amount near its old average on real paintings), and the cues are
    averaged with equal weights. On 42 real paintings of many periods with a
    person's abstraction rating (``benchmarks/correspondence.py``) the spread
    alone has rho 0.56-0.60, the sharpness alone 0.34-0.39 (and next to no
    correlation with the spread, -0.04-0.10: it sees something else), the
    two together 0.65 (0.60-0.67 across sharpness ranges of 2.5-6.5 and edge
    shares of 2-10 %). What each misreads: the spread takes minimal works (a
    few marks on an empty ground) for a subject and figurative works that fill
    the canvas (a crowd) for all-over; the sharpness takes a pencil drawing's
    lines for graphic. A camera's view moves both cues (its blur, noise, JPEG,
    the wall and frame round the picture): on 27 recognised views of the real
    gallery photos at 1280x720 against their catalogue images, the sharpness
    by 0.09 on average, the spread by 0.20, the feature by 0.10; hence a
    catalogued work is described from its catalogue image
    (``[capture.recognition] describe = "reference"``, the default). It costs
    ~3 ms at 256 px (the sharpness ~1 ms of it; the whole descriptor ~8 ms),
    medians on a shared 2-core CPU.

The ``vector`` (``VECTOR_LENGTH`` float32 values, L2-normalised) is for "is this
the same artwork?" comparisons (:func:`descriptor_distance`, Euclidean, in
[0, 2]): the ten ``IDENTITY_FEATURES`` (centred at 0.5; those that change with focus and
viewing distance down-weighted), a 12-bin chroma-weighted hue histogram, and a
6x6 layout of mean L*a*b* colours. The layout dominates it, because
composition is what tells two paintings of the same style apart. On the demo
camera, views of one artwork stay within ~0.09 of each other while different
artworks (even two of one style) are more than ~0.15 apart; hence
``StabilityConfig.same_artwork_distance = 0.12``. The
k-means ``palette`` is reported separately but is not in the vector: the order
of k-means clusters is unstable between views, which would make an ordered
palette a noisy distance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ground.protocol import FEATURE_NAMES

ENCODER_NAME = "descriptor-v1"

HUE_BINS = 12
LAYOUT_GRID = 6
PALETTE_SIZE = 5
#: The features that enter the identity vector: the first ten. Features added
#: later (``abstraction``) stay out of it, so the vector keeps its width (130,
#: which tiny diffusion models, configs and tests are built for) and two
#: descriptors computed before and after the addition still compare.
IDENTITY_FEATURES: tuple[str, ...] = FEATURE_NAMES[:10]
VECTOR_LENGTH = len(IDENTITY_FEATURES) + HUE_BINS + LAYOUT_GRID * LAYOUT_GRID * 3

#: Mean L*a*b* chroma of a barely visible tint; below it hue is not meaningful.
_VISIBLE_CHROMA = 8.0

#: Descriptors are computed at this side; larger inputs are resized first so
#: the cost is fixed (a few ms) whatever the rectified size is.
WORK_SIZE = 256

# Block weights inside the vector, chosen so that the spatial layout (the
# strongest identity cue) dominates while global statistics still count.
_W_FEATURES = 0.3
# Per feature, how much it counts for identity. Features that depend on the
# viewing distance and focus (a blurred or far-away view has fewer edges, less
# gradient entropy, less contrast and colour variance) count a quarter, so a
# soft frame does not read as another artwork. dominant_hue counts nothing: it
# is circular (0.02 and 0.98 are neighbours), so the hue histogram carries hue
# identity instead.
_FEATURE_IDENTITY_WEIGHTS = np.array(
    [{"contrast": 0.25, "colourfulness": 0.25, "edge_density": 0.25, "texture_entropy": 0.25,
      "dominant_hue": 0.0}.get(name, 1.0) for name in IDENTITY_FEATURES], np.float32,
)
_W_HUE = 0.8
_W_LAYOUT = 1.0


@dataclass(frozen=True)
class PaletteColour:
    """One dominant colour: CIE L*a*b* (L in 0..100, a/b in about -128..127) and its share."""

    lab: tuple[float, float, float]
    weight: float


@dataclass(frozen=True)
class Descriptor:
    """The descriptor of one image: named features, the identity vector, the palette."""

    features: dict[str, float]
    vector: np.ndarray
    palette: list[PaletteColour] = field(default_factory=list)


def describe_image(bgr: np.ndarray) -> Descriptor:
    """Describe a BGR uint8 image (ideally a rectified artwork) with :data:`FEATURE_NAMES`."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"describe_image expects a BGR uint8 (H, W, 3) image, got "
                         f"{bgr.dtype} {bgr.shape}")
    if bgr.shape[0] != WORK_SIZE or bgr.shape[1] != WORK_SIZE:
        interpolation = cv2.INTER_AREA if min(bgr.shape[:2]) > WORK_SIZE else cv2.INTER_LINEAR
        bgr = cv2.resize(bgr, (WORK_SIZE, WORK_SIZE), interpolation=interpolation)

    as_float = bgr.astype(np.float32) * (1.0 / 255.0)
    lab = cv2.cvtColor(as_float, cv2.COLOR_BGR2Lab)  # L 0..100, a/b about -128..127
    hsv = cv2.cvtColor(as_float, cv2.COLOR_BGR2HSV)  # H 0..360, S/V 0..1
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    lightness, a_star, b_star = lab[..., 0], lab[..., 1], lab[..., 2]

    chroma = np.sqrt(a_star * a_star + b_star * b_star)
    features = {
        "brightness": float(lightness.mean() / 100.0),
        "warmth": _warmth(a_star, b_star),
        "saturation": _saturation(hsv),
        "colourfulness": _colourfulness(as_float),
        "contrast": float(lightness.std() / 100.0 * 2.0),
        "edge_density": _edge_density(grey),
        "texture_entropy": _texture_entropy(grey),
        "symmetry": _symmetry(grey),
        "dominant_hue": _dominant_hue(hsv, chroma),
        "hue_spread": _hue_spread(a_star, b_star, chroma),
        "abstraction": _abstraction(lightness),
    }
    features = {name: float(np.clip(features[name], 0.0, 1.0)) for name in FEATURE_NAMES}

    vector = _identity_vector(features, hsv, chroma, lab)
    return Descriptor(features=features, vector=vector, palette=_palette(lab))


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two descriptor vectors (both L2-normalised: 0..2)."""
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


def _warmth(a_star: np.ndarray, b_star: np.ndarray) -> float:
    # Warm colours (red, orange, yellow) sit at +a*/+b*, cool ones (blue, teal) at
    # -b*; yellow-blue is the main axis of perceived colour temperature, red
    # adds to it with half weight. tanh keeps it in (0, 1) without a hard clip.
    temperature = float((b_star + 0.5 * a_star).mean())
    return 0.5 + 0.5 * float(np.tanh(temperature / 25.0))


def _saturation(hsv: np.ndarray) -> float:
    value = hsv[..., 2]
    total = float(value.sum())
    if total <= 1e-6:
        return 0.0
    return float((hsv[..., 1] * value).sum() / total)


def _colourfulness(rgb_float: np.ndarray) -> float:
    # Hasler & Süsstrunk 2003, on 0..255 channel values.
    blue, green, red = (rgb_float[..., i] * 255.0 for i in range(3))
    rg = red - green
    yb = 0.5 * (red + green) - blue
    metric = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    return metric / 110.0


def _edge_density(grey: np.ndarray) -> float:
    edges = cv2.Canny(cv2.blur(grey, (3, 3)), 50, 150)
    return float(np.count_nonzero(edges)) / edges.size * 4.0


def _texture_entropy(grey: np.ndarray) -> float:
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    # Sobel 3x3 gains 4x on a unit step; /4 brings the magnitude back to grey levels.
    magnitude = cv2.magnitude(gx, gy) * 0.25
    bins = 32
    hist = cv2.calcHist([magnitude], [0], None, [bins], [0.0, 256.0]).ravel()
    hist = hist[hist > 0] / hist.sum()
    return float(-(hist * np.log2(hist)).sum() / np.log2(bins))


def _symmetry(grey: np.ndarray) -> float:
    thumbnail = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    # Blur so that a view a pixel or two off-centre (rectification error) still
    # reads as symmetric.
    small = np.asarray(cv2.GaussianBlur(thumbnail, (5, 5), 1.5), np.float32)
    small -= small.mean()
    energy = float((small * small).sum())
    if energy < 1e-3 * small.size:
        return 1.0
    left_right = float((small * small[:, ::-1]).sum()) / energy
    top_bottom = float((small * small[::-1, :]).sum()) / energy
    return max(0.0, left_right, top_bottom)


def _dominant_hue(hsv: np.ndarray, chroma: np.ndarray) -> float:
    bins = 36
    hist = np.bincount(
        np.minimum((hsv[..., 0] * (bins / 360.0)).astype(np.int32), bins - 1).ravel(),
        weights=chroma.ravel(),
        minlength=bins,
    )
    if hist.sum() < 0.25 * _VISIBLE_CHROMA * chroma.size:  # no colour to speak of
        return 0.0
    # Circular smoothing (1-2-1) so a hue straddling two bins is not split.
    smooth = 2 * hist + np.roll(hist, 1) + np.roll(hist, -1)
    return (float(np.argmax(smooth)) + 0.5) / bins


def _hue_spread(a_star: np.ndarray, b_star: np.ndarray, chroma: np.ndarray) -> float:
    # Each pixel's unit hue vector (cos h, sin h) = (a*, b*) / chroma, weighted
    # by chroma, sums to (sum a*, sum b*): no per-pixel trigonometry needed.
    total = float(chroma.sum())
    if total < 1e-3 * chroma.size:
        return 0.0
    spread = 1.0 - float(np.hypot(a_star.sum(), b_star.sum())) / total
    # Sensor noise on a grey image has hues in every direction; fade the spread
    # out below a mean chroma of ~8 (a barely visible tint) so grey stays at 0.
    presence = min(1.0, total / chroma.size / _VISIBLE_CHROMA)
    return spread * presence


#: Tile grids and blur scales over which :func:`_abstraction` measures evenness.
_EVENNESS_GRIDS = (3, 4, 6)
_EVENNESS_SIGMAS = (1.0, 2.0)
#: Evenness (1 - Gini) read as fully figurative / fully abstract.
_EVENNESS_FIGURATIVE, _EVENNESS_ABSTRACT = 0.6, 0.95
#: Mean L* gradient (per px) under which a picture has no structure to speak of.
_NO_STRUCTURE = 0.05
#: Edge sharpness: blur scales (px) of the fine and the coarse gradient, the share of the
#: picture (its strongest coarse edges) where it is read, and the neighbourhood (px) over
#: which the fine gradient's peak is taken.
_SHARP_FINE, _SHARP_COARSE = 1.0, 4.0
_SHARP_EDGES_PERCENTILE = 95.0
_SHARP_NEIGHBOURHOOD = 9
#: Fine/coarse peak ratio read as soft (modelled, painterly) / hard (graphic): a soft
#: edge some 4 px wide gives ~1.5-3, a clean step ~4, a thin line more.
_SHARP_SOFT, _SHARP_HARD = 3.0, 6.0


def _gini(values: np.ndarray) -> float:
    # Gini coefficient of non-negative values (0: all equal; (n-1)/n: one holds all).
    ordered = np.sort(values.ravel().astype(np.float64))
    n = ordered.size
    ranks = 2.0 * np.arange(1, n + 1) - n - 1
    return float(ranks.dot(ordered) / (n * ordered.sum()))


def _gradient(lightness: np.ndarray, sigma: float) -> np.ndarray:
    # L* gradient magnitude after a Gaussian blur; Sobel 3x3 gains 8x on a unit ramp, so
    # /8 gives L* units per pixel.
    blurred = cv2.GaussianBlur(lightness, (0, 0), sigma)
    gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy) * 0.125


def _abstraction(lightness: np.ndarray) -> float:
    # Two cues, averaged (see the module docstring): abstract works spread their
    # structure over the whole canvas ("all-over") where figurative ones gather it on a
    # subject against a ground; and they draw with hard edges and flat colour where
    # depiction models forms with soft gradations.
    evenness = []
    gradients = {}
    for sigma in _EVENNESS_SIGMAS:
        magnitude = _gradient(lightness, sigma)
        if float(magnitude.mean()) < _NO_STRUCTURE:
            return 1.0  # one flat colour: a colour field
        gradients[sigma] = magnitude
        for grid in _EVENNESS_GRIDS:
            tiles = cv2.resize(magnitude, (grid, grid), interpolation=cv2.INTER_AREA)
            evenness.append(1.0 - _gini(tiles))
    span = _EVENNESS_ABSTRACT - _EVENNESS_FIGURATIVE
    spread = (float(np.mean(evenness)) - _EVENNESS_FIGURATIVE) / span
    return 0.5 * float(np.clip(spread, 0.0, 1.0)) + 0.5 * _edge_sharpness(
        lightness, gradients.get(_SHARP_FINE))


def _edge_sharpness(lightness: np.ndarray, fine: np.ndarray | None = None) -> float:
    # A blur of sigma s leaves a step edge's gradient peak at 1/s of its height and a soft
    # edge of width w at 1/sqrt(s^2 + w^2): where the picture's strongest coarse edges
    # are, the ratio of the fine peak (the best nearby) to the coarse gradient is ~4 for
    # a hard edge, more for a thin line, and falls towards 1 as edges soften.
    if fine is None:
        fine = _gradient(lightness, _SHARP_FINE)
    coarse = _gradient(lightness, _SHARP_COARSE)
    edges = coarse >= np.percentile(coarse, _SHARP_EDGES_PERCENTILE)
    peak = cv2.dilate(fine, np.ones((_SHARP_NEIGHBOURHOOD, _SHARP_NEIGHBOURHOOD), np.uint8))
    ratio = float(np.median(peak[edges] / np.maximum(coarse[edges], 1e-6)))
    return float(np.clip((ratio - _SHARP_SOFT) / (_SHARP_HARD - _SHARP_SOFT), 0.0, 1.0))


def _identity_vector(
    features: dict[str, float], hsv: np.ndarray, chroma: np.ndarray, lab: np.ndarray
) -> np.ndarray:
    feature_block = (np.array([features[n] for n in IDENTITY_FEATURES], np.float32) - 0.5) \
        * _FEATURE_IDENTITY_WEIGHTS

    hue_index = np.minimum((hsv[..., 0] * (HUE_BINS / 360.0)).astype(np.int32), HUE_BINS - 1)
    # Weight by chroma, normalised by the image size (not by the total) so a grey
    # image has a near-zero histogram instead of an amplified noisy one.
    hue_hist = np.bincount(hue_index.ravel(), weights=chroma.ravel(), minlength=HUE_BINS)
    hue_block = (hue_hist / (chroma.size * 40.0)).astype(np.float32)

    grid = cv2.resize(lab, (LAYOUT_GRID, LAYOUT_GRID), interpolation=cv2.INTER_AREA)
    layout = np.empty_like(grid)
    layout[..., 0] = grid[..., 0] / 100.0 - 0.5
    layout[..., 1:] = grid[..., 1:] / 100.0
    layout_block = layout.ravel().astype(np.float32)

    vector = np.concatenate([
        _W_FEATURES * feature_block,
        _W_HUE * hue_block,
        _W_LAYOUT * layout_block / np.sqrt(LAYOUT_GRID * LAYOUT_GRID / 4.0),
    ]).astype(np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-6 else vector


def _palette(lab: np.ndarray) -> list[PaletteColour]:
    # k-means on a 24x24 subsample: 576 points is plenty for 5 colours and
    # keeps it under a millisecond. A fixed seed makes it repeatable.
    sample = cv2.resize(lab, (24, 24), interpolation=cv2.INTER_AREA).reshape(-1, 3)
    cv2.setRNGSeed(12345)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, labels, centres = cv2.kmeans(  # type: ignore[call-overload]  # stubs lack None labels
        np.ascontiguousarray(sample, np.float32), PALETTE_SIZE, None, criteria, 1,
        cv2.KMEANS_PP_CENTERS,
    )
    counts = np.bincount(labels.ravel(), minlength=PALETTE_SIZE).astype(np.float64)
    order = np.argsort(-counts)
    return [
        PaletteColour(
            lab=(float(centres[i, 0]), float(centres[i, 1]), float(centres[i, 2])),
            weight=float(counts[i] / counts.sum()),
        )
        for i in order
    ]
