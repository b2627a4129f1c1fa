"""``art2mus serve --config FILE``: the generator as a Ray Serve deployment (issue 19).

Registered on the main ``art2mus`` group by :mod:`installation.cli` (the
``commands`` list). It starts a local Ray head (or joins
``engine.ray.address``), deploys the configured generator with the replica
bounds of ``[engine.ray]`` (:func:`engine.ray_serve.deploy`), prints the URL
the engine front reaches it at, and serves until SIGTERM or Ctrl-C, when it
removes the deployment and leaves the cluster. Engines with
``engine.backend = "ray"`` send their rooms' chunks to it; without this
command (the default, ``backend = "local"``) nothing of Ray runs. With
``engine.ray.token_file`` (required beyond loopback) the replicas demand the
token read from it here; the engine front reads the same file from its config.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from installation.config import load_config


@click.command("serve")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="The installation's config; its [engine] and [engine.ray] sections are used.")
@click.option("--num-cpus", type=click.IntRange(1, 4096), default=None,
              help="CPUs a local Ray head offers (default: all); ignored when joining.")
def serve(config_path: Path, num_cpus: int | None) -> None:
    """Deploy the generator on Ray Serve and serve until SIGTERM or Ctrl-C."""
    from engine.ray_serve import deploy, shutdown

    engine = load_config(config_path).engine
    # A token file that cannot be read stops here, before Ray starts (and before the
    # shutdown below could reach for a cluster); deploy() reads it again for the replicas.
    engine.ray.read_token()
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    try:
        url = deploy(engine, num_cpus=num_cpus)
        # after ray.init, which installs handlers of its own: ours stop Serve and Ray cleanly
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _stop)
        # one JSON line, so a script (or a test) can wait for it
        click.echo(json.dumps({"serving": url, "generator": engine.generator,
                               "replicas": engine.ray.replicas}), nl=True)
        stop.wait()
    finally:
        shutdown()


commands = [serve]
