"""The Generator seam: what every generator implements, and how several are served at once.

A generator is driven by :mod:`engine.streaming` in three calls:

1. ``prepare(view)`` once per artwork change: the conditioning (for the
   procedural generator, the musical decisions derived from the descriptor;
   for a diffusion model, the cross-attention tokens). Cached by the session.
2. ``start(condition, seed, start_sample, previous)`` opens a stream at a
   timeline position; ``previous`` (the state being replaced, or None) lets
   the generator keep musical context (key, bar phase) across a transition.
3. ``generate(state, condition, frames)`` returns the next ``frames`` of
   audio, sample-continuous with the previous call, and the new state. A
   state is consumed by the call that receives it (it may own a synthesiser).

The live knobs (:class:`RoomControls`, from the table in :mod:`ground.params`)
reach a generator through ``apply_controls(view, condition, controls)``: what
intensity, brightness and tempo bias mean is each generator's own, and the
session only caches the result and plays it as a transition.

A generator that can serve several rooms in one call (the diffusion model,
one UNet batch for every room due together) also has ``generate_batch``
(:class:`BatchGenerator`); :func:`generate_many` uses it where it exists and
otherwise calls ``generate`` room by room, so the procedural and sine
generators need nothing new. Each request carries its own room's state and
condition; the generator never mixes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ground.params import PARAMETERS, Parameter, shown
from ground.protocol import ArtworkView

#: The parameters a generator's ``apply_controls`` reads, in table order.
_CONDITION_PARAMETERS = tuple(p for p in PARAMETERS.values() if p.replans == "condition")
#: Saved control fields renamed since, old name -> new (:meth:`RoomControls.from_saved`).
_RENAMED_FIELDS = {"key": "tonic"}
#: The parameter each saved control field holds (:meth:`RoomControls.from_saved`).
_SAVED_PARAMETERS: dict[str, Parameter] = {
    p.field: p for p in PARAMETERS.values() if p.role == "engine" and p.field is not None}


@dataclass(frozen=True)
class BarSync:
    """An outside bar grid (a Link session's, a MIDI clock's) on the room's timeline.

    Its bar lines fall at timeline samples ``phase + k * beats * 60 / bpm *
    sample_rate``; ``beats`` is 1 where only the beat is known (a MIDI clock
    joined without Start or Song Position). A generator with a bar grid
    starts its bars on these lines while its tempo is ``bpm``; one without
    ignores it.
    """

    phase: int  # timeline sample of one bar line, in 0 .. one bar
    beats: int  # beats (quarter notes) per outside bar
    bpm: float

    def bar_samples(self, sample_rate: int) -> float:
        """Length of one outside bar in timeline samples."""
        return self.beats * 60.0 / self.bpm * sample_rate


@dataclass(frozen=True)
class RoomControls:
    """The live parameters of one room (neutral values change nothing).

    One field per engine parameter of :data:`ground.params.PARAMETERS` (its
    ``field``); a test keeps the two in step. ``sync`` is not a parameter: it
    is the outside bar grid the room follows, set from the sync sources
    (:meth:`engine.streaming.RoomSession.set_sync`), never saved (it belongs
    to one playback timeline).
    """

    intensity: float = 0.5
    brightness: float = 0.5
    tempo_bias: float = 0.0
    tempo_bpm: float = 0.0  # 0: the artwork's
    tonic: int = -1  # -1: the artwork's; else a pitch class
    mode: int = -1  # -1: the artwork's; else an index into ground.params.MODES
    transition_s: float | None = None  # None: the config's transition_crossfade_s
    freeze: bool = False
    variation: int = 0
    sync: BarSync | None = None

    @property
    def shapes_condition(self) -> tuple[float, ...]:
        """The values that change the generator's condition (variation changes the seed)."""
        values = tuple(round(getattr(self, p.field or p.name), 3) for p in _CONDITION_PARAMETERS)
        if self.sync is None:
            return values
        return (*values, self.sync.phase, self.sync.beats, self.sync.bpm)

    @property
    def neutral(self) -> bool:
        """True when the condition is the artwork's own."""
        return self.shapes_condition == tuple(round(p.default, 3) for p in _CONDITION_PARAMETERS)

    def saved(self) -> dict[str, Any]:
        """The fields a restarted engine takes back (the parameters; not the sync grid)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sync"}

    @classmethod
    def from_saved(cls, saved: object) -> RoomControls:
        """The controls :meth:`saved` wrote, also from an older engine's file.

        Each value passes the check a live one does (:meth:`ground.params.Parameter.clamp`,
        as :meth:`engine.streaming.RoomSession.set_controls` applies it): a finite number,
        clamped to its parameter's range and held as its field holds it. A hand-edited or
        damaged file (``"tonic": "C"``, ``"tempo_bpm": 1e9``) made every restart of the
        engine crash, or played and saved values no knob can set. ``transition_s`` may be
        None (the config's crossfade). ``sync`` is dropped: it comes from the live sync
        source, never from a file.

        An older engine's file names the tonic ``key`` (renamed: OSC out sends the
        key's full name on ``/art2mus/ROOM/key``). ValueError naming the field for a
        value refused; TypeError for an unknown field, as the constructor raises.
        """
        if not isinstance(saved, Mapping):
            raise ValueError(f"controls: expected an object of parameters, got "
                             f"{type(saved).__name__}")
        fields_ = dict(saved)
        for old, new in _RENAMED_FIELDS.items():
            if old in fields_ and new not in fields_:
                fields_[new] = fields_.pop(old)
        fields_.pop("sync", None)
        unknown = [name for name in fields_ if name not in _SAVED_PARAMETERS]
        if unknown:
            listed = ", ".join(shown(name) for name in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise TypeError(f"controls: unknown field {listed}{more}; expected some of "
                            f"{sorted(_SAVED_PARAMETERS)}")
        neutral = cls()
        values: dict[str, Any] = {}
        for name, raw in fields_.items():
            if raw is None and getattr(neutral, name) is None:  # transition_s: the config's
                values[name] = None
                continue
            parameter = _SAVED_PARAMETERS[name]
            try:
                values[name] = parameter.typed(parameter.clamp(raw))
            except ValueError as error:
                raise ValueError(f"controls.{name}: {error}") from None
        return cls(**values)


@dataclass(frozen=True)
class Generated:
    """One generated block: float32 audio (frames, channels) and its notes.

    ``notes`` is int32 (N, 6): start offset in frames from the block start,
    length in frames, MIDI pitch, velocity, GM program (128 = percussion),
    MIDI channel. Generators without notes return an empty (0, 6) array.
    """

    audio: np.ndarray
    notes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.int32))

    def __post_init__(self) -> None:
        if self.audio.ndim != 2 or self.audio.dtype != np.float32:
            raise ValueError(f"audio must be float32 (frames, channels), got "
                             f"{self.audio.dtype} {self.audio.shape}")
        if self.notes.ndim != 2 or self.notes.shape[1] != 6:
            raise ValueError(f"notes must be (N, 6), got {self.notes.shape}")


class Generator(Protocol):
    """What the streaming loop needs from a music generator."""

    sample_rate: int
    channels: int

    def prepare(self, view: ArtworkView) -> Any:
        """Conditioning for this view; computed once per artwork change."""
        ...

    def describe(self, condition: Any) -> dict[str, Any]:
        """The musical decisions behind ``condition``, JSON-ready, for the timeline."""
        ...

    def start(self, condition: Any, seed: int, start_sample: int, previous: Any | None) -> Any:
        """A new stream state positioned at ``start_sample`` on the room timeline."""
        ...

    def generate(self, state: Any, condition: Any, frames: int) -> tuple[Generated, Any]:
        """The next ``frames`` of audio after ``state``, and the state after them."""
        ...

    def apply_controls(self, view: ArtworkView, condition: Any, controls: RoomControls) -> Any:
        """``condition`` (``prepare(view)``) under non-neutral ``controls``.

        Called only when ``controls.neutral`` is False; the result is cached by
        the session per (view, ``controls.shapes_condition``). A generator
        whose condition no knob can move returns ``condition``.
        """
        ...


#: One room's request in a batch: (its stream state, its condition, frames wanted).
Request = tuple[Any, Any, int]


@runtime_checkable
class BatchGenerator(Generator, Protocol):
    """A generator that serves several rooms' requests in one call."""

    def generate_batch(self, requests: Sequence[Request]) -> list[tuple[Generated, Any]]:
        """Each request's next frames and new state, in request order (as ``generate`` would)."""
        ...


def can_batch(generator: Generator) -> bool:
    """True when ``generator`` serves several rooms in one call."""
    return isinstance(generator, BatchGenerator)


def generate_many(generator: Generator, requests: Sequence[Request]
                  ) -> list[tuple[Generated, Any]]:
    """Every request served: in one ``generate_batch`` call where the generator batches,
    else by ``generate``, one request after the other."""
    if isinstance(generator, BatchGenerator):
        results = generator.generate_batch(requests)
        if len(results) != len(requests):
            raise RuntimeError(f"generate_batch returned {len(results)} results for "
                               f"{len(requests)} requests")
        return results
    return [generator.generate(state, condition, frames) for state, condition, frames in requests]
