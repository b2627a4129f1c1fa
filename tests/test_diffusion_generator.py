"""DiffusionGenerator behind the Generator protocol: continuity, transitions, cache, batching."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from engine.config import EngineConfig  # noqa: E402
from engine.generators.diffusion.config import DiffusionConfig  # noqa: E402
from engine.generators.diffusion.generator import DiffusionGenerator, slerp_tokens  # noqa: E402
from engine.generators.diffusion.model import ModelSpec, load_model  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING, random_embedding  # noqa: E402
from engine.streaming import RoomSession  # noqa: E402
from ground.errors import ConfigError, InputError  # noqa: E402
from ground.events import MemorySink  # noqa: E402
from ground.protocol import Array, ArtworkView, PlaybackClock  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)

WINDOW = dict(window_s=1.28, overlap_s=0.32, steps=2)


def make(model: Any, sample_rate: int = 16000, channels: int = 1, **overrides: Any
         ) -> DiffusionGenerator:
    config = DiffusionConfig(model=str(model.folder), **{**WINDOW, **overrides})
    return DiffusionGenerator(model, config, sample_rate, channels)


def view(artwork: str, seed: int, dim: int = 1024, seq: int = 0) -> ArtworkView:
    return ArtworkView(v=1, room="r", seq=seq, time=0.0, state="artwork", artwork_id=artwork,
                       embedding=Array.from_numpy(random_embedding(seed, dim)[0]))


def stream(generator: DiffusionGenerator, condition: Any, sizes: list[int], seed: int = 1
           ) -> np.ndarray:
    state = generator.start(condition, seed, 0, None)
    parts = []
    for frames in sizes:
        out, state = generator.generate(state, condition, frames)
        assert out.audio.shape == (frames, generator.channels)
        assert out.audio.dtype == np.float32
        parts.append(out.audio)
    return np.concatenate(parts)


def test_from_config_loads_through_the_user_path(tiny_model_folder: Path) -> None:
    config = EngineConfig(generator="diffusion", sample_rate=48000, channels=2,
                          diffusion=DiffusionConfig(model=str(tiny_model_folder), **WINDOW))
    generator = DiffusionGenerator.from_config(config)
    # No CUDA graphs on a CPU: nothing to capture before serving (tests/test_gpu.py: CUDA).
    from engine.generators import warm_up

    assert not generator.use_graphs and warm_up(generator, lambda: None) == 0
    condition = generator.prepare(view("a", 1))
    out, _ = generator.generate(generator.start(condition, 0, 0, None), condition, 4800)
    assert out.audio.shape == (4800, 2)
    assert np.array_equal(out.audio[:, 0], out.audio[:, 1])
    assert np.abs(out.audio).max() > 0.0


def test_wrong_embedding_width_names_both_shapes(tiny_model: Any) -> None:
    generator = make(tiny_model)
    with pytest.raises(InputError) as error:
        generator.prepare(view("a", 1, dim=512))
    assert "expected shape (1024,)" in str(error.value)
    assert "got (512,)" in str(error.value)
    assert "room 'r'" in str(error.value)


def test_window_not_fitting_the_unet_is_refused(tiny_model: Any) -> None:
    with pytest.raises(ConfigError, match="engine.diffusion.window_s"):
        make(tiny_model, window_s=1.30)


def test_empty_wall_has_a_condition(tiny_model: Any) -> None:
    generator = make(tiny_model)
    empty = ArtworkView(v=1, room="r", seq=0, time=0.0, state="empty")
    condition = generator.prepare(empty)
    assert condition.empty and condition.tokens.shape == (1, 8, 768)
    assert generator.describe(condition)["empty"] is True


def test_streamed_equals_one_shot(tiny_model: Any) -> None:
    """Sample-continuity across generate() calls: any split gives the same samples."""
    generator = make(tiny_model, sample_rate=48000)
    condition = generator.prepare(view("a", 1))
    one_shot = stream(generator, condition, [60000])
    pieces = stream(generator, condition, [7, 4793, 20000, 1, 35199])
    np.testing.assert_allclose(pieces, one_shot, rtol=0, atol=1e-6)


def test_seed_and_artwork_change_the_audio(tiny_model: Any) -> None:
    generator = make(tiny_model)
    a, b = generator.prepare(view("a", 1)), generator.prepare(view("b", 2))
    base = stream(generator, a, [16000], seed=1)
    assert np.array_equal(base, stream(generator, a, [16000], seed=1))
    assert not np.allclose(base, stream(generator, a, [16000], seed=2), atol=1e-6)
    assert not np.allclose(base, stream(generator, b, [16000], seed=1), atol=1e-6)


def _coherence(generator: DiffusionGenerator, keep_known: bool) -> float:
    """Correlation, over the middle half of the overlap, of the previous window's tail
    with the next window's raw (not yet crossfaded) head."""
    condition = generator.prepare(view("a", 1))
    [first] = generator._windows([generator.start(condition, 1, 0, None)], [condition])
    plan = generator.plan
    known = first.known if keep_known else None
    noise = torch.randn(1, plan.latent_channels, plan.window_frames, plan.latent_bins,
                        generator=torch.Generator().manual_seed(5))
    _, audio = generator.sample_windows(condition.tokens, generator.model.support_prompt,
                                        noise, known, [torch.Generator().manual_seed(6)])
    quarter = plan.overlap_samples // 4
    middle = slice(quarter, 3 * quarter)
    return float(np.corrcoef(first.tail[middle], audio[0, :plan.overlap_samples][middle])[0, 1])


def test_latent_continuity_makes_the_overlap_coherent(tiny_model: Any) -> None:
    """The known region carries the previous window into the next: the audio both decode
    for the overlap agrees; without it (the control) it does not."""
    generator = make(tiny_model)
    with_known = _coherence(generator, keep_known=True)
    without = _coherence(generator, keep_known=False)
    assert with_known > 0.95
    assert without < with_known - 0.2


def _roughness(x: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(x, 2))


def test_joins_are_no_rougher_than_inside(tiny_model: Any) -> None:
    generator = make(tiny_model)
    condition = generator.prepare(view("a", 1))
    sizes = [5000, 11111, 9000, 20000, 3000]
    audio = stream(generator, condition, sizes)[:, 0]
    rough = _roughness(audio)
    calls = np.cumsum(sizes)[:-1]
    windows = np.arange(1, 4) * generator.plan.hop_samples
    joins = np.concatenate([calls, windows, windows - generator.plan.overlap_samples])
    inside = np.ones(len(rough), bool)
    for j in joins:
        inside[max(0, j - 4):j + 3] = False
    limit = np.quantile(rough[inside], 0.999)
    for j in joins:
        assert rough[j - 3:j + 2].max() <= limit, f"join at {j}"
    # Control: the metric flags a click (a step of 20 standard deviations). It is blind to
    # subtler cuts in this noise-like random-weight audio; the overlap coherence test above
    # is the one that checks the latent continuity itself.
    cut = np.concatenate([audio[:20000], audio[20000:] + 20 * np.std(audio)])
    assert _roughness(cut)[20000 - 3:20000 + 2].max() > limit


def test_transition_slerps_or_cuts(tiny_model: Any) -> None:
    slerp = make(tiny_model, transition="slerp", transition_s=3.0)
    a, b = slerp.prepare(view("a", 1)), slerp.prepare(view("b", 2))
    old = slerp.start(a, 1, 0, None)
    _, old = slerp.generate(old, a, 16000)
    new = slerp.start(b, 1, 30000, old)
    _, new = slerp.generate(new, b, 1)
    first = new.tokens
    assert first is not None
    distance_to_a = (first - a.tokens).norm().item()
    distance_to_b = (first - b.tokens).norm().item()
    assert 0 < distance_to_b and 0 < distance_to_a  # in between: neither end
    hop_s = slerp.plan.hop_s
    _, new = slerp.generate(new, b, round(4 * hop_s * 16000))
    assert new.tokens is not None
    torch.testing.assert_close(new.tokens, b.tokens)  # arrived after transition_s
    assert (first - b.tokens).norm() > (new.tokens - b.tokens).norm()

    cut = make(tiny_model, transition="cut")
    new = cut.start(b, 1, 30000, old)
    _, new = cut.generate(new, b, 1)
    torch.testing.assert_close(new.tokens, b.tokens)


def test_slerp_endpoints_and_norm() -> None:
    a, b = torch.randn(1, 8, 16), torch.randn(1, 8, 16) * 3
    torch.testing.assert_close(slerp_tokens(a, b, 0.0), a)
    torch.testing.assert_close(slerp_tokens(a, b, 1.0), b)
    middle = slerp_tokens(a, b, 0.5)
    torch.testing.assert_close(middle.norm(dim=-1), (a.norm(dim=-1) + b.norm(dim=-1)) / 2)


def test_batch_matches_single_rooms(tiny_model: Any) -> None:
    generator = make(tiny_model)
    a, b = generator.prepare(view("a", 1)), generator.prepare(view("b", 2))
    singles = [stream(generator, c, [20000], seed=s) for c, s in ((a, 1), (b, 2))]
    results = generator.generate_batch([(generator.start(a, 1, 0, None), a, 20000),
                                        (generator.start(b, 2, 0, None), b, 20000)])
    for (out, _), single in zip(results, singles, strict=True):
        np.testing.assert_allclose(out.audio, single, atol=1e-4)


def test_guidance_and_student_paths(tiny_model_folder: Path, tiny_student_folder: Path
                                    ) -> None:
    model = load_model(tiny_model_folder)
    guided = make(model, guidance_scale=3.0)
    condition = guided.prepare(view("a", 1))
    assert guided.sampler.unconditional_pass
    assert np.isfinite(stream(guided, condition, [8000])).all()

    student_model = load_model(tiny_student_folder)
    for steps in (1, 4):
        student = make(student_model, steps=steps, guidance_scale=4.0)
        assert student.sampler.kind == "consistency" and not student.sampler.unconditional_pass
        condition = student.prepare(view("a", 1))
        assert np.isfinite(stream(student, condition, [8000])).all()
    with pytest.raises(ConfigError, match="consistency"):
        make(model, sampler="consistency")


def test_a_student_is_sampled_within_its_distilled_guidance(
        tiny_model_folder: Path, tiny_student_folder: Path, tmp_path: Path) -> None:
    student_model = load_model(tiny_student_folder)
    # A folder that records no range (older students): the config's scale, as before.
    assert student_model.spec.guidance_range is None
    assert make(student_model).sampler.guidance_scale == 1.0
    baked = replace(student_model.spec, guidance_range=(2.5, 2.5))
    baked.save(tmp_path)
    student_model.spec = ModelSpec.load(tmp_path)  # through the JSON a folder holds
    assert student_model.spec == baked
    # Left unset: the scale it was distilled at, fed to its guidance embedding.
    generator = make(student_model)
    assert generator.sampler.guidance_scale == 2.5
    assert np.isfinite(stream(generator, generator.prepare(view("a", 1)), [8000])).all()
    assert make(student_model, guidance_scale=2.5).sampler.guidance_scale == 2.5
    # "Unset" survives the frozen config the supervisor hands each role.
    frozen = DiffusionConfig.model_validate_json(
        DiffusionConfig(model=str(student_model.folder), **WINDOW).model_dump_json(
            exclude_none=True))
    assert frozen.guidance_scale is None
    assert DiffusionGenerator(student_model, frozen, 16000, 1).sampler.guidance_scale == 2.5
    with pytest.raises(ConfigError) as error:
        make(student_model, guidance_scale=1.0)  # set explicitly, even to the default
    message = str(error.value)
    assert "engine.diffusion.guidance_scale" in message and "scale 2.5" in message
    assert str(student_model.folder) in message
    student_model.spec = replace(baked, guidance_range=(1.0, 4.0))
    assert make(student_model).sampler.guidance_scale == 2.5  # the range's midpoint
    assert make(student_model, guidance_scale=4.0).sampler.guidance_scale == 4.0
    with pytest.raises(ConfigError, match=r"scales \[1, 4\]"):
        make(student_model, guidance_scale=6.0)
    # An original model records none and keeps the config's scale (its own CFG).
    assert make(load_model(tiny_model_folder)).sampler.guidance_scale == 1.0
    (tmp_path / "art2mus_model.json").write_text(
        (tmp_path / "art2mus_model.json").read_text().replace("2.5", "0.5"))
    with pytest.raises(InputError, match="guidance_range"):
        ModelSpec.load(tmp_path)


class CountingGenerator:
    """Wraps the diffusion generator to count conditioning computations."""

    def __init__(self, inner: DiffusionGenerator) -> None:
        self.inner = inner
        self.sample_rate = inner.sample_rate
        self.channels = inner.channels
        self.prepared: list[str | None] = []

    def prepare(self, view: ArtworkView) -> Any:
        self.prepared.append(view.artwork_id)
        return self.inner.prepare(view)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_room_session_prepares_once_per_artwork(tiny_model: Any) -> None:
    generator = CountingGenerator(make(tiny_model, sample_rate=16000, channels=1))
    config = EngineConfig(generator="diffusion", sample_rate=16000, channels=1, chunk_s=0.25,
                          lead_s=0.5, diffusion=DiffusionConfig(model=str(tiny_model.folder),
                                                                **WINDOW))
    now = [1000.0]
    session = RoomSession("r", 1, generator, config, clock=lambda: now[0])  # type: ignore[arg-type]
    session.on_clock(PlaybackClock(v=1, room="r", sample_rate=16000, playhead=0,
                                   buffered_until=0, wall_time=now[0]))
    reasons = []
    for step, (artwork, seed) in enumerate([("a", 1), ("a", 1), ("b", 2), ("a", 1), ("b", 2)]):
        session.on_view(view(artwork, seed, seq=step))
        for _ in range(3):
            chunk = session.next_chunk()
            if chunk is not None:
                reasons.append(chunk.reason)
                assert chunk.audio.to_numpy().shape[1] == 1
        now[0] += 0.5
    assert generator.prepared == [None, "a", "b"]  # the empty wall, then each artwork once
    assert reasons[0] == "start" and "transition" in reasons


def test_a_view_the_model_cannot_use_is_refused_and_the_room_plays_on(tiny_model: Any) -> None:
    """A capture with another encoder (a 512-d embedding for a 1024-d model, or none)
    made prepare's InputError end the engine with code 3, and after three the supervisor
    gave it up: no music in any room. Now the view is counted and dropped."""
    generator = make(tiny_model, sample_rate=16000, channels=1)
    config = EngineConfig(generator="diffusion", sample_rate=16000, channels=1, chunk_s=0.25,
                          lead_s=0.5, diffusion=DiffusionConfig(model=str(tiny_model.folder),
                                                                **WINDOW))
    events = MemorySink()
    session = RoomSession("r", 1, generator, config, events, clock=lambda: 1000.0)
    session.on_clock(PlaybackClock(v=1, room="r", sample_rate=16000, playhead=0,
                                   buffered_until=0, wall_time=1000.0))
    assert session.on_view(view("a", 1))
    bare = ArtworkView(v=1, room="r", seq=1, time=0.0, state="artwork", artwork_id="c")
    for bad in (view("b", 2, dim=512, seq=1), view("b", 2, dim=512, seq=2), bare):
        assert not session.on_view(bad)
    assert session.view.artwork_id == "a" and session.latest_view.artwork_id == "a"
    assert session.refused_views == 3
    refused = events.of("view_refused")  # once per reason, not per re-send
    assert [e["artwork_id"] for e in refused] == ["b", "c"]
    assert "got (512,)" in refused[0]["error"] and "no embedding" in refused[1]["error"]
    assert session.next_chunk() is not None  # the room plays on


def test_compiling_the_unet_is_for_cuda_only(tiny_model: Any) -> None:
    # On a CPU the option changes nothing: the eager UNet, the same audio
    # (tests/test_gpu.py checks the compiled UNet on CUDA).
    generator = make(tiny_model)
    condition = generator.condition_from_embedding("a", random_embedding(3))
    expected = stream(generator, condition, [4000])
    compiled = make(tiny_model, compile="default")
    assert not hasattr(tiny_model.unet, "_art2mus_compiled")
    np.testing.assert_array_equal(stream(compiled, condition, [4000]), expected)


def test_simulated_backend_waits_as_the_measured_gpu_did(
        tiny_model_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """backend = "simulated" (a benchmark's stand-in for a GPU): a window waits the time
    given for its batch size (linear between and beyond the points) and the streams
    still come out at full length; without times it is refused, naming the field."""
    import engine.generators.diffusion.backends as backends
    from engine.generators.diffusion.backends import SimulatedBackend

    waits: list[float] = []
    monkeypatch.setattr(backends.time, "sleep", waits.append)

    timing = SimulatedBackend({1: 60.0, 4: 150.0, 16: 400.0}, 100)
    assert [round(timing.window_s(b) * 1e3, 3) for b in (1, 2, 4, 16, 32)] == \
        [60.0, 90.0, 150.0, 400.0, 733.333]
    assert SimulatedBackend({8: 80.0}, 100).window_s(4) == pytest.approx(0.04)
    config = EngineConfig(generator="diffusion", sample_rate=48000, channels=2,
                          diffusion=DiffusionConfig(
                              model=str(tiny_model_folder), backend="simulated",
                              simulated_window_ms={1: 200.0}, **WINDOW))
    generator = DiffusionGenerator.from_config(config)
    condition = generator.prepare(view("a", 1))
    out, _ = generator.generate(generator.start(condition, 0, 0, None), condition, 4800)
    assert waits == [0.2]  # one window (0.1 s of audio from a 1.28 s window), at batch 1
    assert out.audio.shape == (4800, 2) and np.isfinite(out.audio).all()
    with pytest.raises(ValueError, match="simulated_window_ms"):
        DiffusionConfig(model="m", backend="simulated")
    with pytest.raises(ValueError, match="simulated_window_ms"):
        DiffusionConfig(model="m", backend="simulated", simulated_window_ms={0: 5.0})
