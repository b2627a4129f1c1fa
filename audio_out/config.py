"""audio_out settings: device, buffering, hold/fade and recording."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AudioOutConfig(BaseModel):
    """One room's playback role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    output: Literal["auto", "device", "none"] = Field(
        "auto",
        description="'device' requires a sound card, 'auto' uses one if present, "
        "'none' plays to a real-time null sink (the recording still runs).",
    )
    device: str = Field("", description="Substring of the output device name; '' = default.")
    sample_rate: int = Field(48000, description="Device/recording rate in Hz.")
    block_size: int = Field(512, ge=32, le=8192, description="Frames per audio callback.")
    latency: float | Literal["low", "high"] = "high"
    buffer_s: float = Field(30.0, ge=2.0, le=600.0, description="Timeline ring capacity.")
    clock_hz: float = Field(20.0, gt=0.0, le=200.0, description="PlaybackClock report rate.")
    hold_s: float = Field(8.0, ge=0.0, description="Hold the music this long when starved.")
    fade_s: float = Field(3.0, gt=0.0, description="Fade to silence after holding.")
    volume: float = Field(1.0, ge=0.0, le=4.0)
    record: str | None = Field(None, description="WAV or FLAC path of exactly what played.")
    midi_file: str | None = Field(None, description="MIDI file of the notes that played.")
    midi_port: str | None = Field(None, description="Send played notes to this MIDI port.")
    stop_after_s: float | None = Field(
        None, gt=0.0, description="Stop after playing this much (demos, tests)."
    )
