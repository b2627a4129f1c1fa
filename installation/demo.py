"""``art2mus demo``: the demo config's overrides, and the summary printed at the end.

The run itself is an ordinary supervised installation (three kinds of
process over ZeroMQ); this module only adjusts the config for the command
line and turns the event logs and the recording into ``timeline.json`` and a
table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from installation.config import InstallationConfig
from installation.errors import ConfigError
from installation.report import (
    analyse_audio,
    build_timeline,
    join_roughness,
    load_events,
    spectral_centroid,
)


def prepare_demo_config(
    config: InstallationConfig, out_dir: Path | None, seconds: float | None
) -> InstallationConfig:
    """Apply ``--out`` and ``--seconds`` to a loaded config."""
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"--seconds must be positive, got {seconds}")
    if out_dir is not None:
        section = config.installation.model_copy(update={"output_dir": str(out_dir)})
        config = config.model_copy(update={"installation": section})
    if seconds is not None:
        rooms = tuple(
            room.model_copy(update={
                "audio_out": room.audio_out.model_copy(update={"stop_after_s": seconds})
            })
            for room in config.rooms
        )
        config = config.model_copy(update={"rooms": rooms})
    if not any(room.audio_out.stop_after_s for room in config.rooms):
        raise ConfigError("the demo needs audio_out.stop_after_s (or --seconds) to end")
    return config


def _joins_in_recording(timeline: dict[str, Any], room: str) -> list[int]:
    """Chunk joins as frames of the recording, if the recording maps 1:1 onto the timeline."""
    chunks = [c for c in timeline["chunks"] if c["room"] == room]
    if not chunks:
        return []
    origin = chunks[0]["start_sample"]
    joins = []
    for chunk in chunks[1:]:
        joins.append(chunk["start_sample"] - origin)
        if chunk["crossfade"]:
            joins.append(chunk["start_sample"] + chunk["crossfade"] - origin)
    return joins


def _add_segment_spectra(
    timeline: dict[str, Any], events: list[dict[str, Any]], audio: np.ndarray, rate: int
) -> None:
    """Give each transition row the spectral centroid of the music it led to.

    The recording starts when the player starts; each segment runs from the
    end of the transition crossfade to the next artwork's music.
    """
    started = next((e["time"] for e in events if e.get("kind") == "player_started"), None)
    if started is None:
        return
    t0 = timeline["t0"]
    rows = [r for r in timeline["transitions"] if r["heard_at"] is not None]
    for row, following in zip(rows, rows[1:] + [None], strict=True):
        begin = t0 + row["heard_at"] + 1.5 - started
        end = (t0 + following["heard_at"] - started) if following else len(audio) / rate
        segment = audio[max(0, int(begin * rate)): max(0, int(end * rate))]
        if len(segment) > rate:
            row["spectral_centroid_hz"] = round(spectral_centroid(segment.mean(axis=1), rate), 1)


def summarise_demo(config: InstallationConfig, wall_s: float, roles: list[Any]) -> dict[str, Any]:
    """Write ``timeline.json`` and print the summary table; return the summary."""
    out = config.output_dir
    events = load_events(out / "events")
    timeline = build_timeline(events)
    room = config.rooms[0]
    record = room.audio_out.record
    audio_stats: dict[str, Any] = {}
    if record:
        path = Path(record) if Path(record).is_absolute() else out / record
        if path.exists():
            import soundfile

            audio_stats = analyse_audio(path)
            audio, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
            _add_segment_spectra(timeline, events, audio, audio_stats["sample_rate"])
            underflows = [e for e in events if e.get("kind") == "underflow"]
            if not underflows:
                ratio = join_roughness(audio, _joins_in_recording(timeline, room.id))
                audio_stats["join_roughness"] = None if ratio is None else round(ratio, 3)
    generation = [c["generation_s"] for c in timeline["chunks"] if c["generation_s"]]
    frames = sum(c["frames"] for c in timeline["chunks"] if c["generation_s"])
    delays = [t["transition_delay_s"] for t in timeline["transitions"]
              if t["transition_delay_s"] is not None and not t["startup"]]
    startup = [t["transition_delay_s"] for t in timeline["transitions"] if t["startup"]]
    summary = {
        "wall_s": round(wall_s, 1),
        "audio": audio_stats,
        "chunks": len(timeline["chunks"]),
        "generator_realtime_factor": (
            round(frames / config.engine.sample_rate / sum(generation), 1) if generation else None
        ),
        "transition_delay_s": {
            "max": max(delays) if delays else None,
            "mean": round(float(np.mean(delays)), 3) if delays else None,
        },
        "first_artwork_heard_after_s": startup[0] if startup else None,
        "role_restarts": {r.name: r.restarts for r in roles},
    }
    midi = room.audio_out.midi_file
    if midi:
        midi_path = Path(midi) if Path(midi).is_absolute() else out / midi
        summary["midi_file"] = str(midi_path) if midi_path.exists() else None
    timeline["summary"] = summary
    (out / "timeline.json").write_text(json.dumps(timeline, indent=2), encoding="utf-8")
    _print_table(timeline, summary, out)
    return summary


def _print_table(timeline: dict[str, Any], summary: dict[str, Any], out: Path) -> None:
    console = Console(width=max(Console().width, 120))
    decisions = {d["artwork_id"]: d["decisions"] or {} for d in timeline["decisions"]}
    table = Table(title="art2mus demo")
    for column in ("artwork", "style", "shown", "heard after", "key", "tempo", "centroid",
                   "instruments"):
        table.add_column(column)
    for row in timeline["transitions"]:
        d = decisions.get(row["artwork_id"], {})
        instruments = d.get("instruments", {})
        if isinstance(instruments, dict):
            instruments = ", ".join(
                str(v.get("name", v)).split(" (")[0] if isinstance(v, dict) else str(v)
                for v in instruments.values()
            )
        delay = row["transition_delay_s"]
        table.add_row(
            str(row["artwork_id"]), str(row["style"] or "-"),
            f"{row['shown_at']:.1f} s" if row["shown_at"] is not None else "-",
            f"{delay:.2f} s" if delay is not None else "-",
            f"{d.get('key', '-')} {d.get('mode', '')}".strip(),
            str(d.get("tempo_bpm", "-")),
            f"{row['spectral_centroid_hz']:.0f} Hz" if "spectral_centroid_hz" in row else "-",
            str(instruments or "-"),
        )
    console.print(table)
    audio = summary["audio"]
    console.print(
        f"wall time {summary['wall_s']} s · {audio.get('seconds', '?')} s of audio · "
        f"{audio.get('integrated_lufs', '?')} LUFS · peak {audio.get('peak_dbfs', '?')} dBFS · "
        f"longest silence {audio.get('longest_silence_s', '?')} s · "
        f"join roughness {audio.get('join_roughness', '?')} · "
        f"generator {summary['generator_realtime_factor']}x real time · "
        f"transition delay max {summary['transition_delay_s']['max']} s "
        f"(first artwork, during start-up: {summary['first_artwork_heard_after_s']} s)"
    )
    files = [audio.get("file"), summary.get("midi_file"), str(out / "timeline.json")]
    console.print("files: " + ", ".join(f for f in files if f))
