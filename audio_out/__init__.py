"""audio_out: one room's playback role, from AudioChunks to speakers, files and MIDI.

Flow::

    network thread --submit(AudioChunk)--> Player --TimelineResampler (soxr)--> write_chunk
                                                                          --> TimelineBuffer
    audio callback --fill(out)--> TimelineBuffer.read_into --> DCBlocker --> StartFade
                    --> volume x mute x master fade --> PeakLimiter --> OutputGuard
                    --> ChannelMap --> speakers
                                  \\--> Recorder ring
    monitor thread --> PlaybackClock, events, PlayedNotes, MIDI port, MIDI segment
    recorder thread --> WAV (RF64) / FLAC segment, one per start and per segment_s

Who owns what (the real-time rules of STYLE.md):

- **Network thread** (the role's receive loop) is the only *writer*: it calls
  :meth:`Player.submit`, which resamples the chunk to the device rate when
  needed (:mod:`audio_out.resample`, never in the callback), splices it into
  the timeline ring, plans the hold loop for the new queue end, updates the
  note bookkeeping and logs ``chunk_received``. It may allocate, and it may
  briefly *wait for the callback* (never the other way round).
- **Control callers** (any thread: the role's control handler) call
  :meth:`Player.set_volume`, :meth:`Player.set_mute` and
  :meth:`Player.fade_to`; each publishes one immutable target tuple that the
  callback picks up (:class:`~audio_out.mixer.SmoothGain`).
- **Audio callback** (PortAudio's thread, or :class:`~audio_out.outputs.NullOutput`'s
  pacing thread) is the only *reader*: it copies from preallocated memory into
  the output block, takes DC off, fades it in where playback starts mid-piece or
  a card came back, ramps the gains per sample, limits peaks, silences NaN or
  infinity (counted), routes channels, copies the block into the recorder ring
  and publishes a few integers. No
  array allocation, no locks, no logging, no I/O (:mod:`audio_out.mixer`).
- **Output watch thread** (inside :class:`~audio_out.outputs.FailoverOutput`,
  for a sound card) reads the callback's counters and PortAudio's ``active``
  flag; when the card stops calling back (unplugged) it closes the card's
  gate, waits for a callback in flight, and starts the null sink's pacing
  thread on the same ``fill`` (one reader at a time), then reopens the card
  every few seconds and hands ``fill`` back. Logging and PortAudio calls
  happen here, never in the callback.
- **Monitor thread** (inside :class:`~audio_out.player.Player`) turns the
  published counters into events (``chunk_started``, ``underflow``, ``hold``,
  ``resume``), commits played notes and drives the MIDI port.
- **Recorder thread** drains the recorder ring into the open segment file, a
  new one at every start and every ``segment_s`` of played time
  (:mod:`audio_out.recorder`: never overwritten, valid after SIGKILL; a
  write error fails the recording until a new segment takes writes again,
  never the callback, which only counts drops). The MIDI segment is written by
  the monitor thread.
- **Stopping** (:meth:`Player.stop`) fades the master out over
  ``stop_fade_s`` while the callback plays on, then stops the output.

Nothing here imports sounddevice, torch or rtmidi at import time; the
device back end is loaded when an output is opened, soxr when a chunk needs
resampling. ``art2mus bench audio`` (:mod:`audio_out.bench`) soaks this
path for simulated hours.
"""

from __future__ import annotations
