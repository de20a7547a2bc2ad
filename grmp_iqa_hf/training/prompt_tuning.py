"""Plain prompt tuning: fit the trainable parameters (by default the prompts) to quality labels with the
model's own loss, under Hugging Face Accelerate.

This is the simplest training stage (CoOp/VPT style). Meta-prompt pre-training and gradient-regularised
fine-tuning build on the same pieces (`pixel_cache`, `seeded_permutation`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..modeling.image_processing_iqa import load_image


def pixel_cache(model, images, batch_size: int = 64) -> torch.Tensor:
    """Preprocess images once (centre crop, the model's own processor) into a (N, 3, S, S) tensor."""
    processor = model.image_processor
    chunks = [
        processor([load_image(im) for im in images[i : i + batch_size]], return_tensors="pt")["pixel_values"]
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0)


def seeded_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a function of (seed, epoch) only, never of the process count."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_prompts(
    model,
    pixel_values: torch.Tensor,
    labels,
    epochs: int = 10,
    batch_size: int = 32,
    learning_rate: float = 1e-2,
    weight_decay: float = 0.0,
    seed: int = 0,
    accelerator: Accelerator | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train `model`'s trainable parameters on (pixel_values, labels in [0, 1]) with AdamW.

    Returns the history: one dict per epoch with the mean training `loss`.
    """
    labels = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if len(labels) != len(pixel_values):
        raise ValueError(f"{len(pixel_values)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no training images")
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    torch.manual_seed(seed)  # prompt dropout
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    history = []
    bar = tqdm(total=epochs * steps_per_epoch, desc="Prompt tuning", disable=not progress or not accelerator.is_main_process)
    model.train()
    for epoch in range(epochs):
        order = seeded_permutation(len(labels), seed, epoch)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            index = torch.as_tensor(order[start : start + batch_size])
            batch = pixel_values[index].to(accelerator.device)
            target = labels[index].to(accelerator.device)
            loss = model(pixel_values=batch, labels=target).loss
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            total += loss.item() * len(index)
            count += len(index)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
        history.append({"epoch": epoch + 1, "loss": total / count})
    bar.close()
    model.eval()
    return history
