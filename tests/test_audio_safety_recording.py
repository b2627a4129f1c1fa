"""A disk already full when a recording segment opens: the reason in words, and the file.

libsndfile writes a WAV's header when it opens the file; on a full disk that write fails
and all it says is "Error opening 3: System error." (3: the descriptor). The recorder now
says what a failed write says, the errno behind it (``ENOSPC: No space left on device``),
and names the segment it could not create.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from audio_out.recorder import Recorder
from ground.events import MemorySink

START = datetime(2026, 12, 2, 15, 30, 0)


class DiskFull:
    """The soundfile seam on a disk with no space left: the segment's own descriptor is
    pointed at ``/dev/full`` (every write fails with ENOSPC) before the real libsndfile
    opens it, until ``space`` comes back."""

    def __init__(self) -> None:
        self.space = False

    def __call__(self, fd: int, *args: Any, **kwargs: Any) -> Any:
        if not self.space:
            full = os.open("/dev/full", os.O_RDWR)
            os.dup2(full, fd)
            os.close(full)
        return soundfile.SoundFile(fd, *args, **kwargs)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_disk_full_when_a_segment_opens_says_enospc_naming_the_file(tmp_path: Path) -> None:
    events = MemorySink()
    disk = DiskFull()
    clock = [0.0]
    recorder = Recorder(tmp_path / "take.wav", 16000, 2, log_event=events, room="r",
                        start=START, open_file=disk, retry_s=5.0, now=lambda: clock[0])
    first = tmp_path / "take-r-20261202-153000.wav"
    assert recorder.status() == {
        "state": "failed", "path": str(tmp_path / "take.wav"),
        "error": f"ENOSPC: No space left on device ({first})"}  # was "Error opening 3: ..."
    (failed,) = events.of("recording_failed")
    assert failed["error"] == recorder.error
    assert not first.exists()  # the empty file it created is gone again

    clock[0] = 5.0
    recorder.push(np.ones((100, 2), np.float32))
    recorder.drain()  # the retry's new segment cannot open either: said the same way
    assert recorder.failed and str(recorder.error).startswith("ENOSPC: No space left on device (")
    assert str(tmp_path / "take-r-") in str(recorder.error)

    disk.space = True
    clock[0] = 10.0
    recorder.drain()  # space came back: a new segment
    recorder.push(np.ones((100, 2), np.float32))
    recorder.drain()
    assert recorder.status()["state"] == "ok" and events.of("recording_resumed")
    recorder.close()
    audio, _ = soundfile.read(recorder.path, dtype="float32")
    assert audio.shape == (100, 2)


def test_another_opening_error_keeps_libsndfiles_words(tmp_path: Path) -> None:
    def unwritable(fd: int, *args: Any, **kwargs: Any) -> Any:
        raise soundfile.LibsndfileError(1, prefix=f"Error opening {fd!r}: ")

    recorder = Recorder(tmp_path / "take.wav", 16000, 2, room="r", start=START,
                        open_file=unwritable)
    words = soundfile.LibsndfileError(1).error_string  # not a system error: no errno behind it
    assert re.fullmatch(rf"Error opening \d+: {re.escape(words)}", str(recorder.error))
    recorder.close()
