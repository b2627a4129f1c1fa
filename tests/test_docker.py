"""The container images of configs/docker/: a room machine and the engine machine.

The static checks always run: each Dockerfile parses into instructions, copies only what the
repository holds (and what its ignore file lets into the context), names extras that
pyproject.toml defines, runs as an unprivileged user with a health check and a stop signal,
and installs PyTorch only from an index a build argument chooses (the CPU one by default).
The build test runs where a Docker daemon answers (CI, when it has one): it builds the room
image, then runs ``--help`` and a five-second demo inside it, with no sound card.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "configs" / "docker"
#: Each image, the config its CMD runs, and what its health check reads.
IMAGES = {"Dockerfile.room": "/etc/art2mus/room.toml",
          "Dockerfile.engine": "/etc/art2mus/engine.toml"}
#: The instructions of the Dockerfile reference (https://docs.docker.com/reference/dockerfile/).
KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
         "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword, its arguments and its first line."""

    keyword: str
    value: str
    line: int

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        """``COPY --from=build a b`` -> ``({"from": "build"}, ["a", "b"])`` (shell form)."""
        flags: dict[str, str] = {}
        args: list[str] = []
        for word in shlex.split(self.value):
            if word.startswith("--") and not args:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                args.append(word)
        return flags, args


def parse_dockerfile(path: Path) -> list[Instruction]:
    """The instructions of ``path``: comments dropped, ``\\`` continuations joined.

    A line that starts no known instruction is an error naming the file and line: what the
    Docker builder itself would refuse. Heredocs are not used here and are refused too.
    """
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit inside a continued instruction, as Docker allows
        if not pending:
            start = number
        continued = stripped.endswith("\\")
        pending.append(stripped[:-1].strip() if continued else stripped)
        if continued:
            continue
        text = " ".join(pending)
        pending = []
        keyword, _, value = text.partition(" ")
        if keyword.upper() not in KNOWN:
            raise ValueError(f"{path.name}:{start}: expected an instruction, got {keyword!r}")
        if "<<" in value and keyword.upper() in {"RUN", "COPY"}:
            raise ValueError(f"{path.name}:{start}: heredocs are not expected here")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
    if pending:
        raise ValueError(f"{path.name}: the last instruction ends in a line continuation")
    return instructions


def _arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """Every ``ARG NAME=default`` of the file (later ones win, as within one stage)."""
    defaults: dict[str, str] = {}
    for item in instructions:
        if item.keyword == "ARG" and "=" in item.value:
            name, _, default = item.value.partition("=")
            defaults[name.strip()] = default.strip().strip('"')
    return defaults


def _final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions after the last FROM: what the image that runs is made of."""
    last = max(i for i, item in enumerate(instructions) if item.keyword == "FROM")
    return instructions[last:]


def _exec_form(item: Instruction) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT or CMD."""
    value = json.loads(item.value)
    assert isinstance(value, list), f"line {item.line}: expected the exec form (a JSON array)"
    return [str(word) for word in value]


@pytest.fixture(params=sorted(IMAGES), scope="module")
def dockerfile(request: pytest.FixtureRequest) -> Path:
    """Each Dockerfile of configs/docker/."""
    return DOCKER / str(request.param)


def test_each_dockerfile_parses_into_instructions(dockerfile: Path) -> None:
    instructions = parse_dockerfile(dockerfile)
    keywords = [item.keyword for item in instructions]
    # only ARGs may come before the first FROM (they name the base image)
    first = keywords.index("FROM")
    assert set(keywords[:first]) <= {"ARG"}
    assert keywords.count("FROM") == 2, "multi-stage: a build stage and a slim runtime"
    assert "ADD" not in keywords, "COPY only: ADD fetches URLs and unpacks archives"


def test_the_parser_names_the_line_it_refuses(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim-bookworm\nRUN true \\\n  && true\nINSTAL x\n")
    with pytest.raises(ValueError, match=r"Dockerfile:4: expected an instruction, got 'INSTAL'"):
        parse_dockerfile(bad)
    bad.write_text("FROM python:3.11-slim-bookworm\nRUN true \\\n")
    with pytest.raises(ValueError, match="ends in a line continuation"):
        parse_dockerfile(bad)


def test_the_base_image_is_a_pinned_python_the_package_supports(dockerfile: Path) -> None:
    instructions = parse_dockerfile(dockerfile)
    image = _arg_defaults(instructions)["PYTHON_IMAGE"]
    assert image == "python:3.11-slim-bookworm"
    froms = [item.value.split()[0] for item in instructions if item.keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == ">=3.11"


def _ignore_file_allows(dockerfile: Path) -> set[str]:
    """The paths an allow-list ignore file (``*``, then ``!path`` lines) lets in."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    lines = [line.strip() for line in ignore.read_text(encoding="utf-8").splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", f"{ignore.name}: expected an allow-list starting with '*'"
    return {line[1:] for line in patterns if line.startswith("!")}


def test_every_copy_source_exists_and_is_in_the_build_context(dockerfile: Path) -> None:
    allowed = _ignore_file_allows(dockerfile)
    sources: list[str] = []
    for item in parse_dockerfile(dockerfile):
        if item.keyword != "COPY":
            continue
        flags, args = item.flags_and_args()
        if "from" in flags:
            continue  # from another stage, not from the repository
        assert len(args) >= 2, f"line {item.line}: COPY needs a source and a destination"
        sources.extend(args[:-1])
    assert sources, "the image is built from the repository's source"
    for source in sources:
        assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: not in the repo"
        assert source in allowed, f"{dockerfile.name}: COPY {source}: its .dockerignore drops it"
    # every package pyproject.toml lists (setuptools builds from them) is copied
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    tops = {name.split(".")[0] for name in setuptools["setuptools"]["packages"]}
    assert tops | {"configs", "pyproject.toml", "README.md"} <= set(sources)


def _extras_used(instructions: list[Instruction]) -> set[str]:
    """The extras each ``pip install ".[...]"`` names, with ``${EXTRAS}`` resolved."""
    defaults = _arg_defaults(instructions)
    used: set[str] = set()
    for item in instructions:
        if item.keyword != "RUN":
            continue
        for group in re.findall(r"\.\[([^\]]+)\]", item.value):
            group = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], group)
            used |= {extra.strip() for extra in group.split(",")}
    return used


def test_the_extras_named_exist_in_pyproject(dockerfile: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    used = _extras_used(parse_dockerfile(dockerfile))
    assert used, f"{dockerfile.name}: installs the package with its extras"
    assert used <= set(project["optional-dependencies"]), used
    expected = {"Dockerfile.room": {"room", "encoders"},
                "Dockerfile.engine": {"diffusion", "console"}}
    assert used == expected[dockerfile.name]


def test_the_image_runs_unprivileged_with_a_health_check_and_stop_signal(
        dockerfile: Path) -> None:
    final = _final_stage(parse_dockerfile(dockerfile))
    users = [item.value for item in final if item.keyword == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}, users
    assert [item.value for item in final if item.keyword == "STOPSIGNAL"] == ["SIGTERM"]
    (health,) = [item for item in final if item.keyword == "HEALTHCHECK"]
    assert "CMD art2mus status --config" in health.value
    config = IMAGES[dockerfile.name]
    env = " ".join(item.value for item in final if item.keyword == "ENV")
    assert f"ART2MUS_CONFIG={config}" in env, "the health check reads the config CMD runs"
    (entrypoint,) = [item for item in final if item.keyword == "ENTRYPOINT"]
    (command,) = [item for item in final if item.keyword == "CMD"]
    assert _exec_form(entrypoint) == ["art2mus"]
    assert _exec_form(command) == ["run", "--config", config]
    volumes = " ".join(item.value for item in final if item.keyword == "VOLUME")
    assert "/var/lib/art2mus" in volumes


def test_no_weights_or_data_are_baked_in(dockerfile: Path) -> None:
    weights = (".safetensors", ".onnx", ".bin", ".pt", ".ckpt", ".sf2", ".wav")
    for item in parse_dockerfile(dockerfile):
        if item.keyword in {"COPY", "RUN"}:
            assert not any(ext in item.value for ext in weights), f"line {item.line}"
            assert "models" not in item.value.split(), f"line {item.line}: mount /models"


def _torch_installs(instructions: list[Instruction]) -> list[str]:
    """Each ``pip install`` command (split at ``&&``) that installs PyTorch itself."""
    found = []
    for item in instructions:
        if item.keyword != "RUN":
            continue
        for command in item.value.split("&&"):
            words = command.split()
            if "pip" in words and "install" in words and any(
                    re.match(r'^"?(torch\b|\$\{?TORCH\}?)', word) for word in words):
                found.append(command.strip())
    return found


def test_pytorch_comes_from_the_cpu_index_unless_a_build_arg_says_otherwise() -> None:
    for name in IMAGES:
        instructions = parse_dockerfile(DOCKER / name)
        for command in _torch_installs(instructions):
            assert '--index-url "${TORCH_INDEX}"' in command, f"{name}: {command}"
            assert '"${TORCH}"' in command, f"{name}: {command}"
    engine = parse_dockerfile(DOCKER / "Dockerfile.engine")
    assert len(_torch_installs(engine)) == 1
    assert _torch_installs(parse_dockerfile(DOCKER / "Dockerfile.room")) == []
    defaults = _arg_defaults(engine)
    assert defaults["TORCH_INDEX"] == CPU_INDEX
    # the same PyTorch as `make setup` installs
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (pinned,) = re.findall(r"^TORCH \?= (\S+)$", makefile, flags=re.MULTILINE)
    assert defaults["TORCH"] == pinned


def test_the_torch_check_catches_an_install_from_pypi(tmp_path: Path) -> None:
    # the check above is only as good as its matcher: an unindexed install is found
    bad = tmp_path / "Dockerfile"
    bad.write_text('FROM python:3.11-slim-bookworm\nRUN pip install --upgrade pip \\\n'
                   ' && pip install "torch==2.13.0" diffusers\n')
    (command,) = _torch_installs(parse_dockerfile(bad))
    assert "--index-url" not in command


# ---- the build, where a Docker daemon answers ------------------------------------------------


def _docker_unavailable() -> str | None:
    """Why the build test cannot run here, or None when ``docker info`` succeeds."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"`docker info` failed: {last}"
    return None


def _docker(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_room_image_builds_and_plays_the_demo_without_a_sound_card() -> None:
    reason = _docker_unavailable()
    if reason is not None:
        pytest.skip(reason)
    tag = f"art2mus-room-test:{uuid.uuid4().hex[:12]}"
    built = _docker("build", "-f", "configs/docker/Dockerfile.room", "-t", tag, str(ROOT),
                    timeout=3000)
    assert built.returncode == 0, built.stderr[-4000:]
    try:
        shown = _docker("run", "--rm", tag, "--help", timeout=120)
        assert shown.returncode == 0, shown.stderr[-3000:]
        assert "Usage: art2mus" in shown.stdout and "demo" in shown.stdout
        (config,) = json.loads(_docker("image", "inspect", tag, timeout=60).stdout)
        assert config["Config"]["User"] == "art2mus"
        assert config["Config"]["StopSignal"] == "SIGTERM"
        assert "art2mus status" in " ".join(config["Config"]["Healthcheck"]["Test"])
        # no /dev/snd: the demo says so once and writes the file; the shell checks it is there
        demo = _docker("run", "--rm", "--init", "--entrypoint", "sh", tag, "-c",
                       "art2mus demo --seconds 5 --out /tmp/demo && test -s /tmp/demo/demo.wav",
                       timeout=600)
        assert demo.returncode == 0, (demo.stdout[-3000:], demo.stderr[-3000:])
    finally:
        _docker("image", "rm", "--force", tag, timeout=120)
