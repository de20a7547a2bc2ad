"""`model.predict(...)`: images in, quality scores out. Shared by every model of this package.

Shipped as Hub remote code: imports only torch, numpy, transformers and relative modules.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from transformers.utils import logging

from .image_processing_iqa import IQAImageProcessor, load_image


class IQAPredictionMixin:
    """Adds `image_processor` and `predict` to a model whose config is a `PromptedCLIPConfig` and whose
    forward returns an output with `scores`."""

    @property
    def image_processor(self) -> IQAImageProcessor:
        """The preprocessing this model was trained with, built from its config (the one source of truth)."""
        return IQAImageProcessor(**self.config.image_processor_kwargs())

    @torch.no_grad()
    def predict(self, images, batch_size: int = 32, device=None, progress: bool | None = None) -> np.ndarray:
        """Score images; higher = better quality, in [0, 1].

        Args:
            images: one image or a list of them: file paths, PIL images, numpy arrays (HxW[xC]) or torch
                tensors (CxHxW). Any PIL mode is converted to RGB; EXIF orientation is applied.
            batch_size: images per forward pass.
            device: where to run (defaults to the model's device).
            progress: show a progress bar (default: when there is more than one batch).

        Returns:
            A float32 numpy array with one score per image, in input order.

        Raises:
            ImageLoadError: an input cannot be read (truncated, empty, not an image, decompression bomb,
                bad array shape). The message names the input. Use `grmp-iqa score` to score a folder
                and report broken files without stopping.
        """
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = torch.device(device) if device is not None else next(self.parameters()).device
        processor = self.image_processor
        starts = range(0, len(images), batch_size)
        if progress is None:
            progress = len(starts) > 1
        bar = logging.tqdm(total=len(images), desc="Scoring", unit="img", disable=not progress)
        was_training = self.training
        self.eval()
        scores = []
        try:
            for start in starts:
                batch = [
                    load_image(image, name=None if isinstance(image, (str, os.PathLike)) else f"input #{start + i}")
                    for i, image in enumerate(images[start : start + batch_size])
                ]
                pixel_values = processor(batch, return_tensors="pt")["pixel_values"].to(device)
                scores.append(self(pixel_values=pixel_values).scores.float().cpu())
                bar.update(len(batch))
        finally:
            bar.close()
            self.train(was_training)
        return torch.cat(scores).numpy() if scores else np.zeros(0, dtype=np.float32)
