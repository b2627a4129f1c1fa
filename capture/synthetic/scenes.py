"""Synthetic gallery scenes with ground truth, for the tests and ``art2mus bench capture``.

Where it sits: nothing in the live path uses this module. It stands in for
photographs of a real gallery: framed (and unframed) paintings on a wall,
seen by a camera at up to ~45 degrees off-axis, under uneven light, with
glare, blur, sensor noise and visitors walking through. Every scene knows
its ground truth: each painting's picture quad (TL, TR, BR, BL, frame
pixels) and its catalogue id.

The catalogue: :func:`catalogue_artwork` paints ``CATALOGUE_SIZE`` (50)
distinct works, the eight procedural styles of :mod:`capture.synthetic.artworks` with
several compositions each (``make_artwork(k, CATALOGUE_SEED, ...)``), at a
fixed reference resolution; :func:`write_catalogue` saves them as a folder
with a ``catalogue.toml`` of metadata, the layout a gallery would supply.
Scenes also hang works from outside the catalogue (index >= the catalogue
size; their ground-truth id is ``None``), so "no match" is exercised. A
bigger catalogue (``write_catalogue(folder, 2000)``, ``art2mus bench
catalogue``) goes on past work 63 with works drawn with more per-work freedom
(:data:`~capture.synthetic.artworks.CLASSIC_WORKS`), so that it holds no
near-copies; works 0-63 (this catalogue and the classic outsiders) never change.

A scene (:meth:`SceneGenerator.render`, deterministic in its seed):

- a plaster wall of a random colour, with low-frequency blotches and grain;
- 0-3 paintings side by side, each in one of four mountings:
  ``frame_mount`` (moulding + passe-partout), ``moulding`` (a stepped, gilded
  or dark moulding with a slip, no mount), ``canvas`` (unframed, a drop
  shadow only) and ``print`` (a paper sheet with a white margin, unframed);
  small caption labels beside them;
- a camera homography ``K R K^-1`` (yaw up to +-45 degrees, pitch, roll)
  scaled so that everything stays in frame;
- lighting: a gradient and a spot across the frame, sometimes low light
  (gain 0.25-0.5 with stronger noise);
- glare patches (soft, saturating) on some paintings;
- visitors: dark silhouettes rising from the bottom of the frame, covering
  at most ~30 % of any picture;
- focus or motion blur on some frames, sensor noise on all.

That is the ``"classic"`` style, the bench's fixed set (its images must not
change). ``SceneGenerator(style="rooms")`` renders scenes that look like real
photos of gallery rooms instead (the effects are in
:mod:`capture.synthetic.rooms`): one or two rows of up to six works at many
sizes in carved gilt, gilt, dark wood or thin frames with inner slips, standing
off the wall (their sides show at an angle) and casting shadows, caption cards
and wall texts, yaw up to 70 degrees, a GoPro-like fisheye on 40 % of frames
(truth corners go through the same lens), warm low light with amplified sensor
noise, motion blur, visitors and JPEG blocking.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np

from capture.synthetic import rooms
from capture.synthetic.artworks import ARTWORK_ASPECTS, ARTWORK_STYLES, artwork_style, make_artwork

CATALOGUE_SEED = 2024
CATALOGUE_SIZE = 50
#: Long side of a catalogue reference image, px (a museum's web-size scan).
REFERENCE_LONG_SIDE = 480
FRAME_KINDS: tuple[str, ...] = ("frame_mount", "moulding", "canvas", "print")
SceneStyle = Literal["classic", "rooms"]
#: The scene styles: ``classic`` (the bench's fixed set) and ``rooms`` (like real photos).
SCENE_STYLES: tuple[str, ...] = get_args(SceneStyle)

_FOCAL = 1100.0  # px at 1280 wide: about a 60 degree horizontal field of view
_MARGIN = 0.03  # of the frame: every painting's outer edge stays this far inside


def catalogue_id(index: int) -> str:
    """The catalogue id of artwork ``index`` (``cat-000`` ...)."""
    return f"cat-{index:03d}"


def catalogue_artwork(index: int, long_side: int = REFERENCE_LONG_SIDE) -> np.ndarray:
    """The reference image (BGR uint8) of artwork ``index``, at its style's aspect ratio."""
    aspect = ARTWORK_ASPECTS[index % len(ARTWORK_ASPECTS)]
    if aspect >= 1.0:
        size = (long_side, int(round(long_side / aspect)))
    else:
        size = (int(round(long_side * aspect)), long_side)
    return make_artwork(index, CATALOGUE_SEED, size)


def catalogue_metadata(index: int) -> dict[str, str | int]:
    """Made-up metadata for artwork ``index`` (what a gallery's catalogue.toml holds)."""
    style = artwork_style(index)
    return {"id": catalogue_id(index), "title": f"{style.capitalize()} no. {index // 8 + 1}",
            "artist": f"Studio {chr(ord('A') + index % 8)}", "year": 1900 + (index * 7) % 120}


def write_catalogue(folder: str | Path, count: int = CATALOGUE_SIZE, *,
                    with_metadata: bool = True) -> Path:
    """Write ``count`` reference images (``cat-NNN.png``) and a ``catalogue.toml`` to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Catalogue metadata: one [[artwork]] per reference image.", ""]
    for index in range(count):
        name = f"{catalogue_id(index)}.png"
        cv2.imwrite(str(folder / name), catalogue_artwork(index))
        meta = catalogue_metadata(index)
        lines += ["[[artwork]]", f'file = "{name}"', f'id = "{meta["id"]}"',
                  f'title = "{meta["title"]}"', f'artist = "{meta["artist"]}"',
                  f"year = {meta['year']}", ""]
    if with_metadata:
        (folder / "catalogue.toml").write_text("\n".join(lines))
    return folder


@dataclass(frozen=True)
class ScenePainting:
    """Ground truth for one painting in a scene."""

    artwork: int  # index for catalogue_artwork()
    artwork_id: str | None  # catalogue id, None for a work outside the catalogue
    quad: np.ndarray  # float32 (4, 2): the picture, TL, TR, BR, BL, frame px
    frame_kind: str  # one of FRAME_KINDS (classic) or rooms.ROOM_FRAME_KINDS (rooms)
    occluded: float  # fraction of the picture hidden by visitors


@dataclass(frozen=True)
class Scene:
    """One rendered scene: the BGR frame, its paintings, and the conditions drawn."""

    image: np.ndarray
    paintings: tuple[ScenePainting, ...]
    seed: int
    conditions: dict[str, float | str] = field(default_factory=dict)


@dataclass
class _HungWork:
    """A work of a rooms scene while it is laid out: its mounting and place on the wall."""

    index: int
    kind: str
    hung: np.ndarray  # the work in its frame, wall units
    picture: np.ndarray  # the picture's rect in ``hung``
    depth: float  # how far the frame's face stands off the wall, wall units
    x0: float = 0.0  # top-left on the wall
    y0: float = 0.0


class SceneGenerator:
    """Renders seeded gallery scenes; reference images are painted once and kept.

    ``style`` is ``"classic"`` (the scenes the synthetic bench has always used)
    or ``"rooms"`` (scenes that look like real photos of gallery rooms, see
    :mod:`capture.synthetic.rooms`).
    """

    def __init__(self, size: tuple[int, int] = (1280, 720),
                 catalogue_size: int = CATALOGUE_SIZE, outsiders: int = 8,
                 style: SceneStyle = "classic") -> None:
        if style not in SCENE_STYLES:
            raise ValueError(f"scene style must be one of {', '.join(SCENE_STYLES)}, "
                             f"got {style!r}")
        self.style: SceneStyle = style
        self.size = (int(size[0]), int(size[1]))
        self.catalogue_size = catalogue_size
        self.outsiders = outsiders  # works outside the catalogue that scenes may hang
        self._artworks: dict[int, np.ndarray] = {}

    def artwork(self, index: int) -> np.ndarray:
        """The reference image of ``index`` (cached)."""
        image = self._artworks.get(index)
        if image is None:
            image = self._artworks[index] = catalogue_artwork(index)
        return image

    def render(self, seed: int, *, paintings: int | None = None, yaw_deg: float | None = None,
               clean: bool = False) -> Scene:
        """The scene for ``seed``. ``paintings``/``yaw_deg`` force a count or a view angle;
        ``clean`` disables glare, visitors, blur and low light (noise stays), and in the
        rooms style JPEG too (the frames, the lens and the camera angle stay)."""
        if self.style == "rooms":
            return self._render_room(seed, paintings, yaw_deg, clean)
        rng = np.random.default_rng([seed, 0xA27])
        width, height = self.size
        conditions: dict[str, float | str] = {}
        count = paintings if paintings is not None else int(
            rng.choice([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3]))
        works = self._pick_works(rng, count)
        image = _wall(rng, self.size)

        # Lay the works out side by side on the wall (wall units ~ px at scale 1).
        layouts = []
        x = 0.0
        for index in works:
            aspect = ARTWORK_ASPECTS[index % len(ARTWORK_ASPECTS)]
            area = rng.uniform(0.7, 1.3) * 300.0 ** 2
            pw, ph = math.sqrt(area * aspect), math.sqrt(area / aspect)
            kind = FRAME_KINDS[int(rng.integers(len(FRAME_KINDS)))]
            hung, picture = _mounting(rng, self.artwork(index), kind, (pw, ph))
            hw, hh = hung.shape[1], hung.shape[0]
            y_centre = rng.normal(0.0, 25.0)
            layouts.append((index, kind, hung, picture, x, y_centre - hh / 2))
            x += hw + rng.uniform(80.0, 220.0)
        total_w = max(x - 80.0, 1.0)

        if yaw_deg is not None:
            yaw = yaw_deg
        else:  # 60 % of views within 20 degrees of frontal, the rest up to 45
            sign = rng.choice([-1, 1])
            yaw = float(sign * (rng.uniform(0, 20) if rng.random() < 0.6 else rng.uniform(20, 45)))
        pitch, roll = float(rng.uniform(-8, 8)), float(rng.uniform(-4, 4))
        conditions.update(yaw_deg=round(yaw, 1), pitch_deg=round(pitch, 1))
        # Outer corners of every hung work in wall units, centred on the layout.
        outlines = []
        for _, _, hung, _, x0, y0 in layouts:
            hw, hh = hung.shape[1], hung.shape[0]
            outlines.append(np.array([[x0, y0], [x0 + hw, y0], [x0 + hw, y0 + hh], [x0, y0 + hh]],
                                     np.float64) - [total_w / 2, 0])
        homography = _fit_camera(rng, outlines, yaw, pitch, roll, self.size,
                                 fill=float(rng.uniform(0.45, 0.95)))

        truths: list[ScenePainting] = []
        pictures: list[np.ndarray] = []
        for (index, kind, hung, picture, _, _), outline in zip(layouts, outlines, strict=True):
            to_frame = homography @ np.array([[1, 0, outline[0, 0]], [0, 1, outline[0, 1]],
                                              [0, 0, 1]])
            image = _paste(image, hung, to_frame, shadow=True)
            quad = cv2.perspectiveTransform(picture[None].astype(np.float64), to_frame)[0]
            pictures.append(quad.astype(np.float32))
            _label(image, rng, to_frame, hung.shape)
            truths.append(ScenePainting(index, catalogue_id(index)
                                        if index < self.catalogue_size else None,
                                        quad.astype(np.float32), kind, 0.0))

        gain = _lighting(rng, self.size, low=(not clean and rng.random() < 0.2))
        conditions["light"] = round(float(gain.mean()), 2)
        image = image * gain[..., None]
        if not clean and truths and rng.random() < 0.3:
            conditions["glare"] = _glare(rng, image, pictures)
        image = np.clip(image, 0, 255)
        occlusion = np.zeros((height, width), np.uint8)
        if not clean and truths and rng.random() < 0.25:
            conditions["visitors"] = _visitors(rng, image, occlusion, pictures)
        if not clean and rng.random() < 0.25:
            conditions["blur"] = _blur(rng, image)
        sigma = 2.0 + 6.0 * float(float(conditions["light"]) < 0.55) + rng.uniform(0, 2)
        image = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
        frame = np.clip(image, 0, 255).astype(np.uint8)

        if occlusion.any():
            truths = [_with_occlusion(truth, occlusion) for truth in truths]
        return Scene(frame, tuple(truths), seed, conditions)

    def _render_room(self, seed: int, paintings: int | None, yaw_deg: float | None,
                     clean: bool) -> Scene:
        """A ``rooms`` scene: several framed works, labels and wall text, seen by a real camera.

        The order follows the light: wall and works, lighting, glare, visitors,
        motion blur, then the lens (fisheye), the sensor (noise, auto exposure)
        and the encoder (JPEG). Truth quads go through the same lens.
        """
        rng = np.random.default_rng([seed, 0xA27, 0x2005])
        width, height = self.size
        conditions: dict[str, float | str] = {"style": "rooms"}
        if yaw_deg is not None:
            yaw = yaw_deg
        else:  # a third near frontal, a third oblique, a third steep (45-70 degrees)
            sign = float(rng.choice([-1, 1]))
            band = rng.random()
            yaw = sign * float(rng.uniform(0, 15) if band < 0.35 else
                               rng.uniform(15, 45) if band < 0.7 else rng.uniform(45, 70))
        # A steep view that holds a whole wall of works shows them as a thin strip;
        # real steep photos are of one to three works.
        choices = [1, 1, 2, 2, 3] if abs(yaw) > 45 else [0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5, 6]
        count = paintings if paintings is not None else int(rng.choice(choices))
        works = self._pick_works(rng, count)
        image = rooms.room_wall(rng, self.size)
        wall_colour = tuple(float(c) for c in image.reshape(-1, 3).mean(axis=0))

        # Works at many sizes in one or two rows; a caption card beside most of them.
        row_count = 2 if count >= 3 and rng.random() < 0.5 else 1
        rows: list[list[_HungWork]] = [[] for _ in range(row_count)]
        for k, index in enumerate(works):
            aspect = ARTWORK_ASPECTS[index % len(ARTWORK_ASPECTS)]
            side = math.exp(rng.uniform(math.log(110.0), math.log(430.0)))
            kind = rooms.ROOM_FRAME_KINDS[int(rng.choice(4, p=[0.4, 0.25, 0.15, 0.2]))]
            picture_size = (side * math.sqrt(aspect), side / math.sqrt(aspect))
            hung, picture = rooms.room_mounting(rng, self.artwork(index), kind, picture_size)
            # How far the frame's face stands off the wall (a stretcher, a deep carved frame).
            proud = rng.uniform(0.02, 0.04) if kind == "canvas" else rng.uniform(0.04, 0.1)
            rows[k % row_count].append(_HungWork(index, kind, hung, picture,
                                                 depth=float(proud * min(hung.shape[:2]))))
        placed: list[_HungWork] = []
        furniture: list[tuple[np.ndarray, float, float]] = []  # labels, wall text: image, x0, y0
        row_top = 0.0
        for row in rows:
            row_height = max((work.hung.shape[0] for work in row), default=0)
            x = float(rng.uniform(-60.0, 60.0))
            for work in row:
                hh, hw = work.hung.shape[:2]
                work.x0 = x
                work.y0 = row_top + (row_height - hh) / 2 + rng.normal(0.0, 0.05 * row_height)
                placed.append(work)
                x += hw
                if rng.random() < 0.65:
                    card = rooms.label_card(rng, hh)
                    gap = rng.uniform(20.0, 45.0) + work.depth
                    furniture.append((card, x + gap, work.y0 + hh * rng.uniform(0.45, 0.8)
                                      - card.shape[0] / 2))
                    x += gap + card.shape[1]
                x += rng.uniform(50.0, 180.0)
            row_top += row_height + rng.uniform(50.0, 160.0)
        if placed and rng.random() < 0.35:
            left = min(work.x0 for work in placed)
            right = max(work.x0 + work.hung.shape[1] for work in placed)
            first_row = max((work.hung.shape[0] for work in rows[0]), default=200)
            panel = rooms.wall_text_panel(rng, first_row * rng.uniform(0.6, 1.1),
                                          (wall_colour[0], wall_colour[1], wall_colour[2]))
            gap = rng.uniform(80.0, 200.0)
            x0 = left - gap - panel.shape[1] if rng.random() < 0.5 else right + gap
            furniture.append((panel, x0, (first_row - panel.shape[0]) / 2))
            conditions["wall_text"] = "panel"
        if furniture:
            conditions["labels"] = float(len(furniture))

        pitch, roll = float(rng.uniform(-12, 12)), float(rng.uniform(-5, 5))
        conditions.update(yaw_deg=round(yaw, 1), pitch_deg=round(pitch, 1))
        focal = _FOCAL * width / 1280.0  # about 60 degrees across, a phone's main camera
        lens = None
        if rng.random() < 0.4:  # an action camera: a wide lens with barrel distortion
            lens = rooms.Fisheye(float(rng.uniform(0.1, 0.35)), self.size)
            focal *= float(rng.uniform(0.6, 0.85))
            conditions["fisheye"] = round(lens.strength, 3)

        outlines = [np.c_[_outline(work.hung.shape, work.x0, work.y0), np.full(4, -depth)]
                    for work in placed for depth in (0.0, work.depth)]
        outlines += [_outline(item.shape, x0, y0) for item, x0, y0 in furniture]
        camera = rooms.fit_room_camera(
            rng, outlines, yaw, pitch, roll, self.size, focal,
            fill=float(rng.uniform(0.6, 0.97)), margin=0.02,
            distort=lens.distort_points if lens is not None else None)

        def to_frame(x0: float, y0: float, depth: float = 0.0) -> np.ndarray:
            return camera.homography(depth) @ np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]])

        # Ceiling lights: every work casts its shadow down (and a little sideways).
        offset = (float(rng.uniform(-0.03, 0.03)), float(rng.uniform(0.02, 0.06)))
        strength, softness = float(rng.uniform(0.25, 0.55)), float(rng.uniform(0.01, 0.03))
        for item, x0, y0 in furniture:
            image = _paste(image, item, to_frame(x0, y0), shadow=False)
        pictures: list[np.ndarray] = []
        for work in placed:
            front = to_frame(work.x0, work.y0, work.depth)
            _frame_sides(image, work.hung, to_frame(work.x0, work.y0), front)
            image = _paste(image, work.hung, front, shadow=True, shadow_offset=offset,
                           shadow_strength=strength, shadow_blur=softness)
            quad = cv2.perspectiveTransform(work.picture[None].astype(np.float64), front)[0]
            pictures.append(quad.astype(np.float32))

        # Glare and visitors are in the room, so the room's light (and a dim room's
        # auto exposure) falls on them too.
        if not clean and pictures and rng.random() < 0.2:
            conditions["glare"] = _glare(rng, image, pictures)
        image = np.clip(image, 0, 255)
        occlusion = np.zeros((height, width), np.uint8)
        if not clean and pictures and rng.random() < 0.3:
            conditions["visitors"] = _visitors(rng, image, occlusion, pictures)
        low = not clean and rng.random() < 0.35
        gain = _lighting(rng, self.size, low=low)
        conditions["light"] = round(float(gain.mean()), 2)
        image *= gain[..., None]
        image *= rooms.white_balance(rng)
        if not clean and rng.random() < 0.3:
            conditions["blur"] = rooms.motion_blur(rng, image)
        if lens is not None:
            image = np.asarray(lens.apply(image), np.float32)
            occlusion = np.asarray(lens.apply(occlusion, cv2.INTER_NEAREST), np.uint8)
            pictures = [lens.distort_points(quad) for quad in pictures]
        exposure = min(3.0, float(rng.uniform(0.45, 0.8)) / float(gain.mean())) if low else 1.0
        frame = np.clip(rooms.sensor_noise(rng, image, max(exposure, 1.0)), 0, 255).astype(np.uint8)
        if not clean and rng.random() < 0.6:
            quality = int(rng.integers(15, 60))
            frame = rooms.jpeg_blocks(frame, quality)
            conditions["jpeg"] = float(quality)

        truths = [ScenePainting(index, catalogue_id(index) if index < self.catalogue_size else None,
                                quad.astype(np.float32), kind,
                                round(covered_fraction(occlusion, quad), 3)
                                if occlusion.any() else 0.0)
                  for (index, kind), quad in zip(((w.index, w.kind) for w in placed), pictures,
                                                 strict=True)]
        if truths:
            conditions["smallest_px"] = round(min(
                math.sqrt(abs(float(cv2.contourArea(t.quad)))) for t in truths), 1)
        return Scene(frame, tuple(truths), seed, conditions)

    def _pick_works(self, rng: np.random.Generator, count: int) -> list[int]:
        works: list[int] = []
        while len(works) < count:
            if self.outsiders and rng.random() < 0.1:
                index = self.catalogue_size + int(rng.integers(self.outsiders))
            else:
                index = int(rng.integers(self.catalogue_size))
            if index not in works:
                works.append(index)
        return works


def make_scenes(count: int, seed: int = 0, generator: SceneGenerator | None = None,
                ) -> Iterator[Scene]:
    """``count`` scenes with seeds ``seed, seed + 1, ...`` (the bench's fixed set is seed 0)."""
    generator = generator or SceneGenerator()
    for k in range(count):
        yield generator.render(seed + k)


# -- rendering helpers ---------------------------------------------------------


def _wall(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A plaster wall: white, grey, museum red, deep blue or sage, blotched and grainy."""
    width, height = size
    colours = [(235, 238, 240), (200, 205, 208), (150, 160, 168), (40, 40, 120),
               (90, 55, 35), (120, 150, 130), (70, 70, 70)]
    base = np.array(colours[int(rng.integers(len(colours)))], np.float32)
    coarse = cv2.resize(rng.normal(0, 1, (height // 48 + 1, width // 48 + 1)).astype(np.float32),
                        (width, height), interpolation=cv2.INTER_CUBIC)
    fine = rng.standard_normal((height, width), dtype=np.float32)
    return np.clip(base + (5.0 * coarse + 2.5 * fine)[..., None], 0, 255).astype(np.float32)


def _mounting(rng: np.random.Generator, artwork: np.ndarray, kind: str,
              picture_size: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The painting in its mounting, as an image in wall units, and its picture rect there."""
    pw, ph = int(round(picture_size[0])), int(round(picture_size[1]))
    short = min(pw, ph)
    picture = cv2.resize(artwork, (pw, ph), interpolation=cv2.INTER_AREA).astype(np.float32)
    # (width, BGR, grain, bevelled): moulding bands are bevelled (lit top/left,
    # shaded bottom/right, so their mitred corners show); paper and mounts are flat.
    bands: list[tuple[int, tuple[float, float, float], float, bool]] = []
    if kind == "frame_mount":
        woods: list[tuple[float, float, float]] = [(30, 50, 80), (25, 25, 25), (60, 140, 175),
                                                   (230, 230, 230)]
        wood = woods[int(rng.integers(4))]
        bands = [(int(rng.uniform(0.05, 0.09) * short), wood, 8.0, True),
                 (int(rng.uniform(0.08, 0.16) * short),
                  _bgr(rng.uniform(215, 245, 3)), 1.5, False)]
    elif kind == "moulding":
        gold = (40, 130, 180) if rng.random() < 0.6 else (25, 35, 55)
        lighter = _bgr([min(255.0, c * 1.5 + 20) for c in gold])
        bands = [(int(rng.uniform(0.04, 0.06) * short), gold, 10.0, True),
                 (int(rng.uniform(0.02, 0.04) * short), lighter, 10.0, True),
                 (int(rng.uniform(0.03, 0.05) * short), gold, 10.0, True),
                 (max(3, int(rng.uniform(0.01, 0.02) * short)), (200, 215, 225), 3.0, False)]
    elif kind == "print":
        bands = [(int(rng.uniform(0.05, 0.12) * short), (242, 244, 245), 1.0, False)]
    # canvas: no bands at all, the picture edge is the outline.
    total = sum(b[0] for b in bands)
    hung = np.zeros((ph + 2 * total, pw + 2 * total, 3), np.float32)
    inset = 0
    for band_width, colour, grain, bevelled in bands:
        region = hung[inset:hung.shape[0] - inset, inset:hung.shape[1] - inset]
        region[:] = colour
        if bevelled:
            shade = np.linspace(1.12, 0.85, band_width, dtype=np.float32)[:, None, None]
            region[:band_width] *= shade
            region[:, :band_width] *= shade.transpose(1, 0, 2)
            region[region.shape[0] - band_width:] *= shade[::-1] * 0.95
            region[:, region.shape[1] - band_width:] *= shade[::-1].transpose(1, 0, 2) * 0.95
        region += rng.normal(0, grain, region.shape[:2]).astype(np.float32)[..., None]
        inset += band_width
    hung[total:total + ph, total:total + pw] = picture
    rect = np.array([[total, total], [total + pw, total], [total + pw, total + ph],
                     [total, total + ph]], np.float32)
    return np.clip(hung, 0, 255), rect


def _bgr(values: object) -> tuple[float, float, float]:
    b, g, r = (float(v) for v in values)  # type: ignore[attr-defined]
    return (b, g, r)


def _camera(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``K R K^-1`` about the image centre: the homography of a rotating pinhole camera
    (Hartley & Zisserman 8.4.2), acting on centred coordinates."""
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
    cr, sr = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    k = np.diag([_FOCAL, _FOCAL, 1.0])
    return k @ r_roll @ r_pitch @ r_yaw @ np.linalg.inv(k)


def _fit_camera(rng: np.random.Generator, outlines: list[np.ndarray], yaw: float, pitch: float,
                roll: float, size: tuple[int, int], fill: float) -> np.ndarray:
    """Wall (layout-centred) -> frame homography that keeps every outline inside the frame."""
    width, height = size
    if not outlines:
        return np.eye(3)
    points = np.concatenate(outlines)
    rotate = _camera(yaw, pitch, roll)
    span = max(np.ptp(points[:, 0]) / width, np.ptp(points[:, 1]) / height)
    scale = fill / span
    for _ in range(40):
        h = rotate @ np.diag([scale, scale, 1.0])
        projected = cv2.perspectiveTransform(points[None], h)[0]
        w = (h @ np.c_[points, np.ones(len(points))].T)[2]
        box_w, box_h = np.ptp(projected[:, 0]), np.ptp(projected[:, 1])
        if w.min() > 0.3 and box_w <= width * (1 - 2 * _MARGIN) \
                and box_h <= height * (1 - 2 * _MARGIN):
            break
        scale *= 0.9
    # Put the layout somewhere in frame, with the slack left over.
    slack_x = width * (1 - 2 * _MARGIN) - box_w
    slack_y = height * (1 - 2 * _MARGIN) - box_h
    left = width * _MARGIN + rng.uniform(0, max(slack_x, 0))
    top = height * _MARGIN + rng.uniform(0, max(slack_y, 0))
    shift = np.array([[1, 0, left - projected[:, 0].min()], [0, 1, top - projected[:, 1].min()],
                      [0, 0, 1]])
    return shift @ h


def _paste(image: np.ndarray, hung: np.ndarray, to_frame: np.ndarray,
           shadow: bool, shadow_offset: tuple[float, float] = (0.015, 0.025),
           shadow_strength: float = 0.35, shadow_blur: float = 0.015) -> np.ndarray:
    """Composite ``hung`` (wall units) into ``image`` through ``to_frame``, with a drop shadow.

    The shadow's offset (x, y) and blur are fractions of the work's size in the
    frame; ``shadow_strength`` is how much light it takes off the wall.
    Only the region around the projected work is warped and blended (a tenth
    of the frame, typically), which keeps a scene at a few tens of ms.
    """
    height, width = image.shape[:2]
    corners = np.array([[0, 0], [hung.shape[1], 0], [hung.shape[1], hung.shape[0]],
                        [0, hung.shape[0]]], np.float64)
    projected = cv2.perspectiveTransform(corners[None], to_frame)[0]
    side = float(np.sqrt(abs(cv2.contourArea(projected.astype(np.float32)))))
    # Pre-shrink to about the size it will have in the frame, so the warp does not alias.
    shrink = min(1.0, side / float(np.sqrt(hung.shape[0] * hung.shape[1])) * 1.2)
    if shrink < 0.95:
        small = cv2.resize(hung, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        sx, sy = hung.shape[1] / small.shape[1], hung.shape[0] / small.shape[0]
        to_frame = to_frame @ np.diag([sx, sy, 1.0])
        hung = small
    reach = max(0.08, max(abs(shadow_offset[0]), abs(shadow_offset[1])) + 3 * shadow_blur)
    pad = int(reach * side) + 4  # room for the shadow and its blur
    x0 = max(int(projected[:, 0].min()) - pad, 0)
    y0 = max(int(projected[:, 1].min()) - pad, 0)
    x1 = min(int(np.ceil(projected[:, 0].max())) + pad, width)
    y1 = min(int(np.ceil(projected[:, 1].max())) + pad, height)
    if x1 <= x0 or y1 <= y0:
        return image
    to_roi = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]]) @ to_frame
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpPerspective(hung, to_roi, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones(hung.shape[:2], np.float32), to_roi, size,
                               flags=cv2.INTER_LINEAR)
    roi = image[y0:y1, x0:x1]
    if shadow:  # light from above left: the shadow falls down and right, soft
        offset = np.array([[1, 0, shadow_offset[0] * side], [0, 1, shadow_offset[1] * side]],
                          np.float32)
        cast = cv2.warpAffine(mask, offset, size)
        cast = cv2.GaussianBlur(cast, (0, 0), max(1.0, shadow_blur * side))
        roi *= (1.0 - shadow_strength * cast)[..., None]
    image[y0:y1, x0:x1] = roi * (1.0 - mask[..., None]) + warped * mask[..., None]
    return image


def _label(image: np.ndarray, rng: np.random.Generator, to_frame: np.ndarray,
           hung_shape: tuple[int, ...]) -> None:
    """A small caption card on the wall, right of the work, about a third of the way up."""
    if rng.random() < 0.4:
        return
    hh, hw = hung_shape[:2]
    card = np.full((int(0.08 * hh) + 4, int(0.14 * hh) + 4, 3), 245.0, np.float32)
    for row in range(3):  # a few lines of "text"
        y = int((0.25 + 0.22 * row) * card.shape[0])
        cv2.line(card, (3, y), (int(card.shape[1] * rng.uniform(0.5, 0.9)), y), (40, 40, 40), 1)
    place = np.array([[1, 0, hw + 0.25 * hh], [0, 1, 0.62 * hh], [0, 0, 1]])
    _paste(image, card, to_frame @ place, shadow=False)


def _lighting(rng: np.random.Generator, size: tuple[int, int], low: bool) -> np.ndarray:
    """A gain map: a linear gradient and a soft spot; low light scales it down to 0.25-0.5."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xs / width - 0.5) + np.sin(angle) * (ys / height - 0.5))
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.0, 0.5) * height
    spot = np.exp(-(((xs - cx) / (0.5 * width)) ** 2 + ((ys - cy) / (0.6 * height)) ** 2))
    gain = 0.8 + rng.uniform(0.1, 0.5) * ramp + rng.uniform(0.0, 0.35) * spot
    if low:
        gain *= rng.uniform(0.25, 0.5)
    return gain.astype(np.float32)


def _glare(rng: np.random.Generator, image: np.ndarray, pictures: list[np.ndarray]) -> str:
    """Soft saturating highlights (varnish, glass) on one or two pictures."""
    height, width = image.shape[:2]
    layer = np.zeros((height, width), np.float32)
    for quad in pictures[: int(rng.integers(1, 3))]:
        side = float(np.sqrt(abs(cv2.contourArea(quad))))
        # Somewhere on the picture, sometimes straddling its edge.
        u, v = rng.uniform(0.05, 0.95, 2)
        top = quad[0] + u * (quad[1] - quad[0])
        bottom = quad[3] + u * (quad[2] - quad[3])
        centre = top + v * (bottom - top)
        axes = (int(side * rng.uniform(0.08, 0.2)), int(side * rng.uniform(0.03, 0.1)))
        cv2.ellipse(layer, (int(centre[0]), int(centre[1])), axes, float(rng.uniform(0, 180)),
                    0, 360, float(rng.uniform(90, 200)), -1)
        layer = np.asarray(cv2.GaussianBlur(layer, (0, 0), max(2.0, 0.03 * side)), np.float32)
    image += layer[..., None]
    return "glare"


def _visitors(rng: np.random.Generator, image: np.ndarray, occlusion: np.ndarray,
              pictures: list[np.ndarray]) -> str:
    """One or two silhouettes in front of the wall, each hiding at most ~30 % of a picture."""
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(1, 3))):
        target = pictures[int(rng.integers(len(pictures)))]
        side = float(np.sqrt(abs(cv2.contourArea(target))))
        for _attempt in range(8):
            person = np.zeros((height, width), np.uint8)
            # Standing near a side of the picture (so it is partly hidden, not gone).
            edge = target[[0, 3], 0].mean() if rng.random() < 0.5 else target[[1, 2], 0].mean()
            cx = edge + rng.uniform(-0.25, 0.25) * side
            head_y = target[:, 1].min() + rng.uniform(0.3, 1.1) * (np.ptp(target[:, 1]))
            head_r = max(8, int(side * rng.uniform(0.08, 0.12)))
            shoulder = int(head_r * rng.uniform(2.0, 2.8))
            cv2.circle(person, (int(cx), int(head_y)), head_r, 255, -1, cv2.LINE_AA)
            body_top = int(head_y + 1.1 * head_r)
            cv2.ellipse(person, (int(cx), body_top + head_r), (shoulder, head_r), 0, 180, 360,
                        255, -1, cv2.LINE_AA)
            cv2.rectangle(person, (int(cx - shoulder), body_top + head_r), (int(cx + shoulder),
                                                                            height), 255, -1)
            covered = covered_fraction(person | occlusion, target)
            if covered <= 0.3 and all(covered_fraction(person | occlusion, p) <= 0.3
                                      for p in pictures):
                break
        else:
            continue
        clothes = np.array(rng.uniform(10, 90, 3), np.float32)
        soft = cv2.GaussianBlur(person.astype(np.float32) / 255.0, (0, 0), 1.5)[..., None]
        texture = clothes + 4.0 * rng.standard_normal((height, width, 1), dtype=np.float32)
        image[:] = image * (1 - soft) + texture * soft
        occlusion |= person
    return "visitors"


def _outline(shape: tuple[int, ...], x0: float, y0: float) -> np.ndarray:
    """The corners (TL, TR, BR, BL) of a ``shape`` image hung at (x0, y0) on the wall."""
    return np.array([[x0, y0], [x0 + shape[1], y0], [x0 + shape[1], y0 + shape[0]],
                     [x0, y0 + shape[0]]], np.float64)


def _frame_sides(image: np.ndarray, hung: np.ndarray, back: np.ndarray,
                 front: np.ndarray) -> None:
    """The frame's sides between the wall (``back``) and its face (``front``), seen obliquely.

    Filling the hull of both outlines and then pasting the face over it leaves
    exactly the visible sides showing; they take the outer edge's colour, in shade.
    """
    corners = np.array([[0, 0], [hung.shape[1], 0], [hung.shape[1], hung.shape[0]],
                        [0, hung.shape[0]]], np.float64)
    points = np.concatenate([cv2.perspectiveTransform(corners[None], back)[0],
                             cv2.perspectiveTransform(corners[None], front)[0]])
    hull = cv2.convexHull(np.round(points * 16).astype(np.int32))
    edge = np.concatenate([hung[:2].reshape(-1, 3), hung[:, :2].reshape(-1, 3)])
    colour = tuple(float(c) * 0.55 for c in edge.mean(axis=0))
    cv2.fillConvexPoly(image, hull, colour, cv2.LINE_8, 4)


def covered_fraction(mask: np.ndarray, quad: np.ndarray) -> float:
    """The share of ``quad``'s area (px) that ``mask`` (nonzero: covered) covers."""
    picture = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(picture, np.round(quad).astype(np.int32), 255)
    area = int(np.count_nonzero(picture))
    return float(np.count_nonzero(picture & mask)) / area if area else 0.0


def _blur(rng: np.random.Generator, image: np.ndarray) -> str:
    """Focus blur or motion blur (a hand-held camera, a slow shutter)."""
    if rng.random() < 0.5:
        sigma = float(rng.uniform(1.0, 2.5))
        image[:] = cv2.GaussianBlur(image, (0, 0), sigma)
        return f"focus {sigma:.1f}"
    length = int(rng.integers(5, 14))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    angle = float(rng.uniform(0, 180))
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    kernel = np.asarray(cv2.warpAffine(kernel, rotation, (length, length)), np.float32)
    kernel /= max(float(kernel.sum()), 1e-6)
    image[:] = cv2.filter2D(image, -1, kernel)
    return f"motion {length}px"


def _with_occlusion(truth: ScenePainting, occlusion: np.ndarray) -> ScenePainting:
    return ScenePainting(truth.artwork, truth.artwork_id, truth.quad, truth.frame_kind,
                         round(covered_fraction(occlusion, truth.quad), 3))


__all__ = [
    "ARTWORK_STYLES", "CATALOGUE_SEED", "CATALOGUE_SIZE", "FRAME_KINDS", "REFERENCE_LONG_SIDE",
    "SCENE_STYLES", "Scene", "SceneGenerator", "ScenePainting", "SceneStyle", "catalogue_artwork",
    "catalogue_id", "catalogue_metadata", "make_scenes", "write_catalogue",
]
