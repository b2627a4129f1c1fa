"""The installation config: one TOML file, validated before anything starts.

Layout (see ``configs/*.toml`` for commented examples)::

    [installation]   name, output folder
    [network]        ZeroMQ endpoints, message size limit
    [supervisor]     restart backoff, hang detection, which roles and rooms run here
    [engine]         generator and stream timing (+ [engine.procedural])
    [capture]        defaults for every room's capture role
    [audio_out]      defaults for every room's playback role
    [[rooms]]        id, seed, and per-room [rooms.capture] / [rooms.audio_out]
                     overrides, merged over the defaults above
    [control]        live parameters: MIDI in (+ mapping), OSC in/out, config reload
    [metrics]        Prometheus endpoints (port 0 = off)
    [security]       CurveZMQ authentication and encryption between machines
    [console]        the technician's web console: listen address, token, config editing

:func:`load_config` raises :class:`ConfigError` naming the file, the field
and what was expected; the supervisor validates a config before it starts
or restarts anything.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import os
import re
import tempfile
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from audio_out.config import AudioOutConfig, segment_template
from capture.config import CaptureConfig
from engine.config import EngineConfig
from ground.config import (
    Flag,
    MetricsConfig,
    NetworkConfig,
    SecurityConfig,
    dated_value,
    parse_toml,
    validate_typed,
)
from ground.errors import ConfigError


def relative_note(path: str | Path) -> str:
    """``" (ABSOLUTE: relative paths are read from the working directory)"`` for a
    relative ``path``, ``""`` for an absolute one: what a message adds after it.

    Relative paths in a config are read from the working directory of the
    process, not from the config file's folder (see the README); a message that
    said only "no folder at photos" left the reader looking beside the config.
    """
    if not str(path) or Path(path).is_absolute():
        return ""
    return f" ({os.path.abspath(path)}: relative paths are read from the working directory)"


def shown_path(path: str | Path) -> str:
    """``path`` as a message names it: a relative one with the absolute path it stands for
    (:func:`relative_note`)."""
    return f"{path}{relative_note(path)}"


class TakesSection(BaseModel):
    """Take retention (:mod:`installation.takes`): off unless one rule is set."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    keep_days: float = Field(0.0, ge=0.0, le=36500.0, description=(
        "Remove takes last written more than this many days ago; 0 keeps every take."))
    keep_free_gb: float = Field(0.0, ge=0.0, le=1e6, description=(
        "Remove the oldest takes while the output folder's disk has less than this many "
        "GB free; 0 never removes one for space."))


class InstallationSection(BaseModel):
    """Name and output folder of the installation, and how long its takes are kept."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = "art2mus"
    output_dir: str = Field("out", description="Where recordings, logs and timelines go.")
    takes: TakesSection = Field(default_factory=TakesSection)


_RoleKind = Literal["engine", "capture", "audio_out"]


def _default_nice() -> dict[_RoleKind, int]:
    return {"audio_out": -5, "engine": 0, "capture": 10}


def _default_ionice() -> dict[_RoleKind, int]:
    return {"capture": 7}


class SupervisorConfig(BaseModel):
    """How crashed roles are restarted, logged and prioritised."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    restart_backoff_s: float = Field(0.5, gt=0.0, le=600.0, description="First restart delay.")
    restart_backoff_max_s: float = Field(
        10.0, gt=0.0, le=3600.0, description="Longest restart delay."
    )
    stable_after_s: float = Field(
        30.0, gt=0.0, le=86400.0, description="A role up this long has its backoff reset."
    )
    stop_timeout_s: float = Field(
        5.0, gt=0.0, le=600.0, description="SIGTERM, then SIGKILL after this."
    )
    heartbeat_s: float = Field(
        0.5, gt=0.0, le=10.0, description="Roles report health to the supervisor this often."
    )
    hang_after_s: float = Field(
        10.0, ge=0.0, le=3600.0,
        description="A role silent this long (no heartbeat) is killed and restarted; 0 = never.",
    )
    startup_grace_s: float = Field(
        30.0, gt=0.0, le=3600.0,
        description="Time a starting role has to send its first heartbeat.",
    )
    status_every_s: float = Field(
        1.0, gt=0.0, le=3600.0,
        description="How often the supervisor rewrites OUTPUT/status.json.",
    )
    roles: tuple[Literal["engine", "capture", "audio_out"], ...] = Field(
        ("engine", "capture", "audio_out"),
        description="Which roles this machine runs (a GPU engine machine: ['engine']).",
    )
    rooms: tuple[str, ...] = Field(
        (), description="Which rooms' capture/audio_out this machine runs; empty = all."
    )
    max_config_failures: int = Field(
        3, ge=1, le=1000,
        description="A role that exits this many times in a row with a config, input or "
        "dependency error (exit code 2, 3, 4) is not restarted again; the others play on.",
    )
    log_max_bytes: int = Field(
        10 * 1024 * 1024, ge=4096, le=1 << 40,
        description="OUTPUT/logs/ROLE.log rotates past this size (bytes).",
    )
    log_backups: int = Field(
        5, ge=0, le=1000, description="Rotated logs kept per role (ROLE.log.1 .. ROLE.log.N)."
    )
    events_max_bytes: int = Field(
        10 * 1024 * 1024, ge=4096, le=1 << 40,
        description="OUTPUT/events/ROLE[-ROOM].jsonl rotates past this size (bytes); a role "
        "takes it when it starts.",
    )
    events_backups: int = Field(
        5, ge=0, le=1000,
        description="Rotated event logs kept per role and room (ROLE.jsonl.1 .. ROLE.jsonl.N).",
    )
    nice: dict[_RoleKind, int] = Field(
        default_factory=_default_nice,
        description="Process niceness per role (-20..19, lower runs first): the music ahead "
        "of the camera. Raising a priority (below the supervisor's own) needs CAP_SYS_NICE "
        "or root; without it the role keeps the supervisor's, said once.",
    )
    ionice: dict[_RoleKind, int] = Field(
        default_factory=_default_ionice,
        description="Best-effort I/O priority level per role (0 = first .. 7 = last), Linux.",
    )

    @model_validator(mode="after")
    def _priorities(self) -> SupervisorConfig:
        for role, value in self.nice.items():
            if not -20 <= value <= 19:
                raise ValueError(f"supervisor.nice.{role}: expected -20..19, got {value}")
        for role, value in self.ionice.items():
            if not 0 <= value <= 7:
                raise ValueError(f"supervisor.ionice.{role}: expected 0..7, got {value}")
        # A role is "silent" after 3 heartbeats missed; killing it sooner than that killed
        # every role between two beats: restarted for ever, no music.
        if 0 < self.hang_after_s < 3 * self.heartbeat_s:
            raise ValueError(f"supervisor.hang_after_s: expected 0 (never) or at least 3 "
                             f"heartbeats ({3 * self.heartbeat_s:g} s with heartbeat_s = "
                             f"{self.heartbeat_s:g}), got {self.hang_after_s:g}")
        if self.restart_backoff_s > self.restart_backoff_max_s:
            raise ValueError(f"supervisor.restart_backoff_s: expected at most "
                             f"restart_backoff_max_s ({self.restart_backoff_max_s:g}), got "
                             f"{self.restart_backoff_s:g}")
        return self


def parse_midi_key(key: str, field: str = "control.midi.cc") -> tuple[int, int]:
    """A map key ``"CC"`` (any channel) or ``"CH:CC"`` (channel 1-16) as (channel or 0, number).

    ValueError naming ``field`` for anything else.
    """
    channel, _, number = key.rpartition(":")
    if not number.isdigit() or not 0 <= int(number) <= 127 or (
            channel and (not channel.isdigit() or not 1 <= int(channel) <= 16)):
        raise ValueError(f"{field}: key must be 0..127, or CH:0..127 with channel 1..16, "
                         f"got {key!r}")
    return int(channel or 0), int(number)


class MidiInConfig(BaseModel):
    """MIDI in: which port, and which controls move which parameters.

    ``cc`` and ``notes`` map a controller or note number (as a string key,
    TOML keys are strings: ``"74"`` on any channel, ``"2:74"`` on channel 2
    only; a channel's own entry wins) to a parameter name from
    :data:`ground.params.PARAMETERS`, optionally ``@room`` for one room
    (``"intensity@room-1"``); ``art2mus midi-learn`` writes these tables.
    ``feedback_port`` sends every parameter change back as the CC mapped to
    it (motorised faders, LED rings); ``"same"`` uses the output port named
    like the input port (a controller's output twin).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    port: str = Field("", description="Substring of the input port name; '' = no MIDI in.")
    virtual: Flag = Field(False, description="Also open a virtual input port named 'art2mus'.")
    channel: int = Field(0, ge=0, le=16, description="Listen on this channel (1-16); 0 = all.")
    soft_takeover: Flag = Field(
        True, description="A knob moves a parameter only once it has passed the current value."
    )
    feedback_port: str = Field(
        "", description="Substring of a MIDI output port for CC feedback; 'same' = the "
                        "in-port's name; '' = no feedback."
    )
    cc: dict[str, str] = Field(default_factory=dict, description="[CH:]CC number -> parameter.")
    notes: dict[str, str] = Field(default_factory=dict,
                                  description="[CH:]note number -> parameter.")
    clock_in: Flag = Field(
        False, description="Follow MIDI clock (24 ppqn) on the input port: its tempo becomes "
                           "every room's tempo_bpm.")
    clock_beats: int = Field(
        4, ge=1, le=16, description="Beats per bar of the clock's song: with clock_in, the "
                                    "rooms' bars land on its downbeats (after Start or Song "
                                    "Position Pointer).")
    clock_out: str = Field(
        "", description="Substring of a MIDI output port the engine sends MIDI clock to "
                        "(24 ppqn, start/stop) from clock_room's music; '' = none.")
    clock_room: str = Field("", description="The room whose music clock_out follows "
                                            "('' = the first room).")

    @model_validator(mode="after")
    def _known(self) -> MidiInConfig:
        from ground.params import parse_target

        for table, mapping in (("cc", self.cc), ("notes", self.notes)):
            for number, target in mapping.items():
                parse_midi_key(number, f"control.midi.{table}")
                parse_target(target)  # raises ValueError naming the known parameters
        if self.feedback_port == "same" and not self.port:
            raise ValueError("control.midi.feedback_port: 'same' needs control.midi.port set")
        if self.clock_in and not (self.port or self.virtual):
            raise ValueError("control.midi.clock_in: needs control.midi.port (or virtual = "
                             "true) to hear the clock on")
        return self


class SceneConfig(BaseModel):
    """A named set of live parameters, recalled by MIDI program change ``program``.

    ``params`` maps a parameter (``"intensity"`` or ``"intensity@room-1"``) to
    its value. ``key`` ("D", "F#", "Bb"), ``mode`` (a name from
    :data:`ground.params.MODES`) and ``tempo_bpm`` override the artwork's in
    every room: a recall sets the live ``tonic``/``mode``/``tempo_bpm``
    parameters (a key name is natural here; its pitch class is the tonic).
    What a scene does not name is left as it is (a synced tempo stays synced).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(..., min_length=1, max_length=64)
    program: int = Field(..., ge=0, le=127, description="MIDI program number (0-based).")
    params: dict[str, float] = Field(default_factory=dict)
    key: str | None = Field(None, pattern=r"^[A-G](#|b)?$", description="e.g. 'D', 'F#'.")
    mode: str | None = Field(None, min_length=1, max_length=32,
                             description="e.g. 'dorian': one of ground.params.MODES.")
    tempo_bpm: float | None = Field(None, ge=20.0, le=300.0)

    @model_validator(mode="after")
    def _known(self) -> SceneConfig:
        from ground.params import key_index, mode_index, parse_target

        for target, value in self.params.items():
            param, _ = parse_target(target)
            param.in_range(value)  # a config says what it means: 3 bpm is no tempo
        if self.key is not None:
            key_index(self.key)
        if self.mode is not None:
            mode_index(self.mode)
        return self

    def overrides(self) -> dict[str, float]:
        """The key/mode/tempo overrides that are set, as live parameter values (the key
        as ``tonic``)."""
        from ground.params import key_index, mode_index

        values = {"tonic": None if self.key is None else float(key_index(self.key)),
                  "mode": None if self.mode is None else float(mode_index(self.mode)),
                  "tempo_bpm": self.tempo_bpm}
        return {name: value for name, value in values.items() if value is not None}


def _osc_host(host: str) -> str:
    """``host`` as compared by :func:`_same_osc_endpoint`: "loopback", "any" or itself."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return "loopback"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # a name: compared as written (no DNS look-up when a config loads)
        return host
    if ip.is_unspecified:
        return "any"
    return "loopback" if ip.is_loopback else str(ip)


def _same_osc_endpoint(listen: str, target: str) -> bool:
    """Whether UDP sent to ``target`` reaches a socket bound to ``listen`` (both 'HOST:PORT').

    Loopback names and addresses (localhost, 127.0.0.0/8, ::1) are one host; a
    socket bound to 0.0.0.0 (or ::) also hears loopback, and a datagram sent
    to 0.0.0.0 goes to this machine. Another address of this machine, or a
    name that resolves to it, is not detected.
    """
    (host, _, port), (to_host, _, to_port) = listen.rpartition(":"), target.rpartition(":")
    if int(port) != int(to_port):
        return False
    here, there = _osc_host(host), _osc_host(to_host)
    return here == there or {here, there} <= {"loopback", "any"}


class OscConfig(BaseModel):
    """OSC in (parameters as addresses) and out (each room's state, one value per address)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    listen: str = Field("", description="'HOST:PORT' to receive OSC on (UDP); '' = off.")
    send: tuple[str, ...] = Field((), description="'HOST:PORT' targets for room state.")
    prefix: str = Field("/art2mus", pattern=r"^/[A-Za-z0-9_/-]*$")
    send_hz: float = Field(4.0, gt=0.0, le=100.0, description="Room state updates per second.")
    echo: Flag = Field(True, description="Send every live parameter change to the targets.")
    beats: Flag = Field(
        True, description="The engine sends /ROOM/beat, /bar, /key, /chord to the targets."
    )
    query_port: int = Field(
        0, ge=0, le=65535,
        description="TCP port of the OSCQuery server (HTTP on listen's host, advertised by "
                    "mDNS) that describes the OSC in addresses to controllers; 0 = off.",
    )
    allow: tuple[str, ...] = Field(
        (), max_length=256,
        description="Addresses or networks OSC in takes messages from ('10.0.0.7', "
                    "'192.168.1.0/24'); empty: any. OSC has no login: on a LAN visitors share "
                    "(guest Wi-Fi), anyone could mute a room.")

    @field_validator("allow")
    @classmethod
    def _networks(cls, allow: tuple[str, ...]) -> tuple[str, ...]:
        for k, network in enumerate(allow):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"allow[{k}]: expected an IP address or network ('10.0.0.7', "
                                 f"'192.168.1.0/24'), got {network[:100]!r}") from None
        return allow

    def admits(self, host: str) -> bool:
        """True when OSC in takes a datagram from ``host`` (an IP address) under ``allow``."""
        if not self.allow:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 sender
        return any(address in ipaddress.ip_network(network, strict=False)
                   for network in self.allow)

    @model_validator(mode="after")
    def _addresses(self) -> OscConfig:
        for address in ((self.listen,) if self.listen else ()) + self.send:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"OSC address must be 'HOST:PORT', got {address!r}")
        # A target that is our own OSC in would hear every echo and state message we send:
        # each change would come back as a set (and the engine's beats as junk) forever.
        for target in self.send if self.listen else ():
            if _same_osc_endpoint(self.listen, target):
                raise ValueError(f"send: expected targets other than this installation's own "
                                 f"OSC in (listen = {self.listen!r}), got {target!r}")
        if self.query_port and not self.listen:
            raise ValueError(f"query_port {self.query_port} describes OSC in: expected listen "
                             "= 'HOST:PORT' too, got listen = ''")
        return self


class LinkConfig(BaseModel):
    """Ableton Link: share tempo with a DAW, a drum machine or another Link app on the LAN.

    ``follow``: the session's tempo becomes every room's ``tempo_bpm`` (the
    artwork still chooses key, mode and palette) while a peer is there.
    ``lead``: ``room``'s music sets the session's tempo (each new artwork
    moves it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    enabled: Flag = Field(False, description="Join the Link session (needs the 'link' extra).")
    mode: Literal["follow", "lead"] = Field("follow", description="follow | lead the tempo.")
    room: str = Field("", description="lead: the room whose tempo leads ('' = the first).")
    quantum: float = Field(4.0, ge=1.0, le=16.0, description="Beats per bar, for Link's phase.")


class ControlConfig(BaseModel):
    """Live control: surfaces that set parameters, and config hot reload."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    reload: Flag = Field(True, description="Watch the config file and apply edits live.")
    reload_poll_s: float = Field(1.0, gt=0.0, le=60.0, description="How often it is checked.")
    min_change_interval_s: float = Field(
        0.25, ge=0.0, le=10.0,
        description="The engine re-plans a room for knob moves at most this often.",
    )
    resend_every_s: float = Field(
        5.0, gt=0.0, le=3600.0,
        description="Re-send all parameters so a restarted role catches up.",
    )
    midi: MidiInConfig = MidiInConfig()
    osc: OscConfig = OscConfig()
    scenes: tuple[SceneConfig, ...] = Field(
        (), description="Named parameter sets; MIDI program change recalls one."
    )
    link: LinkConfig = LinkConfig()

    @model_validator(mode="after")
    def _unique_scenes(self) -> ControlConfig:
        for field in ("name", "program"):
            values = [getattr(scene, field) for scene in self.scenes]
            repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
            if repeated:
                raise ValueError(f"control.scenes: each {field} once, got {repeated} twice")
        return self


def parse_listen(listen: str, field: str = "console.listen") -> tuple[str, int]:
    """``"HOST:PORT"`` as (host, port); ValueError naming ``field`` otherwise.

    The host is an IP address (IPv6 in brackets) or ``localhost``; port 0
    means any free port.
    """
    host, _, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{field}: expected 'HOST:PORT' (port 0..65535), got {listen!r}")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{field}: expected an IP address or 'localhost' as host, "
                             f"got {host!r}") from None
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


#: Shortest token the console accepts (a guessable token is no protection).
MIN_TOKEN_CHARS = 16


class ConsoleConfig(BaseModel):
    """The technician's web console served by the supervisor (installation/console)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    listen: str = Field(
        "127.0.0.1:8080",
        description="'HOST:PORT' the console is served on ('' = off; port 0 = any free port, "
        "written to status.json as console_url). Beyond loopback it needs a token.",
    )
    token: str = Field(
        "", description=f"Token a browser must give (>= {MIN_TOKEN_CHARS} characters); "
        "required when listen is not a loopback address.")
    token_file: str = Field(
        "", description="A keys file whose first non-empty line is the token (instead of token).")
    allow_edit: Flag = Field(
        True, description="The config editor may apply and roll back; false = read-only.")
    frame_every_s: float = Field(
        0.5, ge=0.1, le=60.0, description="How often capture writes the console's camera JPEG.")
    frame_width: int = Field(
        480, ge=160, le=1920, description="Width of the console's camera JPEG, px.")
    max_body_bytes: int = Field(
        262144, ge=1024, le=16 * 1024 * 1024,
        description="Request bodies longer than this are refused (413).")

    @model_validator(mode="after")
    def _secure(self) -> ConsoleConfig:
        if self.token and self.token_file:
            raise ValueError("console.token, console.token_file: expected one of them, got both")
        if self.token and len(self.token) < MIN_TOKEN_CHARS:
            raise ValueError(f"console.token: expected at least {MIN_TOKEN_CHARS} characters, "
                             f"got {len(self.token)}")
        if not self.listen:
            return self
        host, _ = parse_listen(self.listen)
        if not is_loopback(host) and not (self.token or self.token_file):
            raise ValueError(f"console.listen: {self.listen!r} is reachable beyond this machine; "
                             "console.token (or console.token_file) is required there, got none")
        return self

    def read_token(self) -> str:
        """The token from ``token`` or the first non-empty line of ``token_file`` ('' = none).

        ConfigError naming the file when it cannot be read or holds a short token.
        """
        if not self.token_file:
            return self.token
        try:
            # utf-8-sig: a token file saved by Notepad starts with a byte-order mark, which
            # would become part of the token
            lines = Path(self.token_file).read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(f"console.token_file: cannot read {shown_path(self.token_file)}: "
                              f"{reason}") from None
        token = next((line.strip() for line in lines if line.strip()), "")
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"console.token_file: expected a token of at least "
                              f"{MIN_TOKEN_CHARS} characters on the first non-empty line of "
                              f"{self.token_file}, got {len(token)}")
        return token


#: What a room id may be: it names files ({room} in recordings), URLs and OSC addresses.
#: A letter or digit first: "." and ".." would be path parts and URL segments a browser
#: normalises away.
ROOM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class RoomConfig(BaseModel):
    """One room: a camera, a playback chain, and its seed."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: str = Field(pattern=ROOM_ID_PATTERN)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    capture: CaptureConfig = CaptureConfig()
    audio_out: AudioOutConfig = AudioOutConfig()
    midi_channel_offset: int = Field(
        0, ge=0, le=15,
        description="MIDI out: this room's melodic channels are shifted by this much "
        "(GM percussion stays on channel 10), so rooms can share one port.",
    )

    @field_validator("id", mode="before")
    @classmethod
    def _id_in_words(cls, value: Any) -> Any:
        # before the pattern, which would say only "String should match pattern '^[A-Z...'"
        if isinstance(value, str) and re.fullmatch(ROOM_ID_PATTERN, value) is None:
            raise ValueError("expected a room id of 1 to 64 ASCII letters (a-z, A-Z), digits, "
                             "'_', '.' or '-', starting with a letter or digit (no accents "
                             "or spaces: it names files, URLs and OSC addresses)")
        return value


class InstallationConfig(BaseModel):
    """The whole installation, as loaded from one TOML file."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    installation: InstallationSection = InstallationSection()
    network: NetworkConfig = NetworkConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    engine: EngineConfig = EngineConfig()
    rooms: tuple[RoomConfig, ...] = Field(min_length=1)
    control: ControlConfig = ControlConfig()
    metrics: MetricsConfig = MetricsConfig()
    security: SecurityConfig = SecurityConfig()
    console: ConsoleConfig = ConsoleConfig()

    @model_validator(mode="after")
    def _unique_rooms(self) -> InstallationConfig:
        ids = [room.id for room in self.rooms]
        if len(set(ids)) != len(ids):
            raise ValueError(f"room ids must be unique, got {ids}")
        for room_id in self.supervisor.rooms:
            if room_id not in ids:
                raise ValueError(f"supervisor.rooms names {room_id!r}, rooms are {ids}")
        for field, room_id in (("control.midi.clock_room", self.control.midi.clock_room),
                               ("control.link.room", self.control.link.room)):
            if room_id and room_id not in ids:
                raise ValueError(f"{field} names {room_id!r}, rooms are {ids}")
        return self

    @model_validator(mode="after")
    def _targets_name_rooms(self) -> InstallationConfig:
        # A scene or a MIDI control naming a room that is not there passed, then at the
        # show a recall stopped at it half applied (the parameters before it set, the
        # key, mode and tempo not) and a knob did nothing: refused here, named.
        from ground.params import parse_target

        ids = [room.id for room in self.rooms]
        targets = [(f"control.scenes[{i}].params", target)
                   for i, scene in enumerate(self.control.scenes) for target in scene.params]
        for table in ("cc", "notes"):
            targets += [(f"control.midi.{table}.{key}", target)
                        for key, target in getattr(self.control.midi, table).items()]
        unknown = [f"{where}: {target!r} names room {room!r}"
                   for where, target in targets
                   if (room := parse_target(target)[1]) != "*" and room not in ids]
        if unknown:  # every one at once: a renamed room is typically named in several
            raise ValueError(f"{'; '.join(unknown)}: expected a room of this config "
                             f"{ids} (or no @room: every room)")
        return self

    @model_validator(mode="after")
    def _recordings_apart(self) -> InstallationConfig:
        # Every room's segments need names of their own: two rooms writing one
        # pattern would interleave their takes (and did overwrite them).
        seen: dict[str, str] = {}
        for where, template in self.recording_templates():
            if template in seen:
                raise ValueError(
                    f"{where}: expected a recording path of its own, got the same file as "
                    f"{seen[template]} ({template!r}); put {{room}} in it or drop {{start}}"
                )
            seen[template] = where
        # ...and every room's capture overlay a file of its own (two rooms rewriting one
        # picture showed the technician either room's camera, whichever wrote last)
        for i, room in enumerate(self.rooms):
            for field in ("overlay", "console_frame"):
                value = getattr(room.capture, field)
                if not value:
                    continue
                where = f"rooms[{i}].capture.{field}"
                path = os.path.normpath(Path(self.installation.output_dir)
                                        / value.format(room=room.id))
                if path in seen:
                    raise ValueError(f"{where}: expected a file of its own, got the same file "
                                     f"as {seen[path]} ({path!r}); put {{room}} in it")
                seen[path] = where
        limit = self.supervisor.stop_timeout_s / 2
        for i, room in enumerate(self.rooms):
            if room.audio_out.stop_fade_s > limit:
                raise ValueError(
                    f"rooms[{i}].audio_out.stop_fade_s: expected at most "
                    f"supervisor.stop_timeout_s / 2 ({limit:g}), got {room.audio_out.stop_fade_s:g}"
                )
        return self

    @model_validator(mode="after")
    def _channels_fit_the_program(self) -> InstallationConfig:
        # audio_out alone cannot see the engine's channel count: a routing the player's
        # ChannelMap refuses passed check-config, then every start of audio_out exited
        # with code 2 and the room stayed silent. The rule is the player's own (imported,
        # not restated; scipy comes with it, which the roles load anyway).
        from audio_out.mixer import ChannelMap

        channels = self.engine.channels
        for i, room in enumerate(self.rooms):
            try:
                ChannelMap(channels, room.audio_out.output_channels(channels))
            except ValueError as exc:
                field, _, rule = str(exc).partition(": ")
                raise ValueError(f"rooms[{i}].audio_out.{field} (room {room.id!r}, "
                                 f"engine.channels = {channels}): {rule}") from None
        return self

    @model_validator(mode="after")
    def _lead_fits_the_buffers(self) -> InstallationConfig:
        # audio_out drops what lies more than buffer_s past its playhead: a 45 s lead on the
        # default 30 s ring lost half the chunks and ran the room dry every ~30 s.
        from ground.params import LEAD_HEADROOM_S

        engine = self.engine
        for i, room in enumerate(self.rooms):
            limit = self.lead_s_limit(room.id)
            if engine.lead_s > limit:
                buffer_s = room.audio_out.buffer_s
                least = engine.lead_s + engine.chunk_s + engine.batch_window_s + LEAD_HEADROOM_S
                raise ValueError(
                    f"engine.lead_s: expected at most rooms[{i}].audio_out.buffer_s "
                    f"({buffer_s:g}, room {room.id!r}) - engine.chunk_s ({engine.chunk_s:g}) "
                    f"- engine.batch_window_s ({engine.batch_window_s:g}) - "
                    f"{LEAD_HEADROOM_S:g} s of headroom = {limit:g}, got {engine.lead_s:g}: "
                    f"audio_out would drop what the engine sends beyond its buffer; lower "
                    f"engine.lead_s or raise audio_out.buffer_s to at least {least:g}")
        return self

    @model_validator(mode="after")
    def _ray_port_guarded(self) -> InstallationConfig:
        # Here, not in engine.config.RayConfig: is_loopback lives on this floor, and the
        # engine imports nothing from it. Whatever engine.backend says: `art2mus serve`
        # opens this port from the same section.
        ray = self.engine.ray
        host = ray.http_host.strip("[]")
        try:
            loopback = is_loopback(host)
        except ValueError:  # a DNS name other than localhost: reachable where it resolves
            loopback = False
        if not loopback and not (ray.token or ray.token_file):
            raise ValueError(f"engine.ray.http_host: {ray.http_host!r} is reachable beyond this "
                             "machine; engine.ray.token_file (or engine.ray.token) is required "
                             "there, got none")
        return self

    @model_validator(mode="after")
    def _tcp_ports_apart(self) -> InstallationConfig:
        # Two listeners of this machine on one TCP port: the second's bind failed
        # (Address already in use) and its role restarted for ever, exit code 1 (the
        # console on the views port: no chunk ever made). Hosts are not compared: one
        # port on two interfaces of one machine is a trap too.
        claimed: dict[int, str] = {}

        def claim(port: int, where: str) -> None:
            if port in claimed:
                raise ValueError(f"{where}: expected a TCP port no other listener of this "
                                 f"installation uses, got {port}, which {claimed[port]} "
                                 f"listens on")
            if port:
                claimed[port] = where

        bound = ("views", "chunks", "clock", "control") if "engine" in self.supervisor.roles \
            else ("control",)  # the engine's sockets are bound where the engine runs
        for name in bound:
            endpoint = getattr(self.network, name)
            if endpoint.startswith("tcp://"):
                claim(int(endpoint.rpartition(":")[2]), f"network.{name}")
        if self.metrics.port:
            last = self.metrics.port + 1 + 2 * len(self.rooms)  # see ground.metrics
            for port in range(self.metrics.port, min(last, 65535) + 1):
                claim(port, f"metrics.port (its range {self.metrics.port}..{last})")
        if self.console.listen:
            claim(parse_listen(self.console.listen)[1], "console.listen")
        claim(self.control.osc.query_port, "control.osc.query_port")
        return self

    def recording_templates(self) -> list[tuple[str, str]]:
        """``(field path, segment template)`` of every room's ``record`` and ``midi_file``.

        The template is the path each start's segment is made from, under the
        output folder, with ``{room}`` filled in and ``{start}`` left in
        (:func:`audio_out.config.segment_template`), e.g.
        ``("rooms[1].audio_out.record", "out/take-room-2-{start}.wav")``.
        """
        found = []
        for i, room in enumerate(self.rooms):
            for field in ("record", "midi_file"):
                value = getattr(room.audio_out, field)
                if value:
                    path = Path(self.installation.output_dir) / segment_template(value, room.id)
                    found.append((f"rooms[{i}].audio_out.{field}", os.path.normpath(path)))
        return found

    def lead_s_limit(self, room_id: str = "*") -> float:
        """The longest engine ``lead_s`` that fits ``room_id``'s audio_out buffer
        (:func:`ground.params.lead_s_limit`); ``"*"``: every room's. What a live ``lead_s``
        (OSC, hot reload) is clamped to; ConfigError for an unknown room."""
        from ground.params import lead_s_limit

        rooms = self.rooms if room_id == "*" else (self.room(room_id),)
        return min(lead_s_limit(room.audio_out.buffer_s, self.engine.chunk_s,
                                self.engine.batch_window_s) for room in rooms)

    def room(self, room_id: str) -> RoomConfig:
        """The room called ``room_id``; ConfigError if there is none."""
        for room in self.rooms:
            if room.id == room_id:
                return room
        raise ConfigError(f"no room {room_id!r} in config: rooms are {[r.id for r in self.rooms]}")

    def room_index(self, room_id: str) -> int:
        """Where ``room_id`` stands among the rooms (its metrics ports follow from it)."""
        return self.rooms.index(self.room(room_id))

    @property
    def output_dir(self) -> Path:
        """The output folder as a path."""
        return Path(self.installation.output_dir)

    def to_toml_dict(self) -> dict[str, Any]:
        """A plain dict that :func:`config_from_dict` turns back into this config."""
        return self.model_dump(mode="json", exclude_none=True)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _from_default(loc: tuple[Any, ...], rooms: list[Any],
                  defaults: dict[str, dict[str, Any]]) -> str | None:
    """The top-level field (``capture.fps``) an error at ``rooms[i].capture.fps`` came
    from, where the room's own table does not set it and the default does; else None."""
    if len(loc) < 4 or loc[0] != "rooms" or not isinstance(loc[1], int) or \
            loc[2] not in defaults or loc[1] >= len(rooms):
        return None
    own: Any = rooms[loc[1]].get(loc[2], {}) if isinstance(rooms[loc[1]], dict) else {}
    default: Any = defaults[loc[2]]
    for key in loc[3:]:
        if isinstance(own, dict) and key in own and not isinstance(own[key], dict):
            return None  # the room sets it itself
        own = own.get(key, {}) if isinstance(own, dict) else {}
        if not isinstance(default, dict) or key not in default:
            return None
        default = default[key]
    return _format_location(loc[2:])


def _tables(model: type[BaseModel], table: str, found: dict[str, list[str]]) -> None:
    """Record, for every field name of ``model`` and the models under it, the table it is
    written in (``"[engine.procedural]"``; a list of tables as ``"[[rooms]]"``)."""
    for name, info in model.model_fields.items():
        found.setdefault(name, []).append(table)
        annotation = info.annotation
        args = typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            inner = table.strip("[]")
            _tables(annotation, f"[{inner}.{name}]" if inner else f"[{name}]", found)
        elif args and isinstance(args[0], type) and issubclass(args[0], BaseModel) and \
                typing.get_origin(annotation) is tuple:  # [[control.scenes]]
            inner = table.strip("[]")
            _tables(args[0], f"[[{inner}.{name}]]" if inner else f"[[{name}]]", found)


@functools.cache
def _field_tables() -> dict[str, list[str]]:
    """Every field name of the config -> the tables it is written in (built once)."""
    found: dict[str, list[str]] = {}
    roots = {name: info.annotation for name, info in InstallationConfig.model_fields.items()
             if name != "rooms"}
    # the rooms' [capture] and [audio_out] are written as top-level defaults too
    for key in ("capture", "audio_out"):
        roots[key] = RoomConfig.model_fields[key].annotation
    for key, annotation in roots.items():
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _tables(annotation, f"[{key}]", found)
    _tables(RoomConfig, "[[rooms]]", found)
    return found


def _belongs_under(name: str) -> str:
    """``"; midi_channel_offset belongs under [[rooms]]"`` where a field unknown where it
    was written is one of another table (a hint for the unknown-field message), else ''.

    A name found in more than three tables says too little to point anywhere.
    """
    tables = list(dict.fromkeys(_field_tables().get(name, ())))
    if not tables or len(tables) > 3:
        return ""
    return f"; {name} belongs under {' or '.join(tables)}"


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> InstallationConfig:
    """Validate a parsed TOML document; room sections are merged over the defaults.

    Top-level ``[capture]`` and ``[audio_out]`` tables are defaults for every
    room; a room's own tables override them key by key.
    """
    raw = dict(raw)
    defaults = {key: raw.pop(key, {}) for key in ("capture", "audio_out")}
    for key, value in defaults.items():
        if not isinstance(value, dict):
            raise ConfigError(f"invalid config in {source}: field `{key}`: expected a table")
    rooms = raw.get("rooms")
    own_rooms = list(rooms) if isinstance(rooms, list) else []
    if isinstance(rooms, list):
        merged_rooms = []
        for room in rooms:
            if isinstance(room, dict):
                room = dict(room)
                for key, default in defaults.items():
                    own = room.get(key, {})
                    if isinstance(own, dict):
                        room[key] = _deep_merge(default, own)
            merged_rooms.append(room)
        raw["rooms"] = merged_rooms
    if (dated := dated_value(raw)) is not None:
        loc, value = dated
        raise ConfigError(f"invalid config in {source}: field `{_format_location(loc)}`: "
                          f"a date or time ({value}) where no field takes one; write it as "
                          "a string or a number")
    try:
        return validate_typed(InstallationConfig, raw)
    except ValidationError as exc:
        lines = []
        errors = exc.errors(include_url=False)
        deep = {error["loc"][:1] for error in errors if len(error["loc"]) > 1}
        for error in errors:
            if error["type"] == "too_short" and error["loc"][:1] in deep:
                continue  # pydantic also reports a list whose items failed as too short
            where = _format_location(error["loc"]) or "(top level)"
            inherited = ""
            if (default := _from_default(error["loc"], own_rooms, defaults)) is not None:
                # the file has [capture] fps, not rooms[0].capture.fps: named as written,
                # once for every room that inherits it
                where, inherited = default, "; the default every room takes"
            got = error.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {got!r})"
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                hint = _belongs_under(str(error["loc"][-1]))
                message = f"unknown field (check its spelling and section{hint})"
            line = f"field `{where}`: {message}{got_text}{inherited}"
            if line not in lines:
                lines.append(line)
        raise ConfigError(f"invalid config in {source}:\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path) -> InstallationConfig:
    """Read and validate a TOML (or frozen JSON) config; ConfigError names file and field."""
    path = Path(path)
    try:
        # utf-8-sig: Windows' Notepad may start the file with a byte-order mark, which
        # TOML's parser takes for a statement ("Invalid statement" at line 1, column 1)
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if path.suffix == ".json":  # the supervisor's frozen copy of a validated config
        try:
            return config_from_dict(json.loads(text), source=str(path))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON in {path}: {exc}") from None
    try:
        raw = parse_toml(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None
    return config_from_dict(raw, source=str(path))


def freeze_config(config: InstallationConfig, path: str | Path) -> Path:
    """Write ``config`` as JSON that :func:`load_config` reads back unchanged.

    Written whole or not at all (a temporary file beside it, renamed over it), so a role
    never reads half a config. ConfigError, naming ``path``, where it cannot be written (a
    folder of that name, a full disk, a folder this user may not write in): the run
    refuses to start rather than start its roles on an old copy.
    """
    path = Path(path)
    text = json.dumps(config.to_toml_dict(), indent=2)
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                                 dir=path.parent)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o644)  # as a plain write made it (mkstemp: 0600)
            file.write(text)
        os.replace(temporary, path)
        temporary = None
    except OSError as exc:
        raise ConfigError(f"cannot write the run's frozen config {path} "
                          f"({exc.strerror or exc}): remove or rename what is in the way, or "
                          "set installation.output_dir to a folder this user can write"
                          ) from None
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
    return path
