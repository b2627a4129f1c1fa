"""A real PortAudio stream: the Player through ``open_output(output="device")``.

The check runs in a child process whose ALSA configuration (HOME and
XDG_CONFIG_HOME pointing at a temporary folder) makes ``default`` a null
device, so it needs no sound card and never makes a sound: PortAudio, the
ALSA host API and sounddevice's callback thread are all real. The null
device consumes frames as fast as it is fed, so the stream runs faster than
real time; what is checked does not depend on pacing. It skips only where
the PortAudio library itself is missing (``apt-get install libportaudio2``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile

from audio_out.config import AudioOutConfig
from audio_out.mixer import DCBlocker

ASOUNDRC = "pcm.!default {\n  type null\n}\n"

CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from audio_out.config import AudioOutConfig
    from audio_out.outputs import SoundDeviceOutput
    from audio_out.player import Player
    from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk

    record = sys.argv[1]
    events = []
    config = AudioOutConfig(output="device", sample_rate=48000, block_size=512,
                            record=record, stop_after_s=1.0, hold_s=0.2, fade_s=0.1)
    player = Player("r1", config, 2, lambda kind, **f: events.append(kind))
    player.start()
    assert isinstance(player.output.device, SoundDeviceOutput), player.output
    t = np.arange(48000 * 1) / 48000
    tone = (0.25 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None].repeat(2, 1)
    player.submit(AudioChunk(v=PROTOCOL_VERSION, room="r1", seq=0, start_sample=0,
                             sample_rate=48000, audio=Array.from_numpy(tone)))
    began = time.monotonic()
    while not player.done and time.monotonic() - began < 10:
        time.sleep(0.01)
    player.stop()
    out = player.output
    print(json.dumps({"name": out.name, "calls": out.stats.calls,
                      "frames": out.frames_played, "done": player.done,
                      "played": player.timeline.played_frames,
                      "dropped": player.recorder.dropped_frames,
                      "saved": player.recorder.frames_saved, "events": events,
                      "path": str(player.recorder.path),
                      "p99_us": out.stats.percentiles_us()["p99"]}))
""")


def test_player_plays_through_a_real_portaudio_stream(tmp_path: Path) -> None:
    try:
        import sounddevice  # noqa: F401
    except OSError as exc:
        pytest.skip(f"PortAudio library not installed ({exc}); apt-get install libportaudio2")
    home = tmp_path / "home"
    (home / ".config" / "alsa").mkdir(parents=True)
    (home / ".asoundrc").write_text(ASOUNDRC)
    (home / ".config" / "alsa" / "asoundrc").write_text(ASOUNDRC)
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               PYTHONPATH=os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]))
    record = tmp_path / "played.wav"
    child = subprocess.run([sys.executable, "-c", CHILD, str(record)], env=env,
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["name"].startswith("sounddevice:")
    assert report["calls"] > 90 and report["frames"] >= 48000  # callbacks ran, 1 s played
    assert report["done"] and report["played"] == 48000
    assert "output_opened" in report["events"] and "player_stopped" in report["events"]
    # The recording is exactly what the callback played: the tone through the DC
    # blocker (its 512-frame blocks, as the callback filtered them), sample for
    # sample, from its first frame (then the hold); blocks the writer could not
    # keep up with (the null device runs far faster than real time) are counted.
    audio, rate = soundfile.read(report["path"], dtype="float32")  # this start's segment
    assert rate == 48000 and audio.shape[1] == 2
    assert report["saved"] + report["dropped"] >= 48000
    t = np.arange(48000) / 48000
    tone = (0.25 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    blocked = np.stack([tone, tone], axis=1)
    blocker = DCBlocker(48000, 8192, 2, AudioOutConfig().dc_block_hz)
    for i in range(0, 48000, 512):
        blocker.process(blocked[i : i + 512])
    np.testing.assert_array_equal(audio[:48000, 0], blocked[:, 0])
    assert np.abs(audio).max() <= 0.25 * 1.05  # the hold neither clicks nor swells
