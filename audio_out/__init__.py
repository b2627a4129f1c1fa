"""audio_out: one room's playback role, from AudioChunks to speakers, files and MIDI.

Flow::

    network thread --submit(AudioChunk)--> Player --write_chunk--> TimelineBuffer
    audio callback --fill(out)--> TimelineBuffer.read_into --> volume --> speakers
                                                            \\--> Recorder ring
    monitor thread --> PlaybackClock, events, PlayedNotes, MIDI port
    recorder thread --> WAV/FLAC file

Who owns what (the real-time rules of STYLE.md):

- **Network thread** (the role's receive loop) is the only *writer*: it calls
  :meth:`Player.submit`, which splices audio into the timeline ring, updates
  the note bookkeeping and logs ``chunk_received``. It may allocate, and it
  may briefly *wait for the callback* (never the other way round).
- **Audio callback** (PortAudio's thread, or :class:`~audio_out.outputs.NullOutput`'s
  pacing thread) is the only *reader*: it copies from preallocated memory into
  the output block, applies volume, copies the block into the recorder ring
  and publishes a few integers. No allocation, no locks, no logging, no I/O.
- **Monitor thread** (inside :class:`~audio_out.player.Player`) turns the
  published counters into events (``chunk_started``, ``underflow``, ``hold``,
  ``resume``), commits played notes and drives the MIDI port.
- **Recorder thread** drains the recorder ring into a sound file.

Nothing here imports sounddevice, torch or rtmidi at import time; the
device back end is loaded when an output is opened.
"""

from __future__ import annotations
