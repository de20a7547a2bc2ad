"""`model.predict(...)`: images in, quality scores out, and `batched_outputs`, the one batch-scoring loop of the
package (`predict`, `grmp_iqa_hf.scoring.score_files` / `score_rows`, `evaluate` and the protocol runners).

Shipped as Hub remote code: imports only torch, numpy, transformers and relative modules.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers.utils import logging

from .image_processing_iqa import IQAImageProcessor, load_image


def batched_outputs(model, load_batch: Callable[[Sequence], torch.Tensor | None], items: Sequence,
                    batch_size: int = 32, device=None, fields: Sequence[str] = ("scores",), progress: bool = False,
                    desc: str = "Scoring", tqdm_class=None, dtype=None) -> dict[str, torch.Tensor]:
    """Run `model` over `items` in chunks of `batch_size`, in eval mode (the previous mode is restored) and
    without gradients, and return each output field of `fields` (e.g. `"scores"`, `"scene_logits"`)
    concatenated over the chunks, in item order, on `device`, in the model's dtype.

    `load_batch(chunk)` turns a chunk of items into pixel values `(B, 3, H, W)`. It may return fewer rows
    than the chunk has items (e.g. unreadable files left out; the caller knows which) or `None` (nothing to
    run). `device` defaults to the model's. The progress bar counts items; `tqdm_class` defaults to
    transformers' (which `transformers.utils.logging.disable_progress_bar()` silences). `dtype`: run the forward
    passes in this precision (see `precision`; default: the model's own).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parameter = next(model.parameters())
    device = torch.device(device) if device is not None else parameter.device
    dtype = resolve_dtype(dtype)  # a bad name fails before any image is loaded
    tqdm_class = tqdm_class or logging.tqdm
    bar = tqdm_class(total=len(items), desc=desc, unit="img", disable=not progress)
    parts: dict[str, list[torch.Tensor]] = {field: [] for field in fields}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            pixel_values = load_batch(chunk)
            if pixel_values is not None and len(pixel_values):
                # pixels in the model's dtype: a model loaded in bf16 / fp16 takes them as is
                with torch.no_grad(), precision(model, device, dtype):
                    output = model(pixel_values=pixel_values.to(device=device, dtype=parameter.dtype))
                for field in fields:
                    value = getattr(output, field, None)
                    if value is None:
                        raise ValueError(f"{type(model).__name__} gives no output {field!r}")
                    parts[field].append(value)
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return {field: torch.cat(values) if values else torch.zeros(0, device=device) for field, values in parts.items()}

class IQAPredictionMixin:
    """Adds `image_processor` and `predict` to a model whose config is a `PromptedCLIPConfig` and whose
    forward returns an output with `scores`."""

    @property
    def image_processor(self) -> IQAImageProcessor:
        """The preprocessing this model was trained with, built from its config (the one source of truth)."""
        return IQAImageProcessor(**self.config.image_processor_kwargs())

    def predict(self, images, batch_size: int = 32, device=None, progress: bool | None = None, dtype=None,
                crops: int = 1) -> np.ndarray:
        """Score images; higher = better quality, in [0, 1].

        Args:
            images: one image or a list of them: file paths, PIL images, numpy arrays (HxW[xC]) or torch
                tensors (CxHxW). Any PIL mode is converted to RGB; EXIF orientation is applied.
            batch_size: images per forward pass (with `crops > 1` a pass holds `batch_size * crops` crops).
            device: where to run (defaults to the model's device).
            progress: show a progress bar (default: when there is more than one batch).
            dtype: run the forward pass in this precision (`torch.bfloat16`, `torch.float16`, `torch.float32` or
                their names). A model whose weights are in another dtype runs under `torch.autocast` (its weights
                are not changed); for the memory saving too, load it in that dtype (`from_pretrained(...,
                dtype=torch.bfloat16)`), and leave `dtype` unset. Default: the model's own dtype.
            crops: score each image as the mean over this many deterministic crops (`IQAImageProcessor.
                crop_positions`, as LIQE does at test time; 1 = the centre crop). Costs about `crops` times one.

        Returns:
            A float32 numpy array with one score per image, in input order.

        Raises:
            ImageLoadError: an input cannot be read (truncated, empty, not an image, decompression bomb,
                bad array shape). The message names the input. Use `grmp-iqa score` to score a folder
                and report broken files without stopping.
        """
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        processor = self.image_processor
        if progress is None:
            progress = len(images) > batch_size
        if isinstance(crops, bool) or not isinstance(crops, int) or crops < 1:
            raise ValueError(f"crops must be a positive integer, got {crops!r}")

        def load_batch(indices):
            batch = [load_image(images[i], name=None if isinstance(images[i], (str, os.PathLike)) else f"input #{i}")
                     for i in indices]
            return processor(batch, return_tensors="pt", crops=crops)["pixel_values"]

        scores = batched_outputs(self, load_batch, range(len(images)), batch_size, device, progress=progress,
                                 dtype=dtype)["scores"]
        return scores.float().view(len(images), crops).mean(dim=1).cpu().numpy()


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype) -> torch.dtype | None:
    """A `torch.dtype` from a dtype or its name (`"float32"`, `"bfloat16"`, `"float16"`); None stays None."""
    if dtype is None or dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"dtype must be one of {sorted(DTYPES)} (or the torch dtype), got {dtype!r}")


def precision(model, device: torch.device, dtype):
    """The context that runs `model` in `dtype`: nothing when its weights already are (or `dtype` is None),
    else `torch.autocast` on `device`'s type (weights untouched; fp32 under autocast runs fp32)."""
    dtype = resolve_dtype(dtype)
    if dtype is None or dtype == next(model.parameters()).dtype:
        return contextlib.nullcontext()
    if dtype == torch.float32:  # a reduced-precision model asked for fp32 would need its weights cast
        raise ValueError(f"dtype=float32 for a model in {next(model.parameters()).dtype}: load it in float32 instead")
    return torch.autocast(device_type=device.type, dtype=dtype)
