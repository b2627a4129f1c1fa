"""The technician's console: a live web page served by the supervisor of ``art2mus run``.

What it is: one page per installation (``static/console.html`` + ``console.js``,
no build step) that shows every room (camera frame, artwork, music, level,
health), the engine, the roles and the events, moves the same live
parameters as MIDI and OSC (through the supervisor's
:class:`~installation.control.ControlHub`), edits the config file with the
validator of ``check-config``, and previews the music of catalogued works.
The HTTP contract is in :mod:`installation.console.app`.

Who owns what (threads):

- the supervisor's thread owns the roles and the control PUB socket; the
  console only calls the narrow things it is handed: ``rows()`` (role rows,
  read-only) and the hub's thread-safe ``set``/``current``/``command``;
- one daemon thread runs uvicorn and its asyncio loop
  (:class:`~installation.console.app.ConsoleServer`); every request handler
  and the state poll (:class:`~installation.console.state.ConsoleState`,
  every 0.5 s) run in that loop, so the console's own state needs no lock;
- blocking work (file writes of the config editor, thumbnails, the preview
  render subprocess) runs in Starlette's thread pool, never in the loop.

Modules: ``app`` (routes, server), ``state`` (the state object, histories,
events), ``auth`` (token, cookie, loopback), ``editor`` (config check, diff,
apply, rollback), ``previews`` (catalogue, thumbnails, preview renders).
"""
