"""Rooms per engine: the load generator and ``art2mus bench rooms`` (issue 18).

The virtual room's arithmetic (transition latency, underflows, the clock) is
checked on a timeline driven with fake times; the load generator itself runs
against a real engine process (procedural; the tiny diffusion model) at small
N. No test asserts a wall-clock target: only what was received and counted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from audio_out.config import AudioOutConfig
from ground.errors import ConfigError
from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk
from installation.cli import cli
from installation.config import InstallationConfig
from installation.loadgen import (
    Artwork,
    LoadSpec,
    TrialResult,
    VirtualRoom,
    bench_config,
    find_max,
    make_artworks,
    run_trial,
)

SR = 48000


def base_config(**engine: Any) -> InstallationConfig:
    """One room with a recording template (the bench must drop it), engine overrides."""
    return InstallationConfig.model_validate({
        "rooms": [{"id": "gallery", "audio_out": {"record": "take.wav"}}],
        "engine": engine,
    })


def chunk(start: int, seconds: float, artwork: str, crossfade: int = 0, seq: int = 0,
          reason: str = "continue") -> AudioChunk:
    audio = np.full((round(seconds * SR), 2), 0.1, np.float32)
    return AudioChunk(v=PROTOCOL_VERSION, room="room-1", seq=seq, start_sample=start,
                      sample_rate=SR, audio=Array.from_numpy(audio), crossfade=crossfade,
                      artwork_id=artwork, generation_s=0.02, reason=reason)  # type: ignore[arg-type]


def test_virtual_room_measures_transition_latency_underflows_and_clock() -> None:
    arts = [Artwork(f"a{i}", "test", np.eye(4, dtype=np.float32)[i], {}) for i in range(3)]
    spec = LoadSpec(rooms=1, seconds=10.0, warmup_s=0.0, change_every_s=2.0)
    room = VirtualRoom("room-1", 0, arts, spec, AudioOutConfig(block_size=480), SR, 2,
                       buffer_s=4.0, start=0.0)
    first = room.view_due(0.0)
    assert first is not None and first.artwork_id == arts[room.current].artwork_id
    assert first.artwork_id is not None
    assert room.view_due(0.5) is None  # the heartbeat re-send waits view_every_s
    room.on_chunk(chunk(0, 3.0, first.artwork_id, reason="start"))
    out = np.zeros((480, 2), np.float32)
    block = 0

    def play_until(t: float) -> None:
        nonlocal block
        while block * 0.01 < t - 1e-9:  # block k (480 frames) is read at k * 10 ms
            room.play(block * 0.01, 1000.0 + block * 0.01, out)
            block += 1

    play_until(0.2)
    room.start_measuring(0.2)  # the first change falls within change_every_s
    play_until(2.3)
    changed = room.view_due(2.3)
    assert changed is not None and changed.artwork_id not in (None, first.artwork_id)
    assert changed.artwork_id is not None
    clock = room.clock()
    assert clock.state == "playing" and clock.playhead == 230 * 480
    assert clock.buffered_until == 3 * SR
    assert clock.wall_time == pytest.approx(1000.0 + 2.29 + 0.01)
    # Transition material 0.3 s after the change, as the engine's margin would put it.
    target = round(2.6 * SR)
    room.on_chunk(chunk(target, 0.5, changed.artwork_id, crossfade=4800, seq=1,
                        reason="transition"))
    play_until(2.59)
    assert room.transitions_s == []  # not heard yet
    play_until(3.5)  # past the end of the material: the room runs dry once
    result = room.result()
    assert result.transitions_s == [pytest.approx(0.3, abs=1e-6)]
    assert result.underflows == 1 and result.dry_s > 0.3
    assert result.chunks == 1 and result.unfinished == 0
    assert result.lead_min_s == pytest.approx(0.7, abs=0.011)


def test_a_chunk_at_another_rate_is_refused_not_played() -> None:
    arts = make_artworks(2, seed=0)
    room = VirtualRoom("room-1", 0, arts, LoadSpec(rooms=1, seconds=1.0),
                       AudioOutConfig(), SR, 2, buffer_s=4.0, start=0.0)
    audio = Array.from_numpy(np.zeros((1600, 2), np.float32))
    room.on_chunk(AudioChunk(v=PROTOCOL_VERSION, room="room-1", seq=0, start_sample=0,
                             sample_rate=16000, audio=audio))
    assert room.refused == 1 and room.timeline.buffered_until == 0


def test_artworks_are_distinct_descriptors_or_unit_vectors_of_the_model_width() -> None:
    arts = make_artworks(3, seed=1)
    assert len({a.artwork_id for a in arts}) == 3
    assert arts[0].encoder == "descriptor-v1"
    assert not np.array_equal(arts[0].embedding, arts[1].embedding)
    wide = make_artworks(3, seed=1, embedding_dim=1024)
    assert wide[0].embedding.shape == (1024,) and wide[0].encoder == "loadgen-random-1024"
    assert np.linalg.norm(wide[2].embedding) == pytest.approx(1.0, abs=1e-5)
    assert wide[0].features == arts[0].features


def test_bench_config_makes_n_rooms_on_private_endpoints_without_recording(
        tmp_path: Path) -> None:
    config = bench_config(base_config(), 5, tmp_path, "diffusion", tmp_path / "model")
    assert [r.id for r in config.rooms] == [f"room-{i}" for i in range(1, 6)]
    assert all(r.audio_out.record is None for r in config.rooms)
    assert config.network.views == f"ipc://{tmp_path}/views"
    assert config.output_dir == tmp_path / "out"
    assert config.engine.generator == "diffusion"
    assert config.engine.diffusion.model == str(tmp_path / "model")


def test_load_spec_refuses_what_cannot_run() -> None:
    with pytest.raises(ConfigError, match="--rooms expected >= 1, got 0"):
        LoadSpec(rooms=0, seconds=1.0)
    with pytest.raises(ConfigError, match="change_every_s expected a number > 0, got 0"):
        LoadSpec(rooms=1, seconds=1.0, change_every_s=0.0)


def _fake(n: int, largest: int) -> TrialResult:
    return TrialResult(rooms=n, seconds=1.0, measured_s=1.0, generator="fake", underflows=0,
                       dry_s=0.0, transitions=0, unfinished_transitions=0,
                       transition_ms={}, lead_min_s=None, chunks=1, rooms_without_chunks=0,
                       chunk_ms={}, engine_cpu_pct=None, loadgen_cpu_pct=0.0,
                       loadgen_late_ms_max=0.0, dropped_sends=0, first_chunks_s=None,
                       passed=n <= largest)


def test_find_max_doubles_then_bisects() -> None:
    best, trials = find_max(lambda n: _fake(n, 5))
    assert best == 5 and [t.rooms for t in trials] == [1, 2, 4, 8, 6, 5]
    best, trials = find_max(lambda n: _fake(n, 0))
    assert best == 0 and [t.rooms for t in trials] == [1]
    best, trials = find_max(lambda n: _fake(n, 100), start=4, limit=16)
    assert best == 16 and [t.rooms for t in trials] == [4, 8, 16]


@pytest.mark.slow
def test_procedural_rooms_play_without_underflow_and_transitions_are_heard() -> None:
    spec = LoadSpec(rooms=3, seconds=8.0, warmup_s=2.0, change_every_s=3.0, seed=3)
    result = run_trial(base_config(), spec, "procedural")
    assert result.rooms == 3 and len(result.per_room) == 3
    for room in result.per_room:
        assert room.chunks > 0, room
        assert room.refused_chunks == 0
        assert len(room.transitions_s) >= 2, room
        assert room.unfinished == 0, room
        assert all(t > 0 for t in room.transitions_s)
        assert room.lead_min_s is not None and room.lead_min_s > 0
    assert result.underflows == 0, result.per_room
    assert result.transitions == sum(len(r.transitions_s) for r in result.per_room)
    assert result.chunk_ms["median"] is not None and result.chunk_ms["median"] > 0
    # The engine's own account (its stats events): some time in the generator, at least
    # one chunk per turn that made any.
    generating = result.engine_generating
    assert generating is not None and generating["span_s"] > 0
    assert 0.0 < generating["busy_share"] < 1.0 and generating["chunks_per_turn"] >= 1.0


def test_engine_generating_is_read_from_the_stats_events_around_the_window(
        tmp_path: Path) -> None:
    """From the last stats event before the measured window to the last one; events
    without the counters (an older engine) or none at all give None, not an error."""
    from installation.loadgen import EngineProcess

    config = bench_config(base_config(), 1, tmp_path)
    engine = EngineProcess(config, tmp_path)
    assert engine.generating(0.0) is None  # no event log
    events = tmp_path / "out" / "events" / "engine.jsonl"
    events.parent.mkdir(parents=True)

    def stats(time: float, serving: float, generating: float, turns: int,
              chunks: int) -> str:
        return json.dumps({"time": time, "kind": "stats", "serving_s": serving,
                           "generating_s": generating, "generating_turns": turns,
                           "chunks_made": chunks})

    events.write_text("\n".join([
        json.dumps({"time": 99.0, "kind": "stats", "received": {}}),  # no counters
        stats(100.0, 10.0, 1.0, 10, 10), "not json",
        stats(110.0, 20.0, 2.0, 20, 20),
        stats(120.0, 30.0, 8.0, 30, 60)]) + "\n")
    # measured from 112: the base is the event at 110, the end the one at 120
    assert engine.generating(112.0) == {"span_s": 10.0, "busy_share": 0.6,
                                        "chunks_per_turn": 4.0}
    # before any event: from serving's start
    assert engine.generating(50.0) == {"span_s": 30.0, "busy_share": 0.267,
                                       "chunks_per_turn": 2.0}


@pytest.mark.slow
def test_tiny_diffusion_rooms_receive_chunks(tiny_model_folder: Path) -> None:
    # The tiny model runs below real time on a small CPU: what is checked is that its
    # rooms are served (model-width embeddings accepted), not how well. The measure starts
    # once both rooms play, after the model's slow first call.
    spec = LoadSpec(rooms=2, seconds=8.0, warmup_s=0.0, change_every_s=60.0, settle_s=0.0)
    config = base_config(diffusion={"window_s": 1.28, "overlap_s": 0.32, "steps": 1,
                                    "batch_buckets": [1, 2]})
    result = run_trial(config, spec, "diffusion", tiny_model_folder)
    assert result.generator == "diffusion" and result.first_chunks_s is not None
    for room in result.per_room:
        assert room.chunks > 0, room
        assert room.refused_chunks == 0
    assert result.chunk_ms["median"] is not None and result.chunk_ms["median"] > 0


@pytest.mark.slow
def test_cli_json_has_the_figures() -> None:
    result = CliRunner().invoke(cli, ["bench", "rooms", "--rooms", "1", "--seconds", "2",
                                      "--warmup-s", "1", "--change-every-s", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("generator", "seconds", "warmup_s", "change_every_s", "passed", "target",
                "on_gpu", "h200_target_met", "trials", "max_rooms"):
        assert key in report
    assert report["generator"] == "procedural" and report["on_gpu"] is False
    (trial,) = report["trials"]
    for key in ("rooms", "underflows", "transition_ms", "lead_min_s", "chunk_ms",
                "engine_cpu_pct", "loadgen_cpu_pct", "per_room", "passed"):
        assert key in trial
    assert trial["rooms"] == 1 and trial["per_room"][0]["chunks"] > 0


def test_cli_refuses_a_model_for_the_procedural_generator(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "rooms", "--generator", "procedural",
                                      "--model", str(tmp_path)])
    assert result.exit_code == ConfigError.exit_code
    assert "--model names a diffusion model folder" in result.output


def test_the_simulated_h200_config_loads_with_the_measured_window_times() -> None:
    """benchmarks/rooms-simulated-h200.toml: the H200's window times (engine-fp16.json of
    the 2026-12-04 run) on the simulated backend, at the real model's window."""
    from installation.config import load_config

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "benchmarks" / "rooms-simulated-h200.toml")
    diffusion = config.engine.diffusion
    measured = json.loads((root / "benchmarks" / "results" / "2026-12-04-h200"
                           / "engine-fp16.json").read_text())
    assert diffusion.backend == "simulated" and diffusion.window_s == measured["window_s"]
    assert diffusion.simulated_window_ms == {
        row["batch"]: round(row["window_ms"], 1) for row in measured["batches"]}


# -- every option refused out of range, at the command line, before any engine starts ----

_BAD_ROOMS = [
    *[(option, value) for option in ("--rooms", "--max-rooms")
      for value in ("0", "-1", "4097", str(10**12), "nan")],
    *[(option, value) for option in ("--seconds", "--warmup-s", "--change-every-s")
      for value in ("-1", str(10**12), "nan", "inf")],
    ("--seconds", "0"), ("--change-every-s", "0"), ("--change-every-s", "0.01"),
    ("--seed", "-1"), ("--seed", str(2**32)), ("--seed", "nan"),
]


@pytest.mark.parametrize(("option", "value"), _BAD_ROOMS)
def test_cli_refuses_an_absurd_value_naming_the_option(
        option: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_trial(*_: Any, **__: Any) -> None:
        raise AssertionError("no engine should start")

    monkeypatch.setattr("installation.loadgen.run_trial", no_trial)
    monkeypatch.setattr("installation.loadgen.bench_config", no_trial)
    result = CliRunner().invoke(cli, ["bench", "rooms", option, value])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert f"Invalid value for '{option}'" in result.output
    assert "Traceback" not in result.output
