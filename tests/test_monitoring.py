"""Monitoring and unattended running: the metrics a dashboard needs, the shipped Grafana
dashboard and Prometheus alert rules (checked against what the roles export, and by
promtool where it is installed), and the supervisor's sd_notify under systemd."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ground.metrics import LEVEL_FLOOR_DBFS, Metrics
from installation.config import config_from_dict
from installation.supervisor import RoleProcess, Supervisor, SystemdNotify

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "configs" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = MONITORING / "alerts.yml"
#: Metrics the rules may use that are not ours: Prometheus's own, node exporter's.
EXTERNAL = {"up", "node_filesystem_avail_bytes", "node_filesystem_size_bytes"}
OUR_NAME = re.compile(r"\bart2mus_[a-z0-9_]+\b")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrape(metrics: Metrics) -> dict[str, list[Any]]:
    """The endpoint's samples by name, as Prometheus reads them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def _dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    exprs += [variable["definition"] for variable in board["templating"]["list"]]
    return exprs


def _alert_rules() -> list[dict[str, Any]]:
    try:
        import yaml
    except ImportError:  # no PyYAML: the rules are still found, line by line
        text = ALERTS.read_text()
        return [{"alert": name, "expr": text} for name in re.findall(r"- alert: (\w+)", text)]
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_a_room_is_exported_before_anything_goes_wrong(metrics: Metrics) -> None:
    # What audio_out, capture and the engine report at their first heartbeat.
    metrics.set_underflows("hall", 0)
    metrics.set_playback("hall", 12.5, None)
    metrics.set_camera("hall", True, 25.0, 0.04, reconnects=0)
    metrics.set_artwork("hall", "starry-night", "The Starry Night")
    metrics.chunk("hall", 0.12, 8.3, 1.5, audio_s=1.0)
    samples = _scrape(metrics)
    assert [s.value for s in samples["art2mus_underflows_total"]] == [0.0]
    assert samples["art2mus_underflows_total"][0].labels == {"room": "hall"}
    assert [s.value for s in samples["art2mus_camera_reconnects_total"]] == [0.0]
    assert samples["art2mus_level_dbfs"][0].value == LEVEL_FLOOR_DBFS  # nothing played yet
    assert samples["art2mus_playhead_seconds"][0].value == 12.5
    assert samples["art2mus_camera_ok"][0].value == 1.0
    assert samples["art2mus_camera_fps"][0].value == 25.0
    assert samples["art2mus_chunk_audio_seconds"][0].value == 1.0
    assert samples["art2mus_artwork_info"][0].labels == {
        "room": "hall", "artwork_id": "starry-night", "title": "The Starry Night"}

    # Then things happen: counters advance by the difference, the artwork changes in place.
    metrics.set_underflows("hall", 3)
    metrics.set_camera("hall", False, 0.0, 4.2, reconnects=1)
    metrics.set_playback("hall", 13.5, -18.25)
    metrics.set_artwork("hall", None, "")
    samples = _scrape(metrics)
    assert samples["art2mus_underflows_total"][0].value == 3.0
    assert samples["art2mus_camera_reconnects_total"][0].value == 1.0
    assert samples["art2mus_camera_ok"][0].value == 0.0
    assert samples["art2mus_camera_frame_age_seconds"][0].value == 4.2
    assert samples["art2mus_level_dbfs"][0].value == -18.25
    assert [s.labels for s in samples["art2mus_artwork_info"]] == [
        {"room": "hall", "artwork_id": "", "title": ""}]


def test_the_ray_backend_is_exported_per_replica(metrics: Metrics) -> None:
    # What engine.ray_serve.RayGenerator.backend_status reports at each heartbeat.
    def backend(state: str, requests: int, local: int) -> dict[str, Any]:
        return {"kind": "ray", "state": state, "local_chunks": local, "hop_ms_p95": 14.8,
                "replicas": {"gpu-1:41": {"requests": requests, "missed": 2,
                                          "rooms": ["a", "b"], "batch_mean": 1.5,
                                          "queue_ms_p95": 3.0}}}

    metrics.set_backend({"kind": "local"})  # the local generator: nothing
    assert not any(name.startswith(("art2mus_backend", "art2mus_replica"))
                   for name in _scrape(metrics))
    metrics.set_backend(backend("ok", 100, 0))
    metrics.set_backend(backend("degraded: ray unreachable", 130, 40))
    samples = _scrape(metrics)
    assert samples["art2mus_backend_healthy"][0].labels == {"backend": "ray"}
    assert samples["art2mus_backend_healthy"][0].value == 0.0
    assert samples["art2mus_backend_local_chunks_total"][0].value == 40.0
    assert samples["art2mus_backend_hop_p95_seconds"][0].value == pytest.approx(0.0148)
    replica = {"replica": "gpu-1:41"}
    assert samples["art2mus_replica_requests_total"][0].labels == replica
    assert samples["art2mus_replica_requests_total"][0].value == 130.0  # a running total
    assert samples["art2mus_replica_deadlines_missed_total"][0].value == 2.0
    assert samples["art2mus_replica_rooms"][0].value == 2.0
    assert samples["art2mus_replica_batch_size"][0].value == 1.5
    assert samples["art2mus_replica_queue_wait_p95_seconds"][0].value == pytest.approx(0.003)


def test_names_lists_what_a_scrape_shows(metrics: Metrics) -> None:
    names = metrics.names()
    metrics.set_underflows("a", 1)
    metrics.chunk("a", 0.1, 5.0, 1.0, audio_s=1.0)
    metrics.set_artwork("a", "x", "X")
    scraped = set(_scrape(metrics))
    assert scraped <= names
    assert {"art2mus_underflows_total", "art2mus_chunk_generation_seconds_bucket",
            "art2mus_artwork_info", "art2mus_role_up"} <= names
    assert Metrics(0).names() == set()


def test_the_dashboard_is_grafana_json_over_metrics_we_export(metrics: Metrics) -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["schemaVersion"] >= 30 and board["uid"]
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert all(p["targets"] and p["gridPos"]["w"] > 0 for p in panels)
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    used = {name for expr in _dashboard_exprs() for name in OUR_NAME.findall(expr)}
    assert used - metrics.names() == set(), "the dashboard uses names no role exports"
    # what the issue asks a dashboard to show
    assert {"art2mus_level_dbfs", "art2mus_underflows_total", "art2mus_lead_seconds",
            "art2mus_camera_ok", "art2mus_camera_fps", "art2mus_chunk_generation_seconds_bucket",
            "art2mus_role_up", "art2mus_role_restarts_total", "art2mus_artwork_info",
            "art2mus_playhead_seconds"} <= used


def test_the_alert_rules_use_metrics_we_export(metrics: Metrics) -> None:
    rules = _alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {"Art2musRoleDown", "Art2musRoomSilent", "Art2musUnderflows", "Art2musCameraLost",
            "Art2musDiskFilling", "Art2musChunkTimeNearBudget"} <= names
    exprs = " ".join(str(rule["expr"]) for rule in rules)
    used = set(OUR_NAME.findall(exprs))
    assert used and used - metrics.names() == set(), "a rule uses a name no role exports"
    assert all(name in exprs for name in EXTERNAL)  # and nothing else from outside:
    outside = set(re.findall(r"\b(node_[a-z_]+|up)\b(?=[{\s])", exprs))
    assert outside <= EXTERNAL


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_alert_rules() -> None:
    done = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_monitoring_files_are_package_data() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert "installation.configs.monitoring" in setuptools["packages"]
    globs = setuptools["package-data"]["installation.configs.monitoring"]
    shipped = {p.name for glob in globs for p in MONITORING.glob(glob)}
    assert shipped == {p.name for p in MONITORING.iterdir()}
    assert any(dep.startswith("sdnotify") for dep in project["project"]["dependencies"])


def test_the_units_are_notify_with_a_watchdog() -> None:
    units = sorted((ROOT / "configs" / "systemd").glob("*.service"))
    assert units
    for unit in units:
        lines = {line.strip() for line in unit.read_text().splitlines()}
        assert {"Type=notify", "NotifyAccess=main"} <= lines, unit.name
        assert any(line.startswith("WatchdogSec=") for line in lines), unit.name


# -- sd_notify ------------------------------------------------------------------


def _config(tmp_path: Path) -> Any:
    return config_from_dict({
        "network": {name: f"tcp://127.0.0.1:{_free_port()}"
                    for name in ("views", "chunks", "clock", "control")},
        "supervisor": {"restart_backoff_s": 0.2, "stop_timeout_s": 2.0},
        "rooms": [{"id": "a"}],
        "installation": {"output_dir": str(tmp_path / "out")},
    })


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_the_supervisor_tells_systemd_ready_watchdog_and_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool,
) -> None:
    # systemd's side: a datagram socket at NOTIFY_SOCKET ('@name': Linux's abstract namespace)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"art2mus-test-{tmp_path.name}"
        listener.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    else:
        listener.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    listener.settimeout(20.0)
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    roles = [RoleProcess("engine", sleeper), RoleProcess("audio_out-a", sleeper)]
    supervisor = Supervisor(_config(tmp_path), tmp_path / "c.json", lambda *a, **k: None,
                            roles=roles)
    stop = threading.Event()
    runner = threading.Thread(target=supervisor.run, args=(stop,), kwargs={"poll_s": 0.02})
    runner.start()
    received: list[str] = []
    try:
        while not any("WATCHDOG=1" in m for m in received):
            received.append(listener.recv(4096).decode())
    finally:
        stop.set()
        runner.join(timeout=30)
    try:
        while not any("STOPPING=1" in m for m in received):
            received.append(listener.recv(4096).decode())
    finally:
        listener.close()
    fields = [field for message in received for field in message.split("\n")]
    assert not runner.is_alive()
    assert fields.index("READY=1") < fields.index("WATCHDOG=1") < fields.index("STOPPING=1")
    # the tests' sleepers speak no heartbeat: running, but "starting" in the status
    assert "STATUS=0/2 roles running; engine starting, audio_out-a starting" in fields
    assert all(roles_pid is None for roles_pid in (r.pid for r in roles))


def test_systemd_notify_is_a_no_op_outside_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notify = SystemdNotify()
    assert not notify.enabled
    notify.send("READY=1")  # nothing to send to, nothing raised
    notify.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        monkeypatch.setenv("WATCHDOG_USEC", "400000")  # WatchdogSec=0.4: ping every 0.1 s
        notify = SystemdNotify()
        assert notify.enabled and notify.interval_s == pytest.approx(0.1)
        notify.status("1/1 roles running")
        notify.status("1/1 roles running")  # unchanged: not sent again
        notify.close()
        listener.settimeout(0.0)
        assert listener.recv(4096) == b"STATUS=1/1 roles running"
        with pytest.raises(BlockingIOError):
            listener.recv(4096)
