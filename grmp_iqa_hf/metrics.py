"""A quality model as a `torchmetrics` metric (`QualityScore`) and as a differentiable loss (`quality_loss_fn`).

Not `grmp_iqa_hf.evaluation.metrics`: that module measures how well predicted scores agree with human ratings
(SRCC, PLCC, ...). Here the model itself is the metric: it scores image tensors, e.g. the outputs of a restoration
or generative model during validation (`QualityScore`) or training (`quality_loss_fn`), pyiqa style.

Both take a float tensor (N, 3, H, W), RGB in [0, 1]. `QualityScore` preprocesses it by default exactly as
`model.predict` does (8-bit images resampled by Pillow), so the metric gives the numbers `predict` and `grmp-iqa
score` give; `preprocessing="tensor"` and `quality_loss_fn` use `grmp_iqa_hf.modeling.tensor_preprocessing.
preprocess_tensor` instead (the model's own resize, crop and normalisation in torch, on the input's device and
differentiable; it resamples in float, so it matches `predict` up to resampling: 7e-5 on the tiny test model).
Scores are in [0, 1], higher is better.

`torchmetrics` is an optional extra (`pip install "grmp-iqa-hf[metrics]"`), needed by `QualityScore` only:
`from grmp_iqa_hf.metrics import QualityScore` raises `ImportError` with that hint without it, while
`quality_loss_fn` works with torch alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .modeling.prediction import batched_outputs
from .modeling.tensor_preprocessing import preprocess_tensor

try:
    from torchmetrics import Metric
    from torchmetrics.utilities import dim_zero_cat
except ImportError:  # the `metrics` extra; only QualityScore needs it
    Metric = None

__all__ = ["QualityScore", "quality_loss_fn"]

INSTALL_HINT = 'QualityScore needs torchmetrics: pip install "grmp-iqa-hf[metrics]" (or pip install torchmetrics)'
_REDUCTIONS = ("mean", "none")
#: How `QualityScore` prepares images: as `predict` (8-bit, Pillow; on the CPU) or in float on the input's device.
PREPROCESSING = ("predict", "tensor")


def _frozen_model(model):
    """`model` (a model, or a directory / Hub id loaded with `models.load_model`) frozen and in eval mode."""
    if isinstance(model, (str, os.PathLike)):
        from .models import load_model  # transformers and the Auto registration, only when a name is given

        model = load_model(os.fspath(model))
    if not (isinstance(model, torch.nn.Module) and hasattr(model, "image_processor")):
        raise TypeError("model must be a grmp_iqa_hf quality model (with `image_processor` and `scores` outputs), "
                        f"a saved model's directory or a Hub id; got {type(model).__name__}")
    return model.requires_grad_(False).eval()


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _model_inputs(model, processor, images: torch.Tensor) -> torch.Tensor:
    """`images` -> `pixel_values` on the model's device, in its dtype (differentiable)."""
    parameter = next(model.parameters())
    pixel_values = preprocess_tensor(processor, images.to(parameter.device))
    return pixel_values.to(parameter.dtype)


def _check_images(images) -> None:
    if not (isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3
            and images.is_floating_point()):
        what = f"a {images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else (
            type(images).__name__)
        raise ValueError(f"images must be a float tensor (N, 3, H, W) with RGB values in [0, 1], got {what}")


def quality_loss_fn(model, reduction: str = "mean") -> Callable[[torch.Tensor], torch.Tensor]:
    """A function `images -> quality` that is differentiable with respect to `images` (pyiqa's `as_loss=True`).

    It returns the score itself, higher = better: to improve images, minimise `1 - q` (or `-q`).

    Args:
        model: a quality model, or a saved model's directory / Hub id (loaded with `grmp_iqa_hf.models.load_model`:
            offline-friendly, safetensors only). Its parameters are frozen (`requires_grad_(False)`, in place: pass
            a copy to keep training a model) and it is kept in eval mode (no prompt dropout).
        reduction: `"mean"` (a scalar) or `"none"` (one score per image).

    The returned function takes a float tensor (N, 3, H, W) in [0, 1] on any device (moved to the model's) and
    runs the model with gradients enabled, in batches of N: keep N small enough for memory.
    """
    reduction = _check_reduction(reduction)
    model = _frozen_model(model)
    processor = model.image_processor

    def quality(images: torch.Tensor) -> torch.Tensor:
        if model.training:  # a caller's `model.train()` would turn prompt dropout on
            model.eval()
        scores = model(pixel_values=_model_inputs(model, processor, images)).scores
        return scores.mean() if reduction == "mean" else scores

    return quality


def __getattr__(name):
    if name == "QualityScore":  # defined below only when torchmetrics is installed
        raise ImportError(INSTALL_HINT)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if Metric is not None:

    class QualityScore(Metric):
        """The mean (or every) quality score of the images given to `update`, as a `torchmetrics.Metric`.

        Args:
            model: a quality model, or a saved model's directory / Hub id (loaded with
                `grmp_iqa_hf.models.load_model`: offline-friendly, safetensors only). It becomes a submodule (so
                `.to(device)` moves it), frozen in place (`requires_grad_(False)`) and kept in eval mode.
            reduction: `"mean"`: `compute()` returns the mean score over all images (states: sum and count,
                summed across processes). `"none"`: every score, in update order (state: a list, concatenated
                across processes in rank order, torchmetrics' "cat" sync).
            batch_size: images per forward pass inside one `update`.
            preprocessing: `"predict"` (default): exactly `model.predict`'s preprocessing (the images are rounded to
                8 bits and resampled by Pillow on the CPU), so the scores are `predict`'s. `"tensor"`: the model's
                resize, crop and normalisation in torch on the images' device (no host round trip; resampled in
                float, so scores differ from `predict` by up to ~1e-4 where the images are resized).
            **metric_kwargs: `torchmetrics.Metric` options (`sync_on_compute`, `dist_sync_on_step`, ...).

        `update(images)`: a float tensor (N, 3, H, W), RGB in [0, 1], scored in eval mode without gradients (use
        `quality_loss_fn` for a differentiable score).
        """

        # pyiqa conventions
        lower_better = False
        score_range = (0, 1)
        # torchmetrics conventions
        higher_is_better = True
        is_differentiable = False  # `update` runs without gradients; `quality_loss_fn` is the differentiable score
        full_state_update = False
        plot_lower_bound = 0.0
        plot_upper_bound = 1.0

        def __init__(self, model, reduction: str = "mean", batch_size: int = 32, preprocessing: str = "predict",
                     **metric_kwargs):
            super().__init__(**metric_kwargs)
            self.reduction = _check_reduction(reduction)
            if preprocessing not in PREPROCESSING:
                raise ValueError(f"preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
            self.preprocessing = preprocessing
            if batch_size < 1:
                raise ValueError(f"batch_size must be >= 1, got {batch_size}")
            self.batch_size = batch_size
            self.model = _frozen_model(model)
            self.processor = self.model.image_processor
            if self.reduction == "mean":
                self.add_state("score_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
                self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")
            else:
                self.add_state("scores", default=[], dist_reduce_fx="cat")

        def train(self, mode: bool = True):
            """Switches the metric's mode; the model stays in eval mode (no prompt dropout)."""
            super().train(mode)
            self.model.eval()
            return self

        def update(self, images: torch.Tensor) -> None:
            def load_batch(indices):
                chunk = images[indices.start : indices.stop]
                if self.preprocessing == "tensor":
                    return _model_inputs(self.model, self.processor, chunk)
                _check_images(chunk)  # then what `predict` does with each (C, H, W) tensor
                return self.processor(list(chunk.detach().float().cpu()), return_tensors="pt")["pixel_values"]

            scores = batched_outputs(self.model, load_batch, range(len(images)), self.batch_size)["scores"]
            scores = scores.detach().to(self.device, torch.float32)
            if self.reduction == "mean":
                self.score_sum += scores.sum()
                self.count += scores.numel()
            else:
                self.scores.append(scores)

        def compute(self) -> torch.Tensor:
            if self.reduction == "mean":
                return self.score_sum / self.count
            if isinstance(self.scores, list) and not self.scores:  # no update (a list; a tensor once synced)
                return torch.zeros(0, device=self.device)
            return dim_zero_cat(self.scores)
