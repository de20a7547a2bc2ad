"""Pieces every training loop of the package shares: the accelerator, seeds that never depend on the
process count, explicit cross-process reductions, and the trainable-parameter view of a model."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import math

import numpy as np
import torch
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def make_accelerator(output_dir=None, log_with: str | None = "auto", cpu: bool | None = None) -> Accelerator:
    """An `Accelerator` for our loops.

    - `cpu=None` picks the CPU when there is no CUDA device. This matters under `accelerate launch`
      with 2 processes on a CPU-only machine: a plain `Accelerator()` would silently run each process
      alone, `Accelerator(cpu=True)` joins them over gloo.
    - `log_with="auto"` logs to TensorBoard under `<output_dir>/logs` when it is installed.
    """
    if cpu is None:
        cpu = not torch.cuda.is_available()
    if log_with == "auto":
        log_with = "tensorboard" if output_dir is not None and importlib.util.find_spec("tensorboard") else None
    project = None
    if output_dir is not None:
        project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(Path(output_dir) / "logs"))
    return Accelerator(cpu=cpu, log_with=log_with, project_config=project)


def seed_for(*keys: int) -> int:
    """A 63-bit seed derived from integer keys, e.g. `(seed, step, task)`: independent streams that
    never depend on the rank or the number of processes."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0]) >> 1


def rng_for(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def seeded_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) only, never of the process count."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def trainable_parameters(model) -> dict[str, torch.nn.Parameter]:
    """`{name: parameter}` of the parameters with `requires_grad=True`, in module order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def reduce_sum(accelerator: Accelerator | None, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum tensors over processes in one collective. Needed for gradients from `torch.autograd.grad` /
    `torch.func`, which never pass through DDP's gradient hooks."""
    if accelerator is None or accelerator.num_processes == 1 or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    flat = accelerator.reduce(flat, reduction="sum")
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


def local_indices(count: int, accelerator: Accelerator | None) -> list[int]:
    """This process's share of `count` work items (round robin)."""
    if accelerator is None:
        return list(range(count))
    return list(range(accelerator.process_index, count, accelerator.num_processes))


def check_finite(value: float, what: str, step: int) -> None:
    """Stop on a NaN/inf loss before the step is applied. `step` counts from 1, like the checkpoint the
    step would have led to (`step_00000003` is written after step 3)."""
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"{what} is {value} at step {step}: stopping. The last checkpoint before this step is intact; "
            "lower the learning rate or check the labels, then resume from it."
        )


@contextlib.contextmanager
def exit_on_input_errors():
    """For training scripts: input errors that are the user's to fix (bad dataset metadata, a NaN/inf
    loss) end the run with their message (every bad row named) and exit status 2, not a traceback."""
    from ..data import DatasetMetadataError

    try:
        yield
    except (DatasetMetadataError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
