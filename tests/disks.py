"""A disk that fills, for tests of what a recorder does when its writes fail."""

from __future__ import annotations

import errno
import os
from typing import Any

import numpy as np
import soundfile


class FullDisk:
    """Opens real SoundFiles whose writes fail with ENOSPC once ``room`` frames are written
    (a test may give it room again: space came back). ``files``: every file it opened."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.files: list[Any] = []
        self._open = soundfile.SoundFile  # the real one, even once this fake replaces it

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        real = self._open(*args, **kwargs)
        disk = self

        class Wrapped:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def write(self, data: np.ndarray) -> None:
                if disk.room < len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.room -= len(data)
                real.write(data)

        wrapped = Wrapped()
        self.files.append(wrapped)
        return wrapped
