"""SoundFont rendering and effects for the procedural generator: notes in, float32 audio out.

Where it sits: :class:`~engine.generators.procedural.composer.Composer` writes notes with
absolute timeline starts; :class:`SoundFontRenderer` plays them through
TinySoundFont (a General MIDI ``.sf2``/``.sf3``: by default the TimGM6mb that
``pretty_midi`` ships; ``soundfont = "auto"`` picks the best GM font installed,
:func:`resolve_soundfont`) and a streaming effect chain, one :class:`RenderState`
per stream. Synths of finished streams are reset and reused, since loading a
150 MB font takes most of a second.

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
loudness follower (ITU-R BS.1770 momentary loudness, K-weighted and gated,
energy-averaged over ~6 s, with a 2 s look-ahead, towards ``target_lufs``) ->
look-ahead brick-wall limiter at ``ceiling_db``. Measured with ``benchmarks/loudness.py``: every
artwork's integrated loudness within +/- 2 LU of the target.
"""

from __future__ import annotations

import fnmatch
import heapq
import importlib.util
import logging
import math
import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pedalboard
import scipy.signal

from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.mapping import PERCUSSION_PROGRAM, ROLE_CHANNELS, MusicalDecisions
from ground.errors import DependencyError, InputError

if TYPE_CHECKING:
    import tinysoundfont

#: The highest filter cutoff, as a fraction of the sample rate (under Nyquist's 0.5).
MAX_CUTOFF = 0.45
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
#: Loudness follower (ITU-R BS.1770 loudness of the stream, K-weighted, energy-
#: averaged): the estimate is the plain mean of every gated quantum so far until
#: it spans this long, then an exponential mean over this long, so a stream is
#: at its target from its first seconds and a phrase's swell still breathes.
_AGC_WINDOW_S = 6.0
_AGC_MAX_BOOST_DB = 20.0
_AGC_MAX_CUT_DB = 24.0
#: Momentary loudness (400 ms, BS.1770's block) this far below the estimate
#: (rests, reverb tails) does not count, as BS.1770's relative gate leaves it out
#: of integrated loudness.
_AGC_GATE_BELOW_DB = 10.0
_AGC_BLOCK_S = 0.4
_AGC_ABSOLUTE_GATE_LUFS = -70.0
#: The follower hears this far ahead of what it levels (a delay line inside the
#: stream's render-ahead, not added latency): a stream's first gain already knows
#: its first seconds, and a loud entry is met by a gain that has come down.
_AGC_LOOKAHEAD_S = 2.0
#: TinySoundFont master gain: puts a typical plan near the target before the follower acts.
_SYNTH_GAIN_DB = 38.0
#: Idle synths kept for reuse: a big font takes ~0.8 s and ~300 MB to load per synth.
_IDLE_SYNTHS_KEPT = 2

_log = logging.getLogger(__name__)


class NoteSource(Protocol):
    """Anything that lists notes by absolute start time (the composer)."""

    def notes_between(self, t0: int, t1: int) -> np.ndarray:
        """Int rows (start, length, pitch, velocity, program, channel) with start in [t0, t1)."""
        ...


#: How tinysoundfont is installed: apart, without its declared dependencies, since its
#: metadata requires PyAudio (its own live playback, which we never use), and PyAudio
#: only builds where the PortAudio headers are. So pyproject.toml cannot declare it and
#: `pip install .` leaves it out; the Makefile runs this line.
TINYSOUNDFONT_INSTALL = 'pip install --no-deps "tinysoundfont>=0.3.7"'


def require_tinysoundfont() -> ModuleType:
    """The ``tinysoundfont`` module, or :class:`DependencyError` naming the line that installs it.

    Imported here rather than with the module: a missing synth is then the user's
    missing dependency (exit code 4, which the supervisor stops restarting after
    ``max_config_failures``), said where the generator is built or checked, and
    this module (its font search, :class:`SoundFontChoice`) still imports.
    """
    try:
        import tinysoundfont
    except ImportError as exc:
        raise DependencyError(
            f"the procedural generator needs tinysoundfont, which is not installed ({exc}): "
            f"run {TINYSOUNDFONT_INSTALL} (--no-deps: it declares PyAudio, which we never use)"
        ) from None
    return tinysoundfont


def default_soundfont() -> Path:
    """The TimGM6mb.sf2 that ships inside the ``pretty_midi`` package (the fallback)."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or spec.origin is None:
        raise DependencyError(
            "the procedural generator needs a SoundFont: install pretty_midi "
            "(pip install pretty_midi) or set [engine.procedural] soundfont = 'FILE.sf2'"
        )
    return Path(spec.origin).parent / "TimGM6mb.sf2"


#: General MIDI SoundFonts ``soundfont = "auto"`` looks for, best first (file-name
#: patterns, matched case-insensitively). The order is our listening preference for
#: this music (pads, choirs, strings, winds): MuseScore General (S. Christian
#: Collins' rework of FluidR3) and GeneralUser GS (his own GM bank) are the most
#: even across programs; FluidR3 GM is full but uneven; the mono and small
#: variants trade detail for size. TinySoundFont reads .sf3 (Ogg Vorbis samples).
SOUNDFONT_PREFERENCE: tuple[str, ...] = (
    "musescore_general.sf2",  # musescore-general-soundfont-lossless
    "musescore_general.sf3",  # musescore-general-soundfont
    "generaluser*gs*.sf2",  # GeneralUser GS (unpacked by hand)
    "fluidr3_gm.sf2",  # fluid-soundfont-gm (Debian, Ubuntu, Fedora, Arch)
    "fluidr3_gs.sf2",  # fluid-soundfont-gs
    "fluidr3mono_gm.sf3",  # fluidr3mono-gm-soundfont
    "musescore_general*.sf3",  # musescore-general-soundfont-small and others
)
#: Folders searched after those in ``$ART2MUS_SOUNDFONT_DIRS`` (``os.pathsep``-separated):
#: the user's own, then where distributions install fonts (Debian and Ubuntu:
#: /usr/share/sounds/sf2 and sf3, also what TiMidity++ and FluidSynth use; Fedora,
#: Arch: /usr/share/soundfonts).
SOUNDFONT_DIRS: tuple[str, ...] = (
    "~/.local/share/soundfonts",
    "~/.soundfonts",
    "/usr/local/share/soundfonts",
    "/usr/share/soundfonts",
    "/usr/share/sounds/sf2",
    "/usr/share/sounds/sf3",
)
SOUNDFONT_DIRS_ENV = "ART2MUS_SOUNDFONT_DIRS"
_WHERE = "[engine.procedural] soundfont"


@dataclass(frozen=True)
class SoundFontChoice:
    """The SoundFont a renderer plays: where it is, why it was chosen, what was passed over."""

    path: Path
    reason: str  # "configured", "shipped", "auto" or "auto-fallback"
    skipped: tuple[str, ...] = ()  # "<path>: <why>" of broken candidates "auto" passed over

    @property
    def name(self) -> str:
        """The file name, as logs and the demo summary show it (``FluidR3_GM.sf2``)."""
        return self.path.name

    def describe(self) -> str:
        """One line for logs and ``check-config --deep``: the font and how it was chosen."""
        how = {
            "configured": "as configured",
            "shipped": "the small GM font pretty_midi ships",
            "auto": "auto: the best General MIDI font installed",
            "auto-fallback": "auto: no better General MIDI font installed, using the one "
            "pretty_midi ships (sudo apt install fluid-soundfont-gm for a fuller sound)",
        }[self.reason]
        return f"SoundFont {self.name} ({how}) at {self.path}"


def soundfont_search_dirs() -> list[Path]:
    """Where ``"auto"`` looks, in order: ``$ART2MUS_SOUNDFONT_DIRS``, then the usual folders."""
    extra = [d for d in os.environ.get(SOUNDFONT_DIRS_ENV, "").split(os.pathsep) if d.strip()]
    return [Path(d).expanduser() for d in (*extra, *SOUNDFONT_DIRS)]


def find_soundfonts(dirs: list[Path] | None = None) -> list[Path]:
    """Installed GM SoundFonts with a name in :data:`SOUNDFONT_PREFERENCE`, best first.

    Ranked by the name's place in the preference, then by the folder's place in
    ``dirs``; the same file reached twice (Debian's ``default-GM.sf2`` links) counts once.
    """
    ranked: list[tuple[int, int, str, Path]] = []
    for d_index, folder in enumerate(soundfont_search_dirs() if dirs is None else dirs):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue  # a folder that is not there is the common case
        for name in names:
            lower = name.casefold()
            for p_index, pattern in enumerate(SOUNDFONT_PREFERENCE):
                if fnmatch.fnmatchcase(lower, pattern):
                    ranked.append((p_index, d_index, name, folder / name))
                    break
    seen: set[Path] = set()
    found: list[Path] = []
    for *_, path in sorted(ranked):
        real = path.resolve()
        if real not in seen and path.is_file():
            seen.add(real)
            found.append(path)
    return found


def check_soundfont(
    path: Path, sample_rate: int = 48000, max_voices: int = 256
) -> tinysoundfont.Synth:
    """Load ``path`` into a synth and check it is General MIDI; :class:`InputError` if not.

    GM means a preset for each of the 128 programs in bank 0 and a drum kit
    (bank 128, preset 0): the palettes may pick any program.
    :class:`DependencyError` without tinysoundfont.
    """
    tsf = require_tinysoundfont()
    if not path.is_file():
        raise InputError(
            f"SoundFont not found in {_WHERE}: expected an .sf2/.sf3 file, got {str(path)!r}"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"SoundFont unreadable in {_WHERE}: {str(path)!r}: {exc.strerror}"
        ) from exc
    synth = tsf.Synth(gain=_SYNTH_GAIN_DB, samplerate=sample_rate)
    try:
        sfid = synth.sfload(raw, max_voices=max_voices)
    except (RuntimeError, tsf.SoundFontException) as exc:
        raise InputError(
            f"SoundFont invalid in {_WHERE}: expected a SoundFont 2 file, got {str(path)!r} ({exc})"
        ) from exc
    missing = [p for p in range(128) if synth.sfpreset_name(sfid, 0, p) is None]
    if synth.sfpreset_name(sfid, 128, 0) is None:
        missing.append(128)  # stands for the drum kit in the message below
    if missing:
        raise InputError(
            f"SoundFont not General MIDI in {_WHERE}: expected presets for programs 0-127 "
            f"and a drum kit, got {str(path)!r} lacking {len(missing)} "
            f"(first: {'drum kit' if missing[0] == 128 else f'program {missing[0]}'})"
        )
    return synth


def resolve_soundfont(
    config: ProceduralConfig, sample_rate: int = 48000, dirs: list[Path] | None = None
) -> tuple[SoundFontChoice, tinysoundfont.Synth]:
    """The font ``config.soundfont`` names, loaded and checked, and a synth holding it.

    ``None``: the shipped TimGM6mb. A path: that file, or :class:`InputError`.
    ``"auto"``: the best font :func:`find_soundfonts` lists that loads and is GM
    (a broken one is skipped with a warning naming it), else the shipped one.
    The synth is returned so the check's load is not wasted (loading a 150 MB
    font takes most of a second). :class:`DependencyError` without tinysoundfont,
    before any font is looked for.
    """
    require_tinysoundfont()
    if config.soundfont == "auto":
        skipped: list[str] = []
        for path in find_soundfonts(dirs):
            try:
                synth = check_soundfont(path, sample_rate, config.max_voices)
            except InputError as exc:
                _log.warning("soundfont = 'auto': skipping %s: %s", path, exc)
                skipped.append(f"{path}: {exc}")
                continue
            return SoundFontChoice(path, "auto", tuple(skipped)), synth
        path = default_soundfont()
        return SoundFontChoice(path, "auto-fallback", tuple(skipped)), check_soundfont(
            path, sample_rate, config.max_voices
        )
    if config.soundfont:
        path = Path(config.soundfont).expanduser()
        return SoundFontChoice(path, "configured"), check_soundfont(
            path, sample_rate, config.max_voices
        )
    path = default_soundfont()
    return SoundFontChoice(path, "shipped"), check_soundfont(path, sample_rate, config.max_voices)


def k_weighting(sample_rate: int) -> np.ndarray:
    """The ITU-R BS.1770-4 K-weighting pre-filter as second-order sections (shelf, high-pass).

    pyloudnorm's design, so the follower hears what ``Meter`` measures at any rate.
    """
    from pyloudnorm.iirfilter import IIRfilter

    shelf = IIRfilter(4.0, 1 / math.sqrt(2), 1500.0, sample_rate, "high_shelf")
    high_pass = IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass")
    return np.array([[*f.b, *f.a] for f in (shelf, high_pass)], np.float64)


@dataclass
class RenderState:
    """Everything one stream's audio path carries between calls (owned by one stream).

    ``rendered`` is the timeline sample the synth renders next; ``served`` the
    one the next call returns first; ``fifo`` the processed frames in between
    that a previous call rendered but did not return (plus the limiter's
    look-ahead, which is inside the limiter). The loudness follower keeps its
    K-weighting filter state (``k_filter``), the last 400 ms of quantum powers
    (``recent_power``), its energy estimate (``mean_square`` over ``counted``
    quanta), the gain that estimate asks for (``gain_db``), the quanta it has
    heard (``quanta_done``) and its look-ahead delay line (``delayed``, levelled
    at ``applied_gain_db`` when they leave it).
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
    k_filter: np.ndarray = field(default_factory=lambda: np.zeros((2, 2, 2)))
    mean_square: float = 0.0
    counted: int = 0
    gain_db: float = 0.0
    recent_power: np.ndarray = field(default_factory=lambda: np.zeros(0))
    quanta_done: int = 0
    delayed: np.ndarray = field(default_factory=lambda: np.zeros((2, 0), np.float32))
    applied_gain_db: float = 0.0

    def check(self) -> None:
        """Raise if the bookkeeping is inconsistent (a bug, not a user error)."""
        if self.fifo.ndim != 2 or self.fifo.shape[1] != 2 or self.fifo.dtype != np.float32:
            raise ValueError(
                f"fifo must be float32 (n, 2), got {self.fifo.dtype} {self.fifo.shape}"
            )
        if self.k_filter.shape != (2, 2, 2):
            raise ValueError(f"k_filter must be (2, 2, 2), got {self.k_filter.shape}")
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
        self.soundfont, first = resolve_soundfont(config, sample_rate)
        _log.info("procedural generator: %s", self.soundfont.describe())
        self.quantum = config.render_quantum
        # Synths of finished streams, reset and reused: loading a big font per
        # stream would stall a transition (see _IDLE_SYNTHS_KEPT).
        # One spare from the start: a transition opens a stream while the old
        # one still plays, and must not wait for a load.
        self._idle: list[tinysoundfont.Synth] = [first, self._load_synth()]
        self._idle_lock = threading.Lock()
        self._program_db: dict[tuple[int, int], float] = {}
        self._k_weighting = k_weighting(sample_rate)
        self._lookahead_quanta = max(1, round(_AGC_LOOKAHEAD_S * sample_rate / self.quantum))
        self._block_quanta = max(1, round(_AGC_BLOCK_S * sample_rate / self.quantum))

    @property
    def soundfont_path(self) -> Path:
        """The SoundFont file this renderer plays."""
        return self.soundfont.path

    def _acquire_synth(self) -> tinysoundfont.Synth:
        """An idle synth, silenced and reset, or a freshly loaded one."""
        with self._idle_lock:
            synth = self._idle.pop() if self._idle else None
        if synth is None:
            return self._load_synth()
        for font in synth.soundfonts.values():
            font.reset()  # voices to a zero-length release, channel settings dropped
        # Let the released voices end, so a reused synth renders exactly what a fresh one does.
        synth.generate_simple(self.sample_rate // 20)
        return synth

    def _load_synth(self) -> tinysoundfont.Synth:
        """A new synth holding the chosen font (the file was checked when it was chosen)."""
        synth = require_tinysoundfont().Synth(gain=_SYNTH_GAIN_DB, samplerate=self.sample_rate)
        synth.sfload(str(self.soundfont.path), max_voices=self.config.max_voices)
        return synth

    def _release_synth(self, synth: tinysoundfont.Synth) -> None:
        """Take back the synth of a stream that is gone (called by a weakref finalizer)."""
        with self._idle_lock:
            if len(self._idle) < _IDLE_SYNTHS_KEPT:
                self._idle.append(synth)

    def program_level_db(self, program: int, pitch: int) -> float:
        """RMS level (dBFS, before the synth's master gain) of one note of ``program``.

        Velocity 80 over 0.6 s; cached per (program, pitch).
        """
        key = (program, pitch)
        if key not in self._program_db:
            probe = self._acquire_synth()
            try:
                probe.program_select(0, 0, 0, program)
                probe.noteon(0, pitch, 80)
                frames = int(0.6 * self.sample_rate)
                audio = np.frombuffer(probe.generate_simple(frames), np.float32)
            finally:
                self._release_synth(probe)
            rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
            self._program_db[key] = 20.0 * math.log10(max(rms, 1e-9)) - _SYNTH_GAIN_DB
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
        levels = {role: self.channel_volume(role, program) for role, program in decisions.programs}
        synth = self._acquire_synth()
        sfid = next(iter(synth.soundfonts))
        for role, program in decisions.programs:
            channel = ROLE_CHANNELS[role]
            if program == PERCUSSION_PROGRAM:
                synth.program_select(channel, sfid, 0, 0, is_drums=True)
            else:
                synth.program_select(channel, sfid, 0, program)
            synth.control_change(channel, 7, levels[role])
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
                # below Nyquist whatever the rate: a 16 kHz cutoff at 16 kHz made NaN
                pedalboard.LowpassFilter(cutoff_frequency_hz=min(
                    3500.0 * (16000.0 / 3500.0) ** bright, MAX_CUTOFF * self.sample_rate)),
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
        target_db = decisions.target_lufs
        state = RenderState(
            synth=synth,
            effects=effects,
            limiter=limiter,
            target_db=target_db,
            rendered=int(start_sample),
            served=int(start_sample),
            fifo=np.zeros((0, 2), np.float32),
            gain_db=0.0,
        )
        # The synth comes back to the pool when the stream's state is dropped.
        weakref.finalize(state, self._release_synth, synth)
        return state

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
        if state.quanta_done == 0:
            quanta += self._lookahead_quanta  # fills the follower's look-ahead, once
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
        """Slow feed-forward leveller towards ``target_db``, one gain step per quantum, ramped.

        Each quantum's loudness is measured as ITU-R BS.1770-4 does (K-weighting,
        the channels' mean squares summed, -0.691 dB); the estimate averages
        energy, not decibels, so it converges on integrated loudness rather than
        on the peaks, and quanta under the relative gate (rests, tails) are left
        out so silence is not pumped up. The gain is bounded both ways.
        """
        q = self.quantum
        weighted, state.k_filter = scipy.signal.sosfilt(
            self._k_weighting, wet, axis=1, zi=state.k_filter
        )
        per_quantum = np.square(weighted).reshape(2, quanta, q).mean(axis=2).sum(axis=0)
        # Momentary power: the mean over the last 400 ms (BS.1770's gating block),
        # sliding by a quantum; fewer quanta while a stream is younger than that.
        history = np.concatenate([state.recent_power, per_quantum])
        sums = np.cumsum(np.concatenate([[0.0], history]))
        ends = np.arange(len(state.recent_power) + 1, len(history) + 1)
        starts = np.maximum(ends - self._block_quanta, 0)
        power = (sums[ends] - sums[starts]) / (ends - starts)
        state.recent_power = history[len(history) - (self._block_quanta - 1) :].copy()
        window = max(1, round(_AGC_WINDOW_S * self.sample_rate / q))
        new_gains = np.empty(quanta)
        for i, p in enumerate(power):
            loudness = -0.691 + 10.0 * math.log10(p + 1e-20)
            estimate = -0.691 + 10.0 * math.log10(state.mean_square + 1e-20)
            gated = loudness < _AGC_ABSOLUTE_GATE_LUFS or (
                state.counted > 0 and loudness < estimate - _AGC_GATE_BELOW_DB
            )
            if not gated:
                state.counted += 1
                state.mean_square += (p - state.mean_square) / min(state.counted, window)
            if state.counted:
                estimate = -0.691 + 10.0 * math.log10(state.mean_square + 1e-20)
                desired = state.target_db - estimate
                state.gain_db = min(max(desired, -_AGC_MAX_CUT_DB), _AGC_MAX_BOOST_DB)
            new_gains[i] = state.gain_db
        # Look-ahead: the gain known after quantum n is applied to quantum n - delay,
        # so a loud entry lowers the gain before it is heard (no overshoot, no pumping).
        delay = self._lookahead_quanta
        first = state.quanta_done
        state.quanta_done += quanta
        pending = np.concatenate([state.delayed, wet], axis=1)
        out_quanta = max(0, state.quanta_done - delay) - max(0, first - delay)
        state.delayed = pending[:, out_quanta * q :].copy()
        if out_quanta == 0:
            return pending[:, :0]
        applied = new_gains[quanta - out_quanta :]
        if first + quanta - out_quanta == delay:  # the stream's first output: no ramp up
            state.applied_gain_db = float(applied[0])
        gains = np.concatenate([[state.applied_gain_db], applied])
        state.applied_gain_db = float(applied[-1])
        wet = pending[:, : out_quanta * q]
        quanta = out_quanta
        linear = 10.0 ** (gains / 20.0)
        ramp = np.linspace(0.0, 1.0, q, endpoint=False)
        envelope = (linear[:-1, None] + (linear[1:] - linear[:-1])[:, None] * ramp).reshape(-1)
        return (wet * envelope.astype(np.float32)).astype(np.float32)
