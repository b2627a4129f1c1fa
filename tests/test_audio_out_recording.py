"""Recording what played, the notes that played, and the MIDI port."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mido
import numpy as np
import pretty_midi
import pytest
import soundfile

from audio_out.midi import MidiPortOut, Note, PlayedNotes, open_midi_port, write_midi_file
from audio_out.recorder import Recorder
from audio_out.timeline import SpliceResult
from installation.errors import ConfigError, DependencyError, InputError


def test_recording_equals_the_pushed_blocks(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    blocks = [rng.uniform(-1, 1, (n, 2)).astype(np.float32) for n in (512, 1, 300, 4096, 77)]
    recorder = Recorder(tmp_path / "out.wav", 48000, 2, ring_s=0.1)  # 4800-frame ring
    recorder.start()
    for block in blocks:
        recorder.push(block)
        recorder.drain()  # what the thread does; keeps the small ring from filling
    recorder.close()
    audio, rate = soundfile.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 48000 and recorder.dropped_frames == 0
    np.testing.assert_array_equal(audio, np.concatenate(blocks))


def test_flac_recording_is_24_bit_close(tmp_path: Path) -> None:
    block = (0.5 * np.sin(np.arange(9000) / 10)).astype(np.float32)[:, None].repeat(2, 1)
    recorder = Recorder(tmp_path / "out.flac", 44100, 2)
    recorder.push(block)
    recorder.close()
    audio, _ = soundfile.read(tmp_path / "out.flac", dtype="float32")
    np.testing.assert_allclose(audio, block, atol=1e-6)


def test_a_full_ring_drops_instead_of_blocking(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "out.wav", 48000, 1, ring_s=0.0)  # 1024-frame ring
    for _ in range(3):
        recorder.push(np.ones((512, 1), np.float32))
    assert recorder.dropped_frames == 512
    recorder.close()
    assert soundfile.info(str(tmp_path / "out.wav")).frames == 1024


def test_recorder_refuses_other_formats(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"expected a \.wav or \.flac path, got '.*out\.mp3'"):
        Recorder(tmp_path / "out.mp3", 48000, 2)


def splice(kind: str, start: int, written_from: int, written_to: int, xf: int = 0) -> SpliceResult:
    return SpliceResult(kind, start, written_from, written_to, xf, written_from - start, 0, 0)  # type: ignore[arg-type]


def notes(*rows: tuple[int, int, int, int, int, int]) -> np.ndarray:
    return np.asarray(rows, dtype=np.int32).reshape(-1, 6)


def test_played_notes_drop_overwritten_and_late_notes_and_cut_long_ones() -> None:
    played = PlayedNotes()
    # Chunk 1 at 0..1000: notes at 100 (long), 600, 900.
    played.add_chunk(1, 0, notes((100, 2000, 60, 90, 0, 0), (600, 50, 62, 90, 0, 0),
                                 (900, 50, 64, 90, 0, 0)), splice("append", 0, 0, 1000))
    assert played.advance(playhead=200, frames_out=200)[0].pitch == 60
    # Chunk 2 replaces from 500 (crossfade 100): its note at offset 10 (510) is
    # late (written from 550); its note at 700 plays; chunk 1's notes at 600 and
    # 900 were overwritten; the long note is cut at the crossfade's end.
    played.add_chunk(2, 500, notes((10, 20, 70, 80, 128, 3), (200, 30, 72, 80, 5, 1)),
                     splice("replace", 500, 550, 1500, xf=100))
    assert played.dropped_replaced == 2 and played.dropped_late == 1
    played.advance(playhead=1500, frames_out=1500)
    result = [(n.start, n.end, n.pitch, n.program, n.channel) for n in played.played()]
    assert result == [(100, 650, 60, 0, 0), (700, 730, 72, 5, 1)]
    assert played.pending == 0


def test_notes_are_placed_in_the_played_stream_time_base() -> None:
    played = PlayedNotes()
    played.add_chunk(1, 48000, notes((0, 10, 60, 90, 128, 0)), splice("gap", 48000, 48000, 49000))
    # Started at timeline 48000 with 300 frames of output before it (e.g. a hold).
    played.advance(playhead=48100, frames_out=400)
    (note,) = played.played()
    assert note.out_start == 300 and note.channel == 9  # drums go to GM channel 10


def test_midi_file_keeps_programs_channels_and_times(tmp_path: Path) -> None:
    path = tmp_path / "notes.mid"
    write_midi_file(path, notes((48000, 24000, 60, 100, 40, 2), (0, 4800, 36, 110, 128, 9),
                                (96000, 48000, 67, 64, 0, 0)), 48000)
    midi = pretty_midi.PrettyMIDI(str(path))
    by_program = {(i.program, i.is_drum): i.notes for i in midi.instruments}
    assert by_program[(40, False)][0].start == pytest.approx(1.0)
    assert by_program[(40, False)][0].end == pytest.approx(1.5)
    assert by_program[(0, True)][0].pitch == 36
    assert by_program[(0, False)][0].velocity == 64
    channels = {m.channel for t in mido.MidiFile(str(path)).tracks for m in t
                if m.type == "note_on"}
    assert channels == {0, 2, 9}


class FakeMidiOut:
    def __init__(self, ports: list[str]) -> None:
        self.ports = ports
        self.opened: int | None = None
        self.messages: list[list[int]] = []

    def get_ports(self) -> list[str]:
        return self.ports

    def open_port(self, index: int) -> None:
        self.opened = index

    def send_message(self, message: list[int]) -> None:
        self.messages.append(message)

    def close_port(self) -> None:
        self.opened = None


def test_midi_port_by_substring_or_a_clear_error() -> None:
    port = FakeMidiOut(["Midi Through:0", "IAC Driver Bus 1"])
    module = SimpleNamespace(MidiOut=lambda: port)
    assert open_midi_port("iac", module) is port and port.opened == 1
    with pytest.raises(ConfigError, match=r"no MIDI output port contains 'Moog'; "
                                          r"available: 'Midi Through:0', 'IAC Driver Bus 1'"):
        open_midi_port("Moog", module)

    def broken() -> Any:
        raise RuntimeError("error creating ALSA sequencer client object")

    with pytest.raises(DependencyError, match="'Moog': no MIDI back end"):
        open_midi_port("Moog", SimpleNamespace(MidiOut=broken))


def test_midi_port_sends_notes_as_they_are_heard() -> None:
    port = FakeMidiOut([])
    heard = {"at": 0}
    sender = MidiPortOut(port, lambda: heard["at"])
    sender.feed([Note(100, 200, 60, 90, 0, 1), Note(150, 400, 64, 80, 0, 1)])
    sender.send_due()
    assert port.messages == []
    heard["at"] = 160
    sender.send_due()
    assert port.messages == [[0x91, 60, 90], [0x91, 64, 80]]
    heard["at"] = 250
    sender.send_due()
    assert port.messages[-1] == [0x81, 60, 0]
    sender.stop()  # the sounding note is released
    assert port.messages[-1] == [0x81, 64, 0] and port.opened is None
