"""The supervisor's services: control surfaces and the config watcher, started from config.

Each service runs in its own thread(s), feeds the supervisor's
:class:`~installation.control.ControlHub`, and has ``close()``. A surface the
machine cannot provide (no MIDI back end, an OSC port in use) is reported
once in the log and the installation runs without it: music must not stop
because a knob is missing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ground.errors import Art2MusError

if TYPE_CHECKING:
    from installation.supervisor import Supervisor

log = logging.getLogger(__name__)


def start_surfaces(supervisor: Supervisor, watch: bool = True) -> list[Any]:
    """Start what ``supervisor.config`` asks for (``watch``: the config watcher too)."""
    config = supervisor.config
    services: list[Any] = []

    def attempt(what: str, start: Any) -> None:
        try:
            services.append(start())
        except (Art2MusError, OSError) as error:
            supervisor.log_event("surface_unavailable", surface=what, error=str(error))
            log.warning("%s unavailable: %s", what, error)

    if watch and supervisor.source_path is not None and config.control.reload:
        from installation.reload import ConfigWatcher

        attempt("config reload", lambda: ConfigWatcher.start_for(supervisor))
    osc = config.control.osc
    if osc.listen:
        from installation.osc import OscControlServer

        attempt("OSC in", lambda: OscControlServer.start(osc, supervisor.hub, supervisor.log_event))
    if osc.send:
        from installation.osc import OscStateSender

        attempt("OSC out", lambda: OscStateSender.start(osc, supervisor))
    midi = config.control.midi
    if midi.port or midi.virtual:
        from installation.midi_in import MidiControlInput

        attempt("MIDI in", lambda: MidiControlInput.open(midi, supervisor.hub,
                                                         supervisor.log_event))
    return services
