"""`art2mus check-config --deep` and `run`'s start-up checks: what the schema cannot see.

Each broken thing a config can name (a missing video, an empty image folder,
a missing catalogue or SoundFont, an output folder whose parent is missing,
a port in use, missing keys, a sound
device that is not there) fails with one line naming the field, what was
expected and what was found; a check this machine cannot make (no
PortAudio) is said so and does not fail.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from audio_out import outputs
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING
from installation.cli import cli
from installation.config import config_from_dict
from installation.doctor import deep_check

PORT = 6430  # 6430-6449


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    """The config as JSON, which ``load_config`` reads like TOML (same tables, same checks)."""
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def _network(base: int) -> dict[str, str]:
    return {name: f"tcp://127.0.0.1:{base + i}"
            for i, name in enumerate(("views", "chunks", "clock", "control"))}


def _video(path: Path) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    return path


def _images(folder: Path) -> Path:
    import cv2

    folder.mkdir()
    cv2.imwrite(str(folder / "wall.png"), np.full((48, 64, 3), 120, np.uint8))
    return folder


def test_a_config_that_will_run_here_passes(tmp_path: Path) -> None:
    path = write_config(tmp_path / "good.json", {
        "installation": {"output_dir": str(tmp_path / "out")},  # missing, parent exists
        "network": _network(PORT),
        # the README's layout: folders two deep under output_dir, made at start (they were
        # refused: "a whole tree is never made silently")
        "audio_out": {"output": "none", "record": "takes/{room}/{start}.wav"},
        "metrics": {"port": PORT + 4},  # 6434..6441
        "engine": {"generator": "sine"},
        "rooms": [
            {"id": "video", "capture": {"source": f"video:{_video(tmp_path / 'wall.avi')}"}},
            {"id": "images", "capture": {"source": f"images:{_images(tmp_path / 'walls')}"}},
            {"id": "demo"},
        ],
    })
    result = CliRunner().invoke(cli, ["check-config", "--deep", str(path)])
    assert result.exit_code == 0, result.output
    assert "deep checks: 0 failed" in result.output
    assert not (tmp_path / "out").exists()  # checking creates nothing


def test_a_catalogue_is_checked_as_the_capture_reads_it(tmp_path: Path) -> None:
    # A catalogue sorted into sub-folders (an export by room) was refused ("no image
    # files"), so `art2mus run` would not start; a broken catalogue.toml passed, and the
    # capture failed on it after start. A catalogue not indexed yet is said, with the way
    # to index it ahead.
    import cv2

    from capture.synthetic.artworks import make_artwork

    catalogue = tmp_path / "collection"
    (catalogue / "room-1").mkdir(parents=True)
    for k in range(3):
        cv2.imwrite(str(catalogue / "room-1" / f"work-{k}.png"), make_artwork(k, 7, (160, 120)))
    path = write_config(tmp_path / "catalogue.json", {
        "installation": {"output_dir": str(tmp_path / "out")},
        "network": _network(PORT), "audio_out": {"output": "none"},
        "metrics": {"port": PORT + 4}, "engine": {"generator": "sine"},
        "rooms": [{"id": "r0", "capture": {"recognition": {"catalogue": str(catalogue)}}}],
    })

    def check() -> list[str]:
        result = CliRunner().invoke(cli, ["check-config", "--deep", str(path)])
        return [line for line in result.output.splitlines() if line.startswith("rooms[0]")]

    field = "rooms[0].capture.recognition.catalogue"
    assert check() == [f"{field}: 3 of 3 works not indexed yet: the capture indexes them at "
                       f"start, in the background (about 1 s on one core); `art2mus index "
                       f"{catalogue}` does it ahead"]
    assert CliRunner().invoke(cli, ["index", str(catalogue)]).exit_code == 0
    assert check() == []
    # a room that keeps its index elsewhere is told the command with its --cache-dir
    elsewhere = write_config(tmp_path / "elsewhere.json", {
        "installation": {"output_dir": str(tmp_path / "out")},
        "network": _network(PORT), "audio_out": {"output": "none"},
        "metrics": {"port": PORT + 4}, "engine": {"generator": "sine"},
        "rooms": [{"id": "r0", "capture": {"recognition": {
            "catalogue": str(catalogue), "cache_dir": str(tmp_path / "cache")}}}],
    })
    told = CliRunner().invoke(cli, ["check-config", "--deep", str(elsewhere)]).output
    assert f"`art2mus index {catalogue} --cache-dir {tmp_path / 'cache'}` does it ahead" in told
    (catalogue / "catalogue.toml").write_text('[[artwork]]\nfile = "work-0.png"\ntitel = "A"\n')
    assert check() == [f"{field}: catalogue {catalogue / 'catalogue.toml'}: left out keys it "
                       f"does not read: 'titel' in artwork[0] (did you mean 'title'?) (read: "
                       f"file, id, title, artist, year)"]
    (catalogue / "catalogue.toml").write_text("[[artwork]\nfile =")
    assert check() == [f"{field}: catalogue {catalogue / 'catalogue.toml'}: expected valid "
                       f"TOML, got Expected ']]' at the end of an array declaration (at line "
                       f"1, column 10)"]


def test_every_broken_thing_fails_with_one_line_naming_its_field(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    taken = socket.socket()
    taken.bind(("127.0.0.1", PORT + 12))  # the views port is taken by another program
    taken.listen()
    try:
        path = write_config(tmp_path / "bad.json", {
            "installation": {"output_dir": str(tmp_path / "no" / "such" / "out")},
            "network": _network(PORT + 12),
            "engine": {"generator": "procedural",
                       "procedural": {"soundfont": str(tmp_path / "missing.sf2")}},
            "audio_out": {"output": "none"},
            "metrics": {"port": PORT + 21},  # (one over the ZeroMQ ports: the config's error)
            "security": {"curve": True, "keys_dir": str(tmp_path / "keys"),
                         "include_loopback": True},
            "rooms": [
                {"id": "r0", "capture": {"source": f"video:{tmp_path / 'missing.mp4'}"}},
                {"id": "r1", "capture": {"source": f"images:{empty}"}},
                {"id": "r2", "capture": {"source": "camera:NoSuchCameraAnywhere",
                                         "recognition": {"catalogue": str(tmp_path / "nocat")}}},
            ],
        })
        result = CliRunner().invoke(cli, ["check-config", "--deep", str(path)])
    finally:
        taken.close()
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[-1] == (f"Error: {path} will not run on this machine: 8 deep check(s) "
                         f"failed (listed above)")
    failed = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines[1:-2]
              if ": expected " in line}
    assert set(failed) == {
        "installation.output_dir", "engine.procedural.soundfont", "rooms[0].capture.source",
        "rooms[1].capture.source", "rooms[2].capture.source",
        "rooms[2].capture.recognition.catalogue", "network.views", "security.keys_dir",
    }, result.output
    assert failed["installation.output_dir"].startswith("expected an existing folder, or a new "
                                                        "one inside an existing folder, got ")
    assert "no file at" in failed["rooms[0].capture.source"]
    assert failed["rooms[1].capture.source"].startswith("expected a folder of images, got no "
                                                        "image files")
    assert "no camera named like 'NoSuchCameraAnywhere'" in failed["rooms[2].capture.source"]
    assert failed["network.views"] == (f"expected a free TCP port on 127.0.0.1, got TCP port "
                                       f"{PORT + 12} in use (another art2mus still running?)")
    assert "server.key_secret" in failed["security.keys_dir"]
    assert f"{tmp_path / 'missing.sf2'}" in failed["engine.procedural.soundfont"]
    assert lines[-2].startswith("deep checks: 8 failed")


def test_run_refuses_to_start_and_starts_nothing(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.json", {
        "installation": {"output_dir": str(tmp_path / "out")},
        "network": _network(PORT),
        "audio_out": {"output": "none"},
        "rooms": [{"id": "a", "capture": {"source": f"video:{tmp_path / 'gone.mp4'}"}}],
    })
    result = CliRunner().invoke(cli, ["run", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path} will not run on this machine (1 deep check(s) failed; nothing was " \
           f"started):" in result.output
    assert "rooms[0].capture.source: expected an existing video file, got no file at" \
           in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_endpoints_and_ports_out_of_range_are_schema_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    for endpoint, why in (("tcp://127.0.0.1:99999", "the port is '99999'"),
                          ("tcp://", "no HOST:PORT follows tcp://"),
                          ("tcp://127.0.0.1:*", "the port is '*'")):
        path = tmp_path / "bad.toml"
        path.write_text(f'[network]\nviews = "{endpoint}"\n[[rooms]]\nid = "a"\n')
        result = runner.invoke(cli, ["check-config", str(path)])
        assert result.exit_code == 2, result.output
        assert "field `network.views`: Value error, expected tcp://HOST:PORT (port 1..65535), " \
               f"ipc://PATH or inproc://NAME; {why} (got {endpoint!r})" in result.output
    path = tmp_path / "osc.toml"
    path.write_text('[control.osc]\nlisten = "127.0.0.1:0"\n[[rooms]]\nid = "a"\n')
    assert runner.invoke(cli, ["check-config", str(path)]).exit_code == 2
    path = tmp_path / "inf.toml"
    path.write_text('[audio_out]\nstop_after_s = inf\n[[rooms]]\nid = "a"\n')
    result = runner.invoke(cli, ["check-config", str(path)])
    assert result.exit_code == 2 and "stop_after_s" in result.output


def _device_config(tmp_path: Path, output: str, device: str) -> Any:
    return config_from_dict({
        "installation": {"output_dir": str(tmp_path)},
        "network": _network(PORT),
        "audio_out": {"output": output, "device": device},
        "rooms": [{"id": "a"}],
    })


def test_sound_devices_are_matched_or_said_uncheckable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_portaudio() -> Any:
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(outputs, "_import_sounddevice", no_portaudio)
    report = deep_check(_device_config(tmp_path, "device", "USB"))
    assert [(f.field, f.status, f.message) for f in report.findings] == [
        ("rooms[0].audio_out.device", "unchecked",
         "cannot check: no PortAudio (PortAudio library not found)")]

    devices = [{"name": "Built-in Output", "max_output_channels": 2},
               {"name": "Microphone", "max_output_channels": 0}]
    fake = SimpleNamespace(query_devices=lambda index=None: devices,
                           check_output_settings=lambda **settings: None)  # takes anything
    monkeypatch.setattr(outputs, "_import_sounddevice", lambda: fake)
    assert deep_check(_device_config(tmp_path, "device", "built-in")).findings == []
    report = deep_check(_device_config(tmp_path, "device", "USB Audio"))
    assert [f.line() for f in report.failures] == [
        "rooms[0].audio_out.device: expected a substring of an output device name, got "
        "'USB Audio'; outputs are: 'Built-in Output'"]
    devices[0]["max_output_channels"] = 0  # no output at all
    report = deep_check(_device_config(tmp_path, "device", ""))
    assert [f.line() for f in report.failures] == [
        "rooms[0].audio_out.device: expected a sound output device, got: no sound device: "
        "PortAudio lists no output devices"]
    report = deep_check(_device_config(tmp_path, "auto", ""))  # auto: the null sink, said
    assert [f.status for f in report.findings] == ["warning"]


def test_an_oscquery_port_without_zeroconf_warns_that_discovery_by_name_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def config(query_port: int) -> Any:
        return config_from_dict({
            "installation": {"output_dir": str(tmp_path)},
            "network": _network(PORT),
            "audio_out": {"output": "none"},
            "control": {"osc": {"listen": f"127.0.0.1:{PORT + 19}", "query_port": query_port}},
            "rooms": [{"id": "a"}],
        })

    monkeypatch.setitem(sys.modules, "zeroconf", None)  # `import zeroconf` raises ImportError
    report = deep_check(config(9002))  # a TCP port the check does not bind
    assert [f.line() for f in report.findings] == [
        "control.osc.query_port: zeroconf is not installed (pip install 'art2mus[oscquery]'): "
        "the OSCQuery server is not advertised by mDNS, so controllers do not find it by "
        "name; give them the address http://HOST:9002"]
    assert report.failures == []  # the HTTP server still runs: a warning, not a failure
    assert deep_check(config(0)).findings == []  # no OSCQuery: zeroconf is not needed
    monkeypatch.setitem(sys.modules, "zeroconf", SimpleNamespace())  # installed
    assert deep_check(config(9002)).findings == []


def test_a_console_that_could_not_start_is_a_warning_of_the_deep_check(tmp_path: Path) -> None:
    # Its port taken or its token file gone: the installation ran without a console,
    # which the technician learnt only when the page did not load. The music matters
    # more: said, and the installation still runs.
    taken = socket.socket()
    taken.bind(("127.0.0.1", PORT + 30))
    taken.listen()
    try:
        path = write_config(tmp_path / "console.json", {
            "installation": {"output_dir": str(tmp_path / "out")},
            "network": _network(PORT),
            "audio_out": {"output": "none"},
            "console": {"listen": f"127.0.0.1:{PORT + 30}",
                        "token_file": str(tmp_path / "no-such-token")},
            "rooms": [{"id": "a"}],
        })
        result = CliRunner().invoke(cli, ["check-config", "--deep", str(path)])
    finally:
        taken.close()
    assert result.exit_code == 0, result.output
    assert "deep checks: 0 failed, 2 warning(s)" in result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert (f"console.listen: expected a free TCP port on 127.0.0.1, got TCP port {PORT + 30} "
            "in use (another art2mus still running?): the installation would run without its "
            "console") in output, output
    assert ("console.token_file: expected a readable file with the console's token, got "
            f"cannot read {tmp_path / 'no-such-token'}: ") in output


def test_an_image_claiming_more_pixels_than_any_photo_is_skipped_undecoded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The capture source refuses a decompression bomb; the deep check decoded it (a PNG
    # decodes whole even "reduced"): gigabytes in the process that checks before a run.
    import struct
    import zlib

    import cv2

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    walls = _images(tmp_path / "walls")
    (walls / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 30001 * 4)) + chunk(b"IEND", b""))
    decoded: list[str] = []
    imread = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda path, *a: decoded.append(Path(path).name)
                        or imread(path, *a))
    path = write_config(tmp_path / "bomb.json", {
        "installation": {"output_dir": str(tmp_path / "out")},
        "network": _network(PORT),
        "audio_out": {"output": "none"},
        "console": {"listen": ""},
        "rooms": [{"id": "a", "capture": {"source": f"images:{walls}"}}],
    })
    result = CliRunner().invoke(cli, ["check-config", "--deep", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 image(s) will be skipped" in " ".join(result.output.split())
    assert "bomb.png" not in decoded and "wall.png" in decoded


def _catalogue_config(tmp_path: Path, catalogue: Path) -> Path:
    return write_config(tmp_path / "catalogue.json", {
        "installation": {"output_dir": str(tmp_path / "out")},
        "network": _network(PORT), "audio_out": {"output": "none"},
        "metrics": {"port": PORT + 4}, "engine": {"generator": "sine"},
        "rooms": [{"id": "r0", "capture": {"recognition": {"catalogue": str(catalogue)}}}],
    })


def test_images_added_since_the_index_that_do_not_decode_are_each_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy that failed (zero bytes) and a phone's HEIC named .jpg, added after the last
    # index: the deep check said only "2 of 5 works not indexed yet", and the room then
    # could not open its catalogue. Only the images not indexed yet are decoded.
    import cv2

    from capture import images
    from capture.synthetic.artworks import make_artwork

    catalogue = tmp_path / "collection"
    catalogue.mkdir()
    for k in range(3):
        cv2.imwrite(str(catalogue / f"work-{k}.png"), make_artwork(k, 7, (160, 120)))
    assert CliRunner().invoke(cli, ["index", str(catalogue)]).exit_code == 0
    (catalogue / "new_work.jpg").write_bytes(b"")
    (catalogue / "IMG_2041.jpg").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic")
    decoded: list[str] = []
    read_image = images.read_image
    monkeypatch.setattr(images, "read_image", lambda path, *a, **k: decoded.append(path.name)
                        or read_image(path, *a, **k))
    path = _catalogue_config(tmp_path, catalogue)
    result = CliRunner().invoke(cli, ["check-config", "--deep", "--config", str(path)])
    # a warning, not a failure: the room leaves those works out and recognises the rest,
    # and one bad image must not keep `run` from starting every room
    assert result.exit_code == 0, result.output
    found = [line for line in result.output.splitlines() if line.startswith("rooms[0]")]
    assert found[0] == (
        "rooms[0].capture.recognition.catalogue: 2 reference image(s) do not decode, and the "
        "room leaves those works out: IMG_2041.jpg (expected an image file (JPEG, PNG, ...), "
        "got 24 bytes OpenCV cannot decode); new_work.jpg (expected an image file, got an "
        "empty file); replace each with a JPEG, PNG, WebP, TIFF or BMP of the work, or "
        "remove it")
    assert sorted(decoded) == ["IMG_2041.jpg", "new_work.jpg"]  # not the indexed works
    # a big export gone wrong: every one counted, the first 20 named
    for k in range(21):
        (catalogue / f"copy-{k:02d}.jpg").write_bytes(b"")
    found = [line for line in CliRunner().invoke(
        cli, ["check-config", "--deep", "--config", str(path)]).output.splitlines()
        if line.startswith("rooms[0]")]
    assert "23 reference image(s) do not decode, and the room leaves those works out: " \
        "IMG_2041.jpg (" in found[0]
    assert "; and 3 more; replace each" in found[0]


def _source_findings(tmp_path: Path, source: str) -> list[tuple[str, str]]:
    config = config_from_dict({
        "installation": {"output_dir": str(tmp_path / "out")},
        "network": _network(PORT), "audio_out": {"output": "none"},
        "metrics": {"port": 0}, "console": {"listen": ""},
        "rooms": [{"id": "a", "capture": {"source": source}}],
    })
    return [(f.status, f.message) for f in deep_check(config).findings
            if f.field == "rooms[0].capture.source"]


def test_a_source_path_is_checked_as_capture_opens_it(tmp_path: Path) -> None:
    # camera:/dev/null (or a webcam's metadata node) passed, being there, and capture then
    # refused it at start; a named pipe given as a video was "no file" though it was there.
    notes = tmp_path / "notes.txt"
    notes.write_text("not a camera")
    for path in ("/dev/null", str(notes)):
        assert _source_findings(tmp_path, f"camera:{path}") == [(
            "failed", f"capture source 'camera:{path}': expected a camera that opens, got one "
                      f"that does not open")]
    fifo = tmp_path / "fifo.avi"
    os.mkfifo(fifo)
    assert _source_findings(tmp_path, f"video:{fifo}") == [(
        "failed", f"expected an existing video file, got {fifo}, which is a named pipe, not a "
                  f"video file")]
    assert _source_findings(tmp_path, f"camera:{fifo}") == [(  # never opened: it would wait
        "failed", f"capture source 'camera:{fifo}': expected a camera device, got {fifo}, "
                  f"which is a named pipe")]
    assert _source_findings(tmp_path, f"video:{tmp_path}") == [(
        "failed", f"expected an existing video file, got {tmp_path}, which is a folder, not a "
                  f"video file")]
    # a video file opened as a camera plays (the fault tests' unplugged camera): said
    clip = _video(tmp_path / "clip.avi")
    [(status, message)] = _source_findings(tmp_path, f"camera:{clip}")
    assert status == "warning" and f"(a video file is 'video:{clip}'" in message
    # an index with no camera there is refused as before, unopened
    if sys.platform == "linux":
        missing = next(n for n in range(90, 200) if not Path(f"/dev/video{n}").exists())
        [(status, message)] = _source_findings(tmp_path, f"camera:{missing}")
        assert status == "failed"
        assert message.startswith(f"expected a connected camera, got no /dev/video{missing} "
                                  f"(cameras: ")


@pytest.mark.filterwarnings(NUMPY_COPY_WARNING)
def test_the_diffusion_engines_start_up_checks_run_before_it_starts(
        tiny_model_folder: Path, tmp_path: Path) -> None:
    # Each of these passed the deep check (it checked only that the files were there) and
    # the engine then refused to start, three times, after `art2mus run` had started.
    torch = pytest.importorskip("torch", reason="needs the diffusion extra")
    import shutil

    from safetensors.torch import load_file, save_file

    def engine_failures(**diffusion: Any) -> list[str]:
        config = config_from_dict({
            "installation": {"output_dir": str(tmp_path / "out")},
            "supervisor": {"roles": ["engine"]},
            "engine": {"generator": "diffusion", "diffusion": {
                "model": str(tiny_model_folder), "device": "cpu", "window_s": 1.28,
                "overlap_s": 0.32, **diffusion}},
            "rooms": [{"id": "a"}]})
        return [f.line() for f in deep_check(config).failures if f.field.startswith("engine")]

    assert engine_failures() == []
    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda \
            else "a CPU-only build"
        assert engine_failures(device="cuda") == [
            f"engine.diffusion.device: expected a CUDA device torch sees, got 'cuda' and none "
            f"here (torch {torch.__version__}, {build}); set device = \"auto\" or \"cpu\", or "
            f"install the CUDA build of PyTorch"]
    assert engine_failures(window_s=1.0, overlap_s=0.24) == [
        f"engine.diffusion.window_s: expected a multiple of 0.08 s (2 latent frames at 25/s) "
        f"for {tiny_model_folder}, got 1.0"]

    broken = tmp_path / "model"
    shutil.copytree(tiny_model_folder, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) // 2])  # a copy cut short
    assert engine_failures(model=str(broken)) == [
        f"engine.diffusion.model: expected {weights} to be a safetensors file "
        f"AudioLDM2UNet2DConditionModel can read, got SafetensorError: Error while "
        f"deserializing header: incomplete metadata, file not fully covered"]
    weights.write_bytes(intact)
    tensors = load_file(str(weights))
    tensors["conv_in.weight"] = torch.zeros(64, 8, 3, 3)  # another model's UNet
    save_file(tensors, str(weights))
    assert engine_failures(model=str(broken)) == [
        f"engine.diffusion.model: expected {weights} to hold every weight of the "
        f"AudioLDM2UNet2DConditionModel that {broken / 'unet' / 'config.json'} describes, got "
        f"1 of another shape (conv_in.weight (64, 8, 3, 3) for (32, 8, 3, 3)): the config and "
        f"the weights come from different models or versions; copy both from one source"]

    pytest.importorskip("onnxruntime", reason="needs the diffusion extra")
    garbage = tmp_path / "onnx"
    garbage.mkdir()
    for name in ("unet.onnx", "vae_decoder.onnx", "vocoder.onnx"):
        (garbage / name).write_bytes(b"\0not an onnx file" * 100)
    (garbage / "onnx_export.json").write_text("{}")
    [line] = engine_failures(backend="onnx", onnx_dir=str(garbage))
    assert line.startswith(f"engine.diffusion.onnx_dir: expected {garbage / 'unet.onnx'} to be "
                           f"a model ONNX Runtime ")
    assert line.endswith(f"got InvalidProtobuf: INVALID_PROTOBUF : Protobuf parsing failed.; "
                         f"re-export with `art2mus export-onnx {tiny_model_folder} {garbage} "
                         f"--window-s 1.28 --batch N`")


class _Card:
    """A stand-in for sounddevice over one card: ``outputs`` channels at ``rates`` only
    (PortAudio's own refusals, worded as PortAudio words them), the default output."""

    def __init__(self, outputs: int = 2, rates: tuple[int, ...] = (48000,),
                 unavailable: bool = False) -> None:
        self.devices = [{"name": "Microphone", "max_output_channels": 0},
                        {"name": "USB Card", "max_output_channels": outputs,
                         "default_samplerate": float(rates[0])}]
        self.default = SimpleNamespace(device=(0, 1))
        self.rates, self.unavailable = rates, unavailable
        self.asked: list[dict[str, Any]] = []

    def query_devices(self, index: int | None = None) -> Any:
        return self.devices if index is None else self.devices[index]

    def check_output_settings(self, **settings: Any) -> None:
        self.asked.append(settings)
        if self.unavailable:
            raise ValueError("Device unavailable [PaErrorCode -9985]")
        if settings["channels"] > self.devices[1]["max_output_channels"]:
            raise ValueError("Invalid number of channels [PaErrorCode -9998]")
        if settings["samplerate"] not in self.rates:
            raise ValueError("Invalid sample rate [PaErrorCode -9997]")


def _settings_report(tmp_path: Path, card: Any, monkeypatch: pytest.MonkeyPatch,
                     **audio_out: Any) -> Any:
    monkeypatch.setattr(outputs, "_import_sounddevice", lambda: card)
    return deep_check(config_from_dict({
        "installation": {"output_dir": str(tmp_path)},
        "network": _network(PORT),
        "audio_out": {"output": "device", **audio_out},
        "rooms": [{"id": "a"}],
    }))


def test_the_sound_card_is_asked_for_the_rate_and_channels_the_player_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    card = _Card()
    report = _settings_report(tmp_path, card, monkeypatch, device="usb",
                              sample_rate=44100, channels_out=[7, 8])
    assert [f.line() for f in report.failures] == [
        "rooms[0].audio_out.channels_out: expected channels 1..2 of output 'USB Card', got "
        "channel 8",
        "rooms[0].audio_out.sample_rate: expected a rate output 'USB Card' takes (its own: "
        "48000 Hz), got 44100 (Invalid sample rate [PaErrorCode -9997])"]
    # the rate is asked about on the channels the card has; the player's own settings
    assert card.asked[0] == {"device": 1, "channels": 2, "dtype": "float32",
                             "samplerate": 44100}

    card = _Card()
    report = _settings_report(tmp_path, card, monkeypatch, sample_rate=48000,
                              channels_out=[2])  # default device, one output: mixed to mono
    assert report.findings == []
    assert card.asked == [{"device": None, "channels": 2, "dtype": "float32",
                           "samplerate": 48000}]


def test_a_card_refusing_the_settings_names_the_device_and_auto_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = _settings_report(tmp_path, _Card(unavailable=True), monkeypatch)
    assert [f.line() for f in report.failures] == [
        "rooms[0].audio_out.device: expected an output that takes 48000 Hz on 2 channel(s), "
        "got 'USB Card', which PortAudio refuses (Device unavailable [PaErrorCode -9985])"]

    # 'auto' plays to the null sink where the card refuses: said, not a failure
    report = _settings_report(tmp_path, _Card(rates=(96000,)), monkeypatch, output="auto")
    assert report.failures == []
    assert [(f.field, f.status) for f in report.findings] == [
        ("rooms[0].audio_out.sample_rate", "warning")]
    assert report.findings[0].message.endswith("'auto' will play to the null sink")

    without = SimpleNamespace(query_devices=_Card().query_devices,
                              default=SimpleNamespace(device=(0, 1)))
    report = _settings_report(tmp_path, without, monkeypatch)
    assert [(f.field, f.status) for f in report.findings] == [
        ("rooms[0].audio_out.sample_rate", "unchecked")]


def test_auto_with_a_named_card_not_there_yet_warns_and_lets_the_rooms_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gallery.toml's `device = "USB Audio"` under output = "auto", the card not plugged in:
    # the deep check failed and `run` (and ExecStartPre) started no room, while audio_out
    # itself plays to the null sink and takes the card when it comes (README).
    devices = [{"name": "Built-in Output", "max_output_channels": 2}]
    fake = SimpleNamespace(query_devices=lambda index=None: devices,
                           check_output_settings=lambda **settings: None)
    monkeypatch.setattr(outputs, "_import_sounddevice", lambda: fake)
    report = deep_check(_device_config(tmp_path, "auto", "USB Audio"))
    assert report.failures == []
    [finding] = report.findings
    assert (finding.field, finding.status) == ("rooms[0].audio_out.output", "warning")
    assert finding.message.startswith(
        "no output named like 'USB Audio' here: 'auto' will play to the null sink and look "
        "for the card again, playing to it once it comes (audio_out.device: expected a "
        "substring of an output device name, got 'USB Audio'; outputs are: 'Built-in Output')")
    devices[0]["max_output_channels"] = 0  # no card at all: the same
    report = deep_check(_device_config(tmp_path, "auto", "USB Audio"))
    assert [(f.field, f.status) for f in report.findings] == [
        ("rooms[0].audio_out.output", "warning")]
    # output = "device" asks for the card: still a failure
    report = deep_check(_device_config(tmp_path, "device", "USB Audio"))
    assert [f.field for f in report.failures] == ["rooms[0].audio_out.device"]


def test_a_procedural_engine_without_tinysoundfont_fails_the_deep_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `pip install .` leaves the synth out (it cannot be declared): the deep check passed
    # unless soundfont = "auto", and `run` then gave up on the engine after 3 exits.
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # import raises ImportError
    font = tmp_path / "font.sf2"
    font.write_bytes(b"RIFF")
    for soundfont, field in (({}, "engine.procedural"),
                             ({"soundfont": str(font)}, "engine.procedural"),
                             # "auto" loads the fonts with the synth: its failure, said once
                             ({"soundfont": "auto"}, "engine.procedural.soundfont")):
        config = config_from_dict({
            "installation": {"output_dir": str(tmp_path / "out")},
            "network": _network(PORT), "audio_out": {"output": "none"},
            "console": {"listen": ""},
            "engine": {"generator": "procedural", "procedural": soundfont},
            "rooms": [{"id": "a"}],
        })
        failures = deep_check(config).failures
        assert [f.field for f in failures] == [field], failures
        expected = "expected tinysoundfont installed, got: " if field == "engine.procedural" \
            else "expected a General MIDI SoundFont, got: "
        assert failures[0].message.startswith(
            f"{expected}the procedural generator needs tinysoundfont, which is not installed")
        assert "pip install --no-deps" in failures[0].message


def test_images_that_do_not_decode_are_not_counted_as_works_to_index(tmp_path: Path) -> None:
    # With one empty .jpg added the deep check said "1 of 31 works not indexed yet ...
    # `art2mus index ...` does it ahead", and `index` then exited 3 on that very file.
    import cv2

    from capture.synthetic.artworks import make_artwork

    catalogue = tmp_path / "collection"
    catalogue.mkdir()
    for k in range(3):
        cv2.imwrite(str(catalogue / f"work-{k}.png"), make_artwork(k, 7, (160, 120)))
    assert CliRunner().invoke(cli, ["index", str(catalogue)]).exit_code == 0
    (catalogue / "empty.jpg").write_bytes(b"")
    path = _catalogue_config(tmp_path, catalogue)
    result = CliRunner().invoke(cli, ["check-config", "--deep", "--config", str(path)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "1 reference image(s) do not decode" in output and "empty.jpg" in output
    assert "not indexed yet" not in output, output
    # a new work that decodes beside it is counted, and the hint says what `index` needs
    cv2.imwrite(str(catalogue / "work-new.png"), make_artwork(9, 7, (160, 120)))
    output = " ".join(CliRunner().invoke(
        cli, ["check-config", "--deep", "--config", str(path)]).output.split())
    assert "1 of 5 works not indexed yet" in output, output
    assert ("does it ahead once the images that do not decode are replaced or removed (it "
            "refuses them)") in output


def test_a_relative_path_that_is_not_there_is_named_with_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "got no folder at photos" sent the reader to look beside the config file; relative
    # paths are read from the working directory.
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    note = "relative paths are read from the working directory"
    assert _source_findings(tmp_path, "images:photos") == [(
        "failed", f"expected a folder of images, got no folder at photos ({here / 'photos'}: "
                  f"{note})")]
    assert _source_findings(tmp_path, "video:clip.avi") == [(
        "failed", f"expected an existing video file, got no file at clip.avi "
                  f"({here / 'clip.avi'}: {note})")]
    report = deep_check(config_from_dict({
        "installation": {"output_dir": str(tmp_path / "out")},
        "network": _network(PORT), "audio_out": {"output": "none"},
        "console": {"listen": ""}, "engine": {"generator": "sine"},
        "rooms": [{"id": "a", "capture": {"recognition": {"catalogue": "catalogue"}}}],
    }))
    assert [f.line() for f in report.failures] == [
        f"rooms[0].capture.recognition.catalogue: expected a folder of reference images, got "
        f"no folder at catalogue ({here / 'catalogue'}: {note})"]
    # the engine's model folder and the CurveZMQ keys, said in their own words
    report = deep_check(config_from_dict({
        "installation": {"output_dir": str(tmp_path / "out")},
        "network": _network(PORT), "audio_out": {"output": "none"},
        "console": {"listen": ""},
        "engine": {"generator": "diffusion", "diffusion": {"model": "models/art2mus"}},
        "security": {"curve": True, "keys_dir": "keys", "include_loopback": True},
        "rooms": [{"id": "a"}],
    }))
    lines = [f.line() for f in report.failures]
    assert lines[0] == (f"engine.diffusion.model: expected a complete model folder, got: model "
                        f"folder models/art2mus does not exist ({here / 'models/art2mus'}: "
                        f"{note})")
    assert lines[1].startswith("security.keys_dir: expected keys/server.key_secret")
    assert lines[1].endswith(f" ({here / 'keys'}: {note})")
    # an absolute path is named as it is
    assert _source_findings(tmp_path, f"images:{here / 'photos'}") == [(
        "failed", f"expected a folder of images, got no folder at {here / 'photos'}")]
