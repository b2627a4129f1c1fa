"""Never lose a take: the real audio_out role process, killed, restarted, stopped, disk full.

Each test runs ``python -m installation role audio_out`` as the supervisor
would (a heartbeat pipe, the frozen config), plays it a tone from a test
PUB socket standing in for the engine, and reads its PlaybackClocks and
heartbeats back over the real sockets and pipe (issue 12, items 3, 4, 7):

- SIGKILL mid-take: the segment on disk holds >= 95% of what was played,
  and the MIDI segment is a valid file; a restart opens a *new* segment and
  leaves the killed one as it was; SIGTERM fades the take out to silence;
- a file size limit (EFBIG from the kernel, through libsndfile, like a full
  disk) fails the recording: the heartbeat says so, the role plays on;
- what a FLAC segment killed mid-take leaves: not readable by
  ``soundfile.read``, recovered block by block (why WAV is the default).

Loopback ports 6210-6229 (this issue's recording tests own 6200-6299).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mido
import numpy as np
import pytest
import soundfile
import zmq

from audio_out.recorder import read_segment
from ground.events import read_events
from ground.health import HEARTBEAT_FD_ENV, HeartbeatReader
from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk, PlaybackClock, decode
from ground.transport import make_socket, send
from installation.config import InstallationConfig, config_from_dict, freeze_config

pytestmark = pytest.mark.slow
RATE = 16000
TONE_S = 12
NOTE_EVERY = 4000  # a note every 0.25 s


def role_config(tmp_path: Path, port: int) -> InstallationConfig:
    """One room, audio_out only, on loopback ports ``port..port+3``; null sink, 16 kHz."""
    return config_from_dict({
        "installation": {"name": "takes", "output_dir": str(tmp_path / "out")},
        "network": {"views": f"tcp://127.0.0.1:{port}", "chunks": f"tcp://127.0.0.1:{port + 1}",
                    "clock": f"tcp://127.0.0.1:{port + 2}",
                    "control": f"tcp://127.0.0.1:{port + 3}"},
        "supervisor": {"heartbeat_s": 0.1},
        "engine": {"sample_rate": RATE},
        "audio_out": {"output": "none", "sample_rate": RATE, "block_size": 256,
                      "clock_hz": 50.0, "record": "take.wav", "midi_file": "take.mid",
                      "stop_fade_s": 0.3,
                      "dc_block_hz": 0.0},  # the take compared with the tone sent
        "rooms": [{"id": "a"}],
    })


def tone_chunk() -> AudioChunk:
    t = np.arange(TONE_S * RATE) / RATE
    x = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    starts = np.arange(0, TONE_S * RATE, NOTE_EVERY)
    notes = np.stack([starts, np.full_like(starts, 2000), 60 + starts // NOTE_EVERY % 12,
                      np.full_like(starts, 90), np.zeros_like(starts), np.zeros_like(starts)],
                     axis=1).astype(np.int32)
    return AudioChunk(v=PROTOCOL_VERSION, room="a", seq=0, start_sample=0, sample_rate=RATE,
                      audio=Array.from_numpy(np.stack([x, x], axis=1)), reason="start",
                      notes=Array.from_numpy(notes))


class Engine:
    """The engine's side of the sockets: a chunks PUB and a clock PULL, bound."""

    def __init__(self, config: InstallationConfig) -> None:
        self.context = zmq.Context()
        net = config.network
        self.chunks = make_socket(self.context, zmq.PUB, net.chunks, bind=True)
        self.clock = make_socket(self.context, zmq.PULL, net.clock, bind=True)
        self.last: PlaybackClock | None = None

    def clocks(self, timeout_ms: int = 50) -> list[PlaybackClock]:
        """Every clock waiting (after at most ``timeout_ms`` for the first)."""
        got: list[PlaybackClock] = []
        while self.clock.poll(timeout_ms if not got else 0):
            message = decode(self.clock.recv_multipart())
            if isinstance(message, PlaybackClock):
                got.append(message)
                self.last = message
        return got

    def play_until(self, samples: int, role: subprocess.Popen[bytes], timeout_s: float) -> None:
        """Send the tone (again, until it plays) and wait until ``samples`` have played."""
        chunk = tone_chunk()
        deadline = time.monotonic() + timeout_s
        sent = 0.0
        while time.monotonic() < deadline:
            assert role.poll() is None, role.stderr.read().decode()[-3000:] if role.stderr else ""
            playing = self.last is not None and self.last.state == "playing"
            if not playing and time.monotonic() - sent > 0.2:  # slow joiner: resend
                send(self.chunks, chunk)
                sent = time.monotonic()
            self.clocks()
            if self.last is not None and self.last.playhead >= samples:
                return
        raise AssertionError(f"played {self.last} before the deadline, wanted {samples}")

    def close(self) -> None:
        self.chunks.close(linger=0)
        self.clock.close(linger=0)
        self.context.term()


@contextmanager
def audio_out_role(config: InstallationConfig, path: Path,
                   preexec: Callable[[], None] | None = None
                   ) -> Iterator[tuple[subprocess.Popen[bytes], HeartbeatReader]]:
    """The audio_out role as the supervisor starts it, with its heartbeat pipe."""
    freeze_config(config, path)
    read_fd, write_fd = os.pipe()
    env = dict(os.environ, **{HEARTBEAT_FD_ENV: str(write_fd)})
    role = subprocess.Popen(
        [sys.executable, "-m", "installation", "role", "audio_out", "--config", str(path),
         "--room", "a"], env=env, pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, preexec_fn=preexec)
    os.close(write_fd)
    reader = HeartbeatReader(read_fd)
    try:
        yield role, reader
    finally:
        if role.poll() is None:
            role.kill()
        role.wait(timeout=10)
        if role.stderr is not None:
            role.stderr.close()
        reader.close()


def segments(out: Path, suffix: str) -> list[Path]:
    return sorted(out.glob(f"take-a-*{suffix}"), key=lambda p: p.stat().st_mtime_ns)


def dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(max(float(np.sqrt(np.mean(np.square(x)))), 1e-12)))


def test_a_killed_role_keeps_its_take_and_a_restart_opens_a_new_segment(tmp_path: Path) -> None:
    config = role_config(tmp_path, 6210)
    out = config.output_dir
    engine = Engine(config)
    figures: dict[str, Any] = {}
    try:
        with audio_out_role(config, tmp_path / "config.json") as (role, _):
            engine.play_until(2 * RATE, role, timeout_s=30)
            role.send_signal(signal.SIGSTOP)  # freeze it, then see what it had played
            engine.clocks(timeout_ms=200)
            assert engine.last is not None
            played = engine.last.playhead
            role.kill()  # SIGKILL: no close, no final header
            role.wait(timeout=10)
        (take,) = segments(out, ".wav")
        killed_bytes = take.read_bytes()
        audio, rate = soundfile.read(take, dtype="float32")
        figures["played_s"] = played / RATE
        figures["readable_s"] = len(audio) / RATE
        assert rate == RATE and len(audio) >= 0.95 * played, figures
        expected = tone_chunk().audio.to_numpy()[: len(audio)]
        np.testing.assert_array_equal(audio, expected)  # the take, sample for sample
        (midi_take,) = segments(out, ".mid")
        heard = [m for m in mido.MidiFile(str(midi_take)).tracks[0] if m.type == "note_on"]
        assert len(heard) >= 0.9 * played // NOTE_EVERY, (len(heard), played)

        # The restart: a new segment; the killed one stays exactly as it was.
        engine.last = None
        with audio_out_role(config, tmp_path / "config.json") as (role, _):
            engine.play_until(RATE // 2, role, timeout_s=30)
            role.send_signal(signal.SIGTERM)
            assert role.wait(timeout=10) == 0
        takes = segments(out, ".wav")
        assert len(takes) == 2 and takes[0] == take and take.read_bytes() == killed_bytes
        assert len(segments(out, ".mid")) == 2
        second, _ = soundfile.read(takes[1], dtype="float32")
        # SIGTERM faded the take out (0.3 s) and it ends in silence, not mid-signal.
        figures["second_s"] = len(second) / RATE
        figures["end_dbfs"] = round(dbfs(second[-256:]), 1)
        assert dbfs(second[: RATE // 2]) > -15 and figures["end_dbfs"] < -60, figures
        envelope = np.abs(second[-int(0.6 * RATE):, 0]).reshape(-1, 160).max(axis=1)
        assert np.all(np.diff(envelope[np.argmax(envelope < 0.29):]) <= 1e-3), figures
        events = read_events(out / "events" / "audio_out-a.jsonl")
        opened = [e for e in events if e["kind"] == "recording_opened"]
        assert sorted((e["path"], e["media"]) for e in opened) == sorted(
            (str(path), media) for media, paths in (("audio", takes),
                                                    ("midi", segments(out, ".mid")))
            for path in paths)
        assert all(e["playhead"] == 0 for e in opened)
        closed = [e for e in events if e["kind"] == "recording_closed"]
        assert [Path(e["path"]) for e in closed if e["media"] == "audio"] == [takes[1]]
        print(json.dumps(figures))
    finally:
        engine.close()


def _limit_file_size() -> None:
    # A file may not grow past 96 KiB (0.4 s of the take): write() then fails with
    # EFBIG, as it fails with ENOSPC on a full disk. SIG_IGN survives exec.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, 96 * 1024))


def test_a_full_disk_stops_the_recording_not_the_role(tmp_path: Path) -> None:
    config = role_config(tmp_path, 6220)
    engine = Engine(config)
    try:
        with audio_out_role(config, tmp_path / "config.json", _limit_file_size) as (role, beats):
            engine.play_until(RATE // 4, role, timeout_s=30)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and role.poll() is None:
                beats.read()
                if beats.status.get("recording", {}).get("state") == "failed":
                    break
                engine.clocks()
            status = beats.status
            assert status.get("recording", {}).get("state") == "failed", status
            assert status["recording"]["error"].startswith("EFBIG"), status
            assert status["recording"]["path"].endswith(".wav"), status
            # The music goes on: the playhead keeps moving, the level is the tone's.
            assert engine.last is not None
            failed_at = engine.last.playhead
            engine.play_until(failed_at + RATE // 2, role, timeout_s=20)
            beats.read()
            assert role.poll() is None and beats.status["state"] == "playing"
            assert beats.status["level_dbfs"] > -20, beats.status
            role.send_signal(signal.SIGTERM)
            assert role.wait(timeout=10) == 0
        (take,) = segments(config.output_dir, ".wav")
        audio, _ = soundfile.read(take, dtype="float32")  # what fitted is a readable file
        assert 0 < len(audio) < failed_at
        events = read_events(config.output_dir / "events" / "audio_out-a.jsonl")
        failures = [e for e in events if e["kind"] == "recording_failed"]
        assert [e["media"] for e in failures] == ["audio"], failures
    finally:
        engine.close()


KILLED_FLAC = """
import os, signal, sys
import numpy as np
from audio_out.recorder import Recorder

recorder = Recorder(sys.argv[1], 48000, 2, room="a")
t = np.arange(48000 * 4) / 48000
x = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
for i in range(0, len(x), 512):
    recorder.push(np.stack([x[i : i + 512]] * 2, axis=1))
    recorder.drain()
print(recorder.path, recorder.frames_saved, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # mid-take: no close
"""


def test_a_flac_segment_killed_mid_take_is_recovered_block_by_block(tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", KILLED_FLAC, str(tmp_path / "take.flac")],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    path, saved = child.stdout.split()
    assert int(saved) == 4 * 48000
    # libFLAC writes the length on close only: the usual whole-file read fails...
    assert soundfile.info(path).frames > 2**62
    with pytest.raises((soundfile.LibsndfileError, ValueError)):
        soundfile.read(path)  # ValueError: it tries to allocate 2**63 frames
    # ...but the frames are there, up to two FLAC blocks short.
    audio = np.concatenate(list(read_segment(path)))
    assert len(audio) >= int(saved) - 2 * 4096
    t = np.arange(len(audio)) / 48000
    np.testing.assert_allclose(audio[:, 0], 0.3 * np.sin(2 * np.pi * 440.0 * t), atol=1e-5)
