"""Differentiable preprocessing: a float image batch -> the model's `pixel_values`, in torch, with gradients.

Shipped with the other `modeling/` files (Hub remote code rules): imports only the standard library and torch.

`preprocess_tensor(processor, images)` follows an `IQAImageProcessor` step by step (`resized_size`, `resample`,
`crop_box` with a centre crop, `image_mean` / `image_std` when `do_normalize`) on a `(N, 3, H, W)` tensor, on its
device, without PIL or numpy, so that a quality score can be a loss (`grmp_iqa_hf.metrics.quality_loss_fn`).

How it differs from `model.predict` (which decodes every input to 8-bit RGB and resamples with Pillow):

* Resampling is in floating point. "bilinear" and "bicubic" use `torch.nn.functional.interpolate(...,
  antialias=True)`, which implements Pillow's antialiased filters (same kernels and supports, bicubic with
  a = -0.5, same edge handling). Pillow resamples 8-bit images in two separable passes with fixed-point weights,
  rounding (and clipping to 0..255) after each pass; here nothing is rounded. Measured on 224 x 224 images
  (values k/255, 8-bit exact): "bilinear" differs from the processor by at most 1/255 per pixel (0.3/255 on
  average); "bicubic" likewise on smooth content, but on high-contrast content (noise) single pixels differ by
  up to ~25/255 where Pillow clips the overshoot of its first pass (Pillow 13 picks the pass order itself).
  "nearest" picks exactly Pillow's source pixels (its accumulated double-precision coordinates), and
  "bicubic_no_antialias" is the processor's own torch resize without its final rounding (<= 0.5/255). An image
  that needs no resizing (already `resized_size`) gives `predict`'s pixel values exactly (for values k/255).
  On scores (the tiny random test model, 224 x 224 -> 70 x 70 bilinear) the difference from `predict` is up to
  7.4e-5 on random images and 4.8e-5 on 8 LIVE-in-the-Wild photos; emulating Pillow's per-pass rounding brings
  it under 2e-5 (tests/test_quality_score.py), so the 8-bit rounding is the whole difference.
* Values are clamped to [0, 1] before and after resampling, as `predict` does (float tensors are clipped by
  `load_image`; Pillow and the processor's torch resize clip to 0..255). Gradients are zero where clamped.
* "lanczos" has no torch counterpart and raises `ValueError`.
* The input check (value range, NaN) reads the batch's min and max: one device synchronisation per call.
* No 8-bit quantisation of the input: `predict` rounds a float tensor to k/255 first.
"""

from __future__ import annotations

import math

import torch

__all__ = ["RANGE_TOLERANCE", "preprocess_tensor"]

#: How far outside [0, 1] values may stray before `preprocess_tensor` refuses them. Small excursions come from
#: an unclamped optimisation step and are clamped; anything further is a wrong scale (0..255 data, or pixel values
#: that are already normalised), which would otherwise be silently clamped into a white or black image.
RANGE_TOLERANCE = 0.1

# processor.resample -> (interpolate mode, antialias); "nearest" is `_pillow_nearest`
_TORCH_MODES = {
    "bilinear": ("bilinear", True),
    "bicubic": ("bicubic", True),
    "bicubic_no_antialias": ("bicubic", False),
}
_RESAMPLERS = ("nearest", *_TORCH_MODES)


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W) (RGB, channels first), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor with values in [0, 1], got dtype {images.dtype} "
                         "(for uint8 images use `images.float() / 255`)")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images is empty: shape {tuple(images.shape)}")
    low, high = torch.aminmax(images.detach())
    low, high = float(low), float(high)
    # NaN fails both comparisons
    if not (low >= -RANGE_TOLERANCE and high <= 1 + RANGE_TOLERANCE):
        hint = ("NaN or infinite values" if not (math.isfinite(low) and math.isfinite(high)) else
                "0..255 data? divide by 255" if high > 2 else "normalised pixel values? pass images in [0, 1]")
        raise ValueError(f"images must have values in [0, 1], got min {low:.4g}, max {high:.4g} ({hint})")


def _nearest_indices(size: int, new_size: int, device) -> torch.Tensor:
    """Source index of each output pixel as Pillow's nearest-neighbour resize computes it: a coordinate that
    starts at half a step and accumulates the step in double precision, truncated (torch's "nearest-exact"
    rounds differently at exact pixel edges)."""
    step, coordinate, indices = size / new_size, size / new_size * 0.5, []
    for _ in range(new_size):
        indices.append(min(int(coordinate), size - 1))
        coordinate += step
    return torch.tensor(indices, dtype=torch.long, device=device)


def _pillow_nearest(x: torch.Tensor, new_height: int, new_width: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    x = x.index_select(-2, _nearest_indices(height, new_height, x.device))
    return x.index_select(-1, _nearest_indices(width, new_width, x.device))


def preprocess_tensor(processor, images: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The model inputs for `images`, computed as `processor` would but differentiably (see the module docstring).

    Args:
        processor: an `IQAImageProcessor` (e.g. `model.image_processor`); its `resized_size`, `resample`,
            `crop_box`, `image_mean`, `image_std` and `do_normalize` are used, and always the centre crop.
        images: float tensor (N, 3, H, W), RGB, values in [0, 1], any device. All images share H and W. Values up
            to `RANGE_TOLERANCE` outside [0, 1] are clamped; values further out raise `ValueError`.
        dtype: of the result and of the computation; defaults to float32 (float64 for float64 images).

    Returns:
        `pixel_values` (N, 3, S, S) on `images`' device, S the processor's crop side; differentiable w.r.t. `images`.

    Raises:
        ValueError: wrong shape, non-float dtype, values clearly outside [0, 1], or `resample="lanczos"`.
    """
    _check_images(images)
    resample = processor.resample
    if resample not in _RESAMPLERS:
        raise ValueError(f"preprocess_tensor cannot resample with {resample!r}: torch has no Lanczos filter. Use a "
                         f"model whose image processor resamples with one of {_RESAMPLERS} (e.g. `resample=\"bicubic\"`"
                         "), or score with `model.predict`, which resamples with Pillow")
    if dtype is None:
        dtype = torch.promote_types(images.dtype, torch.float32)
    x = images.to(dtype).clamp(0, 1)
    height, width = x.shape[-2:]
    new_width, new_height = processor.resized_size(width, height)
    if (new_width, new_height) != (width, height):
        if resample == "nearest":
            x = _pillow_nearest(x, new_height, new_width)
        else:
            mode, antialias = _TORCH_MODES[resample]
            x = torch.nn.functional.interpolate(x, size=(new_height, new_width), mode=mode, antialias=antialias,
                                                align_corners=False)
            x = x.clamp(0, 1)  # bicubic overshoots; Pillow and the processor's torch resize clip
    left, top, right, bottom = processor.crop_box(new_width, new_height)
    x = x[:, :, top:bottom, left:right]
    if processor.do_normalize:
        mean = torch.tensor(processor.image_mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(processor.image_std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x
