"""Prometheus metrics, one endpoint per role process (off unless ``[metrics] port`` is set).

Ports follow the role's place in the installation, so a scrape config can be
written from the TOML file alone: the supervisor on ``port``, the engine on
``port + 1``, room *i* (0-based, in config order) on ``port + 2 + 2i``
(audio_out) and ``port + 3 + 2i`` (capture).

Exported (labels in braces):

- ``art2mus_chunk_generation_seconds{room}``: histogram of the time to generate one chunk
- ``art2mus_realtime_factor{room}``: seconds of audio generated per second spent
- ``art2mus_chunk_audio_seconds{room}``: the audio one chunk holds: the generation budget
- ``art2mus_lead_seconds{room}``: how far the engine's queue runs ahead of the playhead
- ``art2mus_underflows_total{room}``: audio_out starvations (hold/fade started); 0 from
  the room's first heartbeat on, so a dashboard sees the room before anything goes wrong
- ``art2mus_playhead_seconds{room}``: audio_out's playhead, seconds into the room's stream
- ``art2mus_level_dbfs{room}``: audio_out's RMS level over the last heartbeat
  (:data:`LEVEL_FLOOR_DBFS` while nothing plays): a silent room stays at the floor
- ``art2mus_detection_confidence{room}``: capture's confidence in the current view
- ``art2mus_capture_fps{room}``: capture's effective frame rate (lower while it sheds load)
- ``art2mus_camera_ok{room}``: 1 while the camera delivers frames, 0 while it is lost
- ``art2mus_camera_fps{room}``: frames per second the camera delivers
- ``art2mus_camera_frame_age_seconds{room}``: seconds since the camera's last frame
- ``art2mus_camera_reconnects_total{room}``: times a network camera came back after a loss
- ``art2mus_artwork_info{room,artwork_id,title}``: the artwork capture publishes (value 1;
  empty id and title on an empty wall)
- ``art2mus_messages_dropped_total{socket,reason}``: malformed/oversized/wrong-version frames
- ``art2mus_recording_ok{room}``: audio_out's recording, 1 while it writes, 0 while it has
  failed (a full or unwritable disk: retried in a new segment, 1 again once that takes
  writes); absent when the room records nothing
- ``art2mus_role_restarts_total{role}``, ``art2mus_role_up{role}``,
  ``art2mus_heartbeat_age_seconds{role}``: the supervisor's view of every role
- ``art2mus_write_errors_total{target}``: the supervisor's failed writes (status file,
  role logs, its event log, the run report): a full or failing disk

With the port at 0 nothing is imported or opened and every method is a no-op,
so the roles call them unconditionally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ground.config import MetricsConfig
from ground.errors import DependencyError

#: Histogram buckets for chunk generation time (seconds): 1 ms .. 4 s.
GENERATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)

#: ``art2mus_level_dbfs`` while nothing is played (no reading, or digital silence).
LEVEL_FLOOR_DBFS = -120.0


def metrics_port(metrics: MetricsConfig, role: str, room_index: int = 0) -> int:
    """The port of ``role`` (of the room at ``room_index`` in the config) under the layout
    above; 0 when metrics are off."""
    base = metrics.port
    if base == 0:
        return 0
    if role == "supervisor":
        return base
    if role == "engine":
        return base + 1
    return base + 2 + 2 * room_index + (1 if role == "capture" else 0)


class Metrics:
    """The collectors of one role process and its HTTP endpoint."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.port = port
        self.enabled = port > 0
        self._seen: dict[tuple[Any, ...], float] = {}
        self._server: Any = None
        if not self.enabled:
            return
        try:
            import prometheus_client as prom
        except ImportError:
            raise DependencyError("[metrics] port needs prometheus-client "
                                  "(pip install prometheus-client)") from None
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.generation = prom.Histogram("art2mus_chunk_generation_seconds",
                                         "Time to generate one chunk", ["room"], registry=r,
                                         buckets=GENERATION_BUCKETS)
        self.realtime_factor = prom.Gauge("art2mus_realtime_factor",
                                          "Audio seconds generated per second spent", ["room"],
                                          registry=r)
        self.chunk_audio = prom.Gauge("art2mus_chunk_audio_seconds",
                                      "Audio one chunk holds (the generation budget)", ["room"],
                                      registry=r)
        self.lead = prom.Gauge("art2mus_lead_seconds", "Queue end minus playhead", ["room"],
                               registry=r)
        self.playhead = prom.Gauge("art2mus_playhead_seconds",
                                   "audio_out's playhead, seconds into the stream", ["room"],
                                   registry=r)
        self.level = prom.Gauge("art2mus_level_dbfs", "RMS level of what the room plays, dBFS",
                                ["room"], registry=r)
        self.camera_ok = prom.Gauge("art2mus_camera_ok", "1 while the camera delivers frames",
                                    ["room"], registry=r)
        self.camera_fps = prom.Gauge("art2mus_camera_fps", "Frames per second the camera sends",
                                     ["room"], registry=r)
        self.frame_age = prom.Gauge("art2mus_camera_frame_age_seconds",
                                    "Seconds since the camera's last frame", ["room"], registry=r)
        self.camera_reconnects = prom.Counter("art2mus_camera_reconnects",
                                              "Times the camera came back after a loss",
                                              ["room"], registry=r)
        self.artwork = prom.Info("art2mus_artwork", "The artwork capture publishes", ["room"],
                                 registry=r)
        self.underflows = prom.Counter("art2mus_underflows", "Playback starvations", ["room"],
                                       registry=r)
        self.confidence = prom.Gauge("art2mus_detection_confidence",
                                     "Confidence in the current view", ["room"], registry=r)
        self.capture_fps = prom.Gauge("art2mus_capture_fps",
                                      "Capture's effective frames per second", ["room"],
                                      registry=r)
        self.dropped = prom.Counter("art2mus_messages_dropped", "Frames refused and dropped",
                                    ["socket", "reason"], registry=r)
        self.restarts = prom.Counter("art2mus_role_restarts", "Role restarts", ["role"],
                                     registry=r)
        self.recording_ok = prom.Gauge("art2mus_recording_ok",
                                       "1 while the room's recording writes, 0 while it has failed",
                                       ["room"], registry=r)
        self.up = prom.Gauge("art2mus_role_up", "1 while the role runs", ["role"], registry=r)
        self.heartbeat_age = prom.Gauge("art2mus_heartbeat_age_seconds",
                                        "Seconds since the role's last heartbeat", ["role"],
                                        registry=r)
        self.write_errors = prom.Counter("art2mus_write_errors",
                                         "Writes the supervisor could not make", ["target"],
                                         registry=r)
        # The engine's generator backend (engine.backend = "ray"): its health and, per
        # Serve replica, what issue 19 asks a technician to see.
        self.backend_healthy = prom.Gauge("art2mus_backend_healthy",
                                          "1 while the generator backend answers, 0 while the "
                                          "engine makes every chunk itself", ["backend"],
                                          registry=r)
        self.backend_local = prom.Counter("art2mus_backend_local_chunks",
                                          "Chunks the engine made itself instead of the backend",
                                          ["backend"], registry=r)
        self.backend_hop = prom.Gauge("art2mus_backend_hop_p95_seconds",
                                      "Latency the hop to the backend adds, p95 of recent "
                                      "requests", ["backend"], registry=r)
        self.replica_requests = prom.Counter("art2mus_replica_requests",
                                             "Chunk requests a replica answered", ["replica"],
                                             registry=r)
        self.replica_missed = prom.Counter("art2mus_replica_deadlines_missed",
                                           "Chunks a replica finished after they were due",
                                           ["replica"], registry=r)
        self.replica_batch = prom.Gauge("art2mus_replica_batch_size",
                                        "Mean batch of a replica's recent requests", ["replica"],
                                        registry=r)
        self.replica_queue = prom.Gauge("art2mus_replica_queue_wait_p95_seconds",
                                        "Queue wait in a replica, p95 of recent requests",
                                        ["replica"], registry=r)
        self.replica_rooms = prom.Gauge("art2mus_replica_rooms", "Rooms a replica serves",
                                        ["replica"], registry=r)
        try:
            self._server, _ = prom.start_http_server(port, addr=host, registry=r)
        except OSError as exc:
            raise DependencyError(
                f"metrics endpoint {host}:{port}: cannot listen ({exc})") from None

    def _advance(self, counter: Any, key: tuple[Any, ...], total: float) -> None:
        # Our own counts are running totals; Prometheus counters only go up by deltas.
        # The first call creates the labelled series at 0, so that it is exported
        # before anything has gone wrong (a dashboard and `increase()` need it).
        series = counter.labels(*key[1:])
        if key not in self._seen:
            self._seen[key] = 0.0
        previous = self._seen[key]
        if total > previous:
            series.inc(total - previous)
            self._seen[key] = total

    def chunk(self, room: str, generation_s: float, realtime_factor: float | None,
              lead_s: float | None, audio_s: float | None = None) -> None:
        """One chunk generated (engine); ``audio_s`` is the audio it holds (the budget)."""
        if not self.enabled:
            return
        self.generation.labels(room).observe(generation_s)
        if audio_s is not None:
            self.chunk_audio.labels(room).set(audio_s)
        if realtime_factor is not None:
            self.realtime_factor.labels(room).set(realtime_factor)
        if lead_s is not None:
            self.lead.labels(room).set(lead_s)

    def set_underflows(self, room: str, total: int) -> None:
        """audio_out's running underflow count."""
        if self.enabled:
            self._advance(self.underflows, ("underflows", room), total)

    def set_playback(self, room: str, playhead_s: float, level_dbfs: float | None) -> None:
        """audio_out's playhead and level (None: nothing played; exported as the floor)."""
        if not self.enabled:
            return
        self.playhead.labels(room).set(playhead_s)
        self.level.labels(room).set(LEVEL_FLOOR_DBFS if level_dbfs is None
                                    else max(LEVEL_FLOOR_DBFS, level_dbfs))

    def set_camera(self, room: str, ok: bool, camera_fps: float, frame_age_s: float | None,
                   reconnects: int = 0) -> None:
        """capture's camera: delivering or not, its rate, its latest frame's age, reconnects."""
        if not self.enabled:
            return
        self.camera_ok.labels(room).set(1.0 if ok else 0.0)
        self.camera_fps.labels(room).set(camera_fps)
        if frame_age_s is not None:
            self.frame_age.labels(room).set(frame_age_s)
        self._advance(self.camera_reconnects, ("camera_reconnects", room), reconnects)

    def set_artwork(self, room: str, artwork_id: str | None, title: str) -> None:
        """The artwork capture publishes for ``room`` (None: an empty wall)."""
        if self.enabled:
            self.artwork.labels(room).info({"artwork_id": artwork_id or "", "title": title})

    def names(self) -> set[str]:
        """Every sample name this endpoint can export (``_total``, ``_bucket``, ... included),
        for checking dashboards and alert rules against."""
        if not self.enabled:
            return set()
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                                     "_created"),
                    "info": ("_info",), "gauge": ("",)}
        return {family.name + suffix for family in self.registry.collect()
                for suffix in suffixes.get(family.type, ("",))}

    def set_recording(self, room: str, state: str) -> None:
        """audio_out's recording state: "ok" -> 1, "failed" -> 0, "off" -> no sample."""
        if self.enabled and state != "off":
            self.recording_ok.labels(room).set(1.0 if state == "ok" else 0.0)

    def set_confidence(self, room: str, confidence: float) -> None:
        """capture's confidence in the current view."""
        if self.enabled:
            self.confidence.labels(room).set(confidence)

    def set_capture_fps(self, room: str, fps: float) -> None:
        """capture's effective frame rate."""
        if self.enabled:
            self.capture_fps.labels(room).set(fps)

    def set_dropped(self, socket: str, by_reason: Mapping[str, int]) -> None:
        """A socket's running drop counts by reason."""
        if not self.enabled:
            return
        for reason, total in by_reason.items():
            self._advance(self.dropped, ("dropped", socket, reason), total)

    def set_role(self, role: str, up: bool, restarts: int, heartbeat_age_s: float | None) -> None:
        """The supervisor's view of one role."""
        if not self.enabled:
            return
        self.up.labels(role).set(1.0 if up else 0.0)
        self._advance(self.restarts, ("restarts", role), restarts)
        if heartbeat_age_s is not None:
            self.heartbeat_age.labels(role).set(heartbeat_age_s)

    def set_write_errors(self, by_target: Mapping[str, int]) -> None:
        """The supervisor's running counts of failed writes, by target."""
        if not self.enabled:
            return
        for target, total in by_target.items():
            self._advance(self.write_errors, ("write_errors", target), total)

    def set_backend(self, backend: Mapping[str, Any]) -> None:
        """The engine's generator backend, from its status (``RayGenerator.backend_status``):
        its health, chunks made locally, the hop, and per replica requests, missed deadlines,
        batch size, queue wait and rooms. The local generator exports nothing."""
        if not self.enabled or backend.get("kind") in (None, "local"):
            return
        kind = str(backend["kind"])
        self.backend_healthy.labels(kind).set(1.0 if backend.get("state") == "ok" else 0.0)
        self._advance(self.backend_local, ("backend_local", kind),
                      float(backend.get("local_chunks") or 0))
        if isinstance(backend.get("hop_ms_p95"), (int, float)):
            self.backend_hop.labels(kind).set(backend["hop_ms_p95"] / 1000.0)
        for name, replica in (backend.get("replicas") or {}).items():
            self._advance(self.replica_requests, ("replica_requests", name),
                          float(replica.get("requests") or 0))
            self._advance(self.replica_missed, ("replica_missed", name),
                          float(replica.get("missed") or 0))
            self.replica_rooms.labels(name).set(len(replica.get("rooms") or []))
            if isinstance(replica.get("batch_mean"), (int, float)):
                self.replica_batch.labels(name).set(replica["batch_mean"])
            if isinstance(replica.get("queue_ms_p95"), (int, float)):
                self.replica_queue.labels(name).set(replica["queue_ms_p95"] / 1000.0)

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def role_metrics(metrics: MetricsConfig, role: str, room_index: int = 0) -> Metrics:
    """The metrics of ``role`` as the config lays them out (no-op when the port is 0)."""
    return Metrics(metrics_port(metrics, role, room_index), metrics.host)
