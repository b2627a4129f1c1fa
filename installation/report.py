"""After a run: merge the roles' event logs into ``timeline.json`` and measure the audio.

The timeline answers "what happened when": each artwork change the capture
reported, each chunk (room, seq, start sample, length, generation time,
when it was first heard), the musical decisions per artwork, role restarts,
and, for the demo source, the transition delay from the moment the virtual
camera turned to a painting to the moment its music reached the speakers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from installation.events import read_events


def load_events(events_dir: Path) -> list[dict[str, Any]]:
    """Every event of every role, in time order."""
    events: list[dict[str, Any]] = []
    for path in sorted(events_dir.glob("*.jsonl")):
        events.extend(read_events(path))
    events.sort(key=lambda e: e.get("time", 0.0))
    return events


def _of(events: list[dict[str, Any]], role: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("role") == role and e.get("kind") == kind]


def build_timeline(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The timeline document from merged events (see the module docstring)."""
    t0 = min((e["time"] for e in events), default=0.0)

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 3)

    source_changes = [
        {"time": rel(e["time"]), "room": e.get("room"), "artwork_index": e.get("artwork_index"),
         "style": e.get("style")}
        for e in _of(events, "capture", "source_change")
    ]
    artwork_changes = [
        {"time": rel(e["time"]), "room": e.get("room"), "artwork_id": e.get("artwork_id"),
         "state": e.get("state"), "confidence": e.get("confidence")}
        for e in _of(events, "capture", "artwork_change")
    ]
    received = {
        (e.get("room"), e.get("seq")): e for e in _of(events, "audio_out", "chunk_received")
    }
    heard = {(e.get("room"), e.get("seq")): e for e in _of(events, "audio_out", "chunk_started")}
    chunks = []
    for e in _of(events, "engine", "chunk"):
        key = (e.get("room"), e.get("seq"))
        started = heard.get(key)
        chunks.append({
            "room": e.get("room"), "seq": e.get("seq"), "start_sample": e.get("start_sample"),
            "frames": e.get("frames"), "crossfade": e.get("crossfade"),
            "reason": e.get("reason"), "artwork_id": e.get("artwork_id"),
            "generation_s": e.get("generation_s"), "generated_at": rel(e["time"]),
            "late_frames": received.get(key, {}).get("late_frames"),
            "heard_at": rel(started.get("wall_time", started["time"])) if started else None,
        })
    decisions = [
        {"time": rel(e["time"]), "room": e.get("room"), "artwork_id": e.get("artwork_id"),
         "state": e.get("state"), "decisions": e.get("decisions"), "features": e.get("features")}
        for e in _of(events, "engine", "decisions")
    ]
    restarts = [
        {"time": rel(e["time"]), "role": e.get("role_name", e.get("role")), "code": e.get("code")}
        for e in events if e.get("kind") == "role_exited"
    ]
    return {
        "t0": t0,
        "source_changes": source_changes,
        "artwork_changes": artwork_changes,
        "chunks": chunks,
        "decisions": decisions,
        "transitions": transitions(source_changes, artwork_changes, chunks),
        "role_exits": restarts,
    }


def transitions(
    source_changes: list[dict[str, Any]],
    artwork_changes: list[dict[str, Any]],
    chunks: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """For each artwork the capture reported: when it was shown, detected, and first heard.

    "Heard" is when the first chunk generated for it (a transition or start)
    began to play, i.e. the start of its crossfade.
    """
    rows = []
    rooms_started: set[str] = set()
    for change in artwork_changes:
        if change["state"] != "artwork":
            continue
        # The first artwork a room reports arrives while its roles are still
        # starting up: measured, but not a change between two artworks.
        startup = change["room"] not in rooms_started
        rooms_started.add(change["room"])
        shown = [s for s in source_changes
                 if s["room"] == change["room"] and s["time"] <= change["time"]]
        first = next(
            (c for c in chunks
             if c["room"] == change["room"] and c["artwork_id"] == change["artwork_id"]
             and c["reason"] in ("transition", "start") and c["generated_at"] is not None
             and c["generated_at"] >= change["time"]),
            None,
        )
        shown_at = shown[-1]["time"] if shown else None
        heard_at = first["heard_at"] if first else None
        rows.append({
            "room": change["room"], "artwork_id": change["artwork_id"], "startup": startup,
            "style": shown[-1]["style"] if shown else None,
            "shown_at": shown_at, "detected_at": change["time"], "heard_at": heard_at,
            "detect_delay_s": _diff(change["time"], shown_at),
            "transition_delay_s": _diff(heard_at, shown_at),
        })
    return rows


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def analyse_audio(path: Path) -> dict[str, Any]:
    """Loudness, peak, silences and spectral centroid of a recording."""
    import pyloudnorm
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    seconds = len(audio) / rate
    mono = audio.mean(axis=1)
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    lufs = float(pyloudnorm.Meter(rate).integrated_loudness(audio)) if seconds > 0.5 else -math.inf
    window = int(0.05 * rate)
    usable = len(mono) // window * window
    rms = np.sqrt(np.mean(mono[:usable].reshape(-1, window) ** 2, axis=1) + 1e-20)
    silent = 20 * np.log10(rms) < -60.0
    longest = 0
    run = 0
    for flag in silent:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return {
        "file": str(path),
        "sample_rate": int(rate),
        "channels": int(audio.shape[1]),
        "seconds": round(seconds, 3),
        "integrated_lufs": round(lufs, 2) if math.isfinite(lufs) else None,
        "peak_dbfs": round(20 * math.log10(peak), 2) if peak > 0 else None,
        "longest_silence_s": round(longest * window / rate, 3),
        "spectral_centroid_hz": round(spectral_centroid(mono, rate), 1),
    }


def spectral_centroid(mono: np.ndarray, rate: int) -> float:
    """Power-weighted mean frequency of a mono signal (0 for silence)."""
    if len(mono) == 0:
        return 0.0
    power = np.abs(np.fft.rfft(mono * np.hanning(len(mono)))) ** 2
    freqs = np.fft.rfftfreq(len(mono), 1.0 / rate)
    total = power.sum()
    return float((freqs * power).sum() / total) if total > 0 else 0.0


def join_roughness(audio: np.ndarray, joins: list[int], half_window: int = 16) -> float | None:
    """How much rougher the signal is at chunk joins than elsewhere (1.0 = the same).

    Roughness is the largest absolute second difference in a small window;
    the ratio compares its mean over join windows with its mean over windows
    at every other position on a regular grid. A click at joins shows as a
    ratio well above 1.
    """
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    d2 = np.abs(np.diff(mono, n=2))
    joins = [j for j in joins if half_window <= j < len(d2) - half_window]
    if not joins or len(d2) < 10 * half_window:
        return None
    at_joins = np.mean([d2[j - half_window: j + half_window].max() for j in joins])
    grid = np.arange(half_window, len(d2) - half_window, 2 * half_window + 1)
    elsewhere = np.mean([d2[g - half_window: g + half_window].max() for g in grid])
    return float(at_joins / elsewhere) if elsewhere > 0 else None
