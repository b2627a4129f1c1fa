"""Engine settings: which generator runs and how the stream is timed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.generators.diffusion.config import DiffusionConfig
from engine.generators.procedural.config import ProceduralConfig
from ground.config import NetworkConfig, SecurityConfig
from ground.errors import ConfigError

#: Shortest token Serve's port accepts: the console's rule
#: (``installation.config.MIN_TOKEN_CHARS``; the engine may not import the roof, a test
#: keeps the two equal).
MIN_TOKEN_CHARS = 16
#: What a token may hold: it travels in an HTTP header (``Authorization: Bearer TOKEN``),
#: which carries neither spaces nor line breaks nor, portably, anything beyond ASCII.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


class RayConfig(BaseModel):
    """Where the generator runs when ``engine.backend = "ray"``: a Ray Serve deployment.

    ``art2mus serve`` starts (or, with ``address``, joins) the Ray cluster and
    deploys the generator with these bounds; the engine front reaches it over
    Serve's HTTP proxy at ``http_host:http_port`` (:mod:`engine.ray_serve`).
    With a token (``token_file``, or ``token``) the front sends it with every
    request and the replicas refuse any request without it; the installation
    config requires one when ``http_host`` is not a loopback address.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    address: str | None = Field(
        None, description="Ray cluster to join (e.g. 'ray://head:10001' or 'auto'); "
        "None starts a local head in the `art2mus serve` process.")
    http_host: str = Field("127.0.0.1", min_length=1,
                           description="Host of Serve's HTTP proxy, as the front reaches it.")
    http_port: int = Field(8765, ge=1, le=65535, description="Port of Serve's HTTP proxy.")
    token: str = Field(
        "", description=f"Token the front sends and the replicas demand (>= {MIN_TOKEN_CHARS} "
        "characters); one of token and token_file is required when http_host is not a "
        "loopback address.")
    token_file: str = Field(
        "", description="A keys file whose first non-empty line is the token (instead of "
        "token): the same file on the front's machine and on the one running art2mus serve.")
    replicas: int = Field(2, ge=1, le=1024, description="Replicas started (one per GPU or "
                          "CPU slot); autoscaling moves between min_replicas and max_replicas.")
    min_replicas: int = Field(1, ge=0, le=1024)
    max_replicas: int = Field(2, ge=1, le=1024)
    num_gpus_per_replica: float = Field(0.0, ge=0.0, le=16.0)
    num_cpus_per_replica: float = Field(1.0, gt=0.0, le=256.0)
    max_batch_size: int = Field(16, ge=1, le=1024,
                                description="Most requests one replica serves in one batch.")
    batch_wait_s: float = Field(0.002, ge=0.0, le=1.0,
                                description="How long a replica waits to fill a batch.")
    request_timeout_s: float = Field(
        2.0, gt=0.0, le=600.0,
        description="Longest wait for one reply before the request is retried or made here.")
    deadline_slack_s: float = Field(
        0.05, ge=0.0, le=10.0,
        description="A reply is due this long before the room's buffer runs out (the hop "
        "back); a request finished later counts as a deadline missed.")
    probe_every_s: float = Field(3.0, gt=0.0, le=600.0,
                                 description="While Ray is unreachable, how often it is probed.")

    @model_validator(mode="after")
    def _bounds_and_token(self) -> RayConfig:
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(
                f"engine.ray: expected min_replicas <= replicas <= max_replicas, got "
                f"{self.min_replicas} <= {self.replicas} <= {self.max_replicas}")
        if self.token and self.token_file:
            raise ValueError("engine.ray.token, engine.ray.token_file: expected one of them, "
                             "got both")
        if self.token:
            _check_token(self.token, "engine.ray.token")
        return self

    def read_token(self) -> str:
        """The token from ``token`` or the first non-empty line of ``token_file`` ('' = none).

        ConfigError naming the field and the file when it cannot be read or holds a short
        token. Read where it is used (the front, ``art2mus serve``), never logged.
        """
        if not self.token_file:
            return self.token
        try:
            # utf-8-sig: a token file saved by Notepad starts with a byte-order mark, which
            # would become part of the token
            lines = Path(self.token_file).read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"engine.ray.token_file: cannot read {self.token_file}: "
                              f"{exc}") from None
        token = next((line.strip() for line in lines if line.strip()), "")
        try:
            _check_token(token, "engine.ray.token_file",
                         f" on the first non-empty line of {self.token_file}")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return token


def _check_token(token: str, where: str, place: str = "") -> None:
    """ValueError naming ``where`` unless ``token`` is long enough and fits in a header."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{where}: expected a token of at least {MIN_TOKEN_CHARS} "
                         f"characters{place}, got {len(token)}")
    if not _TOKEN_CHARS.fullmatch(token):
        # the token itself is never repeated in a message (messages reach logs)
        raise ValueError(f"{where}: expected a token of printable ASCII without spaces{place}, "
                         f"got other characters")


class EngineConfig(BaseModel):
    """How the engine streams: generator, sample rate, chunking, lead, transitions."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    generator: Literal["procedural", "diffusion", "sine"] = "procedural"
    sample_rate: int = Field(48000, description="Generator output rate in Hz.")
    channels: Literal[1, 2] = 2
    chunk_s: float = Field(0.5, gt=0.05, le=30.0, description="Length of one generated chunk.")
    lead_s: float = Field(
        1.5, gt=0.0, le=60.0, description="How far ahead of the playhead each room is kept."
    )
    transition_margin_s: float = Field(
        0.3, ge=0.05, le=10.0,
        description="New material after an artwork change starts this long after 'now'.",
    )
    transition_crossfade_s: float = Field(
        1.0, ge=0.0, le=10.0, description="Equal-power crossfade into new material."
    )
    view_timeout_s: float = Field(
        20.0, ge=0.0, le=86400.0,
        description="No ArtworkView from a room's capture for this long (capture down, camera "
        "gone): play the empty-room ambience. 0 = keep the last artwork forever.",
    )
    batch_window_s: float = Field(
        0.25, ge=0.0, le=10.0,
        description="Rooms whose next chunk falls due within this long of another's are "
        "generated with it in one batch (generators that batch: diffusion); they are served "
        "early, never late. 0 = one room at a time.",
    )
    backend: Literal["local", "ray"] = Field(
        "local", description="Where the generator runs: in the engine process, or in a Ray "
        "Serve deployment (engine.ray) that the engine front sends its rooms' requests to.")
    procedural: ProceduralConfig = ProceduralConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _consistent(self) -> EngineConfig:
        if self.sample_rate not in (16000, 22050, 24000, 32000, 44100, 48000):
            raise ValueError(f"sample_rate must be a standard rate, got {self.sample_rate}")
        if self.generator == "diffusion" and not self.diffusion.model:
            raise ValueError("engine.diffusion.model must name a model folder "
                             "when engine.generator = 'diffusion'")
        return self

    @property
    def chunk_samples(self) -> int:
        """Frames in one continuation chunk."""
        return round(self.chunk_s * self.sample_rate)

    @property
    def lead_samples(self) -> int:
        """Frames kept queued ahead of the playhead."""
        return round(self.lead_s * self.sample_rate)

    @property
    def margin_samples(self) -> int:
        """Frames between 'now' and the start of transition material."""
        return round(self.transition_margin_s * self.sample_rate)

    @property
    def crossfade_samples(self) -> int:
        """Frames of equal-power crossfade at a transition."""
        return round(self.transition_crossfade_s * self.sample_rate)


@dataclass(frozen=True)
class EngineRoom:
    """What the engine knows of one room: its id, its seed, its MIDI channel offset."""

    id: str
    seed: int = 0
    midi_channel_offset: int = 0


@dataclass(frozen=True)
class EngineRoleConfig:
    """What the engine role is handed: its own section, its rooms, the ground-floor sections.

    The roof (:mod:`installation.roles`) builds it from the installation's
    file; the engine never sees the whole installation config.
    """

    engine: EngineConfig
    rooms: tuple[EngineRoom, ...]
    network: NetworkConfig = field(default_factory=NetworkConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    min_change_interval_s: float = 0.25  # re-plan a room for knob moves at most this often
    beat_targets: tuple[str, ...] = ()  # "HOST:PORT" that get /ROOM/beat, /bar, /key, /chord
    osc_prefix: str = "/art2mus"
    clock_out: str = ""  # MIDI output port (name substring) for MIDI clock; "" = none
    clock_room: str = ""  # the room whose music the MIDI clock follows
