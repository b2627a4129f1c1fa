"""Helpers of the console's browser tests: a real installation in a subprocess, a browser.

:class:`RunningInstallation` writes a TOML config for a fast CPU-only run (the
demo's virtual camera, the procedural generator, no sound card, free loopback
ports), starts ``python -m installation run`` on it and reads the console's
real address from ``OUTPUT/status.json`` (``console_url``: the console listens
on port 0). :func:`launch_chromium` starts Debian's Chromium through
Playwright with the flags a sandboxed, offline machine needs;
:func:`browser_missing` says why the tests cannot run where it is absent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

CHROMIUM = Path("/usr/bin/chromium")
#: What Chromium needs in a container without a GPU, a sandbox or a network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
#: A token for the tests that bind beyond loopback (16 characters at least).
TOKEN = "console-test-token-0123456789"

T = TypeVar("T")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium package)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium, headless, through Playwright's sync API."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on loopback right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float = 60.0,
             alive: Callable[[], None] | None = None) -> T:
    """Poll ``check`` until it returns a truthy value; AssertionError naming ``what`` if not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if alive is not None:
            alive()
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def write_catalogue(folder: Path) -> Path:
    """Two small painted works with their titles: a room's catalogue (``catalogue.toml``).

    The second has an accession number for its id, "/" and all, as museums write them.
    """
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for name, shape in (("sunflowers.png", (400, 300)), ("harbour.png", (240, 360))):
        coarse = (rng.random((shape[0] // 20, shape[1] // 20, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(folder / name), cv2.resize(coarse, (shape[1], shape[0]),
                                                   interpolation=cv2.INTER_NEAREST))
    (folder / "catalogue.toml").write_text(
        '[[artwork]]\nfile = "sunflowers.png"\nid = "SF-1"\ntitle = "Sunflowers"\n'
        'artist = "Vincent van Gogh"\nyear = 1888\n\n'
        '[[artwork]]\nfile = "harbour.png"\nid = "1988/12"\ntitle = "Harbour"\n'
        'artist = "A. Painter"\nyear = 1901\n', encoding="utf-8")
    return folder


def installation_toml(folder: Path, *, listen: str = "127.0.0.1:0", token: str = "",
                      catalogue: Path | None = None) -> str:
    """A config for a short CPU-only run whose outputs go under ``folder``.

    With ``catalogue`` the room's capture also knows those works (the console's
    catalogue tab); the demo camera still names its own paintings.
    """
    views, chunks, clock, control = free_ports(4)
    auth = f'token = "{token}"\n' if token else ""
    recognition = (f'\n[rooms.capture.recognition]\ncatalogue = "{catalogue}"\n'
                   if catalogue is not None else "")
    return f"""# Written by tests/console_browser.py: a fast CPU-only installation with a console.
[installation]
name = "console-test"
output_dir = "{folder / 'out'}"

[network]
views = "tcp://127.0.0.1:{views}"
chunks = "tcp://127.0.0.1:{chunks}"
clock = "tcp://127.0.0.1:{clock}"
control = "tcp://127.0.0.1:{control}"

[supervisor]
heartbeat_s = 0.5
status_every_s = 0.5

[engine]
generator = "procedural"
lead_s = 1.0

[capture]
source = "demo"

[capture.demo]
artworks = 3
dwell_s = 30.0
seed = 7

[capture.lens]  # a lens calibrated as a pinhole: the console says it is in use
model = "standard"
width = 1280
height = 720
focal = [1000.0, 1000.0]
centre = [640.0, 360.0]
distortion = [0.0, 0.0, 0.0, 0.0, 0.0]

[audio_out]
output = "none"

[control]
reload = true

[console]
listen = "{listen}"
{auth}
[[rooms]]
id = "hall"
seed = 1

[rooms.capture]
fps = 10
{recognition}"""


class RunningInstallation:
    """``python -m installation run`` on a written config, with its console's address.

    Use as a context manager: entering starts it and waits for ``console_url``
    in status.json; leaving sends SIGTERM (the supervisor stops its roles) and
    kills it if it has not stopped within 30 s.
    """

    def __init__(self, folder: Path, *, listen: str = "127.0.0.1:0", token: str = "",
                 catalogue: Path | None = None) -> None:
        self.folder = folder
        self.config_path = folder / "console-test.toml"
        self.out = folder / "out"
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(installation_toml(folder, listen=listen, token=token,
                                                      catalogue=catalogue),
                                    encoding="utf-8")
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.log = folder / "supervisor.log"

    def __enter__(self) -> RunningInstallation:
        with open(self.log, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "installation", "run", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            url = wait_for("console_url in status.json", self._console_url, alive=self.check_alive)
        except BaseException:
            self.stop()
            raise
        # bound to every address: the browser reaches it on loopback
        self.url = url.rstrip("/").replace("//0.0.0.0:", "//127.0.0.1:")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _console_url(self) -> str | None:
        try:
            record = json.loads((self.out / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record.get("console_url") or None

    def check_alive(self) -> None:
        """AssertionError with the supervisor's output if it has exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"art2mus run exited with {self.process.returncode}:\n"
                                 + self.log.read_text(encoding="utf-8")[-3000:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                token: str = "") -> tuple[int, Any]:
        """``(status, JSON answer)`` of one request to the console's API."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            with error:
                text = error.read()
            try:
                return error.code, json.loads(text or b"null")
            except ValueError:
                return error.code, text.decode(errors="replace")

    def state(self) -> dict[str, Any]:
        """GET /api/state."""
        status, answer = self.request("GET", "/api/state")
        assert status == 200, (status, answer)
        return dict(answer)


def screenshot_folder(out: Path) -> Path:
    """Where a run's console screenshots go (the run's output folder)."""
    folder = out / "console-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_screenshot_enabled() -> bool:
    """True when ART2MUS_SAVE_SCREENSHOT=1: copy one screenshot into benchmarks/results."""
    return os.environ.get("ART2MUS_SAVE_SCREENSHOT") == "1"
