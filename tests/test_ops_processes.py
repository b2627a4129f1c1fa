"""Operations on a real supervised installation: OSC in and out, metrics, reload, status.

One run of the three roles (sine generator, a video file as the camera, no
sound device) with OSC listening on loopback, OSC out to this test, Prometheus
endpoints and the config file watched. Everything goes through the real
paths: UDP into the supervisor, Control over ZeroMQ into the roles, the
roles' heartbeats back into the status file.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient
from test_faults_processes import Installation, _after, make_camera_video

from installation.config import load_config
from installation.ops_cli import status as status_command

pytestmark = pytest.mark.slow
PORT, OSC_IN, METRICS = 5961, 9461, 9471

TOML = """
[installation]
name = "ops"
output_dir = "{out}"

[network]
views = "tcp://127.0.0.1:{p0}"
chunks = "tcp://127.0.0.1:{p1}"
clock = "tcp://127.0.0.1:{p2}"
control = "tcp://127.0.0.1:{p3}"

[supervisor]
restart_backoff_s = 0.3
heartbeat_s = 0.2
status_every_s = 0.3

[engine]
generator = "sine"
chunk_s = 0.25
lead_s = 0.75
transition_margin_s = 0.2
transition_crossfade_s = {crossfade}

[control]
reload_poll_s = 0.2
min_change_interval_s = 0.1

[control.osc]
listen = "127.0.0.1:{osc_in}"
send = ["127.0.0.1:{osc_out}"]
send_hz = 10

[metrics]
port = {metrics}

[capture]
source = "camera:{video}"
fps = {fps}
detect_width = 480
heartbeat_s = 0.5
[capture.stability]
hold_frames = 2
window_frames = 3

[audio_out]
output = "none"

[[rooms]]
id = "a"
"""


def _metrics(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return ""


def test_osc_metrics_reload_and_status_on_a_running_installation(tmp_path: Path) -> None:
    received: dict[str, Any] = {}
    dispatcher = Dispatcher()
    dispatcher.set_default_handler(lambda address, *args: received.__setitem__(address, args))
    listener = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    fields = {"out": tmp_path / "out", "p0": PORT, "p1": PORT + 1, "p2": PORT + 2,
              "p3": PORT + 3, "osc_in": OSC_IN, "osc_out": listener.server_address[1],
              "metrics": METRICS, "video": make_camera_video(tmp_path / "camera.avi"),
              "crossfade": 0.2, "fps": 6}
    path = tmp_path / "ops.toml"
    path.write_text(TOML.format(**fields))
    client = SimpleUDPClient("127.0.0.1", OSC_IN)
    try:
        with Installation(load_config(path), tmp_path, source_path=path) as inst:
            inst.wait_for("music of an artwork", lambda: [
                e for e in inst.events("engine") if e["kind"] == "chunk" and e.get("artwork_id")],
                40)
            decisions = [e for e in inst.events("engine") if e["kind"] == "decisions"]
            before = decisions[-1]["decisions"]["frequency_hz"]

            # OSC in -> supervisor -> Control -> engine: a brighter condition, as a transition
            sent_at = time.time()
            client.send_message("/art2mus/brightness", 1.0)
            client.send_message("/art2mus/a/volume", 0.5)
            replanned = inst.wait_for("re-planned", lambda: _after(
                inst.events("engine"), "replanned", sent_at), 10)[0]
            assert replanned["decisions"]["frequency_hz"] > before
            inst.wait_for("a transition chunk", lambda: [
                e for e in _after(inst.events("engine"), "chunk", sent_at)
                if e["reason"] == "transition"], 5)
            volume = inst.wait_for("volume", lambda: _after(
                inst.events("audio_out-a"), "volume", sent_at), 10)[0]
            assert volume["value"] == 0.5
            osc_latency = replanned["time"] - sent_at

            # OSC out: the room's state, one value per address
            inst.wait_for("OSC out", lambda: received.get("/art2mus/a/health") == (1.0,)
                          and received.get("/art2mus/a/artwork_id", ("",))[0], 10)
            assert received["/art2mus/a/tempo"] == (0.0,)  # a sine has no tempo
            assert received["/art2mus/a/level"][0] < 0.0

            # metrics: engine and supervisor endpoints
            engine_metrics = inst.wait_for("engine metrics", lambda: (
                text := _metrics(METRICS + 1)) and 'art2mus_realtime_factor{room="a"}' in text
                and text, 10)
            assert 'art2mus_chunk_generation_seconds_count{room="a"}' in engine_metrics
            assert 'art2mus_lead_seconds{room="a"}' in engine_metrics
            assert 'art2mus_role_up{role="engine"} 1.0' in _metrics(METRICS)
            assert "art2mus_underflows_total" in _metrics(METRICS + 2)
            assert 'art2mus_detection_confidence{room="a"}' in _metrics(METRICS + 3)

            # hot reload: a live field applied, a restart field reported, a bad file refused
            edited_at = time.time()
            path.write_text(TOML.format(**fields | {"crossfade": 0.1, "fps": 5}))
            reloaded = inst.wait_for("reloaded", lambda: _after(
                inst.events("supervisor"), "config_reloaded", edited_at), 10)[0]
            assert reloaded["applied"] == ["transition_s=0.1"]
            assert reloaded["restart_needed"] == ["rooms[0].capture.fps"]
            inst.wait_for("engine took transition_s", lambda: [
                e for e in _after(inst.events("engine"), "controls", edited_at)
                if e.get("transition_s") == 0.1], 10)
            time.sleep(0.3)
            path.write_text(TOML.format(**fields).replace("sine", "theremin"))
            refused = inst.wait_for("refused", lambda: _after(
                inst.events("supervisor"), "config_refused", edited_at), 10)[0]
            assert "engine.generator" in refused["error"]

            # status: the file and the command
            path.write_text(TOML.format(**fields | {"crossfade": 0.1}))
            status = CliRunner().invoke(status_command, ["--config", str(path)])
            assert status.exit_code == 0, status.output
            for text in ("engine", "capture:a", "audio_out:a", "running", "rooms"):
                assert text in status.output
    finally:
        client.close()
        listener.shutdown()
        listener.server_close()
    print(f"\nOPS FIGURES: OSC set -> engine re-plan {osc_latency * 1000:.0f} ms")
