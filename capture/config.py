"""Capture settings: frame source, detection, stability and publishing."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ground.config import Flag


class DemoSourceConfig(BaseModel):
    """The built-in virtual camera: artworks shown in turn on a wall."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    artworks: int = Field(4, ge=1, le=32, description="How many artworks the camera visits.")
    dwell_s: float = Field(15.0, ge=1.0, le=600.0, description="Seconds on each artwork.")
    width: int = Field(1280, ge=160, le=3840)
    height: int = Field(720, ge=120, le=2160)
    seed: int = Field(7, ge=0, le=2**32 - 1)


class StabilityConfig(BaseModel):
    """When a newly seen artwork counts, and when one is lost."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    hold_frames: int = Field(
        4, ge=1, le=1000, description="N: frames of the last M that must agree.")
    window_frames: int = Field(6, ge=1, le=1000, description="M: the window N is counted in.")
    lost_after_s: float = Field(
        2.0, ge=0.0, le=3600.0, description="Grace period before 'empty wall'.")
    same_artwork_distance: float = Field(
        0.12, gt=0.0, le=2.0,
        description="Descriptor distance under which two views are the same artwork.",
    )
    # Corner smoothing: a One Euro filter (Casiez et al., CHI 2012) per corner
    # coordinate. Still: cut-off min_cutoff_hz (jitter removed); moving: the
    # cut-off rises with speed (beta), so the quad follows without lag.
    smoothing_min_cutoff_hz: float = Field(0.3, gt=0.0, le=100.0,
                                           description="One Euro cut-off at rest, Hz.")
    smoothing_beta: float = Field(0.02, ge=0.0, le=10.0,
                                  description="One Euro speed coefficient, per px/s.")
    smoothing_d_cutoff_hz: float = Field(0.5, gt=0.0, le=100.0,
                                         description="One Euro cut-off of the speed estimate.")
    primary_switch_ratio: float = Field(
        1.3, ge=1.0, le=10.0,
        description="Another painting becomes primary only when this much more central/large.",
    )
    primary_switch_frames: int = Field(
        3, ge=1, le=100, description="...for this many consecutive frames.")


class EncoderConfig(BaseModel):
    """Which image encoder makes ``ArtworkView.embedding``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["descriptor", "onnx"] = Field(
        "descriptor", description="'descriptor' (handcrafted, default) or 'onnx' (a model file).")
    model: str | None = Field(None, description="kind = 'onnx': path to the exported .onnx.")
    preprocessor: str | None = Field(
        None, description="Image-processor JSON (default: MODEL with .preprocessor.json).")
    threads: int = Field(1, ge=1, le=64, description="ONNX Runtime intra-op threads.")

    @model_validator(mode="after")
    def _model_for_onnx(self) -> EncoderConfig:
        if self.kind == "onnx" and not self.model:
            raise ValueError("kind = 'onnx' needs model = 'path/encoder.onnx'")
        return self


#: Distortion coefficients each lens model takes, as OpenCV orders them.
LENS_COEFFICIENTS = {"standard": 5, "rational": 8, "fisheye": 4}


class LensConfig(BaseModel):
    """A camera's lens, as ``art2mus calibrate`` measured it from views of a chessboard.

    The capture loop undistorts every frame with it before anything looks at the
    frame: a wide lens bows straight lines, so a picture's frame is no quad.
    Written at the size it was measured at, it is scaled to frames of the same
    aspect; a frame of another aspect passes uncorrected (logged once)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: Literal["standard", "rational", "fisheye"] = Field(
        "standard", description="OpenCV's lens model: 'standard' (k1 k2 p1 p2 k3), "
        "'rational' (8 coefficients, wide lenses), 'fisheye' (k1-k4, equidistant).")
    width: int = Field(..., ge=16, le=16384, description="Frame width it was measured at, px.")
    height: int = Field(..., ge=16, le=16384, description="Frame height it was measured at, px.")
    focal: tuple[float, float] = Field(..., description="fx, fy in px at width x height.")
    centre: tuple[float, float] = Field(..., description="The principal point cx, cy, px.")
    distortion: tuple[float, ...] = Field(
        ..., description="The model's coefficients (5, 8 or 4 of them), as OpenCV orders them.")
    keep: float = Field(
        0.0, ge=0.0, le=1.0,
        description="0: the undistorted frame holds only pixels the camera saw (its bulging "
        "corners cut); 1: every pixel the camera saw (black borders round them).")
    rms_px: float | None = Field(
        None, ge=0.0, description="The calibration's reprojection error, px (a record).")

    @model_validator(mode="after")
    def _plausible(self) -> LensConfig:
        wanted = LENS_COEFFICIENTS[self.model]
        if len(self.distortion) != wanted:
            raise ValueError(f"distortion: model {self.model!r} takes {wanted} coefficients, "
                             f"got {len(self.distortion)}")
        if any(abs(c) > 1000.0 for c in self.distortion):
            raise ValueError("distortion: expected coefficients within +-1000, got "
                             f"{list(self.distortion)}")
        if not all(self.width / 8 <= f <= self.width * 20 for f in self.focal):
            raise ValueError(f"focal: expected fx, fy between width/8 and 20 widths "
                             f"({self.width} px wide), got {list(self.focal)}")
        cx, cy = self.centre
        if not (0.0 <= cx <= self.width and 0.0 <= cy <= self.height):
            raise ValueError(f"centre: expected a point inside the {self.width}x{self.height} "
                             f"frame, got {list(self.centre)}")
        if (why := _not_a_lens(self)) is not None:
            raise ValueError(f"distortion: expected a lens that maps the frame one to one, "
                             f"got {list(self.distortion)}: {why}")
        return self


#: The most a lens may magnify its image's edge against its centre (r_d / r): real
#: pincushion lenses stay near 1.1; beyond, the frame would show a sliver of the scene.
MOST_MAGNIFIED = 2.0
#: Tangential coefficients (p1, p2) of real lenses are thousandths; a tenth bends the
#: frame's edge by its own width.
MOST_TANGENTIAL = 0.1


def _not_a_lens(lens: LensConfig) -> str | None:
    """Why ``lens``'s coefficients are no lens, or None: the radial map from the scene's
    angles to the frame must grow steadily out to the frame's nearest edge (else the image
    folds over itself and undistortion repeats the middle of the frame at its edges) and
    not magnify past :data:`MOST_MAGNIFIED`. A typo (-999 for -0.999) turned a room's
    frames into a mirror maze, or black round a sliver, while the config loaded.

    Out to the nearest edge, not the corners: a wide lens's polynomial is fitted where the
    board was seen, and a good calibration's may fold in the corners it never saw (those
    are cut, ``keep`` 0)."""
    cx, cy = lens.centre
    fx, fy = lens.focal
    corner = min(cx / fx, (lens.width - cx) / fx, cy / fy, (lens.height - cy) / fy)
    c = lens.distortion
    if lens.model == "fisheye":
        # theta_d = theta (1 + k1 theta^2 + ... + k4 theta^8), the frame's radius is theta_d
        theta = np.linspace(1e-4, math.pi / 2 - 1e-4, 4096)
        shown_at = theta * (1 + c[0] * theta**2 + c[1] * theta**4 + c[2] * theta**6
                            + c[3] * theta**8)
        gain = shown_at / theta
    else:
        if max(abs(c[2]), abs(c[3])) > MOST_TANGENTIAL:
            return (f"tangential p1, p2 over {MOST_TANGENTIAL} (real lenses: thousandths)")
        r = np.linspace(1e-4, 10 * corner, 8192)
        r2 = r * r
        top = 1 + c[0] * r2 + c[1] * r2**2 + c[4] * r2**3
        bottom = (1 + c[5] * r2 + c[6] * r2**2 + c[7] * r2**3) if lens.model == "rational" \
            else np.ones_like(r)
        gain = top / bottom
        shown_at = r * gain
    reached = np.flatnonzero(shown_at >= corner)
    end = int(reached[0]) + 1 if reached.size else shown_at.size
    if not reached.size or np.any(np.diff(shown_at[:end]) <= 0):
        return "the image folds over itself inside the frame"
    if gain[:end].max() > MOST_MAGNIFIED:
        return f"it magnifies the frame's edge {gain[:end].max():.3g} times (at most " \
               f"{MOST_MAGNIFIED:g})"
    return None


class RecognitionConfig(BaseModel):
    """Recognition against a catalogue folder of reference images (optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    catalogue: str | None = Field(
        None, description="Folder of reference images (+ optional catalogue.toml or CSV "
                          "export); none: off.")
    cache_dir: str | None = Field(
        None, description="Where the index is cached (default: inside the catalogue folder).")
    min_inliers: int = Field(12, ge=6, le=500,
                             description="RANSAC inliers a feature match needs.")
    watch_s: float = Field(
        30.0, ge=0.0, le=3600.0,
        description="How often the catalogue folder is looked at for works added, changed or "
                    "removed (and metadata edited), seconds; a change is indexed in the "
                    "background (only what changed) and recognised without a restart "
                    "(0: never; the folder is read at start only).",
    )
    locate_every_frames: int = Field(
        3, ge=0, le=1000,
        description="While the quad finder and the tracker miss the current catalogued "
                    "painting, locate it by homography every this many frames (0: never).",
    )
    locate_width: int = Field(
        640, ge=320, le=1920,
        description="Frames are downscaled to this width to locate catalogued works by their "
                    "features (wider finds smaller works, at about the square of the cost).",
    )
    search_every_s: float = Field(
        1.0, ge=0.0, le=3600.0,
        description="While no artwork is in view, search the whole frame for catalogued works "
                    "(the ones the quad finder misses: steep angles, dim light) at most this "
                    "often, seconds; and a work given an id of its own is looked at again at "
                    "its place this often (the first time 0.2 s after it came), five times "
                    "(a smeared or glazed first frame hid a catalogued work's features) "
                    "(0: never).",
    )
    fine_search_every: int = Field(
        4, ge=0, le=1000,
        description="Every this many of those searches, also look at the whole frame at twice "
                    "locate_width (small and far works; about four times a search's cost, "
                    "~0.5 s at 1280x720 on one core, the coarse look included) (0: never).",
    )
    describe: Literal["reference", "view"] = Field(
        "reference",
        description="What a recognised catalogued work's features and embedding come from: "
                    "'reference', its catalogue image (the same music whatever the room's "
                    "light, the frame, the angle or which camera saw it first), or 'view', the "
                    "camera's first view of it (the room's light colours the music).",
    )
    uncatalogued: Literal["play", "ignore"] = Field(
        "play",
        description="What a picture the catalogue does not name becomes: 'play', a work of "
                    "its own with its own music (a room that also shows works outside the "
                    "catalogue), or 'ignore', nothing: the room reads as an empty wall (the "
                    "catalogue holds every work in the room, so a caption card, a sign, a "
                    "window or a screen never plays). Needs a catalogue.",
    )

    @model_validator(mode="after")
    def _ignore_needs_a_catalogue(self) -> RecognitionConfig:
        if self.uncatalogued == "ignore" and not self.catalogue:
            raise ValueError("uncatalogued = 'ignore' needs catalogue = 'FOLDER' (without one "
                             "every picture is uncatalogued: nothing would ever play)")
        return self


class CaptureConfig(BaseModel):
    """One room's capture role."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    source: str = Field(
        "demo",
        description="'demo', 'camera:INDEX' or 'camera:NAME', 'video:PATH' or "
                    "'video:rtsp://...', 'images:DIR'.",
        pattern=r"^(demo|camera:.+|video:.+|images:.+)$",
    )
    fps: float = Field(15.0, gt=0.0, le=120.0, description="Frames processed per second.")
    min_fps: float = Field(
        2.0, gt=0.0, le=120.0,
        description="Under load (a frame takes longer than its share of the period, or the "
        "loop falls behind) the rate drops toward this floor, and climbs back to fps when "
        "there is headroom, so the camera never starves the music.",
    )
    # Network cameras (video:rtsp://..., video:http://... MJPEG): read by a thread that keeps
    # only the latest frame (capture.sources.StreamSource).
    stream_open_timeout_s: float = Field(
        5.0, ge=0.5, le=120.0,
        description="A network stream that has not opened after this many seconds counts as "
                    "a failed attempt (the next one follows the backoff).")
    stream_read_timeout_s: float = Field(
        3.0, ge=0.5, le=120.0,
        description="A network stream that delivers no frame for this many seconds is lost: "
                    "the status says camera 'lost' and the stream is reopened.")
    reconnect_max_s: float = Field(
        8.0, ge=0.5, le=3600.0,
        description="Reopening a lost camera or stream waits 0.5 s, 1 s, 2 s, ... up to this "
                    "many seconds between attempts.")
    detect_width: int = Field(640, ge=160, le=1920, description="Detection runs at this width.")
    rectified_size: int = Field(256, ge=64, le=1024, description="Rectified artwork side, px.")
    heartbeat_s: float = Field(1.0, gt=0.0, le=60.0, description="Re-send the current view.")
    image_dwell_s: float = Field(
        10.0, gt=0.0, le=3600.0, description="images:DIR shows each image this long, cycling."
    )
    stats_every_s: float = Field(
        10.0, gt=0.0, le=3600.0, description="How often a 'stats' event is logged.")
    track: Flag = Field(
        True, description="Follow a confirmed artwork with optical flow between frames, so "
                          "detection and recognition run once per arrival, not every frame.")
    redetect_every_frames: int = Field(
        5, ge=1, le=1000,
        description="While tracking, the quad finder still runs every this many frames, to "
                    "notice another painting becoming the primary one.")
    overlay: str | None = Field(
        None,
        description="Keep the latest frame with what capture found drawn on it (quads, ids, "
        "titles, scores) in this .png or .jpg file, for the technician's console; may contain "
        "'{room}'; relative: under [installation] output_dir; none: off.",
    )
    overlay_every_s: float = Field(
        1.0, ge=0.1, le=3600.0, description="The overlay is rewritten at most this often.")
    console_frame: str | None = Field(
        None,
        description="The technician's console's camera picture: the latest frame with the "
        "overlay drawn, downscaled to console_frame_width, kept in this .jpg file (written "
        "atomically); may contain '{room}'. Filled in from [console] when the console is on; "
        "none: off.",
    )
    console_frame_every_s: float = Field(
        0.5, ge=0.1, le=60.0, description="The console picture is rewritten at most this often.")
    console_frame_width: int = Field(
        480, ge=160, le=1920, description="Width of the console picture, px (never upscaled).")
    stability: StabilityConfig = StabilityConfig()
    demo: DemoSourceConfig = DemoSourceConfig()
    encoder: EncoderConfig = EncoderConfig()
    recognition: RecognitionConfig = RecognitionConfig()
    lens: LensConfig | None = Field(
        None, description="The camera's lens (art2mus calibrate writes this section); none: "
        "frames are taken as they come.")

    @field_validator("overlay")
    @classmethod
    def _overlay_is_an_image(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().endswith((".png", ".jpg", ".jpeg")):
            raise ValueError("expected a file ending in .png, .jpg or .jpeg")
        return _room_template(value)

    @field_validator("console_frame")
    @classmethod
    def _console_frame_is_a_jpeg(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().endswith((".jpg", ".jpeg")):
            raise ValueError(f"expected a file ending in .jpg or .jpeg, got {value!r}")
        return _room_template(value)


def _room_template(value: str | None) -> str | None:
    """``value`` unchanged if ``{room}`` is the only thing in braces; ValueError else."""
    if value is not None:
        try:
            value.format(room="room")
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"expected a path where only '{{room}}' appears in braces, "
                             f"got {value!r}") from None
    return value
