"""A camera's lens: measured from views of a chessboard, and taken out of every frame.

A wide lens (an action camera's, a fisheye) bows straight lines: a picture's
frame is then no quad, the quad finder's sides do not meet its edges, and a
homography places a bowed picture only roughly. A pinhole camera has none of
that, so the capture undistorts each frame first when its lens is known.

- :func:`calibrate` measures the lens from views of a printed chessboard
  (OpenCV's ``calibrateCamera``, or ``fisheye.calibrate``), as ``art2mus
  calibrate`` runs it, into a :class:`capture.config.LensConfig` (the room's
  ``[capture.lens]`` section).
- :class:`Lens` undistorts frames with it (one ``remap``; its maps are made
  once per frame size) and moves points between the camera's frame and the
  undistorted one, so a quad found in the undistorted frame can be drawn on,
  or scored against, the camera's own.

A lens measured at one size is scaled to frames of the same aspect (a camera
measured at 1920x1080 streaming 1280x720); a frame of another aspect is not
the same crop of the sensor, and :meth:`Lens.fits` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from pydantic import ValidationError

from capture.config import LensConfig
from ground.errors import InputError

#: Views of the board a calibration needs at least (each adds 2 x corners equations; six
#: views at different tilts pin the focal length and three radial terms down).
MIN_VIEWS = 6
#: Views a calibration uses at most, spread over those found (more adds time, not accuracy).
MAX_VIEWS = 40
#: The models "auto" fits, keeping the one whose reprojection error is least: an office
#: camera's lens fits the standard model, an action camera's only the fisheye one. (The
#: rational model's eight terms also fit a board's views where they bend the frame's
#: corners wildly; it is there to be chosen by name.)
AUTO_MODELS = ("standard", "fisheye")
#: Share of the frame the board's views should cover between them; less, or a corner of
#: the frame never reached, is reported (the lens is extrapolated where no view was).
WELL_COVERED = 0.4
#: Reprojection error above which a calibration is reported as poor, px.
POOR_RMS_PX = 1.0
#: Long side, px, a board is looked for at (larger views are searched downscaled).
_FIND_SIDE = 1280
#: How far a frame's aspect may differ from the calibration's and still be scaled to it.
_ASPECT_TOLERANCE = 0.01


@dataclass
class _Fitted:
    """The lens at one frame size: its matrices and the undistortion maps."""

    camera: np.ndarray  # K at this size
    coefficients: np.ndarray
    view: np.ndarray  # K of the undistorted frame
    maps: tuple[np.ndarray, np.ndarray]


class Lens:
    """Undistorts frames taken through the lens ``config`` describes, at any size of its aspect."""

    def __init__(self, config: LensConfig) -> None:
        self.config = config
        self._fitted: dict[tuple[int, int], _Fitted] = {}

    @property
    def fisheye(self) -> bool:
        """Whether the lens uses OpenCV's fisheye (equidistant) model."""
        return self.config.model == "fisheye"

    def fits(self, size: tuple[int, int]) -> bool:
        """Whether frames of ``size`` (width, height) are the calibration's aspect."""
        width, height = size
        measured = self.config.width / self.config.height
        return abs(width / height - measured) <= _ASPECT_TOLERANCE * measured

    def undistort(self, image: np.ndarray) -> np.ndarray:
        """``image`` as a pinhole camera would have taken it; InputError if the frame's
        aspect is not the calibration's (:meth:`fits`)."""
        fitted = self._at((image.shape[1], image.shape[0]))
        return cv2.remap(image, *fitted.maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def to_camera(self, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Points ``(N, 2)`` of the undistorted frame of ``size``, where the camera saw them."""
        fitted = self._at(size)
        flat = np.asarray(points, np.float64).reshape(-1, 2)
        homogeneous = np.c_[flat, np.ones(len(flat))] @ np.linalg.inv(fitted.view).T
        normalised = homogeneous[:, :2] / homogeneous[:, 2:]
        if self.fisheye:
            moved = cv2.fisheye.distortPoints(normalised.reshape(1, -1, 2), fitted.camera,
                                              fitted.coefficients)
        else:
            moved, _ = cv2.projectPoints(np.c_[normalised, np.ones(len(flat))], np.zeros(3),
                                         np.zeros(3), fitted.camera, fitted.coefficients)
        return np.asarray(moved, np.float64).reshape(-1, 2)

    def from_camera(self, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Points ``(N, 2)`` of the camera's frame of ``size``, where the undistorted frame
        shows them (the inverse of :meth:`to_camera`)."""
        fitted = self._at(size)
        flat = np.asarray(points, np.float64).reshape(-1, 1, 2)
        if self.fisheye:
            moved = cv2.fisheye.undistortPoints(
                flat, fitted.camera, fitted.coefficients, P=fitted.view,
                criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10))
        else:  # iterated to convergence: the default five steps leave a wide lens's corners off
            moved = cv2.undistortPoints(
                flat, fitted.camera, fitted.coefficients, P=fitted.view,
                criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10))
        return np.asarray(moved, np.float64).reshape(-1, 2)

    def _at(self, size: tuple[int, int]) -> _Fitted:
        size = (int(size[0]), int(size[1]))
        fitted = self._fitted.get(size)
        if fitted is not None:
            return fitted
        if not self.fits(size):
            raise InputError(
                f"capture.lens: measured at {self.config.width}x{self.config.height}, not the "
                f"aspect of {size[0]}x{size[1]} frames (calibrate the camera at the size it "
                f"streams)")
        scale = size[0] / self.config.width
        # pixel centres scale about the frame's corner: (c + 0.5) * scale - 0.5
        cx, cy = ((c + 0.5) * scale - 0.5 for c in self.config.centre)
        camera = np.array([[self.config.focal[0] * scale, 0.0, cx],
                           [0.0, self.config.focal[1] * scale, cy], [0.0, 0.0, 1.0]])
        coefficients = np.array(self.config.distortion, np.float64)
        if self.fisheye:
            view = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(
                camera, coefficients, size, np.eye(3), balance=self.config.keep)
            maps = cv2.fisheye.initUndistortRectifyMap(camera, coefficients, np.eye(3), view,
                                                       size, cv2.CV_16SC2)
        else:
            view, _ = cv2.getOptimalNewCameraMatrix(camera, coefficients, size,
                                                    self.config.keep, size)
            maps = cv2.initUndistortRectifyMap(camera, coefficients, None, view, size,
                                               cv2.CV_16SC2)
        fitted = _Fitted(camera, coefficients, np.asarray(view, np.float64),
                         (np.asarray(maps[0]), np.asarray(maps[1])))
        self._fitted[size] = fitted
        return fitted


# -- calibration ---------------------------------------------------------------------


@dataclass
class Calibration:
    """What :func:`calibrate` measured: the lens, and how well the views fit it."""

    lens: LensConfig
    rms_px: float
    views: list[str]  # the names of the views used
    view_errors: list[float]  # each view's RMS reprojection error, px
    found: int  # views the board was found in (``views`` is at most MAX_VIEWS of them)
    looked_at: int
    missed: list[str] = field(default_factory=list)  # views the board was not found in
    #: Share of the frame some view's board covered; and the frame's corners (its outer
    #: quarters) none did: there the lens is extrapolated, and a wide lens's bow is most.
    coverage: float = 0.0
    corners_missed: list[str] = field(default_factory=list)

    @property
    def narrow(self) -> bool:
        """Whether the board kept to the middle of the frame (a warning, not an error)."""
        return self.coverage < WELL_COVERED or bool(self.corners_missed)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (``art2mus calibrate --json``)."""
        worst = int(np.argmax(self.view_errors))
        return {"lens": self.lens.model_dump(), "rms_px": round(self.rms_px, 4),
                "views_used": len(self.views), "found": self.found,
                "looked_at": self.looked_at, "worst_view": self.views[worst],
                "worst_view_rms_px": round(self.view_errors[worst], 4),
                "poor": self.rms_px > POOR_RMS_PX, "coverage": round(self.coverage, 3),
                "corners_missed": self.corners_missed, "narrow": self.narrow}


def find_board(image: np.ndarray, board: tuple[int, int]) -> np.ndarray | None:
    """The inner corners ``(cols * rows, 2)`` of a chessboard of ``board`` (cols, rows)
    inner corners in ``image``, to a fraction of a pixel; ``None`` where it is not all seen.

    The board is found at :data:`_FIND_SIDE` px at most (the search's cost grows with the
    pixels: 4 s a 4K frame, against 0.3 s at 1280x720) and its corners refined on the
    whole frame."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    scale = min(1.0, _FIND_SIDE / max(grey.shape))
    small = grey if scale == 1.0 else cv2.resize(grey, None, fx=scale, fy=scale,
                                                 interpolation=cv2.INTER_AREA)
    found, corners = cv2.findChessboardCornersSB(
        small, board, flags=cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_ACCURACY)
    if not found:
        return None
    points = np.asarray(corners, np.float32).reshape(-1, 2)
    if scale < 1.0:
        # pixel centres: (x + 0.5) / scale - 0.5; then refined where the squares meet, in a
        # window a third of the nearest corner's distance (inside the squares around it)
        points = (points + 0.5) / scale - 0.5
        grid = points.reshape(board[1], board[0], 2)
        spacing = min(float(np.linalg.norm(np.diff(grid, axis=1), axis=2).min()),
                      float(np.linalg.norm(np.diff(grid, axis=0), axis=2).min()))
        half = max(2, int(spacing / 3))
        refined = cv2.cornerSubPix(grey, points.reshape(-1, 1, 2), (half, half), (-1, -1),
                                   (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 0.01))
        points = np.asarray(refined, np.float32).reshape(-1, 2)
    return points


def calibrate(views: Iterable[tuple[str, np.ndarray]], board: tuple[int, int],
              model: str = "auto", keep: float = 0.0,
              on_view: Callable[[str, bool], object] | None = None) -> Calibration:
    """Measure the lens from ``views`` (name, BGR image) of a flat chessboard of ``board``
    (cols, rows) inner corners, all of one size, under ``model`` (one of
    :data:`capture.config.LENS_COEFFICIENTS`, or "auto": each of :data:`AUTO_MODELS`, the
    one whose reprojection error is least). InputError naming the view or the
    shortfall: views of different sizes, fewer than :data:`MIN_VIEWS` with the board
    found, or a fit OpenCV cannot make. ``on_view(name, found)`` after each view is looked
    at (a technician waving the board before a live camera sees what counts)."""
    from capture.config import LENS_COEFFICIENTS

    if model != "auto" and model not in LENS_COEFFICIENTS:
        raise InputError(f"model: expected auto or one of {', '.join(LENS_COEFFICIENTS)}, "
                         f"got {model!r}")
    if min(board) < 2 or max(board) > 100:
        raise InputError(f"board: expected 2 to 100 inner corners a side, got {board[0]}x"
                         f"{board[1]}")
    size: tuple[int, int] | None = None
    first = ""
    names: list[str] = []
    corners: list[np.ndarray] = []
    missed: list[str] = []
    for name, image in views:
        shape = (int(image.shape[1]), int(image.shape[0]))
        if size is None:
            size, first = shape, name
        elif shape != size:
            raise InputError(f"{name}: {shape[0]}x{shape[1]}, not the {size[0]}x{size[1]} of "
                             f"{first} (a lens is measured at one frame size)")
        found = find_board(image, board)
        if found is None:
            missed.append(name)
        else:
            names.append(name)
            corners.append(found)
        if on_view is not None:
            on_view(name, found is not None)
    looked_at = len(names) + len(missed)
    if size is None or len(names) < MIN_VIEWS:
        raise InputError(
            f"calibrate: the {board[0]}x{board[1]} board (inner corners) was found in "
            f"{len(names)} of {looked_at} views; at least {MIN_VIEWS} are needed (the whole "
            f"board in view, at different tilts and places in the frame; is --board the count "
            f"of inner corners?)")
    used = np.unique(np.linspace(0, len(names) - 1, min(MAX_VIEWS, len(names))).round()
                     .astype(int))
    grid = np.zeros((board[0] * board[1], 3), np.float64)
    grid[:, :2] = np.mgrid[0:board[0], 0:board[1]].T.reshape(-1, 2)
    image_points = [corners[i].astype(np.float64) for i in used]
    fits: list[Calibration] = []
    failures: list[str] = []
    for tried in AUTO_MODELS if model == "auto" else (model,):
        try:
            fits.append(_calibration(grid, image_points, size, tried, keep))
        except InputError as exc:
            failures.append(f"{tried}: {exc}")
    if not fits:
        raise InputError(f"calibrate: no lens model fits these views ({'; '.join(failures)}); "
                         f"take views at more tilts, the board filling more of the frame")
    best = min(fits, key=lambda fit: fit.rms_px)
    best.views = [names[i] for i in used]
    best.found, best.looked_at, best.missed = len(names), looked_at, missed
    best.coverage, best.corners_missed = _coverage(corners, board, size)
    return best


def _coverage(corners: Sequence[np.ndarray], board: tuple[int, int], size: tuple[int, int]
              ) -> tuple[float, list[str]]:
    """The share of the frame the boards found covered (each its inner corners' outline),
    and which of the frame's corners (its outer quarters, each way) none reached."""
    columns = 48
    rows = max(1, round(columns * size[1] / size[0]))
    mask = np.zeros((rows, columns), np.uint8)
    scale = np.array([columns / size[0], rows / size[1]])
    for points in corners:
        grid = points.reshape(board[1], board[0], 2)
        outline = np.concatenate([grid[0], grid[1:, -1], grid[-1, -2::-1], grid[-2:0:-1, 0]])
        cv2.fillPoly(mask, [np.round(outline * scale).astype(np.int32)], 1)
    quarter_x, quarter_y = columns // 4, max(1, rows // 4)
    regions = {"top left": mask[:quarter_y, :quarter_x], "top right": mask[:quarter_y, -quarter_x:],
               "bottom right": mask[-quarter_y:, -quarter_x:],
               "bottom left": mask[-quarter_y:, :quarter_x]}
    return float(mask.mean()), [name for name, region in regions.items() if not region.any()]


def _calibration(grid: np.ndarray, image_points: Sequence[np.ndarray], size: tuple[int, int],
                 model: str, keep: float) -> Calibration:
    """The lens of ``model`` fitted to ``image_points`` (InputError where it cannot be)."""
    from capture.config import LENS_COEFFICIENTS

    try:
        rms, camera, coefficients, rotations, translations = _fit(
            grid, image_points, size, model)
    except cv2.error as exc:
        raise InputError(f"OpenCV could not fit it ({str(exc).strip().splitlines()[-1]})") \
            from None
    errors = _view_errors(grid, image_points, rotations, translations, camera, coefficients,
                          model)
    try:
        lens = LensConfig(model=model, width=size[0], height=size[1],
                          focal=(float(camera[0, 0]), float(camera[1, 1])),
                          centre=(float(camera[0, 2]), float(camera[1, 2])),
                          distortion=tuple(float(c) for c in np.ravel(coefficients)
                                           [:LENS_COEFFICIENTS[model]]),
                          keep=keep, rms_px=round(float(rms), 4))
    except ValidationError as exc:  # non-finite or absurd figures
        why = "; ".join(str(error["msg"]) for error in exc.errors())
        raise InputError(f"the fit is not a plausible lens: {why}") from None
    return Calibration(lens, float(rms), [], errors, 0, 0)


def _fit(grid: np.ndarray, image_points: Sequence[np.ndarray], size: tuple[int, int],
         model: str) -> tuple[float, np.ndarray, np.ndarray, Sequence[Any], Sequence[Any]]:
    """OpenCV's calibration under ``model``: RMS, K, coefficients, per-view poses."""
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-9)
    if model == "fisheye":
        rms, camera, coefficients, rotations, translations = cv2.fisheye.calibrate(
            [grid.reshape(-1, 1, 3)] * len(image_points),
            [p.reshape(-1, 1, 2) for p in image_points], size, np.zeros((3, 3)), np.zeros(4),
            flags=cv2.fisheye.CALIB_RECOMPUTE_EXTRINSIC | cv2.fisheye.CALIB_FIX_SKEW,
            criteria=criteria)
    else:
        flags = cv2.CALIB_RATIONAL_MODEL if model == "rational" else 0
        rms, camera, coefficients, rotations, translations = cv2.calibrateCamera(
            [grid.astype(np.float32)] * len(image_points),
            [p.astype(np.float32) for p in image_points], size, None, None, flags=flags,
            criteria=criteria)
    return float(rms), camera, coefficients, rotations, translations


def _view_errors(grid: np.ndarray, image_points: Sequence[np.ndarray],
                 rotations: Sequence[Any], translations: Sequence[Any], camera: np.ndarray,
                 coefficients: np.ndarray, model: str) -> list[float]:
    """Each view's RMS reprojection error, px: a view far above the rest is a bad one."""
    errors = []
    for points, rotation, translation in zip(image_points, rotations, translations,
                                             strict=True):
        if model == "fisheye":
            projected, _ = cv2.fisheye.projectPoints(grid.reshape(-1, 1, 3), rotation,
                                                     translation, camera, coefficients)
        else:
            projected, _ = cv2.projectPoints(grid, rotation, translation, camera, coefficients)
        residual = np.asarray(projected, np.float64).reshape(-1, 2) - points
        errors.append(float(np.sqrt((residual ** 2).sum(axis=1).mean())))
    return errors


def lens_section(calibration: Calibration, board: tuple[int, int]) -> str:
    """The ``[capture.lens]`` TOML section ``art2mus calibrate`` prints and writes."""
    lens = calibration.lens

    def numbers(values: Sequence[float]) -> str:
        return "[" + ", ".join(f"{v:.10g}" for v in values) + "]"

    return (f"# art2mus calibrate: {len(calibration.views)} views of a {board[0]}x{board[1]} "
            f"board, reprojection error {calibration.rms_px:.3f} px\n"
            f"# in a room's config this is [rooms.capture.lens]\n"
            f"[capture.lens]\n"
            f"model = \"{lens.model}\"\n"
            f"width = {lens.width}\n"
            f"height = {lens.height}\n"
            f"focal = {numbers(lens.focal)}\n"
            f"centre = {numbers(lens.centre)}\n"
            f"distortion = {numbers(lens.distortion)}\n"
            f"keep = {lens.keep:g}\n"
            f"rms_px = {calibration.rms_px:.4f}\n")


__all__ = ["AUTO_MODELS", "MAX_VIEWS", "MIN_VIEWS", "POOR_RMS_PX", "WELL_COVERED",
           "Calibration", "Lens", "calibrate", "find_board", "lens_section"]
