"""CurveZMQ between machines: key pairs, socket options and client authentication.

With ``[security] curve = true`` every ZeroMQ link whose endpoint leaves the
machine (a ``tcp://`` host that is not loopback) is encrypted and
authenticated (RFC 26, CurveZMQ):

- the side that **binds** (the engine's views/chunks/clock) is the Curve
  *server*: it holds ``server.key_secret`` and accepts only clients whose
  public key is a file in ``authorized/`` (checked by a ZAP handler,
  :class:`zmq.auth.thread.ThreadAuthenticator`);
- the side that **connects** (capture, audio_out on a room machine) is a
  *client*: it holds its own pair, ``NAME.key_secret`` where NAME is
  ``[security] client_key`` (default ``client``), and ``server.key`` (the
  server's public key, so it cannot be fooled by an impostor engine).

Loopback and ``ipc://`` links (the supervisor's control socket, everything
on a one-machine installation) stay in clear: nothing outside the machine
can reach them, and each machine then needs only the keys of its side.

``art2mus keys DIR --client room-1 --client room-2`` writes the layout
(:func:`create_keys`; without ``--client``, one pair named ``client``)::

    DIR/server.key  DIR/server.key_secret      engine machine (server.key also to rooms)
    DIR/room-1.key  DIR/room-1.key_secret      room-1's machine: client_key = "room-1"
    DIR/authorized/room-1.key ...              engine machine: who may connect

An existing pair is kept, so adding a room later does not replace the
server's key that every room machine already trusts.
"""

from __future__ import annotations

import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import zmq

from ground.config import SecurityConfig
from ground.errors import ConfigError, InputError

_LOOPBACK = ("127.", "localhost", "::1", "[::1]")
_KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def is_remote(endpoint: str) -> bool:
    """True when ``endpoint`` can be reached from another machine (tcp, not loopback)."""
    if not endpoint.startswith("tcp://"):
        return False
    host = urlsplit(endpoint).hostname or endpoint[6:].rpartition(":")[0]
    return not host.startswith(_LOOPBACK)


@dataclass(frozen=True)
class CurveKeys:
    """The key files of one installation (see the module docstring for the layout)."""

    folder: Path
    include_loopback: bool = False
    client: str = "client"

    def applies_to(self, endpoint: str) -> bool:
        """True when a socket on ``endpoint`` is secured (links off the machine, or all tcp)."""
        if self.include_loopback:
            return endpoint.startswith("tcp://")
        return is_remote(endpoint)

    @property
    def authorized(self) -> Path:
        """Folder of client public keys the server accepts."""
        return self.folder / "authorized"

    def _load(self, name: str, secret: bool) -> tuple[bytes, bytes | None]:
        import zmq.auth

        path = self.folder / (f"{name}.key_secret" if secret else f"{name}.key")
        if not path.is_file():
            field = ("security.client_key" if name == self.client and name != "server"
                     else "security.keys_dir")
            pairs = self.client_pairs()
            there = (f"; the client pairs there are {', '.join(pairs)} "
                     f"(set [security] client_key to this machine's)") if pairs else ""
            raise ConfigError(f"{field}: expected {path} (create the keys with "
                              f"`art2mus keys {self.folder} --client NAME`), got no such "
                              f"file{there}")
        try:
            public, secret_key = zmq.auth.load_certificate(str(path))
        except (ValueError, OSError) as exc:
            raise ConfigError(f"security.keys_dir: {path} is not a ZeroMQ certificate: "
                              f"{exc}") from None
        if secret and secret_key is None:
            raise ConfigError(f"security.keys_dir: {path} holds no secret key")
        return public, secret_key

    def make_server(self, socket: zmq.Socket) -> None:
        """Make a binding socket a Curve server."""
        public, secret = self._load("server", secret=True)
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True

    def client_pairs(self) -> list[str]:
        """Names of the client key pairs (secret key present) in the folder."""
        if not self.folder.is_dir():
            return []
        return sorted(p.name.removesuffix(".key_secret") for p in self.folder.glob("*.key_secret")
                      if p.name != "server.key_secret")

    def check(self, server: bool, client: bool) -> None:
        """Load the files a binding (``server``) or connecting (``client``) role needs.

        :class:`ConfigError` names the first that is missing or unreadable.
        """
        if server:
            self._load("server", secret=True)
            if not self.authorized.is_dir() or not any(self.authorized.glob("*.key")):
                raise ConfigError(f"security.keys_dir: expected authorized client keys in "
                                  f"{self.authorized}, got none")
        if client:
            self._load(self.client, secret=True)
            self._load("server", secret=False)

    def make_client(self, socket: zmq.Socket) -> None:
        """Make a connecting socket a Curve client of the installation's server."""
        public, secret = self._load(self.client, secret=True)
        server_public, _ = self._load("server", secret=False)
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_serverkey = server_public


_authenticators: dict[int, object] = {}
_auth_lock = threading.Lock()


def ensure_authenticator(context: zmq.Context, keys: CurveKeys) -> None:
    """Start (once per context) the ZAP handler that accepts only authorized client keys."""
    from zmq.auth.thread import ThreadAuthenticator

    with _auth_lock:
        if id(context) in _authenticators:
            return
        if not keys.authorized.is_dir():
            raise ConfigError(f"security.keys_dir: expected a folder of authorized client keys "
                              f"at {keys.authorized}, got none")
        auth = ThreadAuthenticator(context)
        auth.start()
        auth.configure_curve(domain="*", location=str(keys.authorized))
        _authenticators[id(context)] = auth


def stop_authenticators() -> None:
    """Stop every ZAP handler this process started (at role exit)."""
    with _auth_lock:
        for auth in _authenticators.values():
            auth.stop()  # type: ignore[attr-defined]
        _authenticators.clear()


def curve_keys(security: SecurityConfig) -> CurveKeys | None:
    """The keys the ``[security]`` section names when ``curve`` is on, else None."""
    if not security.curve:
        return None
    return CurveKeys(Path(security.keys_dir), security.include_loopback, security.client_key)


def create_keys(folder: str | Path, clients: tuple[str, ...] = ("client",)) -> list[Path]:
    """Write a server pair and one pair per client name, authorizing each client; the files.

    A pair already in ``folder`` is kept (and still authorized), never replaced.
    """
    import zmq.auth

    folder = Path(folder)
    for name in clients:
        if name == "server" or not _KEY_NAME.fullmatch(name):
            raise InputError(f"--client: expected a name of letters, digits, '_', '.', '-' "
                              f"(not 'server'), got {name!r}")
    authorized = folder / "authorized"
    try:
        authorized.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"keys folder {folder}: cannot create it ({exc})") from None
    written = []
    for name in ("server", *clients):
        public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
        if not (public.is_file() and secret.is_file()):
            made_public, made_secret = zmq.auth.create_certificates(str(folder), name)
            public, secret = Path(made_public), Path(made_secret)
            secret.chmod(0o600)  # the secret key: its owner only
            written += [public, secret]
        if name != "server" and not (authorized / public.name).is_file():
            shutil.copy(public, authorized / public.name)
            written.append(authorized / public.name)
    return written
