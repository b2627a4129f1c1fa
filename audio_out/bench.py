"""``art2mus bench audio``: an accelerated soak of the playback path on a simulated clock.

No real-time waiting: the loop advances a simulated clock one callback block
at a time and calls :meth:`Player.fill` exactly as the sound card would,
timing each call with ``perf_counter`` (the real cost of the callback on this
machine). Around it, a model of the engine keeps ``lead_s`` ahead of the
playhead and sends chunks whose arrival is randomised: generation time,
network jitter up to ``jitter_ms`` (in order, so late chunks bunch into
bursts), short engine pauses, occasional long outages (the engine gone for
seconds: the player must hold, fade and resume) and artwork transitions
(replacements at "playhead + margin" with a crossfade). Chunk audio comes
from a small pool of precomputed blocks, so generating it costs nothing.

Prints a table (JSON with ``--json``): underflows (all, and those not explained
by a planned outage), longest hold, callback time p50/p99/max against the
callback's budget (one block of audio), resident memory over the run, simulated
hours and the speed-up over real time; then the verdict against the targets
(:func:`soak_targets`). The exit code is 0 either way: the verdict is the finding.

Heavy imports (numpy aside) happen inside the command.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import click

from ground.cli_report import ProgressUpdate, Target, verdict_record
from ground.cli_types import SEED, FiniteFloat
from ground.errors import InputError

#: A p99 callback above this (µs) leaves little room for the OS on a loaded machine.
CALLBACK_P99_TARGET_US = 500.0
#: Resident memory may grow this much (MiB) after the first simulated minute.
RSS_GROWTH_TARGET_MB = 16.0
#: The most callbacks one soak times: their durations are kept (4 bytes each: 1.6 GB at
#: most) for the percentiles. 1000 h at 48 kHz in 512-frame blocks is 338 million.
MAX_CALLBACKS = 400_000_000
#: The most pauses, outages or transitions one soak schedules (each a float, kept sorted).
MAX_EVENTS = 10_000_000


def check_soak(hours: float, sample_rate: int, block: int,
               rates: dict[str, float] | None = None) -> None:
    """Refuse, before any work, a soak whose size follows from several options: more
    than :data:`MAX_CALLBACKS` callbacks, or more than :data:`MAX_EVENTS` of one kind
    of event (``rates``: each option's name and its rate per hour)."""
    callbacks = hours * 3600.0 * sample_rate / block
    if callbacks > MAX_CALLBACKS:
        most = MAX_CALLBACKS * block / sample_rate / 3600.0
        raise InputError(f"--hours: expected at most {most:.4g} simulated hours at "
                         f"--sample-rate {sample_rate} and --block {block} "
                         f"({MAX_CALLBACKS:,} callbacks), got {hours!r}")
    for option, rate in (rates or {}).items():
        if rate * hours > MAX_EVENTS:
            raise InputError(f"{option}: expected at most {MAX_EVENTS / hours:.4g} over "
                             f"--hours {hours:g} ({MAX_EVENTS:,} events in all), got {rate!r}")


def _rss_mb() -> float:
    """Resident set size in MiB (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _music_pool(rate: int, frames: int, channels: int, count: int, seed: int) -> list[Any]:
    """A few blocks of tonal, slowly moving material (chords with vibrato and noise)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(frames) / rate
    pool = []
    for _ in range(count):
        x = np.zeros(frames)
        for f in rng.choice([110.0, 146.8, 196.0, 220.0, 261.6, 329.6, 392.0], 3, replace=False):
            vib = 0.002 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
            x += np.sin(2 * np.pi * f * t * (1 + vib) + rng.uniform(0, 2 * np.pi))
        x = 0.2 * x + 0.01 * rng.standard_normal(frames)
        pool.append(np.repeat(x[:, None], channels, axis=1).astype(np.float32))
    return pool


def run_soak(hours: float = 10.0, sample_rate: int = 48000, source_rate: int | None = None,
             block: int = 512, chunk_s: float = 0.5, lead_s: float = 1.0,
             jitter_ms: float = 300.0, generation_s: float = 0.05,
             pauses_per_hour: float = 6.0, pause_max_s: float = 0.5,
             outages_per_hour: float = 1.0, outage_s: tuple[float, float] = (2.0, 20.0),
             transitions_per_hour: float = 30.0, seed: int = 0,
             channels: int = 2, progress: ProgressUpdate | None = None) -> dict[str, Any]:
    """Run the soak and return its report (see the module docstring).

    ``progress``: called as ``progress("soak", blocks_done, blocks_total)`` about 200
    times over the run (a progress bar's update; never from inside the timed call).
    """
    check_soak(hours, sample_rate, block, _event_rates(
        pauses_per_hour, outages_per_hour, transitions_per_hour))
    import numpy as np

    from audio_out.config import AudioOutConfig
    from audio_out.outputs import ArrayOutput
    from audio_out.player import Player
    from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk

    src_rate = source_rate or sample_rate
    rng = np.random.default_rng(seed)
    config = AudioOutConfig(output="none", sample_rate=sample_rate, block_size=block)
    events: dict[str, int] = {}

    def count_event(kind: str, **_: Any) -> None:
        events[kind] = events.get(kind, 0) + 1

    player = Player("bench", config, channels, count_event,
                    output_factory=lambda c, sr, ch, fill, log: ArrayOutput(sr, ch, block, fill))
    player.start()
    tl = player.timeline
    rs = player.resampler

    chunk = round(chunk_s * src_rate)
    xf = round(0.1 * src_rate)
    margin = round(0.25 * src_rate)
    lead = round(lead_s * src_rate)
    pool = [Array.from_numpy(a) for a in _music_pool(src_rate, chunk, channels, 6, seed)]
    pool_xf = [Array.from_numpy(a)
               for a in _music_pool(src_rate, chunk + xf, channels, 2, seed + 1)]

    block_s = block / sample_rate
    n_blocks = int(hours * 3600 / block_s)
    durations = np.empty(n_blocks, np.float32)
    durations.fill(0.0)  # touch every page now, so the RSS growth below is the player's
    out = np.zeros((block, player.device_channels), np.float32)

    # Random schedules, in simulated seconds.
    total_s = n_blocks * block_s

    def times(rate_per_hour: float) -> deque[float]:
        count = rng.poisson(rate_per_hour * total_s / 3600.0)
        return deque(sorted(rng.uniform(5.0, max(5.0, total_s - 5.0), count).tolist()))

    pauses, outages, transitions = (times(pauses_per_hour), times(outages_per_hour),
                                    times(transitions_per_hour))
    outage_windows: list[tuple[float, float]] = []

    inbox: deque[tuple[float, AudioChunk]] = deque()
    seq = 0
    queue_end: int | None = None
    engine_free = 0.0
    last_arrival = 0.0
    transition_due = False
    transitions_sent = 0
    bursts = 0
    min_margin = math.inf
    longest_hold = 0
    hold_run = 0
    min_queue = math.inf
    underflows_seen = 0
    unplanned = 0
    rss: list[float] = []
    rss_every = max(1, int(3600 / block_s))
    warm_blocks = min(n_blocks, int(60 / block_s))
    # None until the first simulated minute is over: a shorter run cannot judge growth
    rss_start: float | None = None
    wall_began = time.perf_counter()
    perf = time.perf_counter
    progress_every = max(1, n_blocks // 200)

    for k in range(n_blocks):
        now = k * block_s
        # --- the engine: pauses, outages and transitions, then what is due ---
        if pauses and now >= pauses[0]:
            pauses.popleft()
            engine_free = max(engine_free, now + rng.uniform(0.05, pause_max_s))
        if outages and now >= outages[0]:
            outages.popleft()
            length = rng.uniform(*outage_s)
            engine_free = max(engine_free, now + length)
            outage_windows.append((now, now + length + lead_s + 1.0))
        if transitions and now >= transitions[0]:
            transitions.popleft()
            transition_due = True
        if now >= engine_free:
            playhead = rs.to_source(tl.playhead)
            start = frames = crossfade = None
            reason = "continue"
            if queue_end is None or queue_end < playhead + margin // 2 or transition_due:
                start, crossfade, reason = playhead + margin, xf, "transition"
                frames = chunk + xf
                transition_due = False
                transitions_sent += 1
            elif queue_end < playhead + lead:
                start, crossfade, frames = queue_end, 0, chunk
            if start is not None and frames is not None and crossfade is not None:
                audio = pool_xf[seq % 2] if crossfade else pool[seq % len(pool)]
                engine_free = now + generation_s
                arrival = max(engine_free + rng.uniform(0.0, jitter_ms / 1000.0), last_arrival)
                last_arrival = arrival
                inbox.append((arrival, AudioChunk(
                    v=PROTOCOL_VERSION, room="bench", seq=seq, start_sample=start,
                    sample_rate=src_rate, audio=audio, crossfade=crossfade,
                    reason=reason)))  # type: ignore[arg-type]
                seq += 1
                queue_end = start + frames
        # --- the network thread: deliver what has arrived ---
        delivered = 0
        while inbox and inbox[0][0] <= now:
            arrival, message = inbox.popleft()
            player.submit(message)
            delivered += 1
            in_outage = bool(outage_windows) and now <= outage_windows[-1][1]
            if message.reason == "continue" and not in_outage:  # how long before it is due
                # Timeline positions stand still during holds, so measure
                # against the playhead rather than the simulated clock.
                margin_s = (rs.to_device(message.start_sample) - tl.playhead) / sample_rate
                min_margin = min(min_margin, margin_s)
        if delivered >= 3:
            bursts += 1
        # --- the audio callback ---
        began = perf()
        player.fill(out)
        durations[k] = perf() - began
        # --- bookkeeping (what the monitor thread would see) ---
        state = tl.state
        if state == "holding" or state == "silent":
            hold_run += block
            if hold_run > longest_hold:
                longest_hold = hold_run
        else:
            hold_run = 0
        if tl.underflows != underflows_seen:
            if not any(a <= now <= b for a, b in outage_windows):
                unplanned += tl.underflows - underflows_seen
            underflows_seen = tl.underflows
        if state == "playing" and not (outage_windows and now <= outage_windows[-1][1]):
            queued = tl.buffered_until - tl.playhead
            if queued < min_queue:
                min_queue = queued
        if k % 4 == 0:
            player.poll()
        if k == warm_blocks:
            rss_start = _rss_mb()
        if k % rss_every == 0 and k:
            rss.append(round(_rss_mb(), 1))
        if progress is not None and k % progress_every == 0:
            progress("soak", k, n_blocks)
    wall = time.perf_counter() - wall_began
    if progress is not None:
        progress("soak", n_blocks, n_blocks)
    rss_end = _rss_mb()
    player.stop()

    # In place, no copy of what may be 1.6 GB: µs (float32 keeps 0.1 µs up to a second),
    # and the percentiles partition the array itself (its order matters no more).
    durations *= 1e6
    us = durations

    def percentile(q: float) -> float:
        return float(np.percentile(us, q, overwrite_input=True))

    p99 = percentile(99)
    report: dict[str, Any] = {
        "bench": "audio",
        "simulated_hours": round(n_blocks * block_s / 3600.0, 3),
        "wall_s": round(wall, 1),
        "speedup": round(n_blocks * block_s / wall, 1),
        "sample_rate": sample_rate,
        "source_rate": src_rate,
        "resampling": src_rate != sample_rate,
        "block": block,
        "chunk_s": chunk_s,
        "lead_s": lead_s,
        "jitter_ms": jitter_ms,
        "chunks": seq,
        "transitions": transitions_sent,
        "bursts": bursts,
        "pauses_per_hour": pauses_per_hour,
        "outages": len(outage_windows),
        "underflows": tl.underflows,
        "underflows_unplanned": unplanned,
        "gaps": tl.gaps,
        "resumes": tl.resumes,
        "late_frames": tl.late_frames,
        "longest_hold_s": round(longest_hold / sample_rate, 3),
        "held_s": round(tl.held_frames / sample_rate, 1),
        "silent_s": round(tl.silent_frames / sample_rate, 1),
        "min_queue_ms": round(min_queue * 1000.0 / sample_rate, 1) if min_queue < math.inf
        else None,
        "min_arrival_margin_s": round(min_margin, 3) if min_margin < math.inf else None,
        "callback_us": {"p50": round(percentile(50), 1), "p99": round(p99, 1),
                        "p999": round(percentile(99.9), 1),
                        "max": round(float(us.max()), 1),
                        "budget": round(block_s * 1e6, 1)},
        "limiter_knee_blocks": player.limiter.knee_blocks,
        "rss_mb": {"after_warmup": None if rss_start is None else round(rss_start, 1),
                   "end": round(rss_end, 1),
                   "growth": None if rss_start is None else round(rss_end - rss_start, 1),
                   "hourly": rss},
    }
    report["callbacks_over_budget"] = int(np.count_nonzero(us > block_s * 1e6))
    report["verdict"] = verdict_record(soak_targets(report))
    report["ok"] = report["verdict"]["passed"]
    return report


def _event_rates(pauses_per_hour: float, outages_per_hour: float,
                 transitions_per_hour: float) -> dict[str, float]:
    """The scheduled events' rates per hour, by option name (for :func:`check_soak`)."""
    return {"--pauses-per-hour": pauses_per_hour, "--outages-per-hour": outages_per_hour,
            "--transitions-per-hour": transitions_per_hour}


def soak_targets(report: dict[str, Any]) -> list[Target]:
    """The soak's targets: no unplanned underflow, no callback over its budget (one block
    of audio: a longer callback is a click on the sound card), a p99 with room to spare,
    and no memory growth."""
    callback = report["callback_us"]
    return [
        Target("unplanned underflows", report["underflows_unplanned"], 0,
               meaning="the player ran dry without an engine outage to explain it"),
        Target("callback max", callback["max"], callback["budget"], "µs",
               meaning=f"over the callback's budget ({report['block']} frames at "
                       f"{report['sample_rate']} Hz): "
                       f"{report.get('callbacks_over_budget', '?')} callback(s) would click"),
        Target("callback p99", callback["p99"], CALLBACK_P99_TARGET_US, "µs"),
        Target("memory growth", report["rss_mb"]["growth"], RSS_GROWTH_TARGET_MB, "MiB",
               meaning="the player holds on to memory"),
    ]


def print_soak(report: dict[str, Any], console: Any = None) -> None:
    """The soak's report as a table, then its verdict lines."""
    from ground.cli_report import print_table, verdict_lines

    callback, rss = report["callback_us"], report["rss_mb"]
    rate = (f"{report['source_rate']} -> {report['sample_rate']} Hz" if report["resampling"]
            else f"{report['sample_rate']} Hz")
    print_table(
        f"art2mus bench audio: {report['simulated_hours']} simulated h in {report['wall_s']} s "
        f"({report['speedup']}x real time)",
        [("rate, block, chunk, lead", f"{rate}, {report['block']} frames, "
                                      f"{report['chunk_s']} s, {report['lead_s']} s"),
         ("chunks / transitions / bursts",
          f"{report['chunks']} / {report['transitions']} / {report['bursts']}"),
         ("outages (planned)", str(report["outages"])),
         ("underflows (unplanned)", f"{report['underflows']} ({report['underflows_unplanned']})"),
         ("gaps / resumes / late frames",
          f"{report['gaps']} / {report['resumes']} / {report['late_frames']}"),
         ("longest hold s / held s / silent s",
          f"{report['longest_hold_s']} / {report['held_s']} / {report['silent_s']}"),
         ("least queued ms / arrival margin s",
          f"{report['min_queue_ms']} / {report['min_arrival_margin_s']}"),
         ("callback µs p50 / p99 / p99.9 / max",
          f"{callback['p50']} / {callback['p99']} / {callback['p999']} / {callback['max']}"),
         ("callback budget µs (callbacks over it)",
          f"{callback['budget']} ({report['callbacks_over_budget']})"),
         ("memory MiB after warm-up / end / growth",
          f"{rss['after_warmup']} / {rss['end']} / {rss['growth']}")],
        console)
    for line in verdict_lines(soak_targets(report)):
        click.echo(line)


@click.command("audio")
@click.option("--hours", type=FiniteFloat(0.001, 1000.0), default=10.0, show_default=True,
              help="Simulated hours of playback (from 0.001: 3.6 s).")
@click.option("--sample-rate", type=click.IntRange(8000, 384000), default=48000,
              show_default=True, help="Device rate (audio_out.sample_rate's range).")
@click.option("--source-rate", type=click.IntRange(8000, 384000), default=None,
              help="Generator rate (default: the device rate; another rate exercises soxr).")
@click.option("--block", type=click.IntRange(32, 8192), default=512, show_default=True,
              help="Frames per callback (audio_out.block_size's range).")
@click.option("--chunk-s", type=FiniteFloat(0.05, 30.0, min_open=True), default=0.5,
              show_default=True, help="Chunk length (engine.chunk_s's range).")
@click.option("--lead-s", type=FiniteFloat(0.0, 60.0, min_open=True), default=1.0,
              show_default=True, help="Material kept ahead (engine.lead_s's range).")
@click.option("--jitter-ms", type=FiniteFloat(0.0, 60000.0), default=300.0, show_default=True)
@click.option("--pauses-per-hour", type=FiniteFloat(0.0, 3600.0), default=6.0, show_default=True,
              help="Short engine pauses (up to --pause-max-s), inside the lead's slack.")
@click.option("--pause-max-s", type=FiniteFloat(0.0, 60.0), default=0.5, show_default=True)
@click.option("--outages-per-hour", type=FiniteFloat(0.0, 3600.0), default=1.0, show_default=True,
              help="Engine gone for 2-20 s: exercises hold, fade and resume.")
@click.option("--transitions-per-hour", type=FiniteFloat(0.0, 36000.0), default=30.0,
              show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
def bench_audio(hours: float, sample_rate: int, source_rate: int | None, block: int,
                chunk_s: float, lead_s: float, jitter_ms: float, pauses_per_hour: float,
                pause_max_s: float, outages_per_hour: float, transitions_per_hour: float,
                seed: int, as_json: bool) -> None:
    """Accelerated soak of audio_out's callback path: underflows, holds, callback time, memory.

    A table and the verdict against the targets (JSON with --json); a progress bar on
    stderr when it is a terminal.
    """
    from ground.cli_report import progress_bar

    check_soak(hours, sample_rate, block, _event_rates(
        pauses_per_hour, outages_per_hour, transitions_per_hour))  # before the progress bar
    with progress_bar(unit="blocks") as progress:
        report = run_soak(hours=hours, sample_rate=sample_rate, source_rate=source_rate,
                          block=block, chunk_s=chunk_s, lead_s=lead_s, jitter_ms=jitter_ms,
                          pauses_per_hour=pauses_per_hour, pause_max_s=pause_max_s,
                          outages_per_hour=outages_per_hour,
                          transitions_per_hour=transitions_per_hour, seed=seed,
                          progress=progress)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_soak(report)


#: Registered under ``art2mus bench`` by the CLI.
bench_commands: list[click.Command] = [bench_audio]
