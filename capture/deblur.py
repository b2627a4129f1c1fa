"""Motion blur: find a straight streak in a frame and take it out before features are taken.

Where it sits: :meth:`capture.catalogue.Catalogue.locate` runs SIFT on the
frame, and :func:`capture.recognise.detect_and_recognise` traces outlines and
rectifies views from it; a camera panning during the exposure (a handheld
phone, a walking action camera, a slow shutter in a dim room) smears every
point into a short line. SIFT descriptors of a smeared frame no longer match
the sharp reference, and the outlines' edges fade (on the Estense photos with
a 15 px streak at 1280x720, 8 of 22 works were located; with the streak
taken out, 21).

Estimation (:func:`estimate_motion_blur`): a box streak of length L
multiplies the spectrum by a sinc whose zeros repeat every 1/L, and the
cepstrum (the inverse transform of the log spectrum) turns that into deep
dips at the streak's displacement +-(dx, dy) and again at twice it. The
evidence is each dip's depth in robust standard deviations (median and MAD
of the ring searched): the first at least :data:`BLURRED_DEPTH`, its echo
at twice the displacement :data:`ECHO_DEPTH` (a dip of the scene's own
stands alone: two of the 200 classic scenes had one 12-16 deep), and no
dip as deep across it (:data:`ACROSS_DEPTH`: a compression's block grid dips
along both axes alike). On the Estense photos, sharp or otherwise degraded,
the deepest first dip was 9.6; streaked, at least 19 with an echo of at
least 6; on 400 synthetic scenes without a streak, none was reported.

Removal (:func:`deblur`): a Wiener filter with that streak as the point
spread function, on a reflected border so the frame's edges do not ring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A cepstral dip this many robust standard deviations deep is a streak.
BLURRED_DEPTH = 12.0
#: ...and its echo at twice the displacement this many deep.
ECHO_DEPTH = 4.0
#: ...and the same displacement turned a right angle at most this many (a grid, not a streak).
ACROSS_DEPTH = 6.0
_MIN_LENGTH = 4  # px at the grey's scale: a shorter streak costs SIFT little
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
    # the sinc's zeros repeat, so a streak's dip repeats at twice its displacement; a dip
    # of the scene's own (an edge's echo, a pattern) stands alone
    twice = min(float(cepstrum[(2 * int(ys[y, x]) + j) % height, (2 * int(xs[y, x]) + i) % width])
                for j in (-1, 0, 1) for i in (-1, 0, 1))
    if (centre - twice) / spread < ECHO_DEPTH:
        return None
    # ...and runs one way: a compression's block grid dips across as deeply as along
    across = min(float(cepstrum[(int(xs[y, x]) + j) % height, (-int(ys[y, x]) + i) % width])
                 for j in (-1, 0, 1) for i in (-1, 0, 1))
    if (centre - across) / spread > ACROSS_DEPTH:
        return None
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
    rows, cols = image.shape[:2]
    # reflected round (the frame's edges do not ring), to sizes OpenCV's DFT is quick at
    height = cv2.getOptimalDFTSize(rows + 2 * pad)
    width = cv2.getOptimalDFTSize(cols + 2 * pad)
    padded = cv2.copyMakeBorder(image, pad, height - rows - pad, pad, width - cols - pad,
                                cv2.BORDER_REFLECT)
    psf = np.zeros((height, width), np.float32)
    psf[:side, :side] = kernel
    psf = np.roll(psf, (-reach, -reach), axis=(0, 1))
    spectrum = cv2.dft(psf, flags=cv2.DFT_COMPLEX_OUTPUT)
    transfer = spectrum[..., 0] + 1j * spectrum[..., 1]
    # (1 + nsr): the filter passes the mean level unchanged (the transfer is 1 there)
    wiener = (1 + nsr) * np.conj(transfer) / (np.abs(transfer) ** 2 + nsr)
    inverse = np.dstack([wiener.real, wiener.imag]).astype(np.float32)
    if padded.ndim == 2:
        padded = padded[:, :, None]
    restored = np.dstack([
        cv2.idft(cv2.mulSpectrums(cv2.dft(padded[:, :, c].astype(np.float32),
                                          flags=cv2.DFT_COMPLEX_OUTPUT), inverse, 0),
                 flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
        for c in range(padded.shape[2])])
    out = np.clip(restored[pad:pad + rows, pad:pad + cols], 0, 255).astype(np.uint8)
    return out if image.ndim == 3 else out[:, :, 0]
