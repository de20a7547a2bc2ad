"""Training checkpoints that resume exactly and never unpickle anything.

A checkpoint is a folder `<output-dir>/checkpoints/step_00000042/` holding

- `state.safetensors`: every tensor of the training state (trainable parameters, optimizer moments,
  the torch RNG state, anything else the loop registers), and
- `state.json`: the rest (step, optimizer hyper-parameters and counters, best-so-far bookkeeping,
  the run's settings).

It is written to a temporary folder first and renamed into place, so a run killed mid-write leaves
either the previous checkpoint or the new one, never a half-written folder that `latest` would pick.
Accelerate's own `save_state` stores optimizer and custom state with `torch.save` and reloads it
with `weights_only=False` (pickle); this format keeps resuming free of pickle. Data position needs no
storing: every random choice of our loops is keyed by (seed, step, ...), so the step is the position.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..json_io import write_json

CHECKPOINT_DIRNAME = "checkpoints"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TENSORS, _STATE = "state.safetensors", "state.json"


def checkpoint_root(output_dir) -> Path:
    return Path(output_dir) / CHECKPOINT_DIRNAME


def list_checkpoints(output_dir) -> list[tuple[int, Path]]:
    """Complete checkpoints under `<output_dir>/checkpoints/`, sorted by step."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / _STATE).is_file() and (path / _TENSORS).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_checkpoint(output_dir, spec) -> Path | None:
    """`spec` is `"latest"` (the newest complete checkpoint of `output_dir`, or None when there is
    none: a fresh start), a checkpoint folder, or None."""
    if spec is None:
        return None
    if str(spec) == "latest":
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(spec)
    if not (path / _STATE).is_file() or not (path / _TENSORS).is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint folder (expected {_STATE} and {_TENSORS} inside)")
    return path


def save_checkpoint(output_dir, step: int, tensors: dict, state: dict, keep_last: int | None = 2) -> Path:
    """Atomically write checkpoint `step` and delete all but the newest `keep_last` ones (None keeps all).

    Call it on the main process only."""
    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / _TENSORS))
    with open(tmp / _TENSORS, "rb") as fh:  # flushed before the rename makes it visible (write_json syncs its own)
        os.fsync(fh.fileno())
    write_json(tmp / _STATE, {"step": step, **state})  # strict JSON: NaN / inf are stored as null
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep_last is not None:
        for _, old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path) -> tuple[dict, dict]:
    """`(tensors, state)` of a checkpoint folder (safetensors + JSON only)."""
    path = Path(path)
    return load_file(str(path / _TENSORS)), json.loads((path / _STATE).read_text())


# ------------------------------------------------------------------ optimizer state, without pickle


def optimizer_state(optimizer: torch.optim.Optimizer, prefix: str = "optimizer") -> tuple[dict, dict]:
    """Split `optimizer.state_dict()` into tensors (for safetensors) and the JSON-able rest."""
    full = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in full["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": full["param_groups"], "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict, prefix: str = "optimizer"):
    """Inverse of `optimizer_state`."""
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            index, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict:
    """The torch RNG states (CPU, and CUDA when present) as tensors."""
    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda_{index}"] = value
    return tensors


def load_rng_state(tensors: dict) -> None:
    if "rng.torch_cpu" in tensors:
        torch.set_rng_state(tensors["rng.torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
