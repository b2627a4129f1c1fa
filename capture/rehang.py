"""Other works hung in real photos' frames: the real-photo bench on works the photos never held.

Where it sits: ``art2mus bench capture --photos DIR --rehang WORKS`` (see
:func:`capture.bench.run_photo_bench`). The photos of a real room with truth
are all we have, and their catalogue is the one the method was tried on; a
museum's own collection (line drawings, flat abstract colour fields, prints)
is not. Here each truth painting's picture is replaced by a work of
``WORKS`` in the photo, its walls, frames, camera and light kept, and the
photos are searched against ``WORKS`` as the catalogue: the works not hung
stand as the rest of the collection.

How a work is hung (:func:`rehang`):

- **Which work where**: the works in a seeded order, each painting taking
  the next one whose aspect (width over height) is nearest its own among the
  next few (the picture's own aspect, from its catalogue reference: a work
  stretched to another aspect would look as seen from a steep side). A
  picture seen in several photos takes the same work in each (the collection
  is rehung once, as a room would be), and no work hangs twice in one photo.
- **Light**: the room's light and the camera's response, per channel, in
  linear light: the photo's mean inside the picture over the mean of the
  picture's catalogue reference; the new work's reference times that gain. A
  dim room, a warm lamp or an overexposed spot carry over to the new work.
- **Pixels**: the work shrunk (averaged, as a sensor does) to about the size
  it appears, warped into the picture's four corners and blended along its
  edge (a half-pixel antialiased border); then softened as the camera
  softened the picture it replaces (the Gaussian blur, of a few tried, that
  gives the old reference, hung the same way, the sharpness the photo shows
  there: edges per contrast), given the photo's own sensor noise (Immerkaer's estimate from its
  Laplacian), and the photo stored again as a camera's JPEG (quality 92).

What stays of the room: the frames, mounts, shadows, glazing, caption cards
and the works cut by the photo's edge or without an id (don't care, as in
the photos' own truth). What does not: the old picture's own reflections,
occlusion by a visitor (the new work is drawn over them), a wide lens's bowed
sides (the new work is hung flat between the corners) and a blur the old
reference already had (the references of a set made from its photos are
as soft as the photos, so the blur found there is the least it could be).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ground.errors import InputError

_CHOICES = 6  # how many of the next works in the order are weighed by aspect
_JPEG_QUALITY = 92
_GAIN_RANGE = (0.05, 4.0)  # a light gain past these is a truth on the wrong picture
_BLURS = (0.0, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)  # Gaussian sigmas (px) tried for the camera's blur


def rehang(loaded: Sequence[tuple[Any, np.ndarray]], references: Path, works: Path,
           seed: int = 0) -> list[tuple[Any, np.ndarray]]:
    """Each photo of ``loaded`` (:func:`capture.bench.read_photo_set`: its
    :class:`~capture.bench.PhotoTruth`, its pixels) with every truth painting replaced by a
    work of the catalogue folder ``works``, lit as the room lit the painting (its catalogue
    reference in ``references``); the truth names the new works. ``seed`` orders the works.
    InputError where ``works`` holds no images, or fewer than a photo has paintings.

    (The truths are typed loosely: this module is below ``capture.bench``, which calls it.)"""
    import cv2

    from capture.catalogue import REDUCED_AT_LEAST, CatalogueEntry, read_entries
    from capture.images import read_image

    try:
        entries = read_entries(works) if works.is_dir() else []
    except InputError as error:  # no images, ids that clash, a metadata file it cannot read
        raise InputError(f"--rehang: {error}") from None
    if not entries:
        raise InputError(f"--rehang: expected a folder of reference images, got none at {works}")
    most = max((len(truth.paintings) for truth, _ in loaded), default=0)
    if most > len(entries):
        raise InputError(f"--rehang: {works} holds {len(entries)} works, and a photo has "
                         f"{most} paintings to hang them in (no work hangs twice in one photo)")
    old = {e.artwork_id: e.file for e in read_entries(references)}
    pictures: dict[str, np.ndarray] = {}

    def picture(folder: Path, file: str) -> np.ndarray:
        key = str(folder / file)
        if key not in pictures:
            pictures[key] = read_image(folder / file, REDUCED_AT_LEAST)
        return pictures[key]

    order = [entries[k] for k in np.random.default_rng(seed).permutation(len(entries))]
    # each work's aspect, its pixels not kept: a museum's folder of thousands would not fit
    # in memory whole, and only the works hung are needed (read again then)
    aspects = {e.file: _aspect(read_image(works / e.file, REDUCED_AT_LEAST)) for e in order}
    turn = 0  # where in the order the next choice starts
    instead: dict[str, CatalogueEntry] = {}  # each old work's new one, in every photo of it
    hung = []
    for truth, image in loaded:
        canvas = image.copy()
        used: set[str] = set()
        paintings = []
        for work in truth.paintings:
            if work.artwork_id not in old:
                raise InputError(f"--rehang: {truth.name}'s painting {work.artwork_id!r} has no "
                                 f"reference in {references} to take the room's light from")
            was = picture(references, old[work.artwork_id])
            entry = instead.get(work.artwork_id)
            if entry is None or entry.file in used:
                # a work hung nowhere yet, while there are some; never one twice in a photo
                taken = {e.file for e in instead.values()}
                ahead = [e for e in order[turn:] + order[:turn] if e.file not in used]
                free = [e for e in ahead if e.file not in taken] or ahead
                entry = min(free[:_CHOICES],
                            key=lambda e: abs(np.log(aspects[e.file] / _aspect(was))))
                turn = (order.index(entry) + 1) % len(order)
                instead.setdefault(work.artwork_id, entry)
            used.add(entry.file)
            gain = _light(image, work.quad, was)
            canvas = _hang(canvas, picture(works, entry.file), work.quad, gain,
                           _softness(image, work.quad, was, gain))
            paintings.append(replace(work, artwork_id=entry.artwork_id))
        canvas = _with_noise(canvas, image, seed)
        stored = cv2.imdecode(cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY,
                                                            _JPEG_QUALITY])[1], cv2.IMREAD_COLOR)
        hung.append((replace(truth, paintings=tuple(paintings)), np.asarray(stored)))
    return hung


def _aspect(image: np.ndarray) -> float:
    """Width over height."""
    return float(image.shape[1]) / float(image.shape[0])


def _linear(bgr: np.ndarray) -> np.ndarray:
    """sRGB levels (0-255) to linear light (0-1), the curve near enough (gamma 2.2)."""
    return (bgr.astype(np.float32) / 255.0) ** 2.2


def _inside(shape: tuple[int, ...], quad: np.ndarray) -> np.ndarray:
    """A float mask (0-1) of ``quad`` in an image of ``shape``, antialiased on its edge."""
    import cv2

    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, np.round(quad * 16).astype(np.int32), 255, cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def _light(photo: np.ndarray, quad: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The room's light on the picture at ``quad``: per channel (B, G, R), its mean in the
    photo over its reference's mean, in linear light."""
    inside = _inside(photo.shape, quad) > 0.99
    if not inside.any():
        return np.ones(3, np.float32)
    seen = _linear(photo)[inside].mean(axis=0)
    made = _linear(reference).reshape(-1, 3).mean(axis=0)
    return np.clip(seen / np.maximum(made, 1e-4), *_GAIN_RANGE).astype(np.float32)


def _softness(photo: np.ndarray, quad: np.ndarray, reference: np.ndarray, gain: np.ndarray
              ) -> float:
    """The camera's blur at ``quad`` (a Gaussian sigma, px): of :data:`_BLURS`, the one that
    gives ``reference``, hung there lit by ``gain``, the sharpness ``photo`` shows there.

    Sharpness is the mean gradient over the standard deviation (edges per contrast), both
    after a light smoothing that keeps sensor noise from counting as detail. It asks
    nothing of where the edges are, so a truth's corners a pixel or two off, which any
    comparison pixel by pixel takes for blur, do not matter."""
    import cv2

    inside = cv2.erode((_inside(photo.shape, quad) > 0.99).astype(np.uint8),
                       np.ones((9, 9), np.uint8)) > 0
    if inside.sum() < 64:
        return 0.0
    # only round the picture: blurring the whole frame seven times over costs seconds
    x0, y0 = np.maximum(np.floor(quad.min(axis=0)).astype(int) - 16, 0)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int) + 16
    hung = cv2.cvtColor(_hang(photo, reference, quad, gain, 0.0)[y0:y1, x0:x1],
                        cv2.COLOR_BGR2GRAY).astype(np.float32)
    seen = cv2.cvtColor(photo[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY).astype(np.float32)
    inside = inside[y0:y1, x0:x1]

    def sharpness(grey: np.ndarray) -> float:
        grey = cv2.GaussianBlur(grey, (0, 0), 0.8)
        gradient = np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0)) + \
            np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        return float(gradient[inside].mean() / (grey[inside].std() + 1e-3))

    target = sharpness(seen)
    return min(_BLURS, key=lambda sigma: abs(np.log((sharpness(
        hung if sigma == 0 else cv2.GaussianBlur(hung, (0, 0), sigma)) + 1e-6) / (target + 1e-6))))


def _with_noise(canvas: np.ndarray, photo: np.ndarray, seed: int) -> np.ndarray:
    """``canvas`` where it differs from ``photo`` (the works hung) given ``photo``'s sensor
    noise: Immerkaer's estimate, the mean absolute response of a Laplacian difference
    kernel that cancels the image's own smooth structure."""
    import cv2

    grey = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY).astype(np.float32)
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = np.abs(cv2.filter2D(grey, -1, kernel)[1:-1, 1:-1])
    sigma = float(np.sqrt(np.pi / 2) * response.mean() / 6.0)
    changed = np.any(canvas != photo, axis=2)
    noise = np.random.default_rng([seed, 0x4A26]).normal(0.0, sigma, canvas.shape)
    noisy = canvas.astype(np.float32) + np.where(changed[..., None], noise, 0.0)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _hang(canvas: np.ndarray, work: np.ndarray, quad: np.ndarray, gain: np.ndarray,
          blur: float) -> np.ndarray:
    """``canvas`` with ``work`` warped into ``quad`` (frame px, TL TR BR BL), lit by
    ``gain`` and softened by a Gaussian of ``blur`` px."""
    import cv2

    quad = quad.astype(np.float32)
    # about the size it appears: shrunk by averaging first, as a sensor integrates
    sides = np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1)  # top, right, bottom, left
    width, height = (max(8, round(float(max(sides[a], sides[b])))) for a, b in ((0, 2), (1, 3)))
    small = cv2.resize(work, (width, height), interpolation=cv2.INTER_AREA
                       if width < work.shape[1] else cv2.INTER_LINEAR)
    lit = np.clip((_linear(small) * gain) ** (1 / 2.2) * 255.0, 0, 255).astype(np.float32)
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    warped = cv2.warpPerspective(lit, cv2.getPerspectiveTransform(corners, quad),
                                 (canvas.shape[1], canvas.shape[0]), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
    if blur > 0:
        warped = cv2.GaussianBlur(warped, (0, 0), blur)
    alpha = _inside(canvas.shape, quad)[..., None]
    blended = canvas.astype(np.float32) * (1 - alpha) + warped * alpha
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
