"""The console's config editor: check, diff, apply and roll back the installation's TOML file.

- **check**: the text is parsed with :mod:`tomllib` and validated by
  :func:`installation.config.config_from_dict`, exactly as
  :func:`~installation.config.load_config` (and so ``check-config`` and the
  reload watcher) does; its :class:`~ground.errors.ConfigError` lines
  (``field `rooms[0].capture.fps`: ...``) become ``{"field", "message"}``.
  The diff is against the file on disk; what would apply live and what
  needs a restart comes from :func:`installation.reload.plan_reload`.
- **version**: GET /api/config gives the file's text with its version, the
  SHA-256 of the file's bytes (:func:`file_version`). An edit is made against
  that version, its *base*: a check with a base that is no longer the file's
  says so (``stale``), and apply and rollback refuse it (409, "the file changed
  since you loaded it; reload to see it"), so a hand edit made meanwhile (which
  the reload watcher has already put live) is never silently written over, nor
  a second browser's apply. The version is compared inside the editor's lock,
  right before the file is replaced; what no lock can stop is a hand save in
  the instant between that comparison and the rename.
- **apply**: only a text that passes the check is written. The file on disk,
  when it is itself valid, is first copied to ``OUTPUT/console/last-good.toml``;
  then the new text replaces the file atomically (a temporary file beside
  it, then :func:`os.replace`). A config path that is a symbolic link (say
  ``/etc/art2mus.toml`` naming a file in a git checkout) is resolved first:
  the file it names is replaced and the link stays. The supervisor's
  :class:`~installation.reload.ConfigWatcher` sees the change and applies it
  as it applies any edit: the console never applies a config itself.
- **rollback**: the last good file is checked again and applied the same way
  (so a second rollback undoes the first). It takes the base too: the file on
  disk is what last-good would replace, and a hand edit the technician has not
  seen is refused with 409 rather than dropped (last-good keeps one file only).

No source file (the demo runs from a built-in config) or ``[console]
allow_edit = false``: read-only.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ground.config import parse_toml
from ground.errors import ConfigError
from installation.config import InstallationConfig, config_from_dict
from installation.reload import plan_reload

_FIELD_LINE = re.compile(r"field `([^`]*)`: (.*)")
#: Longest diff returned, characters (a pasted huge file must not make a huge answer).
MAX_DIFF_CHARS = 100_000


class EditRefused(Exception):
    """An edit the console does not make; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.errors = errors or []


@dataclass
class ConfigCheck:
    """The outcome of checking a config text (the answer of POST /api/config/check)."""

    ok: bool
    errors: list[dict[str, str]] = field(default_factory=list)
    diff: str = ""
    live: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    config: InstallationConfig | None = None
    #: The file's version on disk now (None: no source file).
    version: str | None = None
    #: True when the check was given a base that is no longer the file's version.
    stale: bool = False

    def answer(self) -> dict[str, Any]:
        """The JSON answer."""
        return {"ok": self.ok, "errors": self.errors, "diff": self.diff, "live": self.live,
                "restart": self.restart, "version": self.version, "stale": self.stale}


def config_errors(error: ConfigError) -> list[dict[str, str]]:
    """A :class:`ConfigError` from :func:`config_from_dict` as ``[{"field", "message"}]``."""
    found = []
    for line in str(error).splitlines():
        match = _FIELD_LINE.search(line)
        if match:
            where, message = match.groups()
            message = message.removeprefix("Value error, ")
            found.append({"field": "" if where == "(top level)" else where, "message": message})
    return found or [{"field": "", "message": str(error)}]


def validate_text(text: str, source: str) -> tuple[InstallationConfig | None,
                                                   list[dict[str, str]]]:
    """``text`` parsed and validated as :func:`load_config` does: (config, []) or (None, errors)."""
    try:
        raw = parse_toml(text.removeprefix("\ufeff"))  # a byte-order mark, as load_config
    except tomllib.TOMLDecodeError as exc:
        return None, [{"field": "(TOML syntax)", "message": f"invalid TOML in {source}: {exc}"}]
    try:
        return config_from_dict(raw, source=source), []
    except ConfigError as exc:
        return None, config_errors(exc)


def file_version(data: bytes) -> str:
    """The version of a config file's bytes as the console gives it: their SHA-256, in hex."""
    return hashlib.sha256(data).hexdigest()


def _replace_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never half.

    A symbolic link is followed first: the file it names is replaced (the temporary
    beside that file, so :func:`os.replace` stays on one file system) and the link
    is kept, pointing at the new text.
    """
    try:
        target = path.resolve()  # strict=False: a file not there yet resolves too
    except RuntimeError as exc:  # a symlink loop (Python 3.11 raises RuntimeError)
        raise OSError(f"{path}: {exc}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.console-tmp")
    # newline="": the bytes are the text's, so their version is file_version(text.encode())
    with temporary.open("w", encoding="utf-8", newline="") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    try:
        os.chmod(temporary, target.stat().st_mode & 0o7777)  # keep the file's permissions
    except OSError:
        pass  # a new file: the umask's
    os.replace(temporary, target)


class ConfigEditor:
    """Checks and writes the installation's TOML source file for the console.

    ``running()`` is the config in force (the reload watcher's current one),
    which a check's live plan compares against; ``started()`` the one the roles
    were started with (default ``running``), which what needs a restart is
    compared with (:func:`~installation.reload.plan_reload`). Methods block on file
    I/O: the app calls them from its thread pool; a lock keeps two applies apart.
    """

    def __init__(self, source_path: Path | None, output_dir: Path,
                 running: Callable[[], InstallationConfig], allow_edit: bool,
                 shown_path: Path | None = None,
                 started: Callable[[], InstallationConfig] | None = None) -> None:
        self.source_path = source_path
        self.last_good_path = output_dir / "console" / "last-good.toml"
        self.running = running
        self.started = started or running
        self.allow_edit = allow_edit
        self.shown_path = shown_path  # what GET /api/config shows when there is no source
        self._lock = threading.Lock()

    @property
    def editable(self) -> bool:
        """True when apply and rollback may write the file."""
        return self.source_path is not None and self.allow_edit

    def _read_source(self) -> tuple[str, str]:
        """The source file's text (decoded as load_config reads it) and its version."""
        assert self.source_path is not None
        try:
            data = self.source_path.read_bytes()
            return data.decode("utf-8-sig"), file_version(data)
        except (OSError, UnicodeDecodeError) as exc:
            raise EditRefused(500, f"cannot read config file {self.source_path}: {exc}") from None

    def _read_unless_changed(self, base: str) -> str:
        """The source file's text; 409 unless the file is still at version ``base``."""
        text, now = self._read_source()
        if now != base:
            raise EditRefused(409, f"config file {self.source_path}: the file changed since you "
                                   f"loaded it; reload to see it (expected version {base[:12]}, "
                                   f"found {now[:12]} on disk)")
        return text

    def current(self) -> dict[str, Any]:
        """GET /api/config: ``{"path", "text", "version", "editable", "last_good"}``.

        ``version`` (:func:`file_version`) is the base apply and rollback take; None
        without a source file.
        """
        if self.source_path is None:
            path = self.shown_path
            text = ""
            if path is not None:
                try:
                    text = path.read_text(encoding="utf-8-sig")
                except (OSError, UnicodeDecodeError) as exc:
                    text = f"# cannot read {path}: {exc}\n"
            return {"path": str(path) if path else None, "text": text, "version": None,
                    "editable": False, "last_good": False}
        text, version = self._read_source()
        return {"path": str(self.source_path), "text": text, "version": version,
                "editable": self.editable, "last_good": self.last_good_path.is_file()}

    def check(self, text: str, base: str | None = None) -> ConfigCheck:
        """Validate ``text`` and say what applying it would change (nothing is written).

        With ``base`` (the version the text was edited from) the answer also says
        whether the file has changed since (``stale``): apply would refuse it.
        """
        source = str(self.source_path or "<console>")
        config, errors = validate_text(text, source)
        old_text, version = self._read_source() if self.source_path is not None else ("", None)
        stale = base is not None and version is not None and base != version
        diff = "".join(difflib.unified_diff(
            old_text.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"{source} (on disk)", tofile=f"{source} (edited)"))
        if len(diff) > MAX_DIFF_CHARS:
            diff = diff[:MAX_DIFF_CHARS] + "\n... (diff cut short)\n"
        if config is None:
            return ConfigCheck(False, errors, diff, version=version, stale=stale)
        plan = plan_reload(self.running(), config, started=self.started())
        return ConfigCheck(True, [], diff, plan.applied, plan.restart_needed, config,
                           version=version, stale=stale)

    def _refuse_unless_editable(self) -> None:
        if self.source_path is None:
            raise EditRefused(403, "config is read-only: this installation runs from a built-in "
                                   "config, not a file (start it with `art2mus run --config FILE`)")
        if not self.allow_edit:
            raise EditRefused(403, "config is read-only: [console] allow_edit = false")

    def apply(self, text: str, base: str) -> ConfigCheck:
        """Replace the source file with ``text`` when it is valid and the file is still at
        version ``base`` (what the text was edited from); EditRefused otherwise (400, 409).

        The answer's ``version`` is the new file's.
        """
        self._refuse_unless_editable()
        assert self.source_path is not None
        with self._lock:
            checked = self.check(text, base)
            if not checked.ok:
                raise EditRefused(400, "config refused: " + "; ".join(
                    f"{e['field']}: {e['message']}" if e["field"] else e["message"]
                    for e in checked.errors), checked.errors)
            old_text = self._read_unless_changed(base)
            old_config, _ = validate_text(old_text, str(self.source_path))
            try:
                if old_config is not None and old_text != text:
                    _replace_atomically(self.last_good_path, old_text)
                # again, last thing before the rename: a hand save while last-good was written
                self._read_unless_changed(base)
                _replace_atomically(self.source_path, text)
            except OSError as exc:
                raise EditRefused(500, f"cannot write config file {self.source_path}: "
                                       f"{exc}") from None
            checked.version = file_version(text.encode("utf-8"))
            checked.stale = False
            return checked

    def rollback(self, base: str) -> ConfigCheck:
        """Apply the last good file (checked again first) over the file at version ``base``;
        EditRefused when there is none (404) or the file changed since ``base`` (409)."""
        self._refuse_unless_editable()
        try:
            text = self.last_good_path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise EditRefused(404, "no last good config to roll back to yet (one is kept when "
                                   "the console applies an edit)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise EditRefused(500, f"cannot read {self.last_good_path}: {exc}") from None
        return self.apply(text, base)
