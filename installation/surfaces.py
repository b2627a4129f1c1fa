"""The supervisor's services: control surfaces, the console and the config watcher.

Each service runs in its own thread(s), feeds the supervisor's
:class:`~installation.control.ControlHub`, and has ``close()``. A surface the
machine cannot provide (no MIDI back end, an OSC port in use) is reported
once in the log and the installation runs without it: music must not stop
because a knob is missing.

The services are handed the narrow things they use (the hub, an event sink,
callables for the role rows and for taking a reloaded config), never the
supervisor itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ground.errors import Art2MusError, DependencyError
from ground.events import EventSink
from installation.config import ControlConfig, InstallationConfig
from installation.control import ControlHub
from installation.reload import ConfigWatcher

if TYPE_CHECKING:
    from installation.console.app import ConsoleServer

log = logging.getLogger(__name__)

_S = TypeVar("_S")


class Service(Protocol):
    """A running control service: it only needs to be closed."""

    def close(self) -> None:
        """Stop the service and release what it holds."""


def _attempt(what: str, start: Callable[[], _S], log_event: EventSink) -> _S | None:
    """Start one service; one the machine cannot provide is reported and skipped (None)."""
    try:
        return start()
    except (Art2MusError, OSError) as error:
        log_event("surface_unavailable", surface=what, error=str(error))
        log.warning("%s unavailable: %s", what, error)
        return None


def start_watcher(path: Path | None, current: InstallationConfig, *, hub: ControlHub,
                  apply: Callable[[InstallationConfig], None],
                  restart_surfaces: Callable[[], None],
                  log_event: EventSink) -> ConfigWatcher | None:
    """Watch ``path`` for edits when there is one and ``[control] reload`` asks for it."""
    if path is None or not current.control.reload:
        return None
    return _attempt("config reload", lambda: ConfigWatcher.start(
        path, current, hub=hub, apply=apply, restart_surfaces=restart_surfaces,
        log_event=log_event), log_event)


def start_surfaces(control: ControlConfig, *, hub: ControlHub, log_event: EventSink,
                   rows: Callable[[], list[dict[str, Any]]],
                   rooms: Sequence[str]) -> list[Service]:
    """Start the OSC and MIDI surfaces ``control`` asks for (``rows``, ``rooms``: OSC out).

    OSCQuery describes OSC in, so it starts only once OSC in listens.
    """
    started: list[Service | None] = []
    osc = control.osc
    if osc.listen:
        from installation.osc import OscControlServer

        osc_in = _attempt("OSC in", lambda: OscControlServer.start(osc, hub, log_event),
                          log_event)
        started.append(osc_in)
        if osc.query_port and osc_in is None:
            error = "OSC in is not listening: nothing to describe"
            log_event("surface_unavailable", surface="OSCQuery", error=error)
            log.warning("OSCQuery unavailable: %s", error)
        elif osc.query_port and osc_in is not None:
            from installation.oscquery import OscQueryServer

            osc_port = osc_in.port
            started.append(_attempt("OSCQuery", lambda: OscQueryServer.start(
                osc, hub, log_event, osc_port=osc_port, rows=rows), log_event))
    if osc.send:
        from installation.osc import OscStateSender

        started.append(_attempt("OSC out", lambda: OscStateSender.start(osc, rows, rooms,
                                                                         log_event), log_event))
        if osc.echo:
            from installation.osc import OscParameterEcho

            started.append(_attempt("OSC echo", lambda: OscParameterEcho.start(osc, hub,
                                                                               log_event),
                                    log_event))
    midi = control.midi
    if midi.port or midi.virtual:
        from installation.midi_in import MidiControlInput

        started.append(_attempt("MIDI in", lambda: MidiControlInput.open(midi, hub, log_event),
                                log_event))
    link = control.link
    if link.enabled:
        from installation.tempo_sync import LinkSync, room_downbeat_reader, room_tempo_reader

        led = link.room or rooms[0]
        started.append(_attempt("Ableton Link", lambda: LinkSync.start(
            link, hub, room_tempo_reader(rows, led), log_event,
            room_downbeat=room_downbeat_reader(rows, led)), log_event))
    return [service for service in started if service is not None]


def start_console(config: InstallationConfig, *, hub: ControlHub, log_event: EventSink,
                  rows: Callable[[], list[dict[str, Any]]], source_path: Path | None,
                  output_dir: Path, running: Callable[[], InstallationConfig],
                  frozen_path: Path | None,
                  write_errors: Callable[[], dict[str, str]] | None = None,
                  started: Callable[[], InstallationConfig] | None = None,
                  ) -> ConsoleServer | None:
    """Serve the technician's console when ``[console] listen`` asks for it.

    A port in use (or an unreadable token file, or no console extra installed) is
    ``surface_unavailable``: the installation goes on without a console.
    """
    if not config.console.listen:
        return None

    def start() -> ConsoleServer:
        try:
            from installation.console.app import ConsoleServer
        except ImportError as error:  # installed without the console extra
            raise DependencyError(f"the console needs starlette and uvicorn ({error.name} is "
                                  "missing: pip install 'art2mus[console]')") from None
        return ConsoleServer.start(
            config, hub=hub, rows=rows, log_event=log_event, source_path=source_path,
            output_dir=output_dir, running=running, frozen_path=frozen_path,
            write_errors=write_errors, started=started)

    return _attempt("console", start, log_event)
