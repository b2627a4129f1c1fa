"""What the projection trainer and the distiller share: order, randomness, checkpoints, output.

Exact resume is by construction rather than by bookkeeping: the clips of
micro-batch ``m`` and every random draw it makes (noise, timesteps, dropout,
posterior samples) are pure functions of ``(seed, m)`` (:func:`batch_indices`,
:func:`step_generator`), so a run resumed at step ``k`` sees exactly what an
uninterrupted run sees from step ``k``. Checkpoints still carry the global RNG
states (torch, CUDA, numpy, random) for anything that draws from them
(dropout inside a trainable network). With a learning-rate schedule that
does not depend on the total step count (constant after warm-up), training
N/2 steps, then resuming to N, gives the same weights as N steps straight.

Layout of a run's output folder ``OUT``: the model folder itself (what the
engine loads), plus ``OUT/training/`` with ``config.json``, ``log.jsonl``
(one line per logged step) and ``checkpoints/step-XXXXXXXX/``
(``weights.safetensors``, ``state.pt``, ``meta.json``: the step, the loss, and the command
and model that wrote it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ground.errors import InputError

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
TRAINING_DIR = "training"
CHECKPOINTS_DIR = "checkpoints"
#: What a checkpoint's ``state.pt`` must hold besides the optional ``scaler``.
STATE_ENTRIES = ("optimizer", "lr_schedule", "config", "rng")


@dataclass(frozen=True)
class RunConfig:
    """Settings shared by both trainers; validated on construction."""

    steps: int = 1000
    batch_size: int = 8
    accumulate: int = 1
    lr: float = 2e-5
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    warmup_steps: int = 0
    precision: Precision = "auto"
    seed: int = 0
    device: str = "auto"
    clip_s: float = 2.56
    max_clips: int = 0
    val_fraction: float = 0.1
    latents: Literal["sample", "mean"] = "sample"
    validate_every: int = 100
    val_batches: int = 4
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 10

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "accumulate", "val_batches", "keep_checkpoints",
                     "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "validate_every", "checkpoint_every", "max_clips"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise ValueError(f"expected lr > 0, weight_decay >= 0, grad_clip > 0, got "
                             f"{self.lr}, {self.weight_decay}, {self.grad_clip}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got "
                             f"{self.precision!r}")
        if self.latents not in ("sample", "mean"):
            raise ValueError(f"latents must be 'sample' or 'mean', got {self.latents!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    #: Fields a resumed run must share with the checkpoint for the result to be exact.
    RESUME_FIELDS = ("batch_size", "accumulate", "lr", "weight_decay", "grad_clip",
                     "warmup_steps", "seed", "clip_s", "max_clips", "latents", "precision")


def check_resume_config(saved: dict[str, Any], current: RunConfig, extra: tuple[str, ...] = ()
                        ) -> None:
    """InputError naming the first field that differs from the checkpoint's run."""
    names = {f.name for f in fields(current)}
    for name in (*RunConfig.RESUME_FIELDS, *extra):
        if name in names and name in saved and saved[name] != getattr(current, name):
            raise InputError(f"--resume: --{name.replace('_', '-')} was {saved[name]!r} in the "
                             f"checkpointed run, got {getattr(current, name)!r}; resume with "
                             f"the same value (or start a new --out)")


# ---------------------------------------------------------------------------
# order and randomness


def _mix(*parts: int | str) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def batch_indices(count: int, batch: int, micro_step: int, seed: int) -> list[int]:
    """Clips of micro-batch ``micro_step``: consecutive slices of per-epoch permutations."""
    import torch

    if count < 1:
        raise ValueError("no clips to train on")
    start = micro_step * batch
    out: list[int] = []
    epoch = start // count
    offset = start % count
    while len(out) < batch:
        order = torch.randperm(count, generator=torch.Generator().manual_seed(
            _mix(seed, "epoch", epoch))).tolist()
        take = order[offset:offset + batch - len(out)]
        out.extend(take)
        epoch, offset = epoch + 1, 0
    return out


def step_generator(seed: int, micro_step: int, stream: str = "train") -> torch.Generator:
    """A CPU generator for one micro-batch's random draws (same on every device and resume)."""
    import torch

    return torch.Generator().manual_seed(_mix(seed, stream, micro_step))


def seed_everything(seed: int) -> None:
    """Seed the global RNGs a fresh run may draw from (dropout inside trainable networks)."""
    import torch

    value = _mix(seed, "global")
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch, CUDA, numpy, random) as checkpointable values."""
    import torch

    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "random": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    import torch

    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    python = state["random"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------
# devices and precision


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32). 'auto': bf16 on a GPU that has it, else fp16; CPU fp32."""
    import torch

    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise InputError(f"--precision {precision}: mixed precision needs a CUDA device, "
                             f"got {device}")
        return None
    if precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[
        Any]:
    """torch.autocast for mixed precision, a no-op context for fp32."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(dtype: torch.dtype | None) -> Any:
    """A GradScaler for fp16 (bf16 has fp32's range and needs none); None otherwise."""
    import torch

    if dtype is torch.float16:
        return torch.amp.GradScaler("cuda")
    return None


def constant_with_warmup(optimizer: Any, warmup_steps: int) -> Any:
    """Linear warm-up, then constant: independent of the total, so runs can be extended."""
    import torch

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(optimizer: Any, scaler: Any, parameters: list[Any], grad_clip: float
                   ) -> float:
    """Unscale, clip to ``grad_clip`` (global norm), step; returns the pre-clip norm."""
    import torch

    if scaler is not None:
        scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(norm)


# ---------------------------------------------------------------------------
# checkpoints


class Checkpoints:
    """``OUT/training/checkpoints/step-XXXXXXXX/``: weights, optimizer/scheduler/RNG, meta."""

    def __init__(self, out_dir: Path, keep: int) -> None:
        self.folder = out_dir / TRAINING_DIR / CHECKPOINTS_DIR
        self.keep = keep

    def save(self, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any],
             meta: dict[str, Any]) -> Path:
        """Write one checkpoint atomically (temp folder, then rename); prune old ones."""
        import torch
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"step-{step:08d}"
        temporary = self.folder / f".step-{step:08d}.tmp{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()},
                  str(temporary / "weights.safetensors"))
        torch.save({**state, "rng": rng_state()}, temporary / "state.pt")
        (temporary / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        for old in self.all()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def all(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("step-*")
                      if (p / "meta.json").is_file() and (p / "state.pt").is_file())

    def latest(self) -> Path:
        """The newest checkpoint; InputError naming the folder when there is none."""
        found = self.all()
        if not found:
            raise InputError(f"--resume: no checkpoint in {self.folder}")
        return found[-1]

    @staticmethod
    def load(path: Path, command: str
             ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
        """(weights, state, meta) of one checkpoint folder; InputError naming the file that is
        missing, truncated, not a checkpoint at all or missing an entry. ``state.pt`` is read
        with ``weights_only=True``: tensors and plain containers, never arbitrary objects."""
        import torch
        from safetensors.torch import load_file

        weights: dict[str, torch.Tensor] = _read_checkpoint_file(
            path, "weights.safetensors", command, lambda file: load_file(str(file)))
        state: Any = _read_checkpoint_file(path, "state.pt", command, lambda file: torch.load(
            file, map_location="cpu", weights_only=True))
        meta: Any = _read_checkpoint_file(path, "meta.json", command,
                                          lambda file: json.loads(file.read_text()))
        where = f"--resume in {command}: checkpoint {path}"
        fix = f"remove {path} to resume from the checkpoint before it, or start a new --out"
        if not isinstance(state, dict) or not all(
                isinstance(state.get(key), dict) for key in STATE_ENTRIES):
            found = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise InputError(f"{where}: expected state.pt to hold {', '.join(STATE_ENTRIES)}, "
                             f"got {found}; {fix}")
        step = meta.get("step") if isinstance(meta, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InputError(f"{where}: expected meta.json to hold the step (an integer >= 0), "
                             f"got {step!r}; {fix}")
        return weights, state, meta


def _read_checkpoint_file(folder: Path, name: str, command: str,
                          read: Callable[[Path], Any]) -> Any:
    """``read(folder / name)``; InputError naming the file and what is wrong with it."""
    file = folder / name
    try:
        return read(file)
    except Exception as error:  # torch, safetensors and json raise assorted types
        if not file.is_file():
            what = "missing"
        elif file.stat().st_size == 0:
            what = "empty (0 bytes)"
        else:
            detail = (str(error).strip().splitlines() or [""])[0][:160]
            what = f"unreadable ({type(error).__name__}{': ' + detail if detail else ''})"
        raise InputError(f"--resume in {command}: checkpoint file {file} is {what}: expected "
                         f"the {name} a checkpoint writes (truncated, or not a checkpoint); "
                         f"remove {folder} to resume from the checkpoint before it, or start "
                         f"a new --out") from error


def prefixed_state(prefix: str, module: Any, only_trainable: bool = True
                   ) -> dict[str, torch.Tensor]:
    """``prefix.name`` -> tensor for a module's (trainable) parameters and buffers."""
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    return {f"{prefix}.{name}": tensor for name, tensor in module.state_dict().items()
            if not only_trainable or name in trainable}


def check_checkpoint_fits(path: Path, command: str, source: str, meta: dict[str, Any],
                          expected: dict[str, tuple[int, ...]],
                          weights: dict[str, torch.Tensor]) -> None:
    """InputError unless the checkpoint at ``path`` was written by ``command`` (when its
    meta says: older checkpoints do not) and holds exactly the ``expected`` weights of the
    model ``source`` (name -> shape), naming the keys missing or unexpected, or the first
    shape that differs with both shapes."""
    where = f"--resume in {command}: checkpoint {path}"
    written_by = meta.get("command")
    written_from = f" ({meta['source']})" if meta.get("source") else ""
    if written_by is not None and written_by != command:
        raise InputError(f"{where} was written by {written_by}{written_from}, expected one "
                         f"written by {command}: resume it with {written_by}, or give {command} "
                         f"a new --out")
    fix = (f"resume with the same command and model folder as the run that wrote it"
           f"{written_from}, or start a new --out")
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

        parts = ([f"{len(missing)} weight(s) missing ({some(missing)})"] if missing else []) + (
            [f"{len(unexpected)} unexpected ({some(unexpected)})"] if unexpected else [])
        raise InputError(f"{where} does not fit this {command} run: {'; '.join(parts)}; {fix}")
    for key, shape in expected.items():
        if tuple(weights[key].shape) != shape:
            raise InputError(f"{where} does not fit this model: {key} has shape "
                             f"{list(weights[key].shape)} in the checkpoint, expected "
                             f"{list(shape)}{f' ({source})' if source else ''}; {fix}")


def load_prefixed(prefix: str, module: Any, weights: dict[str, torch.Tensor]) -> int:
    """Load the ``prefix.*`` entries of ``weights`` into ``module``; how many were loaded.

    Not strict: a projection checkpoint holds the trainable weights only. Callers
    check the keys and shapes first (:func:`check_checkpoint_fits`)."""
    own = {k[len(prefix) + 1:]: v for k, v in weights.items() if k.startswith(prefix + ".")}
    if own:
        module.load_state_dict(own, strict=False)
    return len(own)


def check_optimizer_state(state: dict[str, Any], parameters: list[Any]) -> None:
    """ValueError unless every per-parameter tensor of an optimizer state dict (AdamW's
    ``exp_avg``, ``exp_avg_sq``) has its parameter's shape; ``load_state_dict`` checks
    only the number of parameters in each group."""
    for index, entries in state.get("state", {}).items():
        if not isinstance(index, int) or not 0 <= index < len(parameters):
            raise ValueError(f"state for parameter {index!r} of {len(parameters)}")
        for name, value in entries.items():
            shape = tuple(parameters[index].shape)
            if hasattr(value, "shape") and value.dim() > 0 and tuple(value.shape) != shape:
                raise ValueError(f"{name} of parameter {index} has shape {list(value.shape)}, "
                                 f"expected {list(shape)}")


# ---------------------------------------------------------------------------
# logging and progress


class RunLog:
    """``OUT/training/log.jsonl``: one JSON line per logged step (appended on resume)."""

    def __init__(self, out_dir: Path, resume: bool) -> None:
        self.path = out_dir / TRAINING_DIR / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume and self.path.exists():
            self.path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


class Progress:
    """A rich progress bar with loss and throughput; silent when disabled."""

    def __init__(self, enabled: bool, description: str, total: int, completed: int) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn())
            self._progress.start()
            self._task = self._progress.add_task(description, total=total, completed=completed,
                                                 loss="-", rate="")

    def update(self, completed: int, loss: float, samples_per_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, loss=f"{loss:.4f}",
                                  rate=f"{samples_per_s:.1f} clips/s")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextlib.contextmanager
def timed() -> Iterator[Callable[[], float]]:
    """``with timed() as elapsed: ...; elapsed()`` seconds since entry."""
    began = time.perf_counter()
    yield lambda: time.perf_counter() - began


@dataclass
class Trainer:
    """One run's optimiser side, the harness projection training and distillation share.

    :meth:`open` builds AdamW, the warm-up schedule, the precision and its
    scaler, and the checkpoint folder; seeds the run; on ``resume`` loads the
    latest checkpoint into ``modules`` (by name), the optimiser, schedule,
    scaler and RNG (refusing, naming the checkpoint, one written by another
    command, of another model or of a run with other settings); and
    writes ``OUT/training/config.json``. Each trainer brings its own model,
    loss and validation, and calls :meth:`save` from ``run_steps``.
    """

    command: str
    config: RunConfig
    out_dir: Path
    modules: dict[str, Any]
    only_trainable: bool
    optimizer: Any
    lr_schedule: Any
    cast_dtype: Any
    scaler: Any
    checkpoints: Checkpoints
    start: int = 0
    source: str = ""

    @classmethod
    def open(cls, command: str, config: RunConfig, out_dir: Path, modules: dict[str, Any],
             parameters: list[Any], device: torch.device, *, resume: bool,
             resume_fields: tuple[str, ...], record: dict[str, Any], source: str = "",
             only_trainable: bool = True) -> Trainer:
        """The harness of a new or resumed run (see the class docstring). ``source`` names
        the model the run starts from (``--model out/tiny-model``); checkpoints record it
        with ``command``, so that a resume by another command or model can say so."""
        import torch

        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        cast_dtype = resolve_precision(config.precision, device)
        trainer = cls(command, config, out_dir, modules, only_trainable, optimizer,
                      constant_with_warmup(optimizer, config.warmup_steps), cast_dtype,
                      make_scaler(cast_dtype), Checkpoints(out_dir, config.keep_checkpoints),
                      source=source)
        seed_everything(config.seed)
        if resume:
            trainer.restore(trainer.checkpoints.latest(), parameters, resume_fields)
        (out_dir / "training").mkdir(parents=True, exist_ok=True)
        (out_dir / "training" / "config.json").write_text(json.dumps(
            {"command": command, **record, **config.as_dict()}, indent=2) + "\n")
        return trainer

    def expected_weights(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of what :meth:`save` writes for this run's modules."""
        return {key: tuple(tensor.shape) for name, module in self.modules.items()
                for key, tensor in prefixed_state(name, module, self.only_trainable).items()}

    def restore(self, path: Path, parameters: list[Any], resume_fields: tuple[str, ...]
                ) -> None:
        """Load the checkpoint at ``path``: weights, optimiser, schedule, scaler, RNG, step.

        Everything is checked before anything is loaded (the command that wrote it,
        the weights' names and shapes, the run settings), and a failure is an
        InputError naming the checkpoint, never a half-restored run or a traceback.
        """
        weights, state, meta = Checkpoints.load(path, self.command)
        check_checkpoint_fits(path, self.command, self.source, meta, self.expected_weights(),
                              weights)
        check_resume_config(state["config"], self.config, resume_fields)
        try:
            check_optimizer_state(state["optimizer"], parameters)
            for name, module in self.modules.items():
                load_prefixed(name, module, weights)
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_schedule.load_state_dict(state["lr_schedule"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as error:
            # torch's own checks: parameter groups of another size, a malformed state
            raise InputError(f"--resume in {self.command}: checkpoint {path} does not fit this "
                             f"run's optimiser state ({type(error).__name__}: {error}); resume "
                             f"with the same command and model folder as the run that wrote "
                             f"it, or start a new --out") from error
        self.start = int(meta["step"])

    def save(self, step: int, loss: float) -> None:
        """A checkpoint of every module's weights and the optimiser side at ``step``."""
        weights: dict[str, Any] = {}
        for name, module in self.modules.items():
            weights.update(prefixed_state(name, module, self.only_trainable))
        self.checkpoints.save(step, weights, {
            "optimizer": self.optimizer.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "config": self.config.as_dict()},
            {"loss": loss, "command": self.command, "source": self.source})

    def write_summary(self, summary: dict[str, Any]) -> None:
        """``OUT/training/summary.json``: what the run did."""
        (self.out_dir / "training" / "summary.json").write_text(
            json.dumps(summary, indent=2) + "\n")


def run_steps(
    command: str,
    config: RunConfig,
    start: int,
    train_count: int,
    micro_loss: Callable[[list[int], torch.Generator], torch.Tensor],
    optimizer: Any,
    scaler: Any,
    parameters: list[Any],
    lr_schedule: Any,
    device: torch.device,
    result: Any,
    log: RunLog,
    bar: Progress,
    validate: Callable[[int], tuple[str, float] | None],
    save: Callable[[int, float], None],
    after_step: Callable[[], None] | None = None,
    stream: str = "train",
) -> float:
    """The optimisation loop both trainers run, from ``start`` to ``config.steps``.

    Each step accumulates ``config.accumulate`` micro-batches of
    ``micro_loss(indices, generator)`` (indices and generator are pure
    functions of the seed and the micro-step, for exact resume), steps the
    optimizer and schedule, then ``after_step`` (an EMA update, say). It
    logs every ``log_every`` steps, calls ``validate(step)`` every
    ``validate_every`` (it returns ``(name, value)`` or None), and
    ``save(step, loss)`` every ``checkpoint_every`` and at the end. Losses go
    to ``result.train_loss``/``val_loss`` and ``result.step``; returns the
    clips per second of training time.
    """
    import math

    import torch

    from ground.errors import Art2MusError

    clips_done, train_seconds = 0, 0.0
    window_loss, window_count = 0.0, 0
    try:
        for step in range(start, config.steps):
            with timed() as elapsed:
                optimizer.zero_grad(set_to_none=True)
                step_loss = 0.0
                for micro in range(config.accumulate):
                    m = step * config.accumulate + micro
                    index = batch_indices(train_count, config.batch_size, m, config.seed)
                    loss = micro_loss(index, step_generator(config.seed, m, stream))
                    scaled = loss / config.accumulate
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    step_loss += float(loss.detach()) / config.accumulate
                optimizer_step(optimizer, scaler, parameters, config.grad_clip)
                lr_schedule.step()
                if after_step is not None:
                    after_step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                train_seconds += elapsed()
            if not math.isfinite(step_loss):
                raise Art2MusError(f"{command}: loss is {step_loss} at step {step + 1}; lower "
                                   f"--lr or use --precision fp32")
            clips_done += config.batch_size * config.accumulate
            window_loss += step_loss
            window_count += 1
            done = step + 1
            rate = clips_done / max(train_seconds, 1e-9)
            bar.update(done, step_loss, rate)
            record: dict[str, Any] = {}
            if done % config.log_every == 0 or done == config.steps:
                record = {"step": done, "loss": window_loss / window_count,
                          "lr": lr_schedule.get_last_lr()[0], "clips_per_s": rate}
                result.train_loss.append((done, window_loss / window_count))
                window_loss, window_count = 0.0, 0
            if config.validate_every and (
                    done % config.validate_every == 0 or done == config.steps):
                outcome = validate(done)
                if outcome is not None:
                    name, value = outcome
                    result.val_loss.append((done, value))
                    record = {**record, "step": done, name: value}
            if record:
                log.write(record)
            if (config.checkpoint_every and done % config.checkpoint_every == 0) \
                    or done == config.steps:
                save(done, step_loss)
            result.step = done
    finally:
        bar.close()
    return clips_done / train_seconds if train_seconds else 0.0


# ---------------------------------------------------------------------------
# the output model folder


def link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link ``source`` to ``destination`` (copy across file systems); replaces it."""
    if destination.exists() or destination.is_symlink():
        destination.unlink()
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def check_out_differs(base: Path, out: Path, command: str, option: str) -> None:
    """InputError unless ``out`` and the source model folder ``base`` are different folders
    (resolved: a symlink or relative path to ``base`` is ``base``). Called before any caching
    or training, so the mistake costs nothing; write_model_folder checks again."""
    if out.resolve() == base.resolve():
        raise InputError(f"--out in {command}: expected a folder other than the source model "
                         f"folder ({option} {base}), got {out}")


def write_model_folder(base: Path, out: Path, replaced: set[str]) -> None:
    """Make ``out`` a model folder: ``base``'s parts linked, except the names in ``replaced``.

    Replaced parts are removed first and written by the caller afterwards, so
    writing them never goes through a hard link into ``base``.
    """
    from engine.generators.diffusion.model import (
        IMAGE_PROJECTION_FILE,
        SPEC_FILE,
        SUBFOLDERS,
        SUPPORT_PROMPT_FILE,
    )

    if out.resolve() == base.resolve():
        raise InputError(f"--out must differ from the source model folder {base}")
    out.mkdir(parents=True, exist_ok=True)
    for name in (*SUBFOLDERS, SPEC_FILE, IMAGE_PROJECTION_FILE, SUPPORT_PROMPT_FILE):
        source, destination = base / name, out / name
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        elif destination.exists() or destination.is_symlink():
            destination.unlink()
        if name in replaced:
            continue
        if source.is_dir():
            shutil.copytree(source, destination, copy_function=lambda s, d: link_or_copy(
                Path(s), Path(d)))
        else:
            link_or_copy(source, destination)
