"""Who may use the console: a token (header or login cookie), and guards for loopback use.

- Bound to loopback with no token (the default): anyone on this machine may
  use it, as anyone here may edit the config file. Browser-borne attacks
  remain and are refused: another web site posting to it (a cross-origin
  ``Origin`` is refused; API posts must be ``application/json``, which a
  foreign page cannot send without a CORS preflight we never answer), DNS
  rebinding (the ``Host`` must be exactly ``localhost`` or a literal loopback
  address -- 127.0.0.0/8, ``::1``, ``::ffff:127.x.y.z`` -- with an optional
  numeric port; ``127.evil.example`` or ``[::1].evil.example`` is refused
  403) and framing by another page (clickjacking: see the headers below).
- With a token (required beyond loopback, :class:`~installation.config.ConsoleConfig`):
  every route but ``/login`` and ``/static/`` needs ``Authorization: Bearer
  TOKEN`` or the HttpOnly, SameSite=Strict cookie that ``POST /login`` sets.
  Tokens are compared with :func:`hmac.compare_digest` (constant time); the
  cookie holds an HMAC of the token, never the token itself.
- Guessing is slowed down (:class:`LoginThrottle`): a client that sent
  ``MAX_FAILURES`` wrong tokens (form, header or cookie) in ``WINDOW_S`` is
  answered 429 until the oldest of them is that old. No more than
  ``MAX_FAILURES`` guesses per window are ever compared with the token, however
  many arrive at once: the wait is checked, the token compared and a failure
  recorded in one step of the event loop, with no ``await`` between them. The
  client is the TCP peer: ``X-Forwarded-For`` is not believed (no proxy is
  trusted), so a guesser cannot pick a fresh address per guess.
- Every answer carries :data:`SECURITY_HEADERS`: no page may frame the console
  (``X-Frame-Options: DENY``, CSP ``frame-ancestors 'none'``), the page runs
  only its own scripts and styles from ``/static/``, answers are never
  content-sniffed and no ``Referer`` goes to another site.
- A connection must send a complete request soon after it opens or after its
  last answer (:data:`installation.console.app.HEAD_TIMEOUT_S`,
  :data:`installation.console.app.REQUEST_TIMEOUT_S`), or it is closed; one
  peer address holds at most :data:`installation.console.app.MAX_PER_PEER`
  connections, and connections that have sent no request yet at most
  :data:`installation.console.app.MAX_WAITING` in all, a new one taking the
  place of an idle one of the address holding the most: idle or slow sockets,
  from one address or a few, cannot lock the technician out. Requests are
  counted apart from connections (:data:`installation.console.app.MAX_CONNECTIONS`),
  the last :data:`installation.console.app.TRUSTED_RESERVE` of them kept for a
  loopback peer or a request carrying the token.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from installation.config import is_loopback

#: Name of the login cookie.
COOKIE = "art2mus_console"
#: Paths served without authentication (the login form and the page's static files).
OPEN_PREFIXES = ("/login", "/static/")
#: The page's scripts and styles are its own files under /static/ (its state is inlined
#: as a JSON data block, which no CSP blocks); camera frames, thumbnails and previews
#: come from the console itself; the favicon is a ``data:`` URL. Nothing may frame it
#: (clickjacking).
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; media-src 'self'; connect-src 'self'; "
                           "object-src 'none'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'")
#: Sent with every answer (the console's guard adds them). The referrer policy is
#: "same-origin", not "no-referrer": under "no-referrer" a browser sends ``Origin: null``
#: with the login form's post, and the cross-origin guard refuses it (a null origin is
#: also what a sandboxed frame of another site sends); no Referer goes to another site
#: either way.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
#: The only loopback *names* accepted in ``Host`` ("localhost." is the same name, fully
#: qualified); every other loopback host must be a literal address.
_LOOPBACK_NAMES = {"localhost", "localhost."}
_PORT = re.compile(r"[0-9]{0,5}")  # RFC 9110: port = *DIGIT


def host_name(host_header: str) -> str | None:
    """The host part of a ``Host`` header (``"[::1]:8080"`` -> ``"::1"``); None when the
    header is not ``host[:port]`` with a numeric port (``"[::1].evil.example"``)."""
    if host_header.startswith("["):
        name, closed, rest = host_header[1:].partition("]")
        if not closed or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:]))):
            return None
        return name
    if host_header.count(":") == 1:
        name, _, port = host_header.partition(":")
        return name if _PORT.fullmatch(port) else None
    return host_header  # no port, or a bare IPv6 address (no DNS name holds a ':')


def is_loopback_host(name: str) -> bool:
    """True for ``localhost`` and literal loopback addresses (127.0.0.0/8, ``::1``, and
    ``::ffff:127.x.y.z``); never for a DNS name that merely starts like one."""
    if name.lower() in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:  # "::1%zone": a zone is no part of a Host
            return False
        mapped = address.ipv4_mapped  # Python < 3.13 calls ::ffff:127.0.0.1 no loopback
        if mapped is not None:
            return mapped.is_loopback
    return address.is_loopback


@dataclass(frozen=True)
class ConsoleAuth:
    """The console's access rules: the token ('' = none) and whether it listens on loopback."""

    token: str
    loopback: bool

    @property
    def required(self) -> bool:
        """True when requests must carry the token (or the login cookie)."""
        return bool(self.token)

    @classmethod
    def for_listen(cls, host: str, token: str) -> ConsoleAuth:
        """The rules for a console bound to ``host`` with ``token``."""
        return cls(token=token, loopback=is_loopback(host))

    def cookie_value(self) -> str:
        """What the login cookie holds: an HMAC of the token (a stolen cookie is not the token)."""
        return hmac.new(self.token.encode(), b"art2mus-console-login",
                        hashlib.sha256).hexdigest()

    def token_ok(self, given: str) -> bool:
        """Constant-time comparison of ``given`` with the token."""
        return hmac.compare_digest(given.encode(), self.token.encode())

    def allowed(self, authorization: str, cookie: str) -> bool:
        """True when no token is needed, or the header or the cookie carries it."""
        if not self.required:
            return True
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and given and self.token_ok(given.strip()):
            return True
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.cookie_value().encode())

    def host_refused(self, host_header: str) -> str | None:
        """Why a request with this ``Host`` is refused (DNS rebinding guard), or None.

        Only a loopback console without a token checks it: with a token the
        browser must prove itself anyway, whatever name it used.
        """
        if not self.loopback or self.required:
            return None
        name = host_name(host_header)
        if name is not None and is_loopback_host(name):
            return None
        return (f"Host {host_header[:100]!r} refused: this console answers only localhost and "
                f"loopback addresses (127.0.0.0/8, [::1]), with an optional numeric port")


#: Wrong tokens a client may send in WINDOW_S before it is made to wait.
MAX_FAILURES = 5
WINDOW_S = 60.0
#: Clients remembered at most (the oldest is forgotten first): memory stays bounded.
MAX_CLIENTS = 1024


class LoginThrottle:
    """Counts wrong tokens per client address; says how long a client must wait."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def wait_s(self, client: str) -> float:
        """Seconds ``client`` must wait before trying a token again (0: it may now)."""
        times = self._failures.get(client)
        if not times:
            return 0.0
        now = self.clock()
        while times and now - times[0] >= self.window_s:
            times.popleft()
        if len(times) < self.max_failures:
            return 0.0
        return self.window_s - (now - times[0])

    def failed(self, client: str) -> None:
        """Note one wrong token from ``client``."""
        if client not in self._failures and len(self._failures) >= MAX_CLIENTS:
            del self._failures[next(iter(self._failures))]
        self._failures.setdefault(client, deque(maxlen=self.max_failures)).append(self.clock())


def login_page(error: str = "") -> str:
    """The token form (small: it is served before any login; its style is
    static/login.css, which needs no login either)."""
    shown = (f'<p class="error" data-testid="login-error" role="alert">{html.escape(error)}</p>'
             if error else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>art2mus console: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/login.css"></head>
<body><form method="post" action="/login" data-testid="login-form">
<h1>art2mus console</h1>
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus
       required data-testid="login-token">
{shown}
<button type="submit" data-testid="login-submit">Log in</button>
</form></body></html>
"""
