"""The console's HTTP server: a Starlette app, served by uvicorn from a daemon thread.

:class:`ConsoleServer` binds the listening socket itself (so a port in use is
an ``OSError`` at once, which the supervisor reports as
``surface_unavailable`` while the music goes on; port 0 takes any free port,
:attr:`ConsoleServer.url` says which) and runs uvicorn's loop in a thread of
its own. Everything is JSON; an error is ``{"error": "<message naming the
field, param or room>"}`` with 400, 401, 403, 404 or 413.

=====================================  =============================================
GET  /                                 the page, the state inlined (first paint
                                       needs no second request)
GET  /static/{file}                    console.js, console.css (files of static/ only)
GET  /api/state                        the state object (:mod:`.state`)
GET  /api/stream                       SSE: ``state`` every 0.5 s, ``log`` per event
GET  /api/rooms/{room}/frame.jpg       the room's latest camera JPEG (404 before one)
POST /api/params                       ``{"room", "name", "value"}`` -> as applied
POST /api/trigger                      ``{"room", "name": "freeze"|"next_variation"}``
POST /api/mute                         ``{"room", "muted"}`` -> ``{"room","muted","volume"}``
GET  /api/config                       ``{"path", "text", "version", "editable",
                                       "last_good"}`` (version: the file's sha256)
POST /api/config/check                 ``{"text", "base"?}`` -> ok, errors, diff, live,
                                       restart, version, stale (base is not the file's)
POST /api/config/apply                 ``{"text", "base"}`` -> written when valid and the
                                       file is still at version base (403: read-only;
                                       409: the file changed since it was loaded)
POST /api/config/rollback              ``{"base"}``: the last good file back (409 too)
GET  /api/catalogue?room=R             the room's works with thumbnail URLs
GET  /api/catalogue/{room}/{id}/thumb.jpg     a thumbnail (<= 160 px)
POST /api/catalogue/{room}/{id}/preview       start or poll a 20 s preview render
GET  /api/catalogue/{room}/{id}/preview.wav   the preview, 404 until ready
                                       ({id} percent-encoded; it may hold "/")
POST /api/rooms/{room}/play            ``{"artwork_id", "seconds"}``: capture shows it
                                       (seconds 0: back to the camera, whatever the id)
GET  /api/events?room=&role=&limit=    the last events, newest last
GET|POST /login                        the token form (only when a token is set)
=====================================  =============================================

Limits: request bodies over ``[console] max_body_bytes`` answer 413; API
posts must be ``application/json`` (one reader, :func:`parse_json_object`, for
every JSON body: malformed or absurdly nested JSON is a 400); a connection that
does not send its request in time is closed (:data:`HEAD_TIMEOUT_S`,
:data:`REQUEST_TIMEOUT_S`); every answer carries
:data:`~installation.console.auth.SECURITY_HEADERS`; see :mod:`.auth` for who
may connect.

Connections and requests (:class:`ConsoleLimits`): a connection that has not
sent its request head yet is *waiting*; at most :data:`MAX_WAITING` wait at
once, and :data:`MAX_PER_PEER` connections come from one address. When they
are full, a new connection takes the place of the oldest waiting one of the
address holding the most (:class:`ground.metrics.ConnectionBook`), or is
refused when its own address holds as many (closed unread after
:data:`REFUSED_LINGER_S`, so a client reopening as soon as it is cut does not
spin): sockets held idle from a few addresses never keep another address out.
Requests in hand (event streams included) are counted
apart, :data:`MAX_CONNECTIONS` at once (503 past it), the last
:data:`TRUSTED_RESERVE` of them kept for a loopback peer or a request carrying
the token. Connections closed unanswered, 503s and the malformed requests
uvicorn refuses are counted by reason and said in one line per 10 s
(:class:`~installation.control.RefusalLog`: "console: refused 330 in 10 s
(evicted 10, full 320)"), never one journal line each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ground.events import EventSink, null_sink
from ground.metrics import ConnectionBook
from ground.params import parameter, shown
from installation.config import InstallationConfig, parse_listen
from installation.console.auth import (
    COOKIE,
    OPEN_PREFIXES,
    SECURITY_HEADERS,
    ConsoleAuth,
    LoginThrottle,
    is_loopback_host,
    login_page,
)
from installation.console.editor import ConfigEditor, EditRefused
from installation.console.previews import CatalogueShelves, NotInCatalogue
from installation.console.state import TICK_S, ConsoleState, Rows, WriteErrors
from installation.control import ControlHub, RefusalLog

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                  ".html": "text/html; charset=utf-8", ".png": "image/png",
                  ".svg": "image/svg+xml", ".ico": "image/x-icon"}
#: Requests answered at once (event streams included); more answer 503. Counted from the
#: request head on: a connection that sent none holds no slot. Why: uvicorn's
#: ``limit_concurrency`` counts every open connection, so 64 idle sockets from 4
#: addresses (16 each) made every request a 503, the technician's included.
MAX_CONNECTIONS = 64
#: The last of the MAX_CONNECTIONS slots, kept for requests from a loopback peer or
#: carrying the token (header or login cookie): the login form and static files from the
#: LAN cannot take them.
TRUSTED_RESERVE = 16
#: Connections waiting for their (next) request head, in all. Past it a new connection
#: takes the place of the oldest waiting one of the address holding the most
#: (:class:`ground.metrics.ConnectionBook`), or is closed when its own address holds as
#: many: two addresses at MAX_PER_PEER fill it, and any other still gets in.
MAX_WAITING = 32
#: A connection must send a complete request head within HEAD_TIMEOUT_S of opening (or of
#: its previous answer), and the whole request, body included, within REQUEST_TIMEOUT_S,
#: or it is closed (:class:`TimedH11Protocol`). Why: uvicorn has no header-read timeout. A
#: browser sends its request head at once, and the largest body (``max_body_bytes``,
#: 256 KiB by default) crosses a LAN in well under a second: only idle or deliberately
#: slow sockets are cut.
HEAD_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
#: Connections one peer address may hold at once. A browser keeps at most six to a host
#: (its event stream among them), a few browsers on one address (a proxy) fit; past it the
#: address's own oldest waiting connection gives way, or the new one is closed.
MAX_PER_PEER = 16
#: A refused connection is closed after this long, unread, not at once (MAX_LINGERING at
#: most; past them, at once): a client that reopens a socket as soon as it is closed
#: (console_slowloris.py) otherwise made the console accept and close thousands a second,
#: two thirds of a core; now each of its sockets comes back once a second.
REFUSED_LINGER_S = 1.0
MAX_LINGERING = 64
#: What uvicorn logs (on "uvicorn.error") for each connection it refuses: counted as
#: refusals of the console instead (None: dropped, the line before says it already).
_UVICORN_REFUSALS = {
    "Invalid HTTP request received.": "invalid-request",
    "Exceeded concurrency limit.": "busy",
    "Unsupported upgrade request.": "upgrade",
}
_UVICORN_SAID_WITH = ("No supported WebSocket library detected",)
#: Longest a "show this work" may last, seconds.
MAX_SHOW_S = 24 * 3600.0


class HttpError(Exception):
    """Answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    """The console's error answer."""
    return JSONResponse({"error": message} | extra, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes, whatever Content-Length says."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HttpError(413, f"request body of {declared} bytes refused: the limit is {limit} "
                             "([console] max_body_bytes)")
    body = bytearray()
    try:
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise HttpError(413, f"request body refused: longer than {limit} bytes "
                                     "([console] max_body_bytes)")
    except ClientDisconnect:  # gone, or cut off by REQUEST_TIMEOUT_S: nobody reads the answer
        raise HttpError(400, "body: the connection closed before the whole body came") from None
    return bytes(body)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object (empty: ``{}``); 400 naming what is wrong otherwise.

    The one JSON reader of every route: a body nested deeper than the parser's
    recursion allows (100 KB of ``[`` fits in ``max_body_bytes``) is a 400 too, not
    a RecursionError and a 500.
    """
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise HttpError(400, f"body: expected JSON, got {exc}") from None
    except RecursionError:
        raise HttpError(400, "body: expected JSON, got arrays or objects nested too deep "
                             "to read") from None
    if not isinstance(data, dict):
        raise HttpError(400, f"body: expected a JSON object, got {type(data).__name__}")
    return data


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 400 (413 past ``limit``) naming what is wrong otherwise."""
    return parse_json_object(await read_body(request, limit))


def _text_field(data: dict[str, Any], name: str, default: str | None = None) -> str:
    """The body's string field ``name`` (400 naming it when it is no string, or no text:
    JSON's "\\ud800" decodes to a lone surrogate that no file or response can hold)."""
    value = data.get(name, default)
    if not isinstance(value, str):
        raise HttpError(400, f"{name}: expected a string, got {shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HttpError(400, f"{name}: expected text, got a lone surrogate at character "
                             f"{exc.start}") from None
    return value


def _base_field(data: dict[str, Any]) -> str:
    """The body's ``base``: the config file's version the edit was made from (GET /api/config
    gives it). Apply and rollback need it, so an edit never silently writes over a file
    changed since it was loaded."""
    value = data.get("base")
    if not isinstance(value, str) or not value:
        raise HttpError(400, f"base: expected the version GET /api/config gave with the text "
                             f"(the file's sha256), got {shown(value)}")
    return _text_field(data, "base")


def too_many(wait_s: float) -> Response:
    """429 with Retry-After: a client that sent too many wrong tokens waits."""
    seconds = max(1, math.ceil(wait_s))
    response = error_response(429, f"too many wrong tokens from this address: try again in "
                                   f"{seconds} s")
    response.headers["Retry-After"] = str(seconds)
    return response


_SECURITY_HEADERS = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                     for name, value in SECURITY_HEADERS.items()]


def _with_security_headers(send: Send) -> Send:
    """``send`` adding :data:`~installation.console.auth.SECURITY_HEADERS` to the answer's
    head (pages, API, static files and errors alike, Starlette's own 404 and 500 too)."""
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
        await send(message)
    return sending


class ConsoleLimits:
    """The console's connections (its :class:`TimedH11Protocol`) and requests in hand (its
    :class:`ConsoleGuard`), with what they refused (module docstring).

    Lives in the server's event loop thread; ``refusals`` is thread-safe.
    """

    def __init__(self, log_event: EventSink = null_sink) -> None:
        self.refusals = RefusalLog("console", log_event)
        self.book = ConnectionBook(MAX_PER_PEER, MAX_WAITING, MAX_WAITING + MAX_CONNECTIONS,
                                   on_refused=self.refuse)
        self.in_hand = 0
        self.lingering = 0  # refused connections not closed yet (REFUSED_LINGER_S)

    def refuse(self, reason: str) -> None:
        """Count one connection or request refused (said in the next summary)."""
        self.refusals.refuse(reason)

    def enter(self, trusted: bool) -> bool:
        """Take a request slot; False (refused, counted ``busy``) when none is left for it."""
        limit = MAX_CONNECTIONS if trusted else MAX_CONNECTIONS - TRUSTED_RESERVE
        if self.in_hand >= limit:
            self.refuse("busy")
            return False
        self.in_hand += 1
        return True

    def leave(self) -> None:
        """Give a request slot back."""
        self.in_hand -= 1


class _UvicornRefusals(logging.Filter):
    """Counts (in ``limits``) instead of logging the lines uvicorn writes per refused
    connection: a flood of junk must not write the journal full."""

    def __init__(self, limits: ConsoleLimits) -> None:
        super().__init__()
        self.limits = limits

    def filter(self, record: logging.LogRecord) -> bool:
        """False (dropped) for a per-connection refusal, counted; True for anything else."""
        message = str(record.msg)
        reason = _UVICORN_REFUSALS.get(message)
        if reason is not None:
            self.limits.refuse(reason)
            return False
        return not message.startswith(_UVICORN_SAID_WITH)


def busy(trusted: bool) -> Response:
    """503: every request slot open to this request is taken."""
    whom = "" if trusted else (" (the last ones are kept for loopback and for requests "
                               "with the token)")
    response = error_response(503, f"the console is answering {MAX_CONNECTIONS} requests "
                                   f"at once{whom}: try again in a moment")
    response.headers["Retry-After"] = "1"
    return response


class ConsoleGuard:
    """ASGI middleware: authentication, Host and Origin checks, JSON-only API posts, and the
    request slots (:class:`ConsoleLimits`) of requests that passed them."""

    def __init__(self, app: ASGIApp, auth: ConsoleAuth, throttle: LoginThrottle,
                 limits: ConsoleLimits | None = None) -> None:
        self.app = app
        self.auth = auth
        self.throttle = throttle
        self.limits = limits if limits is not None else ConsoleLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        path, method = scope.get("path", "/"), scope.get("method", "GET")
        host = headers.get("host", "")
        refused = self.auth.host_refused(host)
        if refused is not None:
            await error_response(403, refused)(scope, receive, send)
            return
        origin = headers.get("origin")
        if method not in ("GET", "HEAD") and origin and urlsplit(origin).netloc != host:
            await error_response(403, f"cross-origin request from {origin!r} refused")(
                scope, receive, send)
            return
        client = (scope.get("client") or ("?", 0))[0]
        # loopback, or the token checked below (an open path is served without one)
        trusted = is_loopback_host(str(client))
        if not path.startswith(OPEN_PREFIXES):
            cookie = ""
            for part in headers.get("cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE:
                    cookie = value
            offered = bool(headers.get("authorization") or cookie)
            # checked before the token: while it waits, a right guess must not show as a 200.
            # The check, the comparison and the failure's record below run with no await
            # between them: concurrent guesses cannot all pass the check first.
            wait_s = self.throttle.wait_s(client) if self.auth.required and offered else 0.0
            if wait_s > 0:
                await too_many(wait_s)(scope, receive, send)
                return
            if not self.auth.allowed(headers.get("authorization", ""), cookie):
                if offered:
                    self.throttle.failed(client)  # a wrong token, not merely none
                response: Response = (RedirectResponse("/login", status_code=303) if path == "/"
                                      else error_response(401, "authentication required: log in "
                                                          "at /login or send "
                                                          "'Authorization: Bearer TOKEN'"))
                await response(scope, receive, send)
                return
            trusted = trusted or self.auth.required  # it carried the token
            if (method == "POST" and path.startswith("/api/")
                    and not headers.get("content-type", "").startswith("application/json")):
                await error_response(415, "expected Content-Type: application/json")(
                    scope, receive, send)
                return
        if not self.limits.enter(trusted):
            await busy(trusted)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.limits.leave()


class Console:
    """The console's routes over its parts: state, editor, catalogue shelves, hub."""

    def __init__(self, config: InstallationConfig, *, hub: ControlHub, rows: Rows,
                 log_event: EventSink, source_path: Path | None, output_dir: Path,
                 running: Callable[[], InstallationConfig] | None = None,
                 started: Callable[[], InstallationConfig] | None = None,
                 frozen_path: Path | None = None, token: str = "",
                 write_errors: WriteErrors | None = None) -> None:
        self.config = config
        self.hub = hub
        self.log_event = log_event
        self.output_dir = output_dir
        self.limit = config.console.max_body_bytes
        self.rooms = [room.id for room in config.rooms]
        self.editor = ConfigEditor(source_path, output_dir, running or (lambda: config),
                                   config.console.allow_edit, shown_path=frozen_path,
                                   started=started)
        self.shelves = CatalogueShelves(config, output_dir,
                                        frozen_path if frozen_path is not None else source_path)
        self.state = ConsoleState(config, hub, rows, output_dir, editable=self.editor.editable,
                                  titles=self._title, write_errors=write_errors)
        host = parse_listen(config.console.listen)[0] if config.console.listen else "127.0.0.1"
        self.auth = ConsoleAuth.for_listen(host, token)
        self.throttle = LoginThrottle()  # shared by the login form and the token header
        self.limits = ConsoleLimits(log_event)  # its connections' and requests'
        self.closing = asyncio.Event()
        self._page: str | None = None
        self._titles_read: set[str] = set()

    def _read_titles(self, room: str) -> None:
        try:
            self.shelves.works(room)
        except NotInCatalogue as exc:  # no catalogue, or a broken one: only titles are lost
            if self.config.room(room).capture.recognition.catalogue:
                log.warning("console: %s", exc)

    def _title(self, room: str, artwork_id: str) -> tuple[str, str] | None:
        if room not in self._titles_read:  # once: later reads go through GET /api/catalogue
            self._titles_read.add(room)
            self._read_titles(room)
        entry = self.shelves.known(room).get(artwork_id)
        return (entry.title, entry.artist) if entry is not None else None

    # -- the app ----------------------------------------------------------------

    def app(self) -> ASGIApp:
        """The Starlette app behind :class:`ConsoleGuard`."""
        routes = [
            Route("/", self.page),
            Route("/static/{file}", self.static),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/api/state", self.get_state),
            Route("/api/stream", self.stream),
            Route("/api/events", self.get_events),
            Route("/api/rooms/{room}/frame.jpg", self.frame),
            Route("/api/rooms/{room}/play", self.play, methods=["POST"]),
            Route("/api/params", self.params, methods=["POST"]),
            Route("/api/trigger", self.trigger, methods=["POST"]),
            Route("/api/mute", self.mute, methods=["POST"]),
            Route("/api/config", self.get_config),
            Route("/api/config/check", self.check_config, methods=["POST"]),
            Route("/api/config/apply", self.apply_config, methods=["POST"]),
            Route("/api/config/rollback", self.rollback_config, methods=["POST"]),
            Route("/api/catalogue", self.catalogue),
            # ":path": an id may hold "/" (accession numbers such as "1988/12"), and routes
            # match the decoded path, where its "%2F" is a "/" again; the id is all between
            # the room and the fixed last segment, looked up in the catalogue before use
            Route("/api/catalogue/{room}/{artwork_id:path}/thumb.jpg", self.thumb),
            Route("/api/catalogue/{room}/{artwork_id:path}/preview", self.preview,
                  methods=["POST"]),
            Route("/api/catalogue/{room}/{artwork_id:path}/preview.wav", self.preview_wav),
        ]
        routes = [Route(r.path, self._answering(r.endpoint), methods=r.methods) for r in routes]
        app = Starlette(routes=routes)
        return ConsoleGuard(app, self.auth, self.throttle, self.limits)

    @staticmethod
    def _answering(endpoint: Callable[[Request], Awaitable[Response]]
                   ) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint`` with HttpError, EditRefused and NotInCatalogue turned into answers."""
        async def answer(request: Request) -> Response:
            try:
                return await endpoint(request)
            except HttpError as exc:
                return error_response(exc.status, str(exc))
            except EditRefused as exc:
                return error_response(exc.status, str(exc), errors=exc.errors)
            except NotInCatalogue as exc:
                return error_response(404, str(exc))
        answer.__name__ = getattr(endpoint, "__name__", "endpoint")
        return answer

    def _room(self, room: str) -> str:
        if room not in self.rooms:
            raise HttpError(404, f"unknown room {room[:64]!r}; rooms are {self.rooms}")
        return room

    async def poll(self) -> None:
        """Tick the state every TICK_S until the server closes (runs in the server's loop)."""
        while not self.closing.is_set():
            began = time.monotonic()
            self.state.tick()
            self.limits.refusals.flush_due()  # the summary is said even once refusals stop
            try:
                await asyncio.wait_for(self.closing.wait(),
                                       max(0.05, TICK_S - (time.monotonic() - began)))
            except TimeoutError:
                pass
        self.state.tick()  # wakes the event streams, which then see the console closing

    # -- page and static files --------------------------------------------------

    async def page(self, request: Request) -> Response:
        """The page, with the full state inlined as JSON."""
        if self._page is None:
            try:
                self._page = (STATIC_DIR / "console.html").read_text(encoding="utf-8")
            except OSError as exc:
                raise HttpError(500, f"the console page is missing: {exc}") from None
        # "<" escaped: no text in the state can close the <script> it is inlined in
        inlined = json.dumps(self.state.full(), separators=(",", ":"), default=str).replace(
            "<", "\\u003c")
        return HTMLResponse(self._page.replace("{{INITIAL_STATE}}", inlined),
                            headers={"Cache-Control": "no-store"})

    async def static(self, request: Request) -> Response:
        """A file of static/ by its exact name (nothing else can be named)."""
        name = request.path_params["file"]
        try:
            names = {p.name for p in STATIC_DIR.iterdir() if p.is_file()}
        except OSError:
            names = set()
        if name not in names or name.startswith("."):
            raise HttpError(404, f"no static file {name[:64]!r}")
        data = await run_in_threadpool((STATIC_DIR / name).read_bytes)
        kind = _CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
        return Response(data, media_type=kind, headers={"Cache-Control": "no-cache"})

    async def login(self, request: Request) -> Response:
        """The token form; a right token sets the login cookie and goes to the page."""
        if not self.auth.required:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return HTMLResponse(login_page())
        client = getattr(request.client, "host", None) or "?"
        wait_s = self.throttle.wait_s(client)
        if wait_s > 0:  # before reading the body: a waiting client costs nothing more
            return too_many(wait_s)
        body = await read_body(request, self.limit)
        if request.headers.get("content-type", "").startswith("application/json"):
            given = parse_json_object(body).get("token", "")
        else:
            given = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
        # Checked again now that the body is in: guesses sent together all passed the check
        # above while their bodies came. From here to the failure's record there is no
        # await, so at most MAX_FAILURES guesses per window are compared with the token.
        wait_s = self.throttle.wait_s(client)
        if wait_s > 0:
            return too_many(wait_s)
        if not isinstance(given, str) or not self.auth.token_ok(given):
            self.throttle.failed(client)
            self.log_event("console_login_refused", client=client)
            return HTMLResponse(login_page("Wrong token."), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, self.auth.cookie_value(), httponly=True, samesite="strict",
                            path="/")
        return response

    # -- live state -------------------------------------------------------------

    async def get_state(self, request: Request) -> Response:
        """The state object with the spectrogram history."""
        return JSONResponse(self.state.full())

    async def stream(self, request: Request) -> Response:
        """Server-Sent Events: ``state`` each tick, ``log`` for each new event."""
        async def messages() -> AsyncIterator[str]:
            seq = self.state.event_seq  # a new browser loads older events by GET /api/events
            yield f"retry: 2000\nevent: state\ndata: {self.state.state_json}\n\n"
            while not self.closing.is_set():
                await self.state.next_tick()  # sleeps between sends: one message per tick
                new = self.state.events_since(seq)
                seq = new[-1][0] if new else seq
                for _, event in new:
                    yield f"event: log\ndata: {json.dumps(event, default=str)}\n\n"
                yield f"event: state\ndata: {self.state.state_json}\n\n"
        return StreamingResponse(messages(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    async def get_events(self, request: Request) -> Response:
        """The last kept events, filtered by room and role."""
        query = request.query_params
        limit_text = query.get("limit", "300")
        # ASCII digits only ('²'.isdigit() is True, and int() refuses it), and few of them
        # (int() refuses more than 4,300)
        if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 9):
            raise HttpError(400, f"limit: expected a whole number up to 9 digits, "
                                 f"got {limit_text[:20]!r}")
        return JSONResponse({"events": self.state.recent_events(
            query.get("room") or None, query.get("role") or None, int(limit_text))})

    async def frame(self, request: Request) -> Response:
        """The room's latest camera JPEG, written by its capture role."""
        room = self._room(request.path_params["room"])
        path = self.output_dir / "console" / f"{room}.jpg"
        try:
            data = await run_in_threadpool(path.read_bytes)
        except OSError:
            raise HttpError(404, f"no camera frame yet for room {room}") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    # -- controls ---------------------------------------------------------------

    async def params(self, request: Request) -> Response:
        """Set one live parameter (clamped) for a room or every room ("*")."""
        data = await read_json(request, self.limit)
        room, name = _text_field(data, "room", "*"), _text_field(data, "name")
        if "value" not in data:
            raise HttpError(400, f"value: expected a number for parameter {name[:40]}, got none")
        try:
            param = parameter(name)  # the seven live parameters only, not engine settings
            value = self.hub.set(param.name, data["value"], room, source="console")
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        return JSONResponse({"room": room, "name": param.name, "value": value})

    async def trigger(self, request: Request) -> Response:
        """Flip freeze or step next_variation."""
        data = await read_json(request, self.limit)
        room, name = _text_field(data, "room", "*"), _text_field(data, "name")
        try:
            if name == "freeze":
                value = self.hub.toggle(name, room, source="console")
            elif name == "next_variation":
                value = self.hub.trigger(name, room, source="console")
            else:
                raise HttpError(400, f"name: expected 'freeze' or 'next_variation', "
                                     f"got {name[:40]!r}")
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        return JSONResponse({"room": room, "name": name, "value": value})

    async def mute(self, request: Request) -> Response:
        """Mute (volume 0, remembered) or unmute (restored) a room or every room."""
        data = await read_json(request, self.limit)
        room, muted = _text_field(data, "room", "*"), data.get("muted")
        if not isinstance(muted, bool):
            raise HttpError(400, f"muted: expected true or false, got {muted!r:.40}")
        try:
            return JSONResponse(self.state.mute(room, muted))
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None

    async def play(self, request: Request) -> Response:
        """Capture of the room shows a catalogued work instead of the camera for a while."""
        room = self._room(request.path_params["room"])
        data = await read_json(request, self.limit)
        seconds = data.get("seconds", 60)
        # a comparison, not math.isfinite: that raises OverflowError for a 400-digit
        # integer (and NaN compares false, so it is refused too)
        if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                or not 0 <= seconds <= MAX_SHOW_S):
            raise HttpError(400, f"seconds: expected a number in 0..{MAX_SHOW_S:g}, "
                                 f"got {shown(seconds)}")
        if seconds == 0:
            # back to the camera: always forwarded, whatever the id (capture stops any
            # showing on a stop), even when the work shown has left the catalogue since
            artwork_id = _text_field(data, "artwork_id", "")
        else:
            artwork_id = _text_field(data, "artwork_id")
            await run_in_threadpool(self.shelves.entry, room, artwork_id)  # 404: not catalogued
        self.hub.command("capture", room, {"show_artwork": artwork_id,
                                           "show_for_s": float(seconds)}, source="console")
        until = time.time() + float(seconds) if seconds else None
        return JSONResponse({"room": room, "artwork_id": artwork_id, "until": until})

    # -- config -----------------------------------------------------------------

    async def get_config(self, request: Request) -> Response:
        """The config file's text and whether it may be edited here."""
        return JSONResponse(await run_in_threadpool(self.editor.current))

    async def check_config(self, request: Request) -> Response:
        """Validate a config text and say what it would change (and, given the version it
        was edited from, whether the file has changed since)."""
        data = await read_json(request, self.limit)
        text = _text_field(data, "text")
        base = _base_field(data) if data.get("base") is not None else None  # optional here
        return JSONResponse((await run_in_threadpool(self.editor.check, text, base)).answer())

    async def apply_config(self, request: Request) -> Response:
        """Write a valid config text over the file (the reload watcher applies it), unless
        the file changed since the version the text was edited from (409)."""
        if not self.editor.editable:
            await run_in_threadpool(self.editor.apply, "", "")  # raises the 403 saying why
        data = await read_json(request, self.limit)
        text = _text_field(data, "text")
        base = _base_field(data)
        checked = await run_in_threadpool(self.editor.apply, text, base)
        self.log_event("console_config_applied", path=str(self.editor.source_path),
                       live=checked.live, restart=checked.restart)
        return JSONResponse({"ok": True, "live": checked.live, "restart": checked.restart,
                             "version": checked.version})

    async def rollback_config(self, request: Request) -> Response:
        """Put the last good file back over the file at version ``base`` (409 if it moved)."""
        if not self.editor.editable:
            await run_in_threadpool(self.editor.rollback, "")  # raises the 403 saying why
        base = _base_field(await read_json(request, self.limit))
        checked = await run_in_threadpool(self.editor.rollback, base)
        self.log_event("console_config_rolled_back", path=str(self.editor.source_path),
                       live=checked.live, restart=checked.restart)
        return JSONResponse({"ok": True, "live": checked.live, "restart": checked.restart,
                             "version": checked.version})

    # -- catalogue --------------------------------------------------------------

    async def catalogue(self, request: Request) -> Response:
        """A room's catalogued works."""
        room = request.query_params.get("room") or self.rooms[0]
        works = await run_in_threadpool(self.shelves.listing, room,
                                        lambda text: quote(text, safe=""))
        return JSONResponse({"room": room, "works": works})

    async def thumb(self, request: Request) -> Response:
        """A small JPEG of a catalogued work."""
        room, artwork_id = request.path_params["room"], request.path_params["artwork_id"]
        data = await run_in_threadpool(self.shelves.thumbnail, room, artwork_id)
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    def _preview_answer(self, room: str, artwork_id: str, state: str,
                        error: str) -> dict[str, Any]:
        url = f"/api/catalogue/{room}/{quote(artwork_id, safe='')}/preview.wav"
        return {"state": state, "url": url, "error": error or None}

    async def preview(self, request: Request) -> Response:
        """Start (or report) the render of a work's preview."""
        room, artwork_id = request.path_params["room"], request.path_params["artwork_id"]
        await read_body(request, self.limit)
        job = await run_in_threadpool(self.shelves.preview, room, artwork_id, True)
        return JSONResponse(self._preview_answer(room, artwork_id, job.state, job.error))

    async def preview_wav(self, request: Request) -> Response:
        """The rendered preview; 404 until it is ready."""
        room, artwork_id = request.path_params["room"], request.path_params["artwork_id"]
        job = await run_in_threadpool(self.shelves.preview, room, artwork_id, False)
        if job.state != "ready":
            raise HttpError(404, f"no preview of {artwork_id[:64]!r} in room {room} yet "
                                 f"({job.state}{': ' + job.error if job.error else ''})")
        data = await run_in_threadpool(job.path.read_bytes)
        return Response(data, media_type="audio/wav", headers={"Cache-Control": "no-cache"})


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that closes a connection not sending its request in time, and
    books every connection in the server's :class:`ConsoleLimits`.

    uvicorn times out only an idle keep-alive connection, after an answer; one that
    never sends a request head, or trickles it, stays open. Here a timer runs from the
    connection's start and from each answer's end: at HEAD_TIMEOUT_S a connection with
    no request head is closed, and one whose body is still coming gets until
    REQUEST_TIMEOUT_S. A request that has fully arrived is never cut (an event stream
    answers for hours). A new connection is admitted by the limits' book (it may make
    an idle one of another address give way, or be closed at once); it is *waiting*
    until its request head is in and again after each answer.
    h11 rather than uvicorn's "auto" choice: the same parser (and this timer) whether
    or not httptools happens to be installed.
    """

    _request_timer: asyncio.TimerHandle | None = None
    _waiting_since = 0.0
    _booked = False  # admitted by limits.book (released when the connection is lost)
    _lingering = False  # refused, closed after REFUSED_LINGER_S
    limits: ConsoleLimits = ConsoleLimits()  # for_server gives each server its own

    @classmethod
    def for_server(cls, limits: ConsoleLimits) -> type[TimedH11Protocol]:
        """This protocol booking its connections in ``limits`` (one per server: uvicorn
        makes a protocol object per connection, from the class it is given)."""
        return type("ConsoleH11Protocol", (cls,), {"limits": limits})

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start serving the connection, and its first request's clock; close it at once
        when the limits' book refuses it."""
        super().connection_made(transport)  # type: ignore[arg-type]
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.limits.refusals.accept()
        if not self.limits.book.admit(self, host, transport.close):
            if self.limits.lingering < MAX_LINGERING:  # see REFUSED_LINGER_S
                self.limits.lingering += 1
                self._lingering = True
                self.transport.pause_reading()
                self._request_timer = self.loop.call_later(REFUSED_LINGER_S, transport.close)
            else:
                transport.close()
            return
        self._booked = True
        self._expect_request()

    def data_received(self, data: bytes) -> None:
        """Read as uvicorn does; a request head that came in ends the connection's wait."""
        super().data_received(data)
        self._note_waiting()

    def on_response_complete(self) -> None:
        """An answer went out: the next request's clock starts."""
        super().on_response_complete()
        if not self.transport.is_closing():
            self._note_waiting()
            self._expect_request()

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed: no timer outlives it, and its place in the book is free."""
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        if self._booked:
            self.limits.book.release(self)
            self._booked = False
        if self._lingering:
            self.limits.lingering -= 1
            self._lingering = False
        super().connection_lost(exc)

    def _note_waiting(self) -> None:
        if not self._booked:
            return
        cycle: Any = self.cycle  # None until the first request head
        if cycle is not None and not cycle.response_complete:
            self.limits.book.started(self)
        else:
            self.limits.book.waiting(self)

    def _expect_request(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
        self._waiting_since = self.loop.time()
        self._request_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._check_request)

    def _check_request(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        cycle: Any = self.cycle  # None until the first request head
        if cycle is not None and not cycle.response_complete and not cycle.more_body:
            return  # the whole request is in: the answer takes as long as it takes
        if cycle is not None and not cycle.response_complete:  # the head, the body still coming
            left = REQUEST_TIMEOUT_S - (self.loop.time() - self._waiting_since)
            if left > 0:
                self._request_timer = self.loop.call_later(left, self._check_request)
                return
        # no head in HEAD_TIMEOUT_S, or no whole request in REQUEST_TIMEOUT_S
        self.limits.refuse("timeout")
        self.transport.close()


class ConsoleServer:
    """The console served by uvicorn from a daemon thread; :meth:`close` stops it."""

    def __init__(self, console: Console, sock: socket.socket, url: str) -> None:
        import uvicorn

        self.console = console
        self.url = url
        self._socket = sock
        host, port = sock.getsockname()[:2]
        # proxy_headers off: uvicorn would otherwise take the client's address from
        # X-Forwarded-For on connections from loopback, and the login throttle would count
        # guesses per address the guesser names. No proxy is trusted: the client is the peer.
        # ws "none": the console serves no WebSocket, and an upgrade stays a plain request.
        # limit_concurrency off: it counts idle connections too (see MAX_CONNECTIONS);
        # ConsoleLimits counts connections and requests instead.
        config = uvicorn.Config(console.app(), host=host, port=port, log_level="warning",
                                lifespan="off", log_config=None, server_header=False,
                                timeout_graceful_shutdown=2,
                                proxy_headers=False, forwarded_allow_ips=[],
                                http=TimedH11Protocol.for_server(console.limits), ws="none")
        self._uvicorn_refusals = _UvicornRefusals(console.limits)
        logging.getLogger("uvicorn.error").addFilter(self._uvicorn_refusals)
        self._server = uvicorn.Server(config)
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)

    @classmethod
    def start(cls, config: InstallationConfig, *, hub: ControlHub, rows: Rows,
              log_event: EventSink = null_sink, source_path: Path | None = None,
              output_dir: Path | None = None,
              running: Callable[[], InstallationConfig] | None = None,
              frozen_path: Path | None = None,
              started: Callable[[], InstallationConfig] | None = None,
              write_errors: WriteErrors | None = None) -> ConsoleServer:
        """Bind ``[console] listen`` and serve the console from a thread of its own.

        ``rows``: the supervisor's role rows; ``write_errors()``: the files the
        supervisor cannot write now (target -> error); ``source_path``: the TOML the
        editor edits (None: read-only, ``frozen_path`` shown instead);
        ``running()``: the config in force (the reload watcher's); previews
        render with ``frozen_path`` (else ``source_path``). OSError when the
        address cannot be bound; ConfigError when the token file cannot be read.
        """
        console_config = config.console
        host, port = parse_listen(console_config.listen)
        token = console_config.read_token()
        console = Console(config, hub=hub, rows=rows, log_event=log_event,
                          source_path=source_path,
                          output_dir=output_dir if output_dir is not None else config.output_dir,
                          running=running, started=started, frozen_path=frozen_path,
                          token=token,
                          write_errors=write_errors)
        bind_host = "127.0.0.1" if host == "localhost" else host
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((bind_host, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"console: cannot listen on {console_config.listen}: "
                                     f"{exc.strerror or exc}") from None
        bound = sock.getsockname()[1]
        shown = f"[{bind_host}]" if family == socket.AF_INET6 else bind_host
        server = cls(console, sock, f"http://{shown}:{bound}")
        console.state.tick()  # the first state (and the catalogues' titles) before any request
        server._thread.start()
        deadline = time.monotonic() + 10.0
        while not server._server.started and server._thread.is_alive() \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server._server.started:
            server.close()
            raise OSError(f"console: the server on {server.url} did not start: "
                          f"{server._failure!r}")
        return server

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported by start() or close()
            self._failure = exc
            log.error("console: the server stopped: %r", exc)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        poll = asyncio.create_task(self.console.poll())
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            self.console.closing.set()
            await poll

    def close(self) -> None:
        """Stop serving (open event streams end at once) and join the thread."""
        self._server.should_exit = True
        loop = self._loop
        if loop is not None:
            try:  # the loop's own Event, set from its own thread
                loop.call_soon_threadsafe(self.console.closing.set)
            except RuntimeError:
                pass  # the loop is already closed
        self._thread.join(timeout=10.0)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5.0)
        self._socket.close()
        logging.getLogger("uvicorn.error").removeFilter(self._uvicorn_refusals)
        self.console.limits.refusals.flush()  # what was refused since the last summary
