"""The engine on Ray Serve: throughput with 2 replicas vs 1, and the latency the hop adds.

``python benchmarks/ray_serve.py [--rooms 8] [--seconds 20] [--generator procedural|sine]
[--json]`` (needs ``pip install 'art2mus[ray]'``) starts ``art2mus serve`` on a
local Ray head, once with one replica and once with two (one CPU each), and
drives it from this process as the engine front does (:class:`RayGenerator`,
every room's chunk of a round sent at once, the next round when all are back):

- **throughput**: chunks per second with ``--rooms`` rooms for ``--seconds``,
  and the per-room latency (one round's wall time, p50 / p95), with two
  replicas and with one; the target (issue 19) is >= 1.8x at the same latency;
- **hop**: one room, one request at a time: the round trip less the replica's
  own generator time (what Ray and HTTP add, p95; target <= 10 ms), beside a
  direct local call of the same generator in the same run.

The table (or ``--json``, one object) ends with the verdict against both targets.
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
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Issue 19's targets.
SPEEDUP_TARGET = 1.8
HOP_P95_TARGET_MS = 10.0
RATE = 16000
CHUNK_FRAMES = 8000  # 0.5 s


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(folder: Path, replicas: int, generator: str) -> tuple[Path, Any]:
    """A frozen installation config with ``replicas`` replicas on a free port."""
    from installation.config import config_from_dict, freeze_config

    data = tomllib.loads((ROOT / "configs" / "demo.toml").read_text(encoding="utf-8"))
    data["engine"].update(
        generator=generator, sample_rate=RATE, channels=1, backend="ray",
        ray={"http_port": _free_port(), "replicas": replicas, "min_replicas": replicas,
             "max_replicas": replicas, "num_cpus_per_replica": 1.0, "request_timeout_s": 30.0})
    config = config_from_dict(data, source="bench ray_serve")
    return freeze_config(config, folder / f"serve-{replicas}.json"), config.engine


class Serve:
    """``art2mus serve`` in a subprocess, until stopped."""

    def __init__(self, path: Path, folder: Path, cpus: int) -> None:
        self.log = folder / f"{path.stem}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "installation", "serve", "--config", str(path),
                 "--num-cpus", str(cpus)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 300.0
        while b'"serving"' not in self.log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"art2mus serve did not start: "
                                   f"{self.log.read_text(errors='replace')[-1500:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60.0)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _views(rooms: int) -> list[Any]:
    from ground.protocol import PROTOCOL_VERSION, ArtworkView

    return [ArtworkView(v=PROTOCOL_VERSION, room=f"room-{i}", seq=0, time=0.0, state="artwork",
                        artwork_id=f"art-{i % 4}", confidence=1.0,
                        features={"brightness": 0.2 + 0.15 * (i % 4)}) for i in range(rooms)]


def throughput(engine: Any, rooms: int, seconds: float, warmup_s: float = 3.0
               ) -> dict[str, Any]:
    """Rounds of every room's chunk for ``seconds`` after a warm-up: chunks/s and latency."""
    from engine.ray_serve import RayGenerator

    front = RayGenerator(engine)
    try:
        conditions = [front.prepare(view) for view in _views(rooms)]
        states = [front.start(c, i, 0, None) for i, c in enumerate(conditions)]
        began = time.perf_counter()
        measured_from = began + warmup_s
        rounds: list[float] = []
        while time.perf_counter() < measured_from + seconds:
            start = time.perf_counter()
            results = front.generate_batch(
                [(s, c, CHUNK_FRAMES) for s, c in zip(states, conditions, strict=True)])
            states = [state for _, state in results]
            if start >= measured_from:
                rounds.append(time.perf_counter() - start)
        spent = sum(rounds)
        return {"rooms": rooms, "chunks_per_s": round(rooms * len(rounds) / spent, 2),
                "latency_ms_p50": round(1e3 * float(np.percentile(rounds, 50)), 1),
                "latency_ms_p95": round(1e3 * float(np.percentile(rounds, 95)), 1),
                "local_chunks": front.local_chunks, "reopened": front.reopened,
                "replicas": {name: {"requests": f.requests,
                                    "rooms": sum(by == name for by in front.served_by.values())}
                             for name, f in front.replicas.items()}}
    finally:
        front.close()


def hop(engine: Any, requests: int = 200) -> dict[str, Any]:
    """One room, one request at a time: what the hop adds to the generator's own time
    (the round trip less the replica's queue and generator time, as the front counts it)."""
    from engine.generators import make_generator
    from engine.ray_serve import RayGenerator, ReplicaCore

    front = RayGenerator(engine)
    local = ReplicaCore(make_generator(engine))
    try:
        condition = front.prepare(_views(1)[0])
        state = front.start(condition, 1, 0, None)
        direct: list[float] = []
        for i in range(requests + 20):
            if i == 20:  # warm-up: connections, the replica's stream, caches
                front.hop_s.clear()
                direct.clear()
            request = front._request(state, condition, CHUNK_FRAMES, time.time())
            began = time.perf_counter()
            local.serve([(request, time.time())])
            direct.append(time.perf_counter() - began)
            [(_, state)] = front.generate_batch([(state, condition, CHUNK_FRAMES)])
        hop_ms = [1e3 * h for h in front.hop_s]
        return {"requests": requests,
                "hop_ms_p50": round(float(np.percentile(hop_ms, 50)), 2),
                "hop_ms_p95": round(float(np.percentile(hop_ms, 95)), 2),
                "direct_call_ms_p50": round(1e3 * float(np.percentile(direct, 50)), 2),
                "direct_call_ms_p95": round(1e3 * float(np.percentile(direct, 95)), 2)}
    finally:
        front.close()


def main(argv: list[str] | None = None) -> int:
    """Run both measures; print the table (or JSON) and the verdict; 0 when it passes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--generator", choices=("procedural", "sine"), default="procedural")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from ground.cli_report import Target, print_table, verdict_lines, verdict_record

    cpus = max(2, os.cpu_count() or 2)
    figures: dict[str, Any] = {"generator": args.generator, "cpus": cpus,
                               "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="a2m-ray-") as scratch:
        folder = Path(scratch)
        for replicas in (1, 2):
            path, engine = _config(folder, replicas, args.generator)
            serve = Serve(path, folder, cpus)
            try:
                figures[f"replicas_{replicas}"] = throughput(engine, args.rooms, args.seconds)
                if replicas == 1:
                    figures["hop"] = hop(engine)
            finally:
                serve.stop()
    one, two = figures["replicas_1"], figures["replicas_2"]
    figures["speedup"] = round(two["chunks_per_s"] / one["chunks_per_s"], 2)
    targets = [Target("throughput 2 replicas / 1", figures["speedup"], SPEEDUP_TARGET, "x",
                      at_most=False, meaning="a second replica does not add its share"),
               Target("Ray hop added latency p95", figures["hop"]["hop_ms_p95"],
                      HOP_P95_TARGET_MS, "ms")]
    figures["verdict"] = verdict_record(targets)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        rows = []
        for replicas in (1, 2):
            f = figures[f"replicas_{replicas}"]
            rows.append((f"{replicas} replica(s), {f['rooms']} rooms",
                         f"{f['chunks_per_s']} chunks/s, latency p50 {f['latency_ms_p50']} / "
                         f"p95 {f['latency_ms_p95']} ms"))
        h = figures["hop"]
        rows += [("speedup", f"{figures['speedup']}x"),
                 ("hop added p50 / p95", f"{h['hop_ms_p50']} / {h['hop_ms_p95']} ms"),
                 ("direct local call p50 / p95",
                  f"{h['direct_call_ms_p50']} / {h['direct_call_ms_p95']} ms"),
                 ("load average (1, 5, 15 min)", ", ".join(f"{x:.1f}"
                                                           for x in figures["load_average"]))]
        print_table(f"Ray Serve backend: {args.generator}, {RATE} Hz mono, 0.5 s chunks, "
                    f"{cpus} CPUs", rows)
        for line in verdict_lines(targets):
            print(line)
    return 0 if figures["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
