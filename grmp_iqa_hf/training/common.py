"""Pieces every training loop of the package shares: the accelerator, seeds that never depend on the
process count, explicit cross-process reductions, and the trainable-parameter view of a model."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys

import numpy as np
import torch
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from ..distributed import local_indices, reduce_sum  # noqa: F401 - re-exported for the trainers


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def make_accelerator(output_dir=None, log_with: str | None = "auto", cpu: bool | None = None,
                     mixed_precision: str | None = None) -> Accelerator:
    """An `Accelerator` for our loops.

    - `cpu=None` picks the CPU when there is no CUDA device. This matters under `accelerate launch`
      with 2 processes on a CPU-only machine: a plain `Accelerator()` would silently run each process
      alone, `Accelerator(cpu=True)` joins them over gloo.
    - `log_with="auto"` logs to TensorBoard under `<output_dir>/logs` when it is installed (for scripts that
      call `accelerator.log`; the trainers keep their own trackers, see `trainer.Trainer`).
    - `mixed_precision` "no" | "bf16" | "fp16"; None takes accelerate's config / environment, so that
      `accelerate launch --mixed_precision bf16` reaches the trainers (they default to the accelerator's).
    """
    if cpu is None:
        cpu = not torch.cuda.is_available()
    if log_with == "auto":
        log_with = "tensorboard" if output_dir is not None and importlib.util.find_spec("tensorboard") else None
    project = None
    if output_dir is not None:
        project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(Path(output_dir) / "logs"))
    return Accelerator(cpu=cpu, log_with=log_with, project_config=project, mixed_precision=mixed_precision)


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


def check_finite(value: float, what: str, step: int) -> None:
    """Stop on a NaN/inf loss before the step is applied. `step` counts from 1, like the checkpoint the
    step would have led to (`step_00000003` is written after step 3)."""
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"{what} is {value} at step {step}: stopping. The last checkpoint before this step is intact; "
            "lower the learning rate or check the labels, then resume from it."
        )


def _raised_in(err: BaseException) -> str:
    """The file of the innermost frame of `err`'s traceback (where it was raised)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename if tb is not None else ""


def _package_dirs(*names: str) -> list[str]:
    dirs = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(str(Path(location).resolve()) + os.sep for location in spec.submodule_search_locations)
    return dirs


def is_input_error(err: BaseException) -> bool:
    """Whether `err` is the user's to fix (a message is enough) rather than a bug (the traceback is needed).

    - bad dataset metadata, a NaN/inf loss: always;
    - `OSError` (a missing file or model, no network, no permission, a full disk): always;
    - `ValueError` (bad flags, bad combinations, an unknown dataset format or model id): when raised by this
      package's own checks or by the libraries that load models and run the accelerator (transformers,
      huggingface_hub, accelerate), not from deep inside numpy / torch, where it is more likely our bug.
    - `ImportError` raised by this package itself: a missing optional extra, named in the message (e.g. the
      `xlsx` extra for CSIQ / SPAQ spreadsheets).
    Everything else (TypeError, KeyError, RuntimeError, ...) is a bug and keeps its traceback.
    """
    from ..data import DatasetMetadataError

    if isinstance(err, (DatasetMetadataError, NonFiniteLossError, OSError)):
        return True
    where = str(Path(_raised_in(err)).resolve())
    if isinstance(err, ImportError):
        return any(where.startswith(d) for d in _package_dirs("grmp_iqa_hf", "grmp_iqa_hf.modeling"))
    if isinstance(err, ValueError):
        return any(where.startswith(d) for d in _package_dirs(
            "grmp_iqa_hf", "grmp_iqa_hf.modeling", "transformers", "huggingface_hub", "accelerate"))
    return False


@contextlib.contextmanager
def exit_on_input_errors():
    """For training scripts: errors that are the user's to fix (`is_input_error`: a bad path or `--model`,
    a bad combination of flags, bad dataset metadata with every bad row named, a NaN/inf loss) end the run
    with one `error: ...` message and exit status 2, not a traceback. Bugs keep their traceback."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - sorted by is_input_error; everything else is re-raised as is
        if not is_input_error(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
