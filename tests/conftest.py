"""Fixtures shared by the test modules: the tiny diffusion models, written once per session,
and the real Estense catalogue's index, built once per session.

The model folders are built through the user's code path (``save_pretrained``, then
:func:`~engine.generators.diffusion.model.load_model`) with a fixed seed, under the
session's base temporary folder, so every module that asks for one reads the same files.
Torch and diffusers are imported only when a fixture is used: the modules that use
them skip themselves (``pytest.importorskip``) where the diffusion extra is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ground.metrics import Metrics


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny diffusion model folder (DPM-Solver, 1024-d embeddings)."""
    from engine.generators.diffusion.testing import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.getbasetemp() / "diffusion-models")


@pytest.fixture(scope="session")
def tiny_student_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny distilled-student model folder (consistency sampler)."""
    from engine.generators.diffusion.testing import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.getbasetemp() / "diffusion-models", student=True)


@pytest.fixture(scope="module")
def tiny_model(tiny_model_folder: Path) -> Any:
    """The tiny model loaded on the CPU in float32, once per module: a test that changes it
    changes it for its own module only."""
    from engine.generators.diffusion.model import load_model

    return load_model(tiny_model_folder)


@pytest.fixture(scope="session")
def training_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model the training tests teach (descriptor-width embeddings, v-prediction)."""
    from training.testing import tiny_training_model_dir

    return tiny_training_model_dir(tmp_path_factory.getbasetemp() / "training-models")


@pytest.fixture(scope="session")
def estense_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the index of ``../shared/data/galleries-estense/catalogue`` (read-only
    beside the checkout), shared by the tests that run a bench on it: the first builds the
    index (about 7 s), the others open it (what a room does after its first start)."""
    folder = tmp_path_factory.getbasetemp() / "estense-index"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    """A role's metrics endpoint on a free loopback port (the monitoring and LAN tests')."""
    import socket

    from ground.metrics import Metrics as Endpoint

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    served = Endpoint(port)
    yield served
    served.close()
