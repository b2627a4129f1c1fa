"""The CUDA-graph runner: a window program captured once per input shape, then replayed.

Where it sits in the flow: with the torch backend on CUDA, the generator's
``sample_windows`` hands its window program (every sampling step, the VAE
decode and the vocoder) and that batch's inputs to :func:`replay_graph`,
which captures one :class:`CudaGraphProgram` per input shape (batch bucket
and known-region shape) at first use and replays it after; an engine captures
every bucket's before it serves (``DiffusionGenerator.warm_graphs``). Needs CUDA;
tests/test_gpu.py checks replay against eager on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class CudaGraphProgram:
    """A tensor program captured once as a CUDA graph, replayed on new inputs.

    ``program(*inputs)`` must be a pure function of its tensor inputs whose
    work stays on the device (no host copies, no waits): the generator's window
    program (every sampling step, the VAE decode and the vocoder) is written
    so. The torch recipe: warm up on a side stream, capture into static
    buffers; each call copies its inputs into those buffers, replays, and
    returns copies of the outputs. One instance per input shape, i.e. per batch
    bucket and known-region shape. Needs CUDA; tests/test_gpu.py checks replay
    against eager on a GPU.

    ``pool`` (``torch.cuda.graph_pool_handle()``) lets several programs share one
    memory pool: safe here because they replay one at a time and each call returns
    copies, so one graph's scratch may overlap another's static outputs. Without it
    each bucket's graph keeps its own peak memory (a batch-256 window of the
    real-size model holds tens of GiB).
    """

    def __init__(self, program: Callable[..., tuple[torch.Tensor, ...]],
                 inputs: Sequence[torch.Tensor | None], warmups: int = 2,
                 pool: Any = None) -> None:
        self.static = [None if x is None else x.clone() for x in inputs]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmups):
                program(*self.static)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs = program(*self.static)

    def __call__(self, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.static):
            raise ValueError(f"expected {len(self.static)} inputs, got {len(inputs)}")
        for buffer, value in zip(self.static, inputs, strict=True):
            if (buffer is None) != (value is None):
                raise ValueError("an input that was None at capture must stay None")
            if buffer is not None and value is not None:
                buffer.copy_(value)
        self.graph.replay()
        return tuple(output.clone() for output in self.outputs)


def replay_graph(programs: dict[tuple[Any, ...], CudaGraphProgram],
                 program: Callable[..., tuple[torch.Tensor, ...]],
                 inputs: Sequence[torch.Tensor | None], pool: Any = None
                 ) -> tuple[torch.Tensor, ...]:
    """``program(*inputs)`` through the graph in ``programs`` for these input shapes,
    captured (and kept there, in ``pool``) at the first call with them."""
    key = tuple(None if x is None else tuple(x.shape) for x in inputs)
    if key not in programs:
        programs[key] = CudaGraphProgram(program, inputs, pool=pool)
    return programs[key](*inputs)
