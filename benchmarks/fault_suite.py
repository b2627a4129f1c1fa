"""The operator's and attacker's fault suite, run against a real supervised installation.

``python benchmarks/fault_suite.py [--generator procedural|sine] [--json]`` starts
``art2mus run`` on a one-room config (virtual camera, no sound card, a
recording) and, while it plays, injects the faults of issue 12 in order:

1. ``kill -9`` of the engine, then of audio_out;
2. OSC ``/art2mus/volume nan``, ``/art2mus/transition_s nan``, ``/art2mus/lead_s "nan"``,
   ``/art2mus/volume inf``;
3. a PlaybackClock whose playhead is 2**64-1, straight onto the engine's clock socket;
4. a 20 MB subscription to the engine's chunks XPUB, held connected;
5. SIGTERM to the supervisor.

It then reads the event logs and the recorded segments and checks what the
issue asks: no crash loop (no role exits beyond the two kills), every killed
role back, no silence over 0.5 s inside a recording segment, at least 95 % of
the played time recorded, a final fade into silence, every process gone within
10 s of the SIGTERM with no orphan. It prints a table (``--json``: one JSON
object) and exits non-zero when a check fails. Not a test: it takes about a
minute and a half of wall time, and its figures are what the closing note quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import soundfile
import zmq

PORT = 6700
OSC_PORT = 6790
SILENCE = 10 ** (-80 / 20)  # -80 dBFS


def write_config(folder: Path, generator: str) -> Path:
    """A one-room installation on loopback ports PORT..PORT+3 with OSC in."""
    config = f"""
[installation]
name = "fault-suite"
output_dir = "{folder / 'out'}"

[network]
views = "tcp://127.0.0.1:{PORT}"
chunks = "tcp://127.0.0.1:{PORT + 1}"
clock = "tcp://127.0.0.1:{PORT + 2}"
control = "tcp://127.0.0.1:{PORT + 3}"

[supervisor]
heartbeat_s = 0.5
hang_after_s = 10.0
restart_backoff_s = 0.5
status_every_s = 0.5

[engine]
generator = "{generator}"
chunk_s = 0.5
lead_s = 1.5
transition_margin_s = 0.3
view_timeout_s = 20.0

[capture]
source = "demo"
fps = 10

[capture.demo]
artworks = 2
dwell_s = 30.0

[audio_out]
output = "none"
record = "take.wav"
hold_s = 8.0

[control]
reload = false

[control.osc]
listen = "127.0.0.1:{OSC_PORT}"

[[rooms]]
id = "room-1"
seed = 3
"""
    path = folder / "faults.toml"
    path.write_text(config, encoding="utf-8")
    return path


def read_status(out: Path) -> dict[str, Any]:
    """status.json, or {} while it is not there or half-written."""
    try:
        return dict(json.loads((out / "status.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def role_row(status: dict[str, Any], name: str) -> dict[str, Any]:
    """One role's row of the status file ({} when absent)."""
    return next((r for r in status.get("roles", []) if r.get("name") == name), {})


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s; RuntimeError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def playing(out: Path, name: str, pid_not: int | None = None) -> bool:
    """The role runs (a new pid if ``pid_not``) and audio_out plays."""
    status = read_status(out)
    row = role_row(status, name)
    audio = role_row(status, "audio_out:room-1")
    return (row.get("state") == "running" and row.get("pid") not in (None, pid_not)
            and audio.get("status", {}).get("state") == "playing")


def osc_message(address: str, value: Any) -> bytes:
    """One OSC message (python-osc's builder)."""
    from pythonosc.osc_message_builder import OscMessageBuilder

    builder = OscMessageBuilder(address=address)
    builder.add_arg(value)
    return bytes(builder.build().dgram)


def inject_osc() -> None:
    """The NaN and infinity knobs that crash-looped a room."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for address, value in (("/art2mus/volume", float("nan")),
                               ("/art2mus/transition_s", float("nan")),
                               ("/art2mus/lead_s", "nan"),
                               ("/art2mus/volume", float("inf"))):
            udp.sendto(osc_message(address, value), ("127.0.0.1", OSC_PORT))


def inject_clock_overflow(context: zmq.Context) -> None:
    """A PlaybackClock with playhead 2**64-1, encoded by hand (no validation on our side)."""
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(f"tcp://127.0.0.1:{PORT + 2}")
    payload = msgspec.msgpack.encode({
        "type": "playback_clock", "v": 1, "room": "room-1", "sample_rate": 48000,
        "playhead": 2**64 - 1, "buffered_until": 2**64 - 1, "wall_time": time.time(),
        "underflows": 0, "state": "playing"})
    for _ in range(3):
        push.send_multipart([b"room-1", payload])
    push.close()


_SUBSCRIBER = """
import sys, time, zmq
context = zmq.Context()
xsub = context.socket(zmq.XSUB)
xsub.setsockopt(zmq.LINGER, 0)
xsub.connect(sys.argv[1])
xsub.send(b"\\x01" + b"x" * (20 * 1024 * 1024))
time.sleep(float(sys.argv[2]))
"""


def inject_subscription(hold_s: float) -> subprocess.Popen[bytes]:
    """A 20 MB subscription to the chunks XPUB, held ``hold_s`` (XSUB resends on reconnect).

    It runs in a process of its own: libzmq (seen with pyzmq's bundled 4.3) may
    crash the *sending* process when it closes a socket holding such a frame,
    and the attacker's crash must not end the suite.
    """
    return subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, f"tcp://127.0.0.1:{PORT + 1}",
                             str(hold_s)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def descendants(pid: int) -> set[int]:
    """Every process whose parent chain leads to ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {p for p, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def load_events(path: Path) -> list[dict[str, Any]]:
    """One event log's complete lines, its rotated files first, in order."""
    from ground.events import read_events

    return read_events(path) if path.exists() else []


def segments(out: Path) -> list[Path]:
    """The audio recording segments, oldest first (each is written to its end before the next)."""
    found = [p for p in out.rglob("take*") if p.suffix in (".wav", ".flac")]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def longest_silence_s(audio: np.ndarray, rate: int) -> float:
    """The longest run of samples below -80 dBFS on every channel, in seconds."""
    quiet = np.max(np.abs(audio), axis=1) < SILENCE
    longest = run = 0
    for value in quiet:
        run = run + 1 if value else 0
        longest = max(longest, run)
    return longest / rate


def main() -> int:
    """Run the suite; the exit code says whether every check passed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="procedural", choices=["procedural", "sine"])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the output folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="art2mus-faults-"))
    config = write_config(folder, args.generator)
    out = folder / "out"
    art2mus = Path(sys.executable).with_name("art2mus")
    started = time.monotonic()
    console = (folder / "console.txt").open("wb")
    supervisor = subprocess.Popen([str(art2mus), "run", "--config", str(config)],
                                  stdout=console, stderr=subprocess.STDOUT)
    context = zmq.Context()
    steps: list[dict[str, Any]] = []

    def step(name: str, action: Any) -> None:
        t = time.monotonic() - started
        try:
            action()
            steps.append({"t_s": round(t, 1), "step": name, "ok": True,
                          "took_s": round(time.monotonic() - started - t, 1)})
        except Exception as exc:  # noqa: BLE001 - a failed step is a finding, not a crash
            steps.append({"t_s": round(t, 1), "step": name, "ok": False, "error": str(exc)})

    attacker: subprocess.Popen[bytes] | None = None
    try:
        step("installation playing", lambda: wait_for(
            lambda: playing(out, "engine"), 90, "the room to play"))
        time.sleep(4.0)
        engine_pid = role_row(read_status(out), "engine").get("pid")
        step("kill -9 engine", lambda: os.kill(int(engine_pid), signal.SIGKILL))
        step("engine back", lambda: wait_for(
            lambda: playing(out, "engine", pid_not=engine_pid), 60, "the engine to return"))
        time.sleep(4.0)
        audio_pid = role_row(read_status(out), "audio_out:room-1").get("pid")
        step("kill -9 audio_out", lambda: os.kill(int(audio_pid), signal.SIGKILL))
        step("audio_out back", lambda: wait_for(
            lambda: playing(out, "audio_out:room-1", pid_not=audio_pid), 60,
            "audio_out to return"))
        time.sleep(3.0)
        step("OSC NaN/inf", inject_osc)
        time.sleep(3.0)
        step("clock playhead 2**64-1", lambda: inject_clock_overflow(context))
        time.sleep(3.0)

        def subscribe() -> None:
            nonlocal attacker
            attacker = inject_subscription(hold_s=8.0)

        step("20 MB subscription", subscribe)
        time.sleep(6.0)
        status_before_stop = read_status(out)
        tree = descendants(supervisor.pid) | {supervisor.pid}
        stop_t = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = stop_t + 30
        while any(alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.05)
        gone_s = time.monotonic() - stop_t
        orphans = sorted(p for p in tree if alive(p))
    finally:
        if attacker is not None:
            attacker.wait()
        context.destroy(linger=0)
        if supervisor.poll() is None:
            supervisor.kill()
        console.close()
    sup = load_events(out / "events" / "supervisor.jsonl")
    audio_events = load_events(out / "events" / "audio_out-room-1.jsonl")
    # the supervisor's own EventLog tags each role event with the role's name
    exits = [e for e in sup if e.get("kind") == "role_exited"]
    files = segments(out)
    recorded_s = 0.0
    worst_silence = 0.0
    tail_db = None
    for i, path in enumerate(files):
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        recorded_s += audio.shape[0] / rate
        body = audio[: max(0, audio.shape[0] - int(1.5 * rate))] if i == len(files) - 1 else audio
        worst_silence = max(worst_silence, longest_silence_s(body, rate))
        if i == len(files) - 1 and audio.shape[0] > rate // 10:
            tail = audio[-rate // 20:]
            tail_db = 20 * np.log10(max(float(np.sqrt(np.mean(tail**2))), 1e-9))
    # played time: each audio_out incarnation from its "started" event to its stop or its kill
    starts = [e["time"] for e in audio_events if e.get("kind") == "started"]
    ends = [e["time"] for e in audio_events if e.get("kind") == "stopped"]
    ends += [e["time"] for e in exits if str(e.get("role", "")).startswith("audio_out")]
    played_s = 0.0
    for i, start in enumerate(starts):
        nxt = starts[i + 1] if i + 1 < len(starts) else float("inf")
        stop = min((t for t in ends if start < t <= nxt), default=None)
        played_s += (stop if stop is not None else start) - start
    kinds = [f"{e.get('role')} ({e.get('code')})" for e in exits]
    checks = {
        "no crash loop (exits beyond the 2 kills)": len(exits) <= 2,
        "every killed role back": all(s["ok"] for s in steps if s["step"].endswith("back")),
        "no silence over 0.5 s in a segment": worst_silence <= 0.5,
        ">= 95% of played time recorded": played_s > 0 and recorded_s >= 0.95 * played_s,
        "final fade (last 50 ms below -60 dBFS)": tail_db is not None and tail_db < -60,
        "every process gone within 10 s": gone_s <= 10.0 and not orphans,
    }
    result = {
        "generator": args.generator, "steps": steps, "role_exits": kinds,
        "segments": [str(p) for p in files], "recorded_s": round(recorded_s, 2),
        "played_s": round(played_s, 2),
        "longest_silence_s": round(worst_silence, 3),
        "tail_dbfs": None if tail_db is None else round(tail_db, 1),
        "stop_s": round(gone_s, 2), "orphans": orphans,
        "roles_before_stop": {r["name"]: r.get("restarts") for r in
                              status_before_stop.get("roles", [])},
        "checks": checks, "passed": all(checks.values()), "folder": str(folder),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for s in steps:
            verdict = f"ok ({s['took_s']} s)" if s["ok"] else s.get("error")
            print(f"{s['t_s']:7.1f} s  {s['step']:<26} {verdict}")
        print(f"role exits: {kinds}")
        print(f"segments: {len(files)}, recorded {recorded_s:.1f} s of {played_s:.1f} s played; "
              f"longest silence {worst_silence:.2f} s; tail {result['tail_dbfs']} dBFS; "
              f"all gone {gone_s:.1f} s after SIGTERM, orphans {orphans}")
        for name, ok in checks.items():
            print(f"  {'PASS' if ok else 'FAIL'}  {name}")
        print(f"output: {folder}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
