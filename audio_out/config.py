"""audio_out settings: device, channel routing, buffering, hold/fade, gain, limiter, recording.

Recordings are *segments*: ``record`` and ``midi_file`` are path templates
(relative to the installation's output folder) in which ``{room}`` and
``{start}`` may appear; every start of a room's audio_out opens a new file,
and so does every ``segment_s`` of playing after it, and none is ever
overwritten (:func:`segment_template` says how a value becomes a file name;
:mod:`audio_out.recorder` creates it).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import PurePath
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ground.config import Flag
from ground.params import VOLUME_MAX

#: How ``{start}`` is written: local time of the role's start, to the second.
START_FORMAT = "%Y%m%d-%H%M%S"
#: File name suffixes each recording field accepts (lower case).
RECORD_SUFFIXES = {"record": (".wav", ".flac"), "midi_file": (".mid", ".midi")}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def check_template(field: str, value: str) -> str:
    """Refuse a recording template with an unknown placeholder or suffix; returns ``value``.

    Raises ValueError naming ``field``, what is expected and what was given.
    """
    names = _PLACEHOLDER.findall(value)
    rest = _PLACEHOLDER.sub("", value)
    unknown = [n for n in names if n not in ("room", "start")]
    if unknown or "{" in rest or "}" in rest:
        raise ValueError(
            f"{field}: expected only the placeholders {{room}} and {{start}}, got {value!r}"
        )
    suffixes = RECORD_SUFFIXES[field]
    if PurePath(value).suffix.lower() not in suffixes or not PurePath(value).stem:
        raise ValueError(
            f"{field}: expected a file name ending in {' or '.join(suffixes)}, got {value!r}"
        )
    return value


def segment_template(value: str, room: str) -> str:
    """``value`` with ``{room}`` filled in and ``{start}`` guaranteed (left as a placeholder).

    Without ``{start}`` the file name becomes ``STEM-{room}-{start}SUFFIX``
    (``take.wav`` -> ``take-room-1-{start}.wav``; ``-{room}`` is not added
    twice when the stem already names the room).
    """
    if "{start}" not in value:
        path = PurePath(value)
        stem = path.stem if "{room}" in path.stem else f"{path.stem}-{{room}}"
        value = str(path.with_name(f"{stem}-{{start}}{path.suffix}"))
    return value.replace("{room}", room)


def segment_name(value: str, room: str, start: datetime) -> str:
    """The file name of the segment that starts at ``start`` (before any ``-N`` suffix)."""
    return segment_template(value, room).replace("{start}", start.strftime(START_FORMAT))


class AudioOutConfig(BaseModel):
    """One room's playback role.

    ``sample_rate`` is the *device* rate: chunks at any other rate are
    resampled (soxr, streaming, on the network thread) and the playback clock
    the engine sees stays in the generator's own samples.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    output: Literal["auto", "device", "none"] = Field(
        "auto",
        description="'device' requires a sound card, 'auto' uses one if present, "
        "'none' plays to a real-time null sink (the recording still runs).",
    )
    device: str = Field("", description="Substring of the output device name; '' = default.")
    sample_rate: int = Field(
        48000, ge=8000, le=384000,
        description="Device/recording rate in Hz; chunks at another rate are resampled.",
    )
    channels_out: tuple[int, ...] = Field(
        (),
        description="Device channels (1-based) that receive the program, e.g. [3, 4] for the "
        "stereo pair on outputs 3-4 of a multichannel interface. A mono program is copied to "
        "every listed channel, a stereo program on one channel is mixed to mono. "
        "Empty = [1, 2] (or 1..N for an N-channel program).",
    )
    block_size: int = Field(512, ge=32, le=8192, description="Frames per audio callback.")
    latency: float | Literal["low", "high"] = "high"
    buffer_s: float = Field(30.0, ge=2.0, le=600.0, description="Timeline ring capacity.")
    resample_quality: Literal["HQ", "VHQ"] = Field(
        "HQ", description="soxr quality when chunks come at another rate than the device's."
    )
    clock_hz: float = Field(20.0, gt=0.0, le=200.0, description="PlaybackClock report rate.")
    hold_s: float = Field(
        8.0, ge=0.0, le=3600.0, description="Hold the music this long when starved.")
    fade_s: float = Field(3.0, gt=0.0, le=600.0, description="Fade to silence after holding.")
    hold_loop_s: float = Field(
        1.5, ge=0.1, le=10.0, description="Length of the last-played audio the hold loops."
    )
    hold_loop_crossfade_s: float = Field(
        0.1, gt=0.0, le=2.0, description="Crossfade joining the hold loop's ends."
    )
    hold_decay_db: float = Field(
        6.0, ge=0.0, le=60.0, description="Level lost over hold_s, before the fade begins."
    )
    resume_s: float = Field(
        0.05, gt=0.0, le=2.0, description="Crossfade from the hold (or silence) back to music."
    )
    volume: float = Field(
        1.0, ge=0.0, le=VOLUME_MAX, description="Output gain factor; the live `volume` range."
    )
    volume_ramp_s: float = Field(
        0.05, gt=0.0, le=10.0, description="A volume change glides over this long (no zipper)."
    )
    mute_ramp_s: float = Field(0.05, gt=0.0, le=10.0, description="Mute/unmute glide time.")
    fade_in_s: float = Field(
        0.03, ge=0.0, le=600.0,
        description="Fade-in from silence where playback would start with a step: the first "
        "material of a start, unless its first frame is silent (a restarted audio_out resumes "
        "mid-piece), and a lost sound card come back. 0 = start at full level.",
    )
    dc_block_hz: float = Field(
        5.0, ge=0.0, le=20.0,
        description="Corner of the one-pole high-pass before the limiter that keeps a "
        "DC offset off the speakers (5 Hz: 20 Hz loses 0.26 dB); 0 = off.",
    )
    limiter: Flag = Field(True, description="Peak limiter after volume: the output never clips.")
    limiter_threshold_db: float = Field(
        -1.0, ge=-24.0, le=0.0,
        description="Peaks above this are gain-ridden down; the soft knee then tends to 0 dBFS.",
    )
    limiter_release_s: float = Field(
        0.25, gt=0.0, le=5.0, description="How fast the limiter's gain recovers."
    )
    record: str | None = Field(
        None,
        description="Exactly what played, as .wav (RF64-capable, readable after a crash) or "
        ".flac: a path template under output_dir with {room} and {start}; each start of "
        "the role writes a new segment (take.wav -> take-ROOM-YYYYmmdd-HHMMSS.wav).",
    )
    midi_file: str | None = Field(
        None, description="The notes that played (.mid), segments named like `record`."
    )
    segment_s: float = Field(
        3600.0, ge=60.0, le=86400.0,
        description="A running recording goes on in a new segment (audio and MIDI) every this "
        "long of played time, so take retention can remove the finished ones: one segment "
        "for a room that is never restarted grew ~33 GB a day (48 kHz stereo float) until "
        "the disk was full. The segments joined are sample for sample what played.",
    )
    midi_port: str | None = Field(None, description="Send played notes to this MIDI port.")
    stop_after_s: float | None = Field(
        None, gt=0.0, le=366 * 86400.0, description="Stop after playing this much (demos, tests)."
    )
    stop_fade_s: float = Field(
        1.0, ge=0.0, le=10.0,
        description="Stopping (SIGTERM, shutdown, stop_after_s) fades the output out over "
        "this long, so the speakers and the recording end in silence; 0 = cut.",
    )

    @field_validator("latency")
    @classmethod
    def _latency_range(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not 0.0 <= value <= 10.0:
            raise ValueError(f"latency: expected 'low', 'high' or 0..10 seconds, got {value}")
        return value

    @field_validator("channels_out")
    @classmethod
    def _channels_out_valid(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(c < 1 or c > 256 for c in value) or len(set(value)) != len(value):
            raise ValueError(
                f"channels_out: expected distinct device channel numbers from 1, got {list(value)}"
            )
        return value

    @field_validator("record", "midi_file")
    @classmethod
    def _template_valid(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            check_template(str(info.field_name), value)
        return value

    @model_validator(mode="after")
    def _loop_holds_its_crossfade(self) -> AudioOutConfig:
        if self.hold_loop_crossfade_s * 4 > self.hold_loop_s:
            raise ValueError(
                f"hold_loop_crossfade_s: expected at most hold_loop_s / 4 "
                f"({self.hold_loop_s / 4:g}), got {self.hold_loop_crossfade_s:g}"
            )
        return self

    def output_channels(self, program_channels: int) -> tuple[int, ...]:
        """Device channels (1-based) the program goes to; see ``channels_out``."""
        if self.channels_out:
            return self.channels_out
        return tuple(range(1, max(program_channels, 2) + 1))
