"""The ground floor's own config sections: the network, its security and the metrics endpoints.

Every role needs these three to open its sockets and its Prometheus
endpoint, so they live here with the transport that reads them; the roof's
:mod:`installation.config` composes them into the installation's file with
the roles' own sections. A role is handed these sections, never the whole
installation config. :func:`parse_toml` is how every TOML file we read is parsed.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from pathlib import PurePath
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from ground.protocol import DEFAULT_MAX_MESSAGE_BYTES

#: A config switch: only TOML's (or JSON's) ``true`` or ``false``. Pydantic's lax mode
#: would also take ``"yes"``, ``"off"``, ``1`` or ``"0"``, so a number or a word pasted
#: under the wrong key was read as a switch instead of refused by name.
Flag = Annotated[bool, Strict()]


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads`` whose every refusal is a ``tomllib.TOMLDecodeError``: arrays or
    tables nested some thousands deep make tomllib recurse past Python's limit, and the
    RecursionError went past every caller's guard (a traceback, the console's 500)."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("arrays or tables nested too deep") from None


Section = TypeVar("Section", bound=BaseModel)


def _path_text(value: object) -> object:
    """``json.dumps``' fallback: a path as its string; nothing else is written."""
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a config value")


def validate_typed(model: type[Section], document: dict[str, Any]) -> Section:
    """``model`` from a parsed TOML document, each value of the type TOML wrote it as.

    Pydantic's lax Python mode took ``fps = true`` as 1 and ``lead_s = "0.5"`` as 0.5;
    its strict JSON mode takes true/false for a switch and a number for a number, while
    still reading a path from a string and a tuple from a list, as TOML writes them.
    Call :func:`dated_value` first: a TOML date is no JSON value. Raises pydantic's
    ValidationError.
    """
    return model.model_validate_json(json.dumps(document, default=_path_text), strict=True)


def dated_value(value: object, loc: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], object] | None:
    """Where a parsed document holds a TOML date or time (no config field takes one):
    its location (keys and list indices) and the value; None if nowhere."""
    if isinstance(value, dt.date | dt.time):
        return loc, value
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if (found := dated_value(item, (*loc, key))) is not None:
            return found
    return None


def endpoint_problem(endpoint: str) -> str | None:
    """What is wrong with a ZeroMQ endpoint string (without repeating it), or None.

    ``tcp://HOST:PORT`` needs a host and a port 1..65535 (ZeroMQ would bind
    ``:99999`` or ``:*`` to a random port no peer can find); ``ipc://PATH`` and
    ``inproc://NAME`` need a path or name.
    """
    expected = "expected tcp://HOST:PORT (port 1..65535), ipc://PATH or inproc://NAME"
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc"):
        return f"{expected}; the scheme is not one of these"
    if scheme != "tcp":
        return None if rest else f"{expected}; nothing follows {scheme}://"
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        return f"{expected}; no HOST:PORT follows tcp://"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{expected}; the port is {port!r}"
    return None


class NetworkConfig(BaseModel):
    """ZeroMQ endpoints. The engine binds views, chunks and clock; the supervisor binds control."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    views: str = Field("tcp://127.0.0.1:5701", description="capture -> engine (ArtworkView)")
    chunks: str = Field("tcp://127.0.0.1:5702", description="engine -> audio_out (AudioChunk)")
    clock: str = Field("tcp://127.0.0.1:5703", description="audio_out -> engine (PlaybackClock)")
    control: str = Field("tcp://127.0.0.1:5704", description="supervisor -> roles (Control)")
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=1024, le=1 << 30)

    @field_validator("views", "chunks", "clock", "control")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        problem = endpoint_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _distinct(self) -> NetworkConfig:
        endpoints = [self.views, self.chunks, self.clock, self.control]
        if len(set(endpoints)) != len(endpoints):
            raise ValueError(f"endpoints must be distinct, got {endpoints}")
        return self


class MetricsConfig(BaseModel):
    """Prometheus endpoints: the supervisor on ``port``, then engine, then each room's roles."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    port: int = Field(
        0, ge=0, lt=65536,
        description="Supervisor port; engine port+1, room i: audio_out port+2+2i, "
        "capture port+3+2i. 0 = no metrics endpoints.",
    )
    host: str = Field("127.0.0.1", description="Interface the endpoints listen on.")


class SecurityConfig(BaseModel):
    """CurveZMQ between machines: ``art2mus keys DIR`` writes the key layout read here."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    curve: Flag = Field(False, description="Authenticate and encrypt every ZeroMQ link.")
    keys_dir: str = Field(
        "keys",
        description="server.key(_secret), client.key(_secret), authorized/*.key "
        "(client public keys the binding side accepts).",
    )
    include_loopback: Flag = Field(
        False, description="Also secure loopback links (normally only links between machines)."
    )
    client_key: str = Field(
        "client", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The key pair a connecting role (capture, audio_out) loads: "
        "KEYS_DIR/NAME.key_secret, as `art2mus keys DIR --client NAME` wrote it.",
    )
