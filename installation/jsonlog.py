"""Role logging as JSON lines: one object per record, on the role's stdout.

The supervisor sends each role's stdout to ``OUTPUT/logs/ROLE.log``; with
every line a JSON object (``time``, ``level``, ``role``, ``room``,
``logger``, ``message``, and ``exc`` for a traceback) the files can be fed
to any log shipper as they are, next to the structured events in
``OUTPUT/events/``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line."""

    def __init__(self, role: str, room: str | None) -> None:
        super().__init__()
        self._base: dict[str, Any] = {"role": role} | ({"room": room} if room else {})

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (no newline)."""
        entry: dict[str, Any] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            **self._base,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def setup_json_logging(role: str, room: str | None, level: int = logging.INFO) -> None:
    """Send every log record of this process to stdout as JSON lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLineFormatter(role, room))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.Formatter.converter = time.gmtime
