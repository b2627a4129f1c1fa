"""One real installation run: capture, engine and audio_out as processes over ZeroMQ.

Runs ``art2mus demo`` (the command a user runs) with a short virtual-camera
tour, then checks the files it promises and what they contain.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile

from installation.config import freeze_config, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.slow
def test_demo_runs_three_processes_and_writes_music(tmp_path: Path) -> None:
    demo = load_config(CONFIGS / "demo.toml")
    raw = demo.to_toml_dict()
    raw["network"] = {"views": "tcp://127.0.0.1:5891", "chunks": "tcp://127.0.0.1:5892",
                      "clock": "tcp://127.0.0.1:5893", "control": "tcp://127.0.0.1:5894"}
    room = raw["rooms"][0]
    room["capture"]["demo"] |= {"artworks": 3, "dwell_s": 5.0}
    room["audio_out"] |= {"output": "none", "stop_after_s": 14.0}  # ends before the tour repeats
    from installation.config import config_from_dict

    config_path = freeze_config(config_from_dict(raw), tmp_path / "short-demo.json")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "installation", "demo", "--config", str(config_path),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    audio, rate = soundfile.read(str(out / "demo.wav"), dtype="float32", always_2d=True)
    assert rate == 48000 and audio.shape[1] == 2
    assert len(audio) >= 14 * rate
    assert np.max(np.abs(audio)) < 1.0

    timeline = json.loads((out / "timeline.json").read_text())
    started = {e["role"] for e in _events(out) if e["kind"] == "started"}
    assert {"engine", "capture", "audio_out"} <= started
    assert not timeline["role_exits"], timeline["role_exits"]
    artworks = [c["artwork_id"] for c in timeline["artwork_changes"] if c["state"] == "artwork"]
    assert len(set(artworks)) == 3, timeline["artwork_changes"]
    decisions = [json.dumps(d["decisions"], sort_keys=True) for d in timeline["decisions"]
                 if d["state"] == "artwork"]
    assert len(set(decisions)) == 3
    # changes between artworks reach the speakers within 1.5 s (the first
    # artwork arrives while the roles start, and is only required to be heard)
    first, *changes = timeline["transitions"]
    assert first["startup"] and first["heard_at"] is not None
    # audio_out takes no chunk once its stop_after_s has played (the buffer then fades out):
    # a change shown less than 1.5 s before that cannot be required to be heard
    (stop_at,) = [e["time"] - timeline["t0"] for e in _events(out)
                  if e["kind"] == "stop_after_reached"]
    changes = [t for t in changes if t["shown_at"] < stop_at - 1.5]
    delays = [t["transition_delay_s"] for t in changes]
    assert delays and all(d is not None and d < 1.5 for d in delays), timeline["transitions"]
    # every chunk was heard, unless a later transition replaced it before it played
    chunks = timeline["chunks"]
    for chunk in chunks[:-4]:
        replaced = any(t["seq"] > chunk["seq"] and t["reason"] != "continue"
                       and t["start_sample"] <= chunk["start_sample"] for t in chunks)
        assert chunk["heard_at"] is not None or replaced, chunk

    midi = pretty_midi.PrettyMIDI(str(out / "demo.mid"))
    assert sum(len(i.notes) for i in midi.instruments) > 20
    # the file carries the music's own tempi and meters, not a fixed 120 bpm: notes sit on
    # a DAW's grid. A piece's tempo starts at its first downbeat (a transition first bridges
    # to it in the old tempo, up to a bar): every piece whose downbeat was played has its
    # tempo in the file; one replaced before its downbeat, never heard in its tempo, has not.
    _, tempi = midi.get_tempo_changes()
    in_file = {round(float(t), 1) for t in tempi}
    pieces = sorted((e["start_sample"], e["downbeat"], round(float(e["tempo_bpm"]), 1))
                    for e in _events(out) if e["kind"] == "chunk" and e["reason"] != "continue")
    played_to = pieces[0][0] + len(audio) - rate // 2  # the take, less the last half second
    reached, cut = set(), set()
    for (_, downbeat, bpm), (next_start, _, _) in zip(pieces, [*pieces[1:], (1 << 62, 0, 0)],
                                                       strict=True):
        if downbeat < min(next_start, played_to):
            reached.add(bpm)
        elif downbeat >= next_start:
            cut.add(bpm)
    assert reached and reached <= in_file, (pieces, tempi)
    assert not (cut - reached) & in_file, (pieces, tempi)
    assert "art2mus demo" in result.stdout


def _events(out: Path) -> list[dict]:
    events = []
    for path in (out / "events").glob("*.jsonl"):
        events += [json.loads(line) for line in path.read_text().splitlines() if line]
    return events
