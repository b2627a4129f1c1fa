"""The ground floor: what every role stands on, importing nothing of ours.

The wire protocol (:mod:`ground.protocol`), ZeroMQ transport and CurveZMQ
security, the error hierarchy, event logs, heartbeats, metrics, JSON
logging, the live-parameter table and the network/security/metrics config
sections. ``capture``, ``engine`` and ``audio_out`` build on it;
``installation`` (the roof) composes them; nothing here imports upward (a
test that parses imports keeps it so).
"""
