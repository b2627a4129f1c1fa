"""The supervisor's services: control surfaces, the console and the config watcher.

Each service runs in its own thread(s), feeds the supervisor's
:class:`~installation.control.ControlHub`, and has ``close()``. A surface the
machine cannot provide (no MIDI back end, an OSC port in use) is reported
once in the log and the installation runs without it: music must not stop
because a knob is missing. A MIDI controller that is missing at the start,
or unplugged and replugged mid-show, is looked for again every couple of
seconds by a :class:`SurfaceWatch` (its own thread, far from the audio path)
and opened when it appears; :func:`surface_states` is what ``art2mus
status`` shows of each surface that says where it stands.

The services are handed the narrow things they use (the hub, an event sink,
callables for the role rows and for taking a reloaded config), never the
supervisor itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

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


@runtime_checkable
class ReportsState(Protocol):
    """A service that says where it stands (MIDI in: the port open, or the one waited for)."""

    def surface_state(self) -> dict[str, str]:
        """Surface name -> its state, one line each."""


def surface_states(services: Sequence[Service]) -> dict[str, str]:
    """Every running surface's state that it reports (the status file, ``art2mus status``)."""
    states: dict[str, str] = {}
    for service in services:
        if isinstance(service, ReportsState):
            states.update(service.surface_state())
    return states


class SurfaceWatch:
    """Calls a surface's ``look`` every ``every_s`` on a thread of its own until closed.

    A look that raises is said once (``surface_watch_failed``) and again only
    after one has worked (``surface_watch_recovered``): the watch goes on.
    The look itself is the surface's (tests call it directly, with no thread).
    """

    def __init__(self, what: str, look: Callable[[], None], log_event: EventSink,
                 every_s: float) -> None:
        self.what = what
        self.look = look
        self.log_event = log_event
        self.every_s = every_s
        self.looks = 0  # looks done, in all
        self.failures = 0  # looks that raised, in all
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch {what}", daemon=True)

    @classmethod
    def start(cls, what: str, look: Callable[[], None], log_event: EventSink,
              every_s: float) -> SurfaceWatch:
        """Start looking (the first look ``every_s`` from now: the surface just opened)."""
        watch = cls(what, look, log_event, every_s)
        watch._thread.start()
        return watch

    def _run(self) -> None:
        streak = 0  # looks in a row that failed
        while not self._stop.wait(self.every_s):
            try:
                self.look()
            except Exception as error:  # noqa: BLE001 - one bad look must not end the watch
                streak += 1
                self.failures += 1
                if streak == 1:
                    self.log_event("surface_watch_failed", surface=self.what,
                                   error=repr(error)[:300])
                    log.warning("%s: looking for its port failed (%r); it goes on looking, "
                                "said again only once it works", self.what, error)
            else:
                if streak:
                    self.log_event("surface_watch_recovered", surface=self.what,
                                   failed_looks=streak)
                streak = 0
            self.looks += 1

    def close(self) -> None:
        """Stop looking (a look in progress ends first)."""
        self._stop.set()
        self._thread.join(timeout=5.0)


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
        from installation.midi_in import WATCH_EVERY_S, MidiControlInput

        midi_in = _attempt("MIDI in", lambda: MidiControlInput.open(midi, hub, log_event),
                           log_event)
        started.append(midi_in)
        if midi_in is not None and midi_in.watches:  # after it: closed before it
            started.append(SurfaceWatch.start("MIDI in", midi_in.watch, log_event,
                                              WATCH_EVERY_S))
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
