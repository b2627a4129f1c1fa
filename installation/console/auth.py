"""Who may use the console: a token (header or login cookie), and guards for loopback use.

- Bound to loopback with no token (the default): anyone on this machine may
  use it, as anyone here may edit the config file. Two browser-borne attacks
  remain and are refused: another web site posting to it (a cross-origin
  ``Origin`` is refused; API posts must be ``application/json``, which a
  foreign page cannot send without a CORS preflight we never answer) and DNS
  rebinding (a ``Host`` that is not a loopback name is refused).
- With a token (required beyond loopback, :class:`~installation.config.ConsoleConfig`):
  every route but ``/login`` and ``/static/`` needs ``Authorization: Bearer
  TOKEN`` or the HttpOnly, SameSite=Strict cookie that ``POST /login`` sets.
  Tokens are compared with :func:`hmac.compare_digest` (constant time); the
  cookie holds an HMAC of the token, never the token itself.
- Guessing is slowed down (:class:`LoginThrottle`): a client that sent
  ``MAX_FAILURES`` wrong tokens (form, header or cookie) in ``WINDOW_S`` is
  answered 429 until the oldest of them is that old.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from installation.config import is_loopback

#: Name of the login cookie.
COOKIE = "art2mus_console"
#: Paths served without authentication (the login form and the page's static files).
OPEN_PREFIXES = ("/login", "/static/")
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def host_name(host_header: str) -> str:
    """The host part of a ``Host`` header (``"[::1]:8080"`` -> ``"::1"``)."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


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
        name = host_name(host_header).lower()
        if name in _LOOPBACK_NAMES or name.startswith("127."):
            return None
        return f"Host {host_header!r} refused: this console answers loopback names only"


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
    """The token form (small, self-contained: it is served before any login)."""
    shown = (f'<p class="error" data-testid="login-error" role="alert">{html.escape(error)}</p>'
             if error else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>art2mus console: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 16px system-ui, sans-serif; display: grid; place-items: center; min-height: 90vh;
       background: #15171a; color: #e8e8e8; }}
form {{ background: #22262b; padding: 2em; border-radius: 8px; display: grid; gap: 0.8em;
       min-width: 20em; }}
input, button {{ font: inherit; padding: 0.5em; }}
.error {{ color: #ff7b72; margin: 0; }}
</style></head>
<body><form method="post" action="/login" data-testid="login-form">
<h1>art2mus console</h1>
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus
       required data-testid="login-token">
{shown}
<button type="submit" data-testid="login-submit">Log in</button>
</form></body></html>
"""
