"""A Ray outage changes who makes a room's music, not how loud it is nor where it cuts.

With ``engine.backend = "ray"`` and Serve gone, the front makes the room's
next chunks with its local fallback; when Serve is back, the deployment makes
them again. Both switches are crossfaded over the transition crossfade (they
were hard cuts). And the diffusion generator levels its output towards
``engine.diffusion.target_lufs``, as the procedural fallback renders towards
its own target: the switch used to jump by about 30 LU (the tiny model's
output sits near -52 dBFS).
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from pydantic import ValidationError

from engine.config import EngineConfig, RayConfig
from engine.generators.diffusion.config import DiffusionConfig
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING
from engine.generators.sine import SineGenerator
from engine.ray_serve import DEGRADED, HEALTHY, RayGenerator, ReplicaCore, decode_request
from ground.protocol import PROTOCOL_VERSION, Array, ArtworkView

RATE = 16000
FRAMES = 4000  # a 0.25 s chunk
CROSSFADE = 4800  # 0.3 s: a switch's crossfade spans two chunks
REMOTE_LEVEL, LOCAL_LEVEL = 0.2, 0.05


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Serve:
    """The deployment's wire around a :class:`ReplicaCore` (stdlib HTTP), until stopped."""

    def __init__(self, port: int, generator: Any) -> None:
        core = ReplicaCore(generator)

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: a connection per request, so none outlives stop() (a kept-alive one
            # would go on answering on its own thread)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._answer(msgspec.json.encode(core.info()))

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                [reply] = core.serve([(decode_request(body), time.time())])
                self._answer(msgspec.msgpack.encode(reply))

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FifthUp(SineGenerator):
    """The local fallback here: a fifth above the deployment's sine, so the two are told
    apart (and do not interfere) while they are crossfaded."""

    def prepare(self, view: ArtworkView) -> float:
        return 1.5 * super().prepare(view)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


def test_an_outage_and_the_return_are_crossfaded_not_cut() -> None:
    port = _free_port()
    events: list[str] = []
    config = EngineConfig(generator="sine", sample_rate=RATE, channels=1, backend="ray",
                          transition_crossfade_s=CROSSFADE / RATE,
                          ray=RayConfig(http_port=port, probe_every_s=0.05,
                                        request_timeout_s=5.0, deadline_slack_s=0.0))
    # Two sines the level tells apart; 333 and 500 Hz, so chunks do not end on zero crossings.
    front = RayGenerator(config, lambda kind, **fields: events.append(kind), lambda room: None,
                         fallback=FifthUp(RATE, 1, level=LOCAL_LEVEL))
    view = ArtworkView(v=PROTOCOL_VERSION, room="r", seq=0, time=0.0, state="artwork",
                       artwork_id="a", confidence=1.0, features={"brightness": 0.3})
    serve = Serve(port, SineGenerator(RATE, 1, level=REMOTE_LEVEL))
    condition = front.prepare(view)
    state = front.start(condition, 0, 0, None)
    parts: list[np.ndarray] = []

    def play(chunks: int) -> None:
        nonlocal state
        for _ in range(chunks):
            generated, state = front.generate(state, condition, FRAMES)
            parts.append(generated.audio[:, 0])

    try:
        play(3)
        serve.stop()
        play(4)  # made here from the first of these
        assert front.state == DEGRADED and events == ["backend_degraded"]
        serve = Serve(port, SineGenerator(RATE, 1, level=REMOTE_LEVEL))
        assert front._restored.wait(timeout=30.0)
        play(4)
        assert front.state == HEALTHY and events == ["backend_degraded", "backend_restored"]
    finally:
        serve.stop()
        front.close()
    audio = np.concatenate(parts)
    largest_step = 2.0 * np.pi * 333.4 / RATE * REMOTE_LEVEL  # a sine's own sample-to-sample
    for switch, before, after in ((3 * FRAMES, REMOTE_LEVEL, LOCAL_LEVEL),
                                  (7 * FRAMES, LOCAL_LEVEL, REMOTE_LEVEL)):
        # no step where the source changes: the music goes on from its last sample...
        assert abs(audio[switch] - audio[switch - 1]) < largest_step
        # ...at the level it had, and reaches the other source's over the crossfade
        sine = np.sqrt(0.5)
        assert _rms(audio[switch:switch + 320]) == pytest.approx(before * sine, rel=0.15)
        middle = _rms(audio[switch + CROSSFADE // 2 - 400:switch + CROSSFADE // 2 + 400])
        assert min(before, after) * sine < middle < max(before, after) * sine
        assert _rms(audio[switch + CROSSFADE:switch + CROSSFADE + 3200]) == pytest.approx(
            after * sine, rel=0.02)
    assert front.switches == 2


def test_one_request_made_here_while_serve_answers_is_no_switch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A missed deadline is made here for one chunk (as before): no crossfade either way."""
    port = _free_port()
    config = EngineConfig(generator="sine", sample_rate=RATE, channels=1, backend="ray",
                          ray=RayConfig(http_port=port, request_timeout_s=5.0,
                                        deadline_slack_s=0.0))
    front = RayGenerator(config, lambda kind, **fields: None, lambda room: 0,
                         fallback=SineGenerator(RATE, 1, level=LOCAL_LEVEL))
    serve = Serve(port, SineGenerator(RATE, 1, level=REMOTE_LEVEL))
    view = ArtworkView(v=PROTOCOL_VERSION, room="r", seq=0, time=0.0, state="artwork",
                       artwork_id="a", confidence=1.0, features={"brightness": 0.3})
    condition = front.prepare(view)
    state = front.start(condition, 0, 0, None)
    try:
        for _ in range(2):
            _, state = front.generate(state, condition, FRAMES)
        with monkeypatch.context() as patch:  # the next request misses its deadline
            patch.setattr(front, "_remote", lambda wire: [None] * len(wire))
            generated, state = front.generate(state, condition, FRAMES)
        assert front.state == HEALTHY and front.local_chunks == 1
        assert _rms(generated.audio) == pytest.approx(LOCAL_LEVEL * np.sqrt(0.5), rel=0.02)
        generated, state = front.generate(state, condition, FRAMES)
        assert _rms(generated.audio) == pytest.approx(REMOTE_LEVEL * np.sqrt(0.5), rel=0.02)
    finally:
        serve.stop()
        front.close()
    assert front.switches == 0


# -- the diffusion generator's level ------------------------------------------------


def test_the_target_loudness_is_a_finite_value_in_range() -> None:
    assert DiffusionConfig().target_lufs == -18.0
    for bad in (float("nan"), float("inf"), -41.0, -5.0):
        with pytest.raises(ValidationError, match="target_lufs"):
            DiffusionConfig(target_lufs=bad)


def test_the_follower_levels_towards_the_target_bounded_and_smooth() -> None:
    pyloudnorm = pytest.importorskip("pyloudnorm")
    from engine.generators.diffusion.loudness import MAX_GAIN_DB, LevelState, LoudnessFollower

    follower = LoudnessFollower(RATE, 2, -18.0)
    rng = np.random.default_rng(1)
    hop = RATE  # one second per hop

    def run(signal: np.ndarray) -> tuple[np.ndarray, LevelState]:
        state, out = LevelState(), []
        for k in range(0, len(signal), hop):
            levelled, state = follower.follow(state, signal[k:k + hop])
            out.append(levelled)
        return np.concatenate(out), state

    silence, state = run(np.zeros(8 * hop, np.float32))
    assert not silence.any() and state.gain_db == 0.0  # silence is not blown up
    hiss = (1e-5 * rng.standard_normal(8 * hop)).astype(np.float32)  # under the -70 gate
    levelled, state = run(hiss)
    assert state.gain_db == 0.0 and np.array_equal(levelled, hiss)
    quiet = (0.003 * rng.standard_normal(8 * hop)).astype(np.float32)  # about -50 LUFS
    levelled, state = run(quiet)
    assert state.gain_db == MAX_GAIN_DB  # bounded: the target is further than that
    # a 6 dB drop in the source's level is followed without a step in the gain (no
    # zipper), and both parts are brought near the target
    step = np.concatenate([quiet[:6 * hop] * 20.0,
                           (0.003 * rng.standard_normal(24 * hop)).astype(np.float32) * 10.0])
    levelled, state = run(step)
    gain = levelled / step
    assert np.max(np.abs(np.diff(gain))) < 1e-3 * np.max(gain)
    meter = pyloudnorm.Meter(RATE)
    for part in (levelled[3 * hop:6 * hop], levelled[-4 * hop:]):
        stereo = np.repeat(part[:, None], 2, axis=1).astype(np.float64)
        assert meter.integrated_loudness(stereo) == pytest.approx(-18.0, abs=1.0)


@pytest.mark.filterwarnings(NUMPY_COPY_WARNING)
def test_the_diffusion_generator_plays_at_its_target_loudness(tiny_model_folder: Path) -> None:
    pytest.importorskip("torch", reason="the diffusion extra is not installed")
    pyloudnorm = pytest.importorskip("pyloudnorm")
    from engine.generators.diffusion.generator import DiffusionGenerator
    from engine.generators.diffusion.testing import random_embedding

    def loudness(target: float) -> float:
        config = EngineConfig(generator="diffusion", sample_rate=RATE, channels=2,
                              diffusion={"model": str(tiny_model_folder), "window_s": 1.28,
                                         "overlap_s": 0.32, "steps": 1,
                                         "target_lufs": target})
        generator = DiffusionGenerator.from_config(config)
        view = ArtworkView(v=PROTOCOL_VERSION, room="r", seq=0, time=0.0, state="artwork",
                           artwork_id="a", embedding=Array.from_numpy(random_embedding(
                               1, generator.model.spec.embedding_dim)[0]))
        condition = generator.prepare(view)
        state = generator.start(condition, 1, 0, None)
        generated, state = generator.generate(state, condition, 8 * RATE)
        return float(pyloudnorm.Meter(RATE).integrated_loudness(
            generated.audio.astype(np.float64)))

    # the tiny random model sits near -47 LUFS: both targets are within the gain's reach
    assert loudness(-30.0) == pytest.approx(-30.0, abs=1.5)
    assert loudness(-36.0) == pytest.approx(-36.0, abs=1.5)
