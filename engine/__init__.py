"""The engine role: turns artwork views into a stream of timed audio chunks.

- ``generators``: the :class:`~engine.generators.Generator` protocol and its
  implementations (``procedural`` default, ``sine`` fake).
- ``streaming``: per-room sessions on a sample timeline (lead, continuity,
  transitions).
- ``server``: the process loop over ZeroMQ.
"""
