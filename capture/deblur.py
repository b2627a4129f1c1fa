"""Motion blur: find a straight streak in a frame and take it out before features are taken.

Where it sits: :meth:`capture.catalogue.Catalogue.locate` runs SIFT on the
frame; a camera panning during the exposure (a handheld phone, a walking
action camera, a slow shutter in a dim room) smears every point into a
short line, and SIFT descriptors of a smeared frame no longer match the sharp
reference (on the Estense photos with a 15 px streak at 1280x720, the
catalogue located 5 of 22 works; with the streak taken out, 19).

Estimation (:func:`estimate_motion_blur`): a box streak of length L
multiplies the spectrum by a sinc whose zeros repeat every 1/L, and the
cepstrum (the inverse transform of the log spectrum) turns that into a deep
dip at the streak's displacement, +-(dx, dy). A sharp frame's cepstrum has no
dip standing out of its surroundings; the dip's depth in robust standard
deviations (median and MAD of the ring searched) is the evidence, and a
streak is reported only beyond :data:`BLURRED_DEPTH` (on the Estense
photos, sharp or degraded otherwise: at most 5.6; streaked: 6.4 and more).

Removal (:func:`deblur`): a Wiener filter with that streak as the point
spread function, on a reflected border so the frame's edges do not ring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A cepstral dip this many robust standard deviations deep is a streak.
BLURRED_DEPTH = 12.0
_MIN_LENGTH = 3  # px at the grey's scale: a shorter streak costs SIFT little
_MAX_LENGTH = 0.05  # of the grey's longer side: the longest streak looked for
_NSR = 0.01  # the Wiener filter's noise-to-signal power ratio


@dataclass(frozen=True)
class MotionBlur:
    """A straight motion streak: its displacement (px, at the scale it was estimated at) and
    the depth of its cepstral dip (robust standard deviations)."""

    dx: float
    dy: float
    depth: float

    @property
    def length(self) -> float:
        """The streak's length, px."""
        return float(np.hypot(self.dx, self.dy))

    def scaled(self, factor: float) -> MotionBlur:
        """The same streak in the frame resized by ``factor``."""
        return MotionBlur(self.dx * factor, self.dy * factor, self.depth)


def estimate_motion_blur(grey: np.ndarray) -> MotionBlur | None:
    """The straight motion streak in ``grey`` (2-D, any dtype), or None where there is none
    (or the image is too small to tell)."""
    height, width = grey.shape[:2]
    longest = int(min(_MAX_LENGTH * max(height, width), min(height, width) / 4))
    if longest < _MIN_LENGTH + 2:
        return None
    image = grey.astype(np.float32)
    image -= image.mean()
    window = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
    spectrum = np.abs(np.fft.rfft2(image * window))
    cepstrum = np.fft.irfft2(np.log(spectrum + 1e-3), s=(height, width))
    # the dip is symmetric (+-(dx, dy)): the half plane y >= 0 is enough
    rows = cepstrum[:longest + 1]
    near = np.concatenate([rows[:, width - longest:], rows[:, :longest + 1]], axis=1)
    ys, xs = np.mgrid[0:longest + 1, -longest:longest + 1]
    radius = np.hypot(xs, ys)
    ring = (radius >= _MIN_LENGTH) & (radius <= longest) & ~((ys == 0) & (xs < 0))
    values = near[ring]
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre))) + 1e-12
    k = int(np.argmin(np.where(ring, near, np.inf)))
    y, x = np.unravel_index(k, near.shape)
    depth = (centre - float(near[y, x])) / spread
    if depth < BLURRED_DEPTH:
        return None
    dx, dy = float(xs[y, x]), float(ys[y, x])
    # the dip's centre between pixels: a parabola through it and its neighbours
    if 0 < x < near.shape[1] - 1:
        dx += _vertex(near[y, x - 1], near[y, x], near[y, x + 1])
    if 0 < y < near.shape[0] - 1:
        dy += _vertex(near[y - 1, x], near[y, x], near[y + 1, x])
    return MotionBlur(dx, dy, round(depth, 1))


def _vertex(before: float, at: float, after: float) -> float:
    """Where a parabola through three samples a pixel apart has its minimum, from the middle."""
    curve = float(before - 2 * at + after)
    return 0.0 if curve <= 1e-12 else float(np.clip(0.5 * (before - after) / curve, -0.5, 0.5))


def deblur(image: np.ndarray, blur: MotionBlur, nsr: float = _NSR) -> np.ndarray:
    """``image`` (uint8, grey or colour) with the streak ``blur`` taken out (Wiener
    filter, each channel alike), uint8."""
    import cv2

    length = blur.length
    if length < _MIN_LENGTH:
        return image
    reach = int(np.ceil(length)) + 1
    side = 2 * reach + 1
    kernel = np.zeros((side, side), np.float32)
    # a box streak of L pixels has its dip at L: its ends are (L - 1) / 2 either side
    half_x, half_y = ((length - 1) / (2 * length) * v for v in (blur.dx, blur.dy))
    # anti-aliased, at 8x sub-pixel precision, centred on the kernel's middle
    cv2.line(kernel, (round((reach - half_x) * 8), round((reach - half_y) * 8)),
             (round((reach + half_x) * 8), round((reach + half_y) * 8)), 1.0, 1,
             cv2.LINE_AA, shift=3)
    kernel /= max(float(kernel.sum()), 1e-6)
    pad = 2 * reach
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    height, width = padded.shape[:2]
    psf = np.zeros((height, width), np.float32)
    psf[:side, :side] = kernel
    psf = np.roll(psf, (-reach, -reach), axis=(0, 1))
    transfer = np.fft.rfft2(psf)
    # (1 + nsr): the filter passes the mean level unchanged (the transfer is 1 there)
    inverse = ((1 + nsr) * np.conj(transfer) / (np.abs(transfer) ** 2 + nsr)).astype(np.complex64)
    if padded.ndim == 2:
        padded = padded[:, :, None]
    restored = np.stack([np.fft.irfft2(np.fft.rfft2(padded[:, :, c].astype(np.float32))
                                       * inverse, s=(height, width))
                         for c in range(padded.shape[2])], axis=2)
    out = np.clip(restored[pad:-pad, pad:-pad], 0, 255).astype(np.uint8)
    return out if image.ndim == 3 else out[:, :, 0]
