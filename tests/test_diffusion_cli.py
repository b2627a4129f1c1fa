"""The diffusion commands and the tiny installation config, through click and the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from cli_refusals import refused  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from engine.generators.diffusion.cli import bench_commands, commands  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING  # noqa: E402
from installation.config import load_config  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)
ROOT = Path(__file__).resolve().parents[1]


def test_commands_are_exposed() -> None:
    from installation.cli import cli
    from training.cli import commands as training_commands

    assert [c.name for c in commands] == ["make-tiny-model", "export-onnx", "import-model"]
    assert [c.name for c in training_commands] == ["validate-data", "make-tone-dataset",
                                                   "train-projection", "distill"]
    assert [c.name for c in bench_commands] == ["engine"]
    registered = set(cli.commands)  # the roof registers both, so the README's commands work
    assert {c.name for c in commands + training_commands} <= registered


def test_make_tiny_model_then_bench_json(tmp_path: Path) -> None:
    make = {c.name: c for c in commands}["make-tiny-model"]
    result = CliRunner().invoke(make, [str(tmp_path / "m"), "--embedding-dim", "130"])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "m" / "art2mus_model.json").read_text())
    assert spec["embedding_dim"] == 130
    result = CliRunner().invoke(bench_commands[0], [
        "--model", str(tmp_path / "m"), "--steps", "1", "--batch", "1,2", "--window-s", "1.28",
        "--overlap-s", "0.32", "--windows", "2", "--warmup-windows", "2", "--repeats", "2",
        "--stock-steps", "8", "--stock-timed-steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [row["batch"] for row in report["batches"]] == [1, 2]
    assert (report["stock_steps"], report["stock_warmup_steps"], report["stock_timed_steps"],
            report["repeats"], report["windows"], report["warmup_windows"]) == (8, 3, 2, 2, 2, 2)
    for row in report["batches"]:
        assert row["realtime_factor"] > 0 and row["window_ms"] > 0
        assert len(row["window_ms_each"]) == 2 and row["window_p95_ms"] >= row["window_ms"]
        assert len(row["stock_step_ms_each"]) == len(row["stock_decode_ms_each"]) == 2
        # The stock window: median step x all 8 steps + the measured decode.
        assert row["stock_window_ms"] == pytest.approx(
            8 * row["stock_step_ms"] + row["stock_decode_ms"])
        assert row["speedup_vs_stock"] == pytest.approx(row["stock_window_ms"] / row["window_ms"])
    assert "8 steps" in report["stock_loop"] and "DDIMScheduler" in report["stock_loop"]
    assert report["verdict"] == ["verdict: targets are for an H100/H200; not judged on CPU"]


def test_bench_times_the_stock_loop_at_the_batches_asked(tiny_model_folder: Path) -> None:
    """stock_batches: the stock loop at batch 1 only; batch 2 is ours alone, said so."""
    from engine.generators.diffusion.cli import bench_engine, format_bench_table

    result = bench_engine(tiny_model_folder, 1, [1, 2], 1.28, 0.32, "cpu", "float32", 1, 4,
                          windows=1, warmup_windows=2, stock_timed_steps=1,
                          stock_batches=[1])
    one, two = result["batches"]
    assert result["stock_batches"] == [1]
    assert one["stock_window_ms"] > 0 and one["speedup_vs_stock"] > 0
    assert two["stock_window_ms"] is None and two["speedup_vs_stock"] is None
    assert "not measured" in format_bench_table(result).splitlines()[-3]


def test_bench_without_stock_loop(tiny_model_folder: Path) -> None:
    """--stock-steps 0 skips the baseline (it once ended in a ZeroDivisionError)."""
    result = CliRunner().invoke(bench_commands[0], [
        "--model", str(tiny_model_folder), "--steps", "1", "--batch", "1", "--window-s", "1.28",
        "--overlap-s", "0.32", "--windows", "1", "--warmup-windows", "2", "--stock-steps", "0"])
    assert result.exit_code == 0, result.output
    assert "not measured" in result.output and "not judged on CPU" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "option"), [
    (["--batch", "0"], "positive"),
    (["--stock-steps", "-1"], "'--stock-steps'"),
    (["--stock-steps", "0", "--stock-timed-steps", "2"], "'--stock-timed-steps'"),
    (["--stock-steps", "4", "--stock-timed-steps", "5"], "'--stock-timed-steps'"),
    (["--stock-warmup-steps", "2"], "'--stock-warmup-steps'"),
    (["--windows", "0"], "'--windows'"),
    (["--warmup-windows", "1"], "'--warmup-windows'"),
    (["--repeats", "0"], "'--repeats'"),
])
def test_bench_refuses_bad_counts(tmp_path: Path, args: list[str], option: str) -> None:
    result = CliRunner().invoke(bench_commands[0], ["--model", str(tmp_path), *args])
    assert result.exit_code == 2 and option in result.output, result.output
    assert "Traceback" not in result.output


def test_stock_loop_warms_up_at_the_measured_shape(tiny_model: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stock step, warm-up included, runs the eager UNet at the timed shape (CFG: 2x)."""
    from engine.generators.diffusion.cli import _stock_window

    unet_class = type(tiny_model.unet)
    shapes: list[tuple[int, ...]] = []
    eager = unet_class.forward

    def recording(self: Any, sample: Any, *args: Any, **kwargs: Any) -> Any:
        shapes.append(tuple(sample.shape))
        return eager(self, sample, *args, **kwargs)

    monkeypatch.setattr(unet_class, "forward", recording)
    monkeypatch.setattr(tiny_model.unet, "forward", lambda *a, **k: pytest.fail("not eager"),
                        raising=False)  # as compile_unet leaves it: the stock loop goes round
    stock = _stock_window(tiny_model, 1, 32, 50, 2, 3, 2, lambda: None)
    assert shapes == [(2, tiny_model.latent_channels, 32, tiny_model.latent_bins)] * (3 + 2 * 2)
    assert len(stock["stock_window_ms_each"]) == 2
    assert stock["stock_window_ms"] == pytest.approx(50 * stock["stock_step_ms"]
                                                     + stock["stock_decode_ms"])


def _gpu_result(batch1_ms: float, batch16_ms: float, stock_ms: float | None) -> dict[str, Any]:
    rows = [{"batch": b, "window_ms": ms, "window_p95_ms": ms, "audio_s_per_window": 8.96,
             "realtime_factor": 8960 / ms, "stock_window_ms": stock_ms,
             "speedup_vs_stock": None if stock_ms is None else stock_ms / ms,
             "peak_gpu_mb": 1400.0} for b, ms in ((1, batch1_ms), (16, batch16_ms))]
    return {"gpu": "NVIDIA H200", "device": "cuda:0", "dtype": "float16", "window_s": 10.24,
            "sampler": "dpm_solver", "steps": 4, "threads": 16, "cuda_graphs": True,
            "compile": "off", "windows": 20, "warmup_windows": 3,
            "stock_loop": "not measured (stock_steps 0)" if stock_ms is None else "DDIM",
            "batches": rows}


def test_verdict_judges_each_gpu_target() -> None:
    from engine.generators.diffusion.cli import bench_verdict, format_bench_table

    met = bench_verdict(_gpu_result(30.0, 110.0, 19_700.0))
    assert [line.rsplit(": ", 1)[1] for line in met[1:]] == ["met"] * 3
    missed = bench_verdict(_gpu_result(64.6, 418.0, 19_700.0))
    assert "64.6 ms (target <= 35 ms): MISSED" in missed[1]
    assert "6.47x batch 1 (target <= 4x): MISSED" in missed[2]
    assert "305x the stock loop at batch 1 (target >= 500x): MISSED" in missed[3]
    unmeasured = _gpu_result(30.0, 110.0, None)
    unmeasured["verdict"] = bench_verdict(unmeasured)
    assert unmeasured["verdict"][3].endswith("(target >= 500x): not measured")
    table = format_bench_table(unmeasured)
    assert "NVIDIA H200" in table and "not measured" in table
    other_window = {**unmeasured, "window_s": 2.56}
    assert "not judged at 2.56 s" in bench_verdict(other_window)[0]


def test_tiny_installation_config_validates() -> None:
    config = load_config(ROOT / "configs" / "diffusion-tiny.toml")
    assert config.engine.generator == "diffusion"
    assert config.engine.diffusion.model == "out/tiny-model"


@pytest.mark.parametrize(("args", "option"), [
    (["--steps", "0"], "'--steps'"), (["--steps", "-1"], "'--steps'"),
    (["--steps", str(10**12)], "'--steps'"),
    (["--window-s", "0"], "'--window-s'"), (["--window-s", "-1"], "'--window-s'"),
    (["--window-s", "1e12"], "'--window-s'"), (["--window-s", "nan"], "'--window-s'"),
    (["--overlap-s", "0"], "'--overlap-s'"), (["--overlap-s", "-1"], "'--overlap-s'"),
    (["--overlap-s", "5"], "'--overlap-s'"), (["--overlap-s", "1e12"], "'--overlap-s'"),
    (["--window-s", "1.28", "--overlap-s", "0.96"], "half of --window-s"),
    (["--device", ""], "'--device'"), (["--device", "nosuch"], "'--device'"),
    (["--device", "cuda:99"], "'--device'"), (["--device", "cpu:0"], "'--device'"),
    (["--dtype", ""], "'--dtype'"), (["--dtype", "nosuch"], "'--dtype'"),
    (["--threads", "-1"], "'--threads'"), (["--threads", str(10**12)], "'--threads'"),
    (["--windows", str(10**12)], "'--windows'"),
    (["--stock-steps", str(10**12)], "'--stock-steps'"),
    (["--stock-warmup-steps", str(10**12)], "'--stock-warmup-steps'"),
    (["--repeats", str(10**12)], "'--repeats'"),
    (["--batch", str(10**12)], "'--batch'"), (["--batch", "1,,2"], "'--batch'"),
    (["--batch", ""], "'--batch'"), (["--batch", "1,-2"], "'--batch'"),
    (["--batch", "1,x"], "'--batch'"), (["--batch", "0"], "'--batch'"),
])
def test_bench_engine_refuses_bad_options(tmp_path: Path, args: list[str], option: str) -> None:
    """Refused before any model loads (tmp_path is no model folder)."""
    refused(["bench", "engine", "--model", str(tmp_path), *args], option)


@pytest.mark.parametrize(("args", "option"), [
    (["--embedding-dim", "0"], "'--embedding-dim'"),
    (["--embedding-dim", "-1"], "'--embedding-dim'"),
    (["--embedding-dim", str(10**12)], "'--embedding-dim'"),
    (["--lm-width", "0"], "'--lm-width'"), (["--lm-width", "-1"], "'--lm-width'"),
    (["--lm-width", "7"], "'--lm-width'"), (["--lm-width", "100"], "multiple of 12"),
    (["--lm-width", str(10**12)], "'--lm-width'"),
    (["--support-width", "-1"], "'--support-width'"),
    (["--support-width", "0"], "'--support-width'"),
    (["--support-width", str(10**12)], "'--support-width'"),
    (["--seed", "1e21"], "'--seed'"), (["--seed", "-1"], "'--seed'"),
])
def test_make_tiny_model_refuses_bad_options(tmp_path: Path, args: list[str],
                                             option: str) -> None:
    refused(["make-tiny-model", str(tmp_path / "m"), *args], option)
    assert not (tmp_path / "m").exists()


def test_out_dirs_must_be_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty OUT_DIR would write into the current folder."""
    monkeypatch.chdir(tmp_path)
    refused(["make-tiny-model", ""], "OUT_DIR")
    refused(["export-onnx", str(tmp_path), ""], "OUT_DIR")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "option"), [
    (["--batch", "0"], "'--batch'"), (["--batch", "-1"], "'--batch'"),
    (["--batch", str(10**12)], "'--batch'"),
    (["--window-s", "1e12"], "'--window-s'"), (["--window-s", "0"], "'--window-s'"),
    (["--window-s", "nan"], "'--window-s'"),
])
def test_export_onnx_refuses_bad_options(tmp_path: Path, args: list[str], option: str) -> None:
    refused(["export-onnx", str(tmp_path), str(tmp_path / "out"), *args], option)


def test_device_names_what_torch_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda and cuda:N only where torch sees that device; auto and cpu always."""
    import click
    import torch

    from engine.generators.diffusion.cli import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device(None, None, "auto") == "auto"
    assert check_device(None, None, "cpu") == "cpu"
    with pytest.raises(click.BadParameter, match="no CUDA device"):
        check_device(None, None, "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device(None, None, "cuda") == "cuda"
    assert check_device(None, None, "cuda:1") == "cuda:1"
    with pytest.raises(click.BadParameter, match=r"cuda:0\.\.cuda:1"):
        check_device(None, None, "cuda:2")
    for bad in ("", "CUDA", "cuda:", "cuda:-1", "gpu", "auto:0"):
        with pytest.raises(click.BadParameter, match="expected auto, cpu, cuda or cuda:N"):
            check_device(None, None, bad)
