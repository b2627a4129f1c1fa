"""Photos of a printed chessboard held before a camera: what ``art2mus calibrate`` measures.

Each view is the board (white squares at the corners, a white margin round
it, as OpenCV's pattern prints) at a random tilt, turn, roll, distance and
place, wholly in the frame (every other view in one of its corners, as a
calibration asks), projected by a pinhole camera onto a grey room,
softened and noised as a camera takes it; ``lens`` then bends the whole frame
(``capture.synthetic.rooms.Fisheye.apply``, the action camera the room scenes
and ``capture.degrade`` use), so the tests and the bench calibrate a lens they
did not describe to the calibration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np

_SQUARE_PX = 24  # the board image's square, before it is projected
_TILT_DEGREES = 40.0  # turn and tilt of the board at most, each way
_ROLL_DEGREES = 25.0


def board_views(size: tuple[int, int], board: tuple[int, int], count: int, seed: int = 0,
                lens: Callable[[np.ndarray], np.ndarray] | None = None
                ) -> Iterator[tuple[str, np.ndarray]]:
    """``count`` views ("board-NN", BGR image of ``size``) of a chessboard of ``board``
    (cols, rows) inner corners, seeded by ``seed``, each through ``lens`` when given."""
    rng = np.random.default_rng(seed)
    width, height = size
    squares = (board[0] + 1, board[1] + 1)
    pattern = np.full(((squares[1] + 2) * _SQUARE_PX, (squares[0] + 2) * _SQUARE_PX), 235,
                      np.uint8)
    for row in range(squares[1]):
        for col in range(squares[0]):
            if (row + col) % 2 == 0:
                y, x = (row + 1) * _SQUARE_PX, (col + 1) * _SQUARE_PX
                pattern[y:y + _SQUARE_PX, x:x + _SQUARE_PX] = 25
    focal = 0.8 * width
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    # the pattern in board units: its width is 1, centred on the origin
    to_board = np.array([[1 / pattern.shape[1], 0, -0.5],
                         [0, 1 / pattern.shape[1], -0.5 * pattern.shape[0] / pattern.shape[1]],
                         [0, 0, 1]])
    made = 0
    while made < count:
        yaw, pitch = np.radians(rng.uniform(-_TILT_DEGREES, _TILT_DEGREES, 2))
        roll = np.radians(rng.uniform(-_ROLL_DEGREES, _ROLL_DEGREES))
        rotation = cv2.Rodrigues(np.array([pitch, yaw, roll]))[0]
        distance = rng.uniform(1.1, 3.0)
        half = np.array([width, height]) / 2 / focal * distance  # the frame there, each way
        if made % 2:  # every other view into a corner of the frame, as a calibration asks
            towards = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)][(made // 2) % 4])
            offset = towards * rng.uniform(0.55, 1.0, 2) * half
        else:
            offset = rng.uniform(-0.7 * half, 0.7 * half)
        plane = np.c_[rotation[:, :2], np.array([offset[0], offset[1], distance])]
        homography = camera @ plane @ to_board
        corners = cv2.perspectiveTransform(np.array([[[0, 0], [pattern.shape[1], 0],
                                                      [pattern.shape[1], pattern.shape[0]],
                                                      [0, pattern.shape[0]]]], np.float64),
                                           homography)[0]
        if corners.min() < 8 or (corners[:, 0] > width - 8).any() \
                or (corners[:, 1] > height - 8).any():
            continue  # the board is wholly in view in a calibration's views
        room = np.full((height, width), rng.uniform(90, 150), np.float32)
        warped = cv2.warpPerspective(pattern, homography, (width, height),
                                     flags=cv2.INTER_AREA, borderValue=0)
        inside = cv2.warpPerspective(np.ones_like(pattern), homography, (width, height),
                                     flags=cv2.INTER_NEAREST, borderValue=0)
        grey = np.where(inside > 0, warped.astype(np.float32), room)
        grey = cv2.GaussianBlur(grey, (0, 0), 0.7)
        grey += rng.normal(0.0, 2.0, grey.shape).astype(np.float32)
        image = cv2.cvtColor(np.clip(grey, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        if lens is not None:
            image = lens(image)
        yield f"board-{made:02d}", image
        made += 1


__all__ = ["board_views"]
