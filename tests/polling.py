"""Helper of the tests that wait on a socket or a thread: poll a condition until it holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(check: Callable[[], Any], timeout_s: float = 5.0, what: str = "") -> Any:
    """Poll ``check`` every 10 ms until it returns something true; that value.

    AssertionError when ``timeout_s`` passes first, naming ``what`` was waited for.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}" if what else "timed out")
