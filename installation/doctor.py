"""Deep checks: will this config run on *this* machine? (``art2mus check-config --deep``).

The schema (:mod:`installation.config`) says a config is well formed; these
checks say whether what it names is there, before any role starts:

- sources open: a video file exists and OpenCV decodes a frame of it, an
  image folder holds images, a camera (an index, a name on Linux, a device
  path) opens as the capture opens it and sends a frame within
  :data:`capture.sources.CAMERA_PROBE_S`;
- files exist: the encoder model, the SoundFont, the diffusion model folder,
  the CurveZMQ keys this machine's roles load; the diffusion engine's start-up
  checks run without loading its weights (each network built on torch's meta
  device against its weight file's header; the device, the window plan, the
  sampler; the ONNX files and the model they were exported from); the catalogue is read as the
  capture reads it (its images, its metadata), and works not indexed yet are
  decoded (only those: the indexed ones decoded when they were indexed) and
  those that decode counted (a warning: the capture indexes them at start);
- devices match: each room's sound device (through PortAudio), and it takes the
  sample rate and channel count the player opens it with (under ``output =
  "auto"`` a card missing or refusing is a warning: the room plays to the null
  sink and waits for it); MIDI ports;
- ports are valid and free: the endpoints this machine binds, the metrics
  ports (their range apart from the ZeroMQ ports), OSC in;
- paths are writable: the output folder (a missing one is created only
  inside an existing folder, never as a new tree from the root of the disk)
  and the folders the recordings go to.
- packages are there: tinysoundfont for the procedural generator (not a
  declared dependency); aalink for ``[control.link]``; zeroconf for
  ``[control.osc] query_port`` (a warning only: OSCQuery then runs without
  its mDNS advertisement).

Only what this machine runs is checked (``[supervisor] roles`` and
``rooms``): a room machine is not asked for the engine's model. A check that
cannot be made here (no PortAudio, no V4L2 list, a network stream) is said
so and does not fail. A path a failure names that the config gives relatively
is named with its absolute path too (:func:`~installation.config.relative_note`).
``art2mus run`` runs the checks at start-up and refuses
to start on a failure (:func:`require_deep_checks`); the systemd units run
``art2mus check-config --deep`` as ``ExecStartPre``.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ground.config import endpoint_problem
from ground.errors import Art2MusError, ConfigError, InputError
from installation.config import InstallationConfig, parse_listen, relative_note, shown_path

# "info": said, not counted (the SoundFont ``soundfont = "auto"`` resolves to).
Status = Literal["failed", "unchecked", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """One check that did not simply pass: the field it is about and what was found."""

    field: str
    status: Status
    message: str

    def line(self) -> str:
        """``rooms[0].capture.source: expected ..., got ...`` (one line)."""
        return f"{self.field}: {self.message}"


@dataclass
class DeepReport:
    """The outcome of :func:`deep_check`."""

    findings: list[Finding] = field(default_factory=list)
    passed: int = 0

    @property
    def failures(self) -> list[Finding]:
        """The findings that stop the installation from running here."""
        return [f for f in self.findings if f.status == "failed"]

    def summary(self) -> str:
        """``deep checks: 1 failed, 2 cannot be checked here, 14 passed``."""
        unchecked = sum(f.status == "unchecked" for f in self.findings)
        warnings = sum(f.status == "warning" for f in self.findings)
        parts = [f"{len(self.failures)} failed"]
        if warnings:
            parts.append(f"{warnings} warning(s)")
        if unchecked:
            parts.append(f"{unchecked} cannot be checked here")
        parts.append(f"{self.passed} passed")
        return "deep checks: " + ", ".join(parts)


#: The endpoints each role binds and connects (see ground.transport).
_BINDS = {"engine": ("views", "chunks", "clock"), "supervisor": ("control",)}
_CONNECTS = {"engine": ("control",), "capture": ("views", "control"),
             "audio_out": ("chunks", "clock", "control")}


class _Checks:
    """Runs every check once and collects the findings."""

    def __init__(self, config: InstallationConfig) -> None:
        self.config = config
        self.report = DeepReport()
        self.roles = {"supervisor", *config.supervisor.roles}
        wanted = set(config.supervisor.rooms)
        self.rooms = [(i, room) for i, room in enumerate(config.rooms)
                      if not wanted or room.id in wanted]
        self._will_exist: set[Path] = set()  # folders a role creates (the output folder)
        self._sounddevice: Any = None
        self._sounddevice_error: str | None = None

    # -- outcomes --

    def ok(self) -> None:
        self.report.passed += 1

    def fail(self, where: str, expected: str, got: str) -> None:
        self.report.findings.append(Finding(where, "failed", f"expected {expected}, got {got}"))

    def cannot(self, where: str, why: str) -> None:
        self.report.findings.append(Finding(where, "unchecked", f"cannot check: {why}"))

    def warn(self, where: str, message: str) -> None:
        self.report.findings.append(Finding(where, "warning", message))

    def error(self, where: str, error: Art2MusError, expected: str) -> None:
        """A failure as the code that will open the thing words it."""
        text = str(error)
        if "expected " in text:  # ours say "<field>: expected X, got Y": the field is ``where``
            text = text[text.index("expected "):]
        else:
            text = f"expected {expected}, got: {text}"
        self.report.findings.append(Finding(where, "failed", text))

    # -- the checks --

    def run(self) -> DeepReport:
        self.output_folder()
        self.recordings()
        if "engine" in self.roles:
            self.engine_files()
        for index, room in self.rooms:
            if "capture" in self.roles:
                self.capture_source(index, room.capture)
                self.capture_files(index, room.capture)
            if "audio_out" in self.roles:
                self.sound_device(index, room.audio_out)
                if room.audio_out.midi_port:
                    self.midi_port(f"rooms[{index}].audio_out.midi_port",
                                   room.audio_out.midi_port, output=True)
        midi = self.config.control.midi
        if midi.port:
            self.midi_port("control.midi.port", midi.port, output=False)
        if midi.clock_out and "engine" in self.roles:
            self.midi_port("control.midi.clock_out", midi.clock_out, output=True)
        if self.config.control.link.enabled:
            self.link()
        if self.config.control.osc.query_port:
            self.oscquery_advertising()
        self.endpoints()
        self.metrics_ports()
        if self.config.control.osc.listen:
            host, _, port = self.config.control.osc.listen.rpartition(":")
            self.port_free("control.osc.listen", host, int(port), socket.SOCK_DGRAM)
        if self.config.console.listen:
            self.console()
        self.keys()
        return self.report

    def console(self) -> None:
        """The console's address free and its token file readable: without them the
        installation runs without a console (the music matters more: a warning, not a
        failure), which a technician would otherwise learn only when the page fails."""
        without = "the installation would run without its console"
        host, port = parse_listen(self.config.console.listen)
        if port:
            self.port_free("console.listen", host, port, socket.SOCK_STREAM, optional=without)
        try:
            self.config.console.read_token()
        except ConfigError as exc:
            self.warn("console.token_file", f"expected a readable file with the console's "
                      f"token, got {str(exc).removeprefix('console.token_file: ')}: {without}")
        else:
            self.ok()

    # paths

    def writable_folder(self, where: str, folder: Path) -> None:
        """An existing folder this user can write, or one creatable in an existing folder."""
        folder = Path(os.path.abspath(folder))
        if folder.is_dir():
            try:
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as exc:
                self.fail(where, "a folder this user can write",
                          f"{folder} ({exc.strerror or exc})")
                return
            self.ok()
        elif folder.exists():
            self.fail(where, "a folder", f"{folder}, which is a file")
        elif folder in self._will_exist:
            self.ok()
        elif folder.parent.is_dir() or folder.parent in self._will_exist:
            if folder.parent.is_dir() and not os.access(folder.parent, os.W_OK | os.X_OK):
                self.fail(where, f"a folder that can be created in {folder.parent}",
                          "no permission to write there")
                return
            self._will_exist.add(folder)  # made at start-up, inside an existing folder
            self.ok()
        else:
            self.fail(where, "an existing folder, or a new one inside an existing folder",
                      f"{folder}, whose parent {folder.parent} does not exist either "
                      f"(create it first: a whole tree is never made silently)")

    def output_folder(self) -> None:
        self.writable_folder("installation.output_dir", self.config.output_dir)

    def recordings(self) -> None:
        if "audio_out" not in self.roles:
            return
        here = {f"rooms[{index}]" for index, _ in self.rooms}
        folders: dict[Path, str] = {}
        for where, template in self.config.recording_templates():
            if where.split(".")[0] in here:
                folders.setdefault(Path(os.path.abspath(Path(template).parent)), where)
        out = Path(os.path.abspath(self.config.output_dir))
        for folder, where in folders.items():
            if folder != out and folder.is_relative_to(out) and not folder.exists():
                # The recorder makes its folders under output_dir whole, however deep
                # (takes/{room}/, the README's layout): what must hold is the nearest
                # folder that exists there (or output_dir, made at start) taking writes.
                nearest = next(p for p in folder.parents if p.exists() or p == out)
                if nearest.exists():
                    self.writable_folder(where, nearest)
                else:
                    self.ok()
                self._will_exist.add(folder)
                continue
            self.writable_folder(where, folder)

    def existing_file(self, where: str, path: str, what: str) -> bool:
        from capture.sources import not_a_file

        if Path(path).is_file():
            self.ok()
            return True
        kind = not_a_file(Path(path))  # there, but a named pipe or a folder is no file
        self.fail(where, what, f"{shown_path(path)}, which is {kind}" if kind
                  else f"no file at {shown_path(path)}")
        return False

    def image_folder(self, where: str, folder: str, what: str) -> list[Path]:
        from capture.sources import IMAGE_SUFFIXES

        path = Path(folder)
        if not path.is_dir():
            self.fail(where, what, f"no folder at {shown_path(path)}")
            return []
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            self.fail(where, what, f"no image files ({', '.join(IMAGE_SUFFIXES)}) in "
                                   f"{shown_path(path)}")
            return []
        self.ok()
        return images

    # capture

    def capture_source(self, index: int, capture: Any) -> None:
        where = f"rooms[{index}].capture.source"
        kind, _, argument = capture.source.partition(":")
        if capture.source == "demo":
            self.ok()
        elif kind == "video" and "://" in argument:
            self.cannot(where, f"{argument} is a network stream (opened when capture starts)")
        elif kind == "video":
            from capture.sources import video_file_problem

            if (problem := video_file_problem(Path(argument))) is not None:
                # as capture says it, and a relative path's absolute one
                self.fail(where, "an existing video file", problem + relative_note(argument))
            else:
                self.ok()
                self.video_opens(where, argument)
        elif kind == "images":
            images = self.image_folder(where, argument, "a folder of images")
            if images:
                self.images_decode(where, images)
        else:
            self.camera(where, argument)

    def video_opens(self, where: str, path: str) -> None:
        import cv2

        from capture.sources import quiet_opencv_logs

        quiet_opencv_logs()  # FFmpeg's "moov atom not found": the failure below says it
        video = cv2.VideoCapture(path)
        try:
            ok = bool(video.isOpened()) and bool(video.read()[0])
        finally:
            video.release()
        if ok:
            self.ok()
        else:
            self.fail(where, "a video OpenCV can decode",
                      f"no frame read from {shown_path(path)}")

    def images_decode(self, where: str, images: list[Path]) -> None:
        import cv2

        from capture.images import MAX_IMAGE_PIXELS, stored_size
        from capture.sources import quiet_opencv_logs

        quiet_opencv_logs()  # imread's "can't open/read file": the lines below say it

        def decodes(path: Path) -> bool:
            # the header first: a decompression bomb is refused by the source, and must
            # not take the checking process's memory either (PNGs decode whole, reduced)
            try:
                with path.open("rb") as file:
                    size = stored_size(file.read(1 << 16))
            except OSError:
                return False
            if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
                return False
            return cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None

        unreadable = [p for p in images[:50] if not decodes(p)]
        if len(unreadable) == len(images[:50]):
            self.fail(where, "images OpenCV can decode", f"none of {len(unreadable)} decodes")
        elif unreadable:
            self.warn(where, f"{len(unreadable)} image(s) will be skipped, OpenCV cannot decode "
                             f"them: {', '.join(p.name for p in unreadable[:5])}")
        else:
            self.ok()

    def camera(self, where: str, argument: str) -> None:
        from capture.sources import camera_names

        if "://" in argument:
            self.cannot(where, f"{argument} is a network camera (opened when capture starts)")
            return
        if argument.startswith("/"):
            if Path(argument).exists():
                self.camera_sends(where, argument)
            else:
                self.fail(where, "a camera device", f"no device at {argument}")
            return
        if sys.platform != "linux":
            self.cannot(where, "cameras are listed only on Linux (V4L2)")
            return
        names = camera_names()
        listing = ", ".join(f"{i}: {n}" for i, n in sorted(names.items())) or "none found"
        if argument.isdigit():
            if Path(f"/dev/video{argument}").exists():
                self.camera_sends(where, argument)
            else:
                self.fail(where, "a connected camera", f"no /dev/video{argument} "
                                                       f"(cameras: {listing})")
            return
        if any(argument.casefold() in name.casefold() for name in names.values()):
            self.camera_sends(where, argument)
        else:
            self.fail(where, "the name of a connected camera",
                      f"no camera named like {argument!r} (cameras: {listing})")

    def camera_sends(self, where: str, argument: str) -> None:
        """The camera opened as capture opens it, and one frame read, within
        :data:`~capture.sources.CAMERA_PROBE_S` (a device that blocks does not hold the
        check longer): a path to ``/dev/null``, to a webcam's metadata node or to a text
        file was there, and capture refused it at start. Capture's own message, naming
        the source, where it fails."""
        from capture.sources import probe_camera

        try:
            probe_camera(f"camera:{argument}")
        except InputError as error:
            self.report.findings.append(Finding(where, "failed", str(error)))
            return
        if Path(argument).is_file():  # a video file that opens as a "camera"
            self.warn(where, f"{argument} is a file, not a camera device: capture plays it "
                             f"once as fast as it decodes, then reopens it as an unplugged "
                             f"camera (a video file is 'video:{argument}', played in real "
                             f"time and looped)")
        else:
            self.ok()

    def catalogue(self, where: str, folder: str, cache_dir: str | None) -> None:
        """The catalogue as the capture reads it (images in sub-folders too, hidden files
        not; its metadata), the images not indexed yet decoded (each one that does not is
        named), and a warning where the first start will index works."""
        from capture.catalogue import (
            INDEX_FILE,
            images_to_index,
            listed,
            read_entries,
            unreadable_images,
        )

        path = Path(folder)
        if not path.is_dir():
            self.fail(where, "a folder of reference images",
                      f"no folder at {shown_path(path)}")
            return
        notes: list[str] = []
        try:
            entries = read_entries(path, notes)
        except InputError as error:  # as worded: it names the metadata file and row at fault
            self.report.findings.append(Finding(where, "failed", str(error)))
            return
        # A link to nothing or a loop of links among the images stops the capture's index
        # at start: named here as `art2mus index` names the images it cannot read.
        if unreadable := unreadable_images(path):
            self.fail(where, "reference images that can be read",
                      f"{len(unreadable)} that cannot be read: {listed(unreadable)}")
            return
        # An image added since the last index that does not decode (a copy that failed:
        # empty; a phone's HEIC named .jpg) is named here, every one, with what to do; the
        # indexed ones decoded when they were indexed (decoding only the new stays cheap).
        cache = (Path(cache_dir) if cache_dir else path) / INDEX_FILE
        new_images = images_to_index(path, cache)
        # A warning, not a failure: the room opens its catalogue without those works (every
        # other work is recognised), and one bad image must not keep every room silent.
        undecodable = undecodable_images(path, new_images)
        if undecodable:
            self.warn(where, f"{len(undecodable)} reference image(s) do not decode, and the "
                      f"room leaves those works out: {listed(undecodable)}; replace each "
                      f"with a JPEG, PNG, WebP, TIFF or BMP of the work, or remove it")
        for note in notes:  # it loads, but likely not as meant (a typo's title left out)
            self.warn(where, note)
        if not notes and not undecodable:
            self.ok()
        # The images that do not decode are said above and never indexed (the room leaves
        # them out, `index` refuses them): counting them here recommended an `index` that
        # then exited 3 on them.
        unindexed = len(new_images) - len(undecodable)
        if unindexed:
            # ~0.06 s a work on one core (2,000 works: 124 s): the room plays meanwhile,
            # its works with ids of their own
            # the command as it must be typed: where a room keeps its index elsewhere (a
            # read-only catalogue), `index` without --cache-dir indexed everything, then failed
            ahead = f"art2mus index {path}" + (f" --cache-dir {cache_dir}" if cache_dir else "")
            once = (" once the images that do not decode are replaced or removed (it "
                    "refuses them)") if undecodable else ""
            self.warn(where, f"{unindexed} of {len(entries)} works not indexed yet: the "
                             f"capture indexes them at start, in the background (about "
                             f"{max(1, round(unindexed * 0.062))} s on one core); "
                             f"`{ahead}` does it ahead{once}")

    def capture_files(self, index: int, capture: Any) -> None:
        recognition = capture.recognition
        if recognition.catalogue:
            self.catalogue(f"rooms[{index}].capture.recognition.catalogue",
                           recognition.catalogue, recognition.cache_dir)
        if recognition.cache_dir:
            self.writable_folder(f"rooms[{index}].capture.recognition.cache_dir",
                                 Path(recognition.cache_dir))
        if capture.overlay:
            room_id = self.config.rooms[index].id
            overlay = Path(self.config.output_dir) / capture.overlay.format(room=room_id)
            self.writable_folder(f"rooms[{index}].capture.overlay", overlay.parent)
        encoder = capture.encoder
        if encoder.kind == "onnx" and encoder.model:
            from capture.encoders import PREPROCESSOR_SUFFIX

            where = f"rooms[{index}].capture.encoder"
            self.existing_file(f"{where}.model", encoder.model, "an exported .onnx file")
            preprocessor = encoder.preprocessor or str(
                Path(encoder.model).with_suffix(PREPROCESSOR_SUFFIX))
            self.existing_file(f"{where}.preprocessor", preprocessor,
                               "the image-processor JSON beside the model")

    # engine

    def engine_files(self) -> None:
        engine = self.config.engine
        if engine.generator == "procedural" and engine.procedural.soundfont != "auto":
            # The synth is not a declared dependency (see the README): `pip install .`
            # leaves it out, and the engine then exits 4 at every start until the
            # supervisor gives up on it. "auto" loads it below (its failure said there).
            from engine.generators.procedural.render import require_tinysoundfont

            try:
                require_tinysoundfont()
            except Art2MusError as exc:
                self.error("engine.procedural", exc, "tinysoundfont installed")
            else:
                self.ok()
        if engine.generator == "procedural" and engine.procedural.soundfont == "auto":
            self.auto_soundfont(engine.procedural)
        elif engine.generator == "procedural" and engine.procedural.soundfont:
            self.existing_file("engine.procedural.soundfont", engine.procedural.soundfont,
                               "a SoundFont (.sf2) file")
        if engine.generator == "diffusion":
            self.diffusion(engine.diffusion)

    def diffusion(self, diffusion: Any) -> None:
        """What the engine checks at start, without loading the weights: the model folder,
        each network built from its config on torch's meta device against its weight file's
        header (:func:`~engine.generators.diffusion.model.inspect_model`, about 0.5 s for a
        real-size model), the device, the window plan and the sampler (the generator's
        :func:`~engine.generators.diffusion.generator.start_checks`), and on the ONNX
        backend the files opened on the CPU provider without optimizations (each read whole:
        its size in memory while it is checked) and their fingerprint (hashed only where a
        file's size or time changed since export: about 1.3 s per GB)."""
        from engine.generators.diffusion.model import inspect_model

        model_dir = Path(diffusion.model)
        try:
            model = inspect_model(model_dir)
        except Art2MusError as exc:
            if not model_dir.is_dir():  # the engine's words, and a relative path's absolute one
                exc = type(exc)(f"{exc}{relative_note(model_dir)}")
            self.error("engine.diffusion.model", exc, "a complete model folder")
            model = None
        else:
            self.ok()
            self.room_encoders(model_dir)
        self.diffusion_device(diffusion.device)
        plan = None
        if model is not None:
            from engine.generators.diffusion.generator import start_checks

            try:
                plan, _ = start_checks(model, diffusion)
            except Art2MusError as exc:
                text = str(exc)
                field, _, rest = text.partition(": ")
                if field.startswith("engine.diffusion.") and " " not in field:
                    self.error(field, type(exc)(rest), "a setting this model can run")
                else:
                    self.error("engine.diffusion.model", exc, "a setting this model can run")
            else:
                self.ok()
        if diffusion.backend != "onnx":
            return
        onnx_dir = Path(diffusion.onnx_dir)
        if not onnx_dir.is_dir():
            self.fail("engine.diffusion.onnx_dir", "a folder written by `art2mus export-onnx`",
                      f"no folder at {shown_path(onnx_dir)}")
            return
        if model is None or plan is None:
            return  # said above; the files are checked against the model and its window
        try:
            from engine.generators.diffusion.onnx_backend import OnnxBackend, check_providers

            check_providers(diffusion.onnx_providers)
            OnnxBackend(onnx_dir, model, ["CPUExecutionProvider"], plan.window_frames,
                        threads=1, optimize=False)
        except Art2MusError as exc:
            field = "engine.diffusion.onnx_providers" if str(exc).startswith(
                "engine.diffusion.onnx_providers") else "engine.diffusion.onnx_dir"
            self.error(field, exc, "ONNX files exported from this model for this window")
        else:
            self.ok()

    def diffusion_device(self, device: str) -> None:
        """``device = "cuda"`` where torch sees a GPU (the engine refuses it otherwise)."""
        if device != "cuda":
            return
        from engine.generators.diffusion.model import require_torch, resolve_device

        try:
            require_torch()
            resolve_device(device)
        except Art2MusError as exc:
            self.error("engine.diffusion.device", exc, "a CUDA device torch sees")
        else:
            self.ok()

    def auto_soundfont(self, procedural: Any) -> None:
        """Say which font ``soundfont = "auto"`` resolves to here (loading it, as the engine
        will), and warn about each broken candidate it passes over."""
        from engine.generators.procedural.render import resolve_soundfont

        where = "engine.procedural.soundfont"
        try:
            choice, _ = resolve_soundfont(procedural)
        except Art2MusError as exc:  # not even the shipped font (pretty_midi missing)
            self.error(where, exc, "a General MIDI SoundFont")
            return
        for skipped in choice.skipped:
            self.warn(where, f"auto skipped a broken font: {skipped}")
        self.report.findings.append(Finding(where, "info", choice.describe()))
        self.ok()

    def room_encoders(self, model_dir: Path) -> None:
        """Every room's capture encoder is the one the model's projection was trained on.

        The engine serves every room, so all are checked. An ONNX encoder's name
        is ``onnx:<file stem>`` (as it reports itself); its width is checked per
        embedding by the engine, since reading it means loading the file.
        """
        from capture.descriptor import ENCODER_NAME, VECTOR_LENGTH
        from engine.generators.diffusion.model import ModelSpec, check_room_encoder

        try:
            spec = ModelSpec.load(model_dir)
        except Art2MusError as exc:
            self.error("engine.diffusion.model", exc, "a readable art2mus_model.json")
            return
        for index, room in enumerate(self.config.rooms):
            encoder = room.capture.encoder
            name, dim = (f"onnx:{Path(encoder.model).stem}", None) \
                if encoder.kind == "onnx" and encoder.model else (ENCODER_NAME, VECTOR_LENGTH)
            try:
                check_room_encoder(spec, name, dim, f"rooms[{index}].capture.encoder", model_dir)
            except Art2MusError as exc:
                self.error(f"rooms[{index}].capture.encoder", exc, "the model's encoder")
            else:
                self.ok()

    # devices

    def sound_device(self, index: int, audio_out: Any) -> None:
        if audio_out.output == "none":
            return
        from audio_out.outputs import find_output_device, load_sounddevice

        where = f"rooms[{index}].audio_out.device"
        if self._sounddevice is None and self._sounddevice_error is None:
            try:
                self._sounddevice = load_sounddevice()
            except Art2MusError as exc:
                if importlib.util.find_spec("sounddevice") is None:
                    self._sounddevice_error = ("the sounddevice package is not installed "
                                               "(pip install 'art2mus[audio]')")
                else:
                    error = str(exc).split(";")[0]
                    detail = error[error.find("(") + 1:error.rfind(")")] if "(" in error \
                        else error
                    self._sounddevice_error = f"no PortAudio ({detail})"
        if self._sounddevice is None:
            self.cannot(where, self._sounddevice_error or "no PortAudio")
            return
        try:
            device = find_output_device(self._sounddevice, audio_out.device)
        except ConfigError as exc:
            # Under 'auto' audio_out plays to the null sink and looks for the card again
            # (a USB interface plugged in later): a card missing now, named or not, must
            # not keep `run` (and ExecStartPre) from starting every room.
            if audio_out.output == "auto":
                wanted = f"no output named like {audio_out.device!r}" if audio_out.device \
                    else "no sound output"
                self.warn(f"rooms[{index}].audio_out.output",
                          f"{wanted} here: 'auto' will play to the null sink and look for "
                          f"the card again, playing to it once it comes ({exc})")
            else:
                self.error(where, exc, "a sound output device")
        except Exception as exc:  # noqa: BLE001 - PortAudio raises its own error types
            self.cannot(where, f"PortAudio could not list devices ({exc})")
        else:
            self.ok()
            self.sound_settings(index, audio_out, device)

    def sound_settings(self, index: int, audio_out: Any, device: int | None) -> None:
        """The card takes what the player opens it with: ``sample_rate``, and as many channels
        as ``channels_out`` reaches (float32).

        Matching the name was all this checked: a card that only takes 48 kHz, or outputs
        7-8 of a two-output card, passed, then the player failed with PortAudio's words and
        no field. Under ``output = 'auto'`` the player plays to the null sink instead, so
        there it is a warning.
        """
        from audio_out.outputs import _default_output_index

        sd = self._sounddevice
        rate = audio_out.sample_rate
        channels = max(audio_out.output_channels(self.config.engine.channels))
        here = f"rooms[{index}].audio_out"
        try:
            devices = list(sd.query_devices())
            position = device if device is not None else _default_output_index(sd)
            info = devices[position] if position is not None and 0 <= position < len(devices) \
                else None
        except Exception as exc:  # noqa: BLE001 - PortAudio raises its own error types
            self.cannot(f"{here}.device", f"PortAudio could not list devices ({exc})")
            return
        name = repr(str(info["name"])) if info is not None else "the default output"
        refused = False

        def refuse(field: str, expected: str, got: str) -> None:
            nonlocal refused
            refused = True
            if audio_out.output == "auto":
                self.warn(f"{here}.{field}", f"expected {expected}, got {got}: 'auto' will "
                          "play to the null sink")
            else:
                self.fail(f"{here}.{field}", expected, got)

        if info is not None and channels > int(info["max_output_channels"]):
            available = int(info["max_output_channels"])
            refuse("channels_out", f"channels 1..{available} of output {name}",
                   f"channel {channels}")
            channels = available  # the rate is still worth asking about
        check = getattr(sd, "check_output_settings", None)
        if check is None:
            self.cannot(f"{here}.sample_rate", "this sounddevice cannot check output settings")
            return

        def takes(samplerate: float) -> str | None:
            """None where the card takes ``samplerate`` on ``channels``; else PortAudio's why."""
            try:
                check(device=device, channels=channels, dtype="float32", samplerate=samplerate)
            except Exception as exc:  # noqa: BLE001 - sd.PortAudioError, or ValueError
                return str(exc) or type(exc).__name__
            return None

        why = takes(rate)
        if why is not None:
            own = info.get("default_samplerate") if info is not None else None
            if own and round(own) != rate and takes(own) is None:
                refuse("sample_rate", f"a rate output {name} takes (its own: {round(own)} Hz)",
                       f"{rate} ({why})")
            else:
                refuse("device", f"an output that takes {rate} Hz on {channels} channel(s)",
                       f"{name}, which PortAudio refuses ({why})")
        if not refused:
            self.ok()

    def link(self) -> None:
        """Ableton Link needs the aalink package (the 'link' extra)."""
        try:
            import aalink  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            self.fail("control.link", "the aalink package (pip install 'art2mus[link]')",
                      "not installed")
        else:
            self.ok()

    def oscquery_advertising(self) -> None:
        """OSCQuery is advertised by mDNS only with zeroconf (the 'oscquery' extra); without
        it the HTTP server still runs, so this is a warning, not a failure."""
        try:
            import zeroconf  # noqa: F401 - only whether it is there
        except ImportError:
            port = self.config.control.osc.query_port
            self.warn("control.osc.query_port",
                      "zeroconf is not installed (pip install 'art2mus[oscquery]'): the "
                      "OSCQuery server is not advertised by mDNS, so controllers do not find "
                      f"it by name; give them the address http://HOST:{port}")
        else:
            self.ok()

    def midi_port(self, where: str, name: str, output: bool) -> None:
        try:
            import rtmidi

            midi = rtmidi.MidiOut() if output else rtmidi.MidiIn()
            ports = list(midi.get_ports())
        except ImportError:
            self.cannot(where, "python-rtmidi is not installed (pip install 'art2mus[midi]')")
            return
        except Exception as exc:  # noqa: BLE001 - rtmidi raises its own types per platform
            self.cannot(where, f"no MIDI system here ({exc})")
            return
        if any(name.lower() in port.lower() for port in ports):
            self.ok()
        else:
            self.fail(where, f"a substring of a MIDI {'output' if output else 'input'} port",
                      f"{name!r} (ports: {', '.join(map(repr, ports)) or 'none'})")

    # network

    def endpoints(self) -> None:
        net = self.config.network
        bound = {name for role in self.roles for name in _BINDS.get(role, ())}
        for name in ("views", "chunks", "clock", "control"):
            where = f"network.{name}"
            endpoint = getattr(net, name)
            problem = endpoint_problem(endpoint)
            if problem:  # the schema refuses these; kept for configs built in code
                self.fail(where, problem.removeprefix("expected "), repr(endpoint))
                continue
            scheme, _, rest = endpoint.partition("://")
            if scheme == "inproc":
                self.fail(where, "tcp:// or ipc:// (the roles are separate processes)",
                          repr(endpoint))
            elif name not in bound:
                self.ok()  # another machine (or role) binds it
            elif scheme == "ipc":
                self.ipc_free(where, Path(rest))
            else:
                host, _, port = rest.rpartition(":")
                self.port_free(where, host, int(port), socket.SOCK_STREAM)

    def ipc_free(self, where: str, path: Path) -> None:
        if path.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                pass  # a stale file: ZeroMQ replaces it
            else:
                self.fail(where, "an ipc:// path no running process listens on",
                          f"{path}, in use")
                return
            finally:
                probe.close()
        self.writable_folder(where, path.parent)

    def port_free(self, where: str, host: str, port: int, kind: int,
                  optional: str = "") -> None:
        """Bind ``host:port`` as the role will (then let go); a failure says why.

        ``optional``: what goes without the port (the console): its failure is a
        warning saying so, for the music plays on without it."""
        address = host.strip("[]")
        address = "" if address in ("*", "0.0.0.0") else address
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                address or None, port, type=kind, flags=socket.AI_PASSIVE)[0]
        except (socket.gaierror, UnicodeError) as exc:
            self.cannot(where, f"{host!r} does not resolve here ({exc}); an interface name?")
            return
        protocol = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
        with socket.socket(family, kind) as probe:
            # as ZeroMQ does, so a port left in TIME_WAIT by the last run counts as free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    expected, got = (f"a free {protocol} port on {host or '*'}", f"{protocol} "
                                     f"port {port} in use (another art2mus still running?)")
                elif exc.errno == errno.EADDRNOTAVAIL:
                    expected, got = "an address of this machine", f"{host!r}"
                elif exc.errno == errno.EACCES:
                    expected, got = ("a port this user may bind",
                                     f"{port} (permission denied; ports below 1024 need root)")
                else:
                    expected, got = f"{host}:{port} to bind", str(exc)
                if optional:
                    self.warn(where, f"expected {expected}, got {got}: {optional}")
                else:
                    self.fail(where, expected, got)
                return
        self.ok()

    def metrics_ports(self) -> None:
        from ground.metrics import metrics_port

        metrics = self.config.metrics
        if metrics.port == 0:
            return
        rooms = self.config.rooms
        last = metrics.port + 1 + 2 * len(rooms)
        if last > 65535:
            self.fail("metrics.port", f"at most {65535 - 1 - 2 * len(rooms)} "
                      f"(the ports run to port+{1 + 2 * len(rooms)} for {len(rooms)} room(s))",
                      str(metrics.port))
            return
        # (a range over a ZeroMQ, console or OSCQuery port is the config's error)
        ports = {"metrics.port": metrics_port(metrics, "supervisor")}
        if "engine" in self.roles:
            ports["metrics.port (engine)"] = metrics_port(metrics, "engine")
        for _, room in self.rooms:
            for role in ("audio_out", "capture"):
                if role in self.roles:
                    ports[f"metrics.port ({role} {room.id})"] = metrics_port(
                        metrics, role, self.config.room_index(room.id))
        for where, port in ports.items():
            self.port_free(where, metrics.host, port, socket.SOCK_STREAM)

    # keys

    def keys(self) -> None:
        from ground.security import curve_keys

        keys = curve_keys(self.config.security)
        if keys is None:
            return
        net = self.config.network
        binds = {getattr(net, n) for role in self.roles for n in _BINDS.get(role, ())}
        connects = {getattr(net, n) for role in self.roles for n in _CONNECTS.get(role, ())}
        server = any(keys.applies_to(e) for e in binds)
        client = any(keys.applies_to(e) for e in connects)
        if not server and not client:
            self.warn("security.curve", "no link of this machine is secured (only links "
                      "between machines are, unless include_loopback = true)")
            return
        try:
            keys.check(server=server, client=client)
        except ConfigError as exc:
            head, _, rest = str(exc).partition(": ")
            # the keys' paths are keys_dir's: a relative one named with its absolute one
            rest += relative_note(self.config.security.keys_dir)
            self.report.findings.append(Finding(head, "failed", rest))
        else:
            self.ok()


def undecodable_images(folder: Path, names: list[str]) -> list[str]:
    """The reference images ``names`` of the catalogue ``folder`` that do not decode as
    the index reads them (:func:`capture.images.read_image`: empty, truncated, not an
    image, a HEIC named .jpg, a decompression bomb), each as ``name (why)``. A JPEG is
    decoded at an eighth: a few ms a work."""
    from capture.images import read_image

    found = []
    for name in names:
        path = folder / name
        try:
            read_image(path, at_least=1)
        except InputError as error:
            found.append(f"{name} ({str(error).removeprefix(f'cannot read image {path}: ')})")
    return found


def deep_check(config: InstallationConfig) -> DeepReport:
    """Every deep check of ``config`` for this machine (see the module docstring)."""
    return _Checks(config).run()


def require_deep_checks(config: InstallationConfig, label: str,
                        echo: Callable[[str], Any] = print) -> DeepReport:
    """Run the deep checks; :class:`ConfigError` listing every failure, else the report.

    What cannot be checked here, and warnings, are passed to ``echo``.
    """
    report = deep_check(config)
    for finding in report.findings:
        if finding.status != "failed":
            echo(f"art2mus: {finding.line()}")
    failures = report.failures
    if failures:
        raise ConfigError(
            f"{label} will not run on this machine ({len(failures)} deep check(s) failed; "
            f"nothing was started):\n  " + "\n  ".join(f.line() for f in failures))
    return report
