"""audio_out settings: device, channel routing, buffering, hold/fade, gain, limiter, recording."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class AudioOutConfig(BaseModel):
    """One room's playback role.

    ``sample_rate`` is the *device* rate: chunks at any other rate are
    resampled (soxr, streaming, on the network thread) and the playback clock
    the engine sees stays in the generator's own samples.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    hold_s: float = Field(8.0, ge=0.0, description="Hold the music this long when starved.")
    fade_s: float = Field(3.0, gt=0.0, description="Fade to silence after holding.")
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
    volume: float = Field(1.0, ge=0.0, le=4.0)
    volume_ramp_s: float = Field(
        0.05, gt=0.0, le=10.0, description="A volume change glides over this long (no zipper)."
    )
    mute_ramp_s: float = Field(0.05, gt=0.0, le=10.0, description="Mute/unmute glide time.")
    fade_in_s: float = Field(
        0.0, ge=0.0, le=600.0,
        description="Master fade-in when the player starts (0 = start at full level).",
    )
    limiter: bool = Field(True, description="Peak limiter after volume: the output never clips.")
    limiter_threshold_db: float = Field(
        -1.0, ge=-24.0, le=0.0,
        description="Peaks above this are gain-ridden down; the soft knee then tends to 0 dBFS.",
    )
    limiter_release_s: float = Field(
        0.25, gt=0.0, le=5.0, description="How fast the limiter's gain recovers."
    )
    record: str | None = Field(None, description="WAV or FLAC path of exactly what played.")
    midi_file: str | None = Field(None, description="MIDI file of the notes that played.")
    midi_port: str | None = Field(None, description="Send played notes to this MIDI port.")
    stop_after_s: float | None = Field(
        None, gt=0.0, description="Stop after playing this much (demos, tests)."
    )

    @field_validator("channels_out")
    @classmethod
    def _channels_out_valid(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(c < 1 or c > 256 for c in value) or len(set(value)) != len(value):
            raise ValueError(
                f"channels_out: expected distinct device channel numbers from 1, got {list(value)}"
            )
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
