"""SoundFont rendering and effects for the procedural generator: notes in, float32 audio out.

Where it sits: :class:`~engine.generators.procedural.composer.Composer` writes notes with
absolute timeline starts; :class:`SoundFontRenderer` plays them through
TinySoundFont (a General MIDI ``.sf2``, by default the TimGM6mb that
``pretty_midi`` ships) and a streaming effect chain, one :class:`RenderState`
per stream.

Block-size independence. The synth always advances in fixed *quanta*
(``render_quantum`` frames, aligned to the stream start) and within a quantum
splits its rendering exactly at note-on/off samples, so events are
frame-accurate and the synth sees the same sequence of render calls whatever
block sizes the caller asks for. Frames rendered past the end of a request
wait in a small FIFO for the next call. The effects (pedalboard, processed
with ``reset=False``) are sample-recursive and so do not care how the stream
is cut; the loudness follower updates once per quantum. Asking for 3 s at
once or in 0.37 s blocks therefore gives the same samples.

Chain: TinySoundFont -> high-pass 35 Hz (rumble) -> low shelf, high shelf and
low-pass set by timbre brightness (a spectral tilt) -> Freeverb-style reverb -> gentle compressor ->
loudness follower (slow AGC towards ``target_lufs``) -> look-ahead brick-wall
limiter at ``ceiling_db``.
"""

from __future__ import annotations

import heapq
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pedalboard
import tinysoundfont

from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.mapping import PERCUSSION_PROGRAM, ROLE_CHANNELS, MusicalDecisions
from ground.errors import DependencyError, InputError

#: Level (dB, relative to the melody) and pan (CC10) per role: melody forward,
#: pad and counter behind, texture to one side.
ROLE_MIX: dict[str, tuple[float, int]] = {
    "pad": (-5.0, 64),
    "melody": (0.0, 56),
    "bass": (-3.0, 64),
    "texture": (-8.0, 84),
    "counter": (-7.0, 40),
    "percussion": (-12.0, 72),
}
#: Reference pitch per role for measuring a program's level.
_PROBE_PITCH: dict[str, int] = {"pad": 60, "melody": 72, "bass": 40, "texture": 72, "counter": 60}
#: GM programs differ by 20 dB and more in a soundfont (a piano against a
#: pad); each is measured once and scaled (CC7, attenuation only) to this level.
_PROGRAM_REFERENCE_DB = -36.0
#: RMS-to-LUFS calibration of the loudness follower: our plain mean-square
#: level sits this many dB below the BS.1770 integrated loudness of the same
#: material (measured on the default soundfont with pyloudnorm).
_LEVEL_TO_LUFS_DB = 1.5
_AGC_ATTACK_S = 0.4
_AGC_RELEASE_S = 3.0
_AGC_MAX_BOOST_DB = 12.0
_AGC_MAX_CUT_DB = 24.0
_AGC_GATE_BELOW_DB = 30.0
#: TinySoundFont master gain: puts a typical plan near the target before the follower acts.
_SYNTH_GAIN_DB = 38.0


class NoteSource(Protocol):
    """Anything that lists notes by absolute start time (the composer)."""

    def notes_between(self, t0: int, t1: int) -> np.ndarray:
        """Int rows (start, length, pitch, velocity, program, channel) with start in [t0, t1)."""
        ...


def default_soundfont() -> Path:
    """The TimGM6mb.sf2 that ships inside the ``pretty_midi`` package."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or spec.origin is None:
        raise DependencyError(
            "the procedural generator needs a SoundFont: install pretty_midi "
            "(pip install pretty_midi) or set [engine.procedural] soundfont = 'FILE.sf2'"
        )
    return Path(spec.origin).parent / "TimGM6mb.sf2"


def load_soundfont(config: ProceduralConfig) -> tuple[Path, bytes]:
    """Read and check the configured SoundFont; :class:`InputError` naming an unusable file."""
    path = Path(config.soundfont).expanduser() if config.soundfont else default_soundfont()
    where = "[engine.procedural] soundfont"
    if not path.is_file():
        raise InputError(
            f"SoundFont not found in {where}: expected an .sf2 file, got {str(path)!r}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"SoundFont unreadable in {where}: {str(path)!r}: {exc.strerror}") from exc
    try:
        tinysoundfont.Synth(samplerate=48000).sfload(data)
    except (RuntimeError, tinysoundfont.SoundFontException) as exc:
        raise InputError(
            f"SoundFont invalid in {where}: expected a SoundFont 2 file, got {str(path)!r} ({exc})"
        ) from exc
    return path, data


@dataclass
class RenderState:
    """Everything one stream's audio path carries between calls (owned by one stream).

    ``rendered`` is the timeline sample the synth renders next; ``served`` the
    one the next call returns first; ``fifo`` the processed frames in between
    that a previous call rendered but did not return (plus the limiter's
    look-ahead, which is inside the limiter).
    """

    synth: tinysoundfont.Synth
    effects: pedalboard.Pedalboard
    limiter: pedalboard.BrickwallLimiter
    target_db: float
    rendered: int
    served: int
    fifo: np.ndarray
    pending_offs: list[tuple[int, int, int, int]] = field(default_factory=list)
    off_counter: int = 0
    level_db: float = 0.0
    gain_db: float = 0.0

    def check(self) -> None:
        """Raise if the bookkeeping is inconsistent (a bug, not a user error)."""
        if self.fifo.ndim != 2 or self.fifo.shape[1] != 2 or self.fifo.dtype != np.float32:
            raise ValueError(
                f"fifo must be float32 (n, 2), got {self.fifo.dtype} {self.fifo.shape}"
            )
        if self.served + len(self.fifo) > self.rendered:
            raise ValueError(
                f"served {self.served} + fifo {len(self.fifo)} > rendered {self.rendered}"
            )


class SoundFontRenderer:
    """Note rows in, effect-processed audio out: frame-accurate and block-size independent."""

    def __init__(self, config: ProceduralConfig, sample_rate: int, channels: int) -> None:
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, got {channels}")
        self.config = config
        self.sample_rate = sample_rate
        self.channels = channels
        self.soundfont_path, self._soundfont = load_soundfont(config)
        self.quantum = config.render_quantum
        self._probe: tinysoundfont.Synth | None = None
        self._program_db: dict[tuple[int, int], float] = {}

    def program_level_db(self, program: int, pitch: int) -> float:
        """RMS level (dBFS) of one note of ``program`` at velocity 80 over 0.6 s; cached."""
        key = (program, pitch)
        if key not in self._program_db:
            if self._probe is None:
                self._probe = tinysoundfont.Synth(samplerate=self.sample_rate)
                self._probe.sfload(self._soundfont)
            probe = self._probe
            probe.program_select(0, 0, 0, program)
            probe.noteon(0, pitch, 80)
            frames = int(0.6 * self.sample_rate)
            audio = np.frombuffer(probe.generate_simple(frames), np.float32)
            probe.sounds_off(0)
            probe.generate_simple(self.sample_rate // 10)  # let the voice end before the next probe
            rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
            self._program_db[key] = 20.0 * math.log10(max(rms, 1e-6))
        return self._program_db[key]

    def channel_volume(self, role: str, program: int) -> int:
        """CC7 value that levels ``program`` to the role's place in the mix."""
        level, _ = ROLE_MIX[role]
        if program == PERCUSSION_PROGRAM:
            gain_db = level
        else:
            measured = self.program_level_db(program, _PROBE_PITCH[role])
            gain_db = _PROGRAM_REFERENCE_DB + level - measured
        # CC7 is linear amplitude in TinySoundFont (value / 127); it cannot boost.
        return max(1, min(127, round(127 * 10.0 ** (min(gain_db, 0.0) / 20.0))))

    def open(self, decisions: MusicalDecisions, start_sample: int) -> RenderState:
        """A fresh synth and effect chain for a stream starting at ``start_sample``."""
        synth = tinysoundfont.Synth(gain=_SYNTH_GAIN_DB, samplerate=self.sample_rate)
        sfid = synth.sfload(self._soundfont, max_voices=self.config.max_voices)
        for role, program in decisions.programs:
            channel = ROLE_CHANNELS[role]
            if program == PERCUSSION_PROGRAM:
                synth.program_select(channel, sfid, 0, 0, is_drums=True)
            else:
                synth.program_select(channel, sfid, 0, program)
            synth.control_change(channel, 7, self.channel_volume(role, program))
            synth.control_change(channel, 10, ROLE_MIX[role][1])
        bright = decisions.brightness
        room = decisions.reverb
        effects = pedalboard.Pedalboard(
            [
                pedalboard.HighpassFilter(cutoff_frequency_hz=35.0),
                # Timbre brightness as a spectral tilt: warm images get a lighter
                # low end and an open top, cool ones a fuller low end and a soft top.
                pedalboard.LowShelfFilter(cutoff_frequency_hz=250.0, gain_db=3.0 - 9.0 * bright),
                pedalboard.HighShelfFilter(
                    cutoff_frequency_hz=1500.0, gain_db=-8.0 + 12.0 * bright
                ),
                pedalboard.LowpassFilter(cutoff_frequency_hz=3500.0 * (16000.0 / 3500.0) ** bright),
                pedalboard.Reverb(
                    room_size=0.5 + 0.45 * room,
                    damping=0.65 - 0.35 * bright,
                    wet_level=0.12 + 0.33 * room,
                    dry_level=0.85 - 0.35 * room,
                    width=1.0,
                ),
                pedalboard.Compressor(
                    threshold_db=-26.0, ratio=2.0, attack_ms=30.0, release_ms=300.0
                ),
            ]
        )
        limiter = pedalboard.BrickwallLimiter(
            ceiling_db=self.config.ceiling_db, release_ms=150.0, lookahead_ms=5.0
        )
        target_db = decisions.target_lufs - _LEVEL_TO_LUFS_DB
        return RenderState(
            synth=synth,
            effects=effects,
            limiter=limiter,
            target_db=target_db,
            rendered=int(start_sample),
            served=int(start_sample),
            fifo=np.zeros((0, 2), np.float32),
            level_db=target_db,
            gain_db=0.0,
        )

    def render(self, state: RenderState, notes: NoteSource, frames: int) -> np.ndarray:
        """The next ``frames`` of audio (float32, (frames, channels)) after ``state.served``."""
        state.check()
        chunks = [state.fifo]
        have = len(state.fifo)
        while have < frames:
            need = frames - have
            quanta = max(1, math.ceil(need / self.quantum))
            processed = self._render_quanta(state, notes, quanta)
            chunks.append(processed)
            have += len(processed)
        stream = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        out, state.fifo = stream[:frames], stream[frames:].copy()
        state.served += frames
        if self.channels == 1:
            return np.ascontiguousarray(out.mean(axis=1, keepdims=True), dtype=np.float32)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _render_quanta(self, state: RenderState, notes: NoteSource, quanta: int) -> np.ndarray:
        """Synthesise and process ``quanta`` whole quanta; returns what the limiter lets out."""
        q = self.quantum
        t0 = state.rendered
        t1 = t0 + quanta * q
        raw = np.zeros((quanta * q, 2), np.float32)
        view = memoryview(raw.data).cast("B")  # type: ignore[arg-type]
        synth = state.synth
        bytes_per_frame = 8  # stereo float32 interleaved

        new = notes.notes_between(t0, t1)
        ons = sorted(
            ((int(r[0]), int(r[5]), int(r[2]), int(r[3])) for r in new), key=lambda e: e[0]
        )
        for start, length, pitch, channel in (
            (int(r[0]), int(r[1]), int(r[2]), int(r[5])) for r in new
        ):
            state.off_counter += 1
            heapq.heappush(state.pending_offs, (start + length, state.off_counter, channel, pitch))
        on_index = 0
        # Segment boundaries: quantum lines and every event inside the span.
        t = t0
        while t < t1:
            quantum_end = t0 + ((t - t0) // q + 1) * q
            # Note-offs before note-ons at the same sample, so a re-struck pitch is not cut.
            while state.pending_offs and state.pending_offs[0][0] <= t:
                _, _, channel, pitch = heapq.heappop(state.pending_offs)
                synth.noteoff(channel, pitch)
            while on_index < len(ons) and ons[on_index][0] <= t:
                _, channel, pitch, velocity = ons[on_index]
                synth.noteon(channel, pitch, velocity)
                on_index += 1
            nxt = quantum_end
            if state.pending_offs:
                nxt = min(nxt, max(state.pending_offs[0][0], t + 1))
            if on_index < len(ons):
                nxt = min(nxt, ons[on_index][0])
            a, b = (t - t0) * bytes_per_frame, (nxt - t0) * bytes_per_frame
            synth.generate_simple(nxt - t, buffer=view[a:b])
            t = nxt
        state.rendered = t1

        wet = state.effects.process(raw.T, self.sample_rate, reset=False)
        wet = self._follow_loudness(state, wet, quanta)
        out = state.limiter.process(wet, self.sample_rate, reset=False)
        return np.ascontiguousarray(out.T, dtype=np.float32)

    def _follow_loudness(self, state: RenderState, wet: np.ndarray, quanta: int) -> np.ndarray:
        """Slow feed-forward AGC towards ``target_db``, one gain step per quantum, linearly ramped.

        Fast attack / slow release (like a broadcast loudness leveller) keeps
        the stream near its target while phrases still breathe; a gate
        freezes the estimate in near-silence so rests are not pumped up.
        """
        q = self.quantum
        power = np.square(wet, dtype=np.float64).reshape(2, quanta, q).mean(axis=(0, 2))
        seconds = q / self.sample_rate
        attack = 1.0 - math.exp(-seconds / _AGC_ATTACK_S)
        release = 1.0 - math.exp(-seconds / _AGC_RELEASE_S)
        gains = np.empty(quanta + 1)
        gains[0] = state.gain_db
        for i, p in enumerate(power):
            level = 10.0 * math.log10(p + 1e-20)
            if level > state.target_db - _AGC_GATE_BELOW_DB:
                coef = attack if level > state.level_db else release
                state.level_db += coef * (level - state.level_db)
            desired = state.target_db - state.level_db
            state.gain_db = min(max(desired, -_AGC_MAX_CUT_DB), _AGC_MAX_BOOST_DB)
            gains[i + 1] = state.gain_db
        linear = 10.0 ** (gains / 20.0)
        ramp = np.linspace(0.0, 1.0, q, endpoint=False)
        envelope = (linear[:-1, None] + (linear[1:] - linear[:-1])[:, None] * ramp).reshape(-1)
        return (wet * envelope.astype(np.float32)).astype(np.float32)
