"""Take retention: the oldest takes go, by the operator's rule, before the disk is full.

A recording room writes about 1.4 GB an hour: a museum's disk is full in
weeks, and then the recordings stop (the music goes on). With
``[installation.takes] keep_days`` and/or ``keep_free_gb`` set, the supervisor
removes the oldest takes itself, as a video recorder does. Only files a room's
``record`` or ``midi_file`` template names are ever touched (the template with
its ``{start}`` stamp and the recorder's ``-N`` suffix, nothing else in the
output folder), and never one written within :data:`QUIET_S` (a take being
recorded is written every few seconds). Both rules are off by default: nothing
is removed unless the config says so. Each removal is an event
(``take_removed``: file, bytes, why) and a line on the supervisor's console.

A take being recorded is never removed, so retention works on the segments
audio_out has finished: it rolls a running recording into a new segment every
``[audio_out] segment_s`` (an hour by default). Where the takes being recorded
are what fills the disk (a ``segment_s`` too long for it), the console's line
names them, and :meth:`TakeKeeper.snapshot` says how much retention has left
to remove (``removable_bytes``), so ``art2mus status`` says the disk filling
once nothing finished is left (:func:`installation.status.disk_problem`).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from installation.config import InstallationConfig

#: A take written within this many seconds is being recorded (the recorder syncs every
#: 5 s, and a rolled or resumed segment starts a new file): it is never removed.
QUIET_S = 600.0
#: How often the takes are looked at: a folder of thousands of takes is listed each time.
EVERY_S = 60.0

_STAMP = r"\d{8}-\d{6}"  # audio_out.config.START_FORMAT, as the file names have it


@dataclass(frozen=True)
class Take:
    """One recording segment on disk."""

    path: Path
    bytes: int
    modified: float


def _parts(template: str) -> tuple[str, str]:
    """The glob and the regular expression of the files a segment template makes."""
    head, name = os.path.split(template)
    stem, suffix = os.path.splitext(name)
    glob_parts, regex_parts = [], []
    # the recorder adds -2, -3 to the stem of a name that exists
    for part, last in ((head, False), (stem, True)):
        pieces = part.split("{start}")
        glob_parts.append("*".join(glob.escape(piece) for piece in pieces)
                          + ("*" if last else ""))
        regex_parts.append(_STAMP.join(re.escape(piece) for piece in pieces)
                           + (r"(?:-\d+)?" if last else ""))
    joined_glob = os.path.join(glob_parts[0], glob_parts[1]) + glob.escape(suffix)
    joined_regex = (re.escape(os.sep).join([regex_parts[0], regex_parts[1]]) if head
                    else regex_parts[1]) + re.escape(suffix)
    return joined_glob, joined_regex


def find_takes(templates: Iterable[str]) -> list[Take]:
    """Every segment the ``templates`` (with ``{room}`` filled, ``{start}`` left, as
    :meth:`installation.config.InstallationConfig.recording_templates` gives them) made,
    oldest first. Files that match no template exactly are not takes."""
    found: dict[Path, Take] = {}
    for template in templates:
        pattern, regex = _parts(template)
        exact = re.compile(regex)
        for name in glob.glob(pattern):
            if not exact.fullmatch(name):
                continue
            try:
                stat = os.stat(name, follow_symlinks=False)
            except OSError:
                continue  # gone between the listing and the look
            path = Path(name)
            if path.is_file() and not path.is_symlink():
                found[path] = Take(path, stat.st_size, stat.st_mtime)
    return sorted(found.values(), key=lambda take: (take.modified, str(take.path)))


def kept_free_bytes(config: InstallationConfig) -> int:
    """What retention keeps free on the output disk under ``config`` (0: it keeps nothing
    free, or no room records)."""
    if not config.recording_templates():
        return 0
    return int(config.installation.takes.keep_free_gb * 1e9)


class TakeKeeper:
    """Removes the oldest takes past ``keep_days``, or while the output disk has less than
    ``keep_free_gb`` free; :meth:`look` is called from the supervisor's loop."""

    def __init__(self, templates: Iterable[str], output_dir: Path, keep_days: float,
                 keep_free_gb: float, log_event: Callable[..., None],
                 say: Callable[[str], None],
                 clock: Callable[[], float] = time.time,
                 free: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free
                 ) -> None:
        self.templates = list(templates)
        self.output_dir = output_dir
        self.keep_s = 0.0
        self.keep_free_bytes = 0
        self.set_rules(keep_days, keep_free_gb)
        self._log_event = log_event
        self._say = say
        self._clock = clock
        self._free = free
        self._next = 0.0
        self.removed = 0
        self.removed_bytes = 0
        self._stuck_said = False
        #: At the last look: bytes of finished takes a rule may still remove, and the takes
        #: being recorded (None: not looked at yet).
        self.removable_bytes: int | None = None
        self.recording: list[Take] = []

    @classmethod
    def for_config(cls, config: InstallationConfig, log_event: Callable[..., None],
                   say: Callable[[str], None]) -> TakeKeeper:
        """The keeper of ``config``'s rooms' takes, by its ``[installation.takes]``."""
        rules = config.installation.takes
        return cls([template for _, template in config.recording_templates()],
                   config.output_dir, rules.keep_days, rules.keep_free_gb, log_event, say)

    def set_rules(self, keep_days: float, keep_free_gb: float) -> None:
        """Take new rules (a reloaded config): applied at the next look."""
        self.keep_s = keep_days * 86400.0
        self.keep_free_bytes = int(keep_free_gb * 1e9)

    @property
    def active(self) -> bool:
        """Whether any rule is set (both off: nothing is ever looked at or removed)."""
        return bool(self.templates) and (self.keep_s > 0 or self.keep_free_bytes > 0)

    def look(self) -> list[Take]:
        """Apply the rules at most every :data:`EVERY_S`; the takes removed this time."""
        now = self._clock()
        if not self.active or now < self._next:
            return []
        self._next = now + EVERY_S
        found = find_takes(self.templates)
        takes = [take for take in found if now - take.modified >= QUIET_S]
        self.recording = [take for take in found if now - take.modified < QUIET_S]
        removed: list[Take] = []
        if self.keep_s > 0:
            for take in [t for t in takes if now - t.modified > self.keep_s]:
                days = self.keep_s / 86400.0
                if self._remove(take, f"older than keep_days = {days:g}"):
                    removed.append(take)
        if self.keep_free_bytes > 0:
            removed += self._make_room([t for t in takes if t not in removed])
        self.removable_bytes = sum(take.bytes for take in takes if take not in removed)
        if removed:
            total = sum(take.bytes for take in removed)
            self._say(f"takes: removed the {len(removed)} oldest ({total / 1e9:.2f} GB), "
                      "by [installation.takes]")
        return removed

    def _make_room(self, takes: list[Take]) -> list[Take]:
        try:
            free = int(self._free(self.output_dir))
        except OSError:
            return []  # the folder is not made yet, or the disk is gone: next time
        removed = []
        for take in takes:
            if free >= self.keep_free_bytes:
                break
            why = (f"the disk had {free / 1e9:.2f} GB free, keep_free_gb = "
                   f"{self.keep_free_bytes / 1e9:g}")
            if self._remove(take, why):
                removed.append(take)
                free += take.bytes
        stuck = free < self.keep_free_bytes and not any(
            t for t in takes if t not in removed)
        if stuck and not self._stuck_said:
            # every take left is being recorded: they fill the disk, or something else does
            self._say(f"takes: the disk has {free / 1e9:.2f} GB free, under keep_free_gb = "
                      f"{self.keep_free_bytes / 1e9:g}, and no finished take is left to "
                      f"remove: {self._filled_by(self.keep_free_bytes - free)}")
        self._stuck_said = stuck
        return removed

    def _filled_by(self, short: int) -> str:
        """What fills the disk when no finished take is left: the takes being recorded where
        they hold the ``short`` bytes retention lacks, else other files."""
        live = sorted(self.recording, key=lambda take: -take.bytes)
        if not live or sum(take.bytes for take in live) < short:
            return "other files fill it"
        names = ", ".join(f"{take.path} ({take.bytes / 1e9:.1f} GB)" for take in live[:3])
        return (f"the take being recorded fills it ({names}; never removed while it is "
                "written): lower [audio_out] segment_s so a finished segment can go, or free "
                "some space")

    def _remove(self, take: Take, why: str) -> bool:
        try:
            take.path.unlink()
        except FileNotFoundError:
            return False  # the operator moved it away first
        except OSError as error:
            self._log_event("take_not_removed", file=str(take.path), error=str(error))
            return False
        self.removed += 1
        self.removed_bytes += take.bytes
        self._log_event("take_removed", file=str(take.path), bytes=take.bytes, why=why)
        return True

    def snapshot(self) -> dict[str, Any]:
        """What status.json says of the rule: its settings, what it removed so far, and at its
        last look what it may still remove (``removable_bytes``: finished takes; None before
        a look) and what it may not (``recording_bytes``: the takes being recorded)."""
        return {"keep_days": self.keep_s / 86400.0,
                "keep_free_bytes": self.keep_free_bytes,
                "removed": self.removed, "removed_bytes": self.removed_bytes,
                "removable_bytes": self.removable_bytes,
                "recording_bytes": sum(take.bytes for take in self.recording)}


__all__ = ["EVERY_S", "QUIET_S", "Take", "TakeKeeper", "find_takes", "kept_free_bytes"]
