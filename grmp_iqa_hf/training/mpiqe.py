"""MP-IQE training: `train_mpiqe` fits a model's trainable parameters (prompts, multimodal encoder, head; CLIP
stays frozen) with the model's own loss (`trainer.LossGradient`): quality, plus the scene / distortion terms
when those labels are given. The loop (processes, optimizer, schedule, mixed precision, checkpoints, NaN stop,
trackers) is `trainer.Trainer`; this module gives it the loss, the batches and the per-epoch records.

- Every random choice is keyed, never drawn from a shared stream: the order of epoch `e` is a
  permutation from `(seed, stream, e)`, the random crop + flip of image `i` in epoch `e` comes from
  `(seed, stream, e, i)` (`ImageCache.batch`), and the visual-prompt dropout masks of image `i` in
  step `s` from its own stream `(seed, stream, s, i)` (each image has its own mask, as the released
  GRMP-IQA prompts; the torch RNG is also reseeded with `(seed, stream, step)` for anything else).
- Data parallel without DDP: the samples of each batch are dealt round robin to the processes; each
  process differentiates `loss_local * n_local / n_batch`, and the loop sums the gradients (and the loss
  statistics) over processes before the optimizer step, so every process holds the same parameters. The
  MP-IQE loss is a mean of per-image terms (an image without a scene / distortion label counts zero in that
  term), so this gives exactly the gradient of the global batch: results do not depend on the number of
  processes (up to float summation order), as long as the model's fusion/head dropout is 0 (the default;
  prompt dropout is keyed per image).
- AdamW; the learning rate is MP-IQE's own "cosine" or "constant" (`learning_rate_at`: a pure function of
  the step, linear warm-up over `warmup_steps` or `warmup_ratio` of the steps), or any other
  `transformers.get_scheduler` schedule by name.

The protocol runner that uses it is `grmp_iqa_hf.protocols.mpiqe.run_mpiqe`.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from accelerate import Accelerator

from ..modeling.modeling_mp_iqe import MPIQEModel
from .common import local_indices, make_accelerator, rng_for, seed_for, trainable_parameters
from .data import ImageCache
from .trainer import LossGradient, Trainer, TrainerCallback

#: MP-IQE's own schedules (`learning_rate_at`); every other name is `transformers.get_scheduler`'s.
LR_SCHEDULERS = ("cosine", "constant")
_STATS = ("loss", "quality_loss", "scene_loss", "distortion_loss")


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


def learning_rate_at(step: int, total_steps: int, base_lr: float, scheduler: str = "cosine", warmup_steps: int = 0) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warm-up, then cosine decay to 0 or constant.
    (transformers' "cosine" differs in the warm-up: its first step has rate 0, this one base_lr / warmup.)"""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if scheduler == "constant":
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _run_signature(args, n_train: int, stream: int) -> dict:
    # what must agree between a checkpoint and the run resuming from it
    keys = ("epochs", "seed", "batch_size", "learning_rate", "weight_decay", "lr_scheduler_type", "warmup_ratio",
            "max_grad_norm")
    return {"n_train": int(n_train), "stream": int(stream), **{k: getattr(args, k) for k in keys}}


class _EpochRecords(TrainerCallback):
    """The history: per epoch the mean over its images of each loss term as optimised, the learning rate of
    its last step and the number of steps so far."""

    def __init__(self, steps_per_epoch: int, drop=()):
        self.steps_per_epoch, self.drop = steps_per_epoch, drop
        self.sums, self.seen = dict.fromkeys(_STATS, 0.0), 0

    def on_step_end(self, trainer, stats):
        self.seen += stats["count"]
        for name in _STATS:
            self.sums[name] += stats["sums"][name]
        if trainer.step % self.steps_per_epoch == 0:
            record = {"epoch": trainer.step // self.steps_per_epoch, "step": trainer.step, "learning_rate": stats["lr"]}
            record.update({name: self.sums[name] / self.seen for name in _STATS if name not in self.drop})
            trainer.history.append(record)
            trainer.log({f"epoch/{k}": v for k, v in record.items()})
            self.sums, self.seen = dict.fromkeys(_STATS, 0.0), 0

    def state_dict(self):
        return {}, {"sums": self.sums, "seen": self.seen}

    def load_state_dict(self, tensors, state):
        self.sums, self.seen = {k: float(v) for k, v in state["sums"].items()}, int(state["seen"])


def train_mpiqe(
    model: MPIQEModel,
    cache: ImageCache,
    train_indices,
    labels,
    args,
    scene_labels=None,
    distortion_labels=None,
    stream: int = 0,
    output_dir=None,
    accelerator: Accelerator | None = None,
) -> list[dict]:
    """Train `model` on the images `train_indices` of `cache`.

    Args:
        model: an `MPIQEModel` (its trainable parameters are trained in place; it ends in eval mode).
        cache: the decoded images (`ImageCache` built with `model.image_processor`).
        train_indices: indices into `cache` (and into the label arrays) of the training images.
        labels: quality in [0, 1] for every image of `cache` (array of length `len(cache)`).
        args: the hyper-parameters (`MPIQETrainingArguments`: `epochs`, `batch_size`, `learning_rate`,
            `lr_scheduler_type`, `warmup_steps` / `warmup_ratio`, `mixed_precision`, `checkpointing_steps`,
            `resume_from_checkpoint`, `keep_checkpoints`, `report_to`, ...).
        scene_labels: optional (len(cache), 9) multi-hot array (NaN rows: no label).
        distortion_labels: optional (len(cache),) class indices (`IGNORE_INDEX`: no label).
        stream: an extra key of every random stream (the split index), so splits draw independently.
        output_dir: where `checkpoints/` and tracker logs go (needed for checkpointing and resuming).
        accelerator: defaults to `make_accelerator()`.

    Returns:
        The history: per epoch `{"epoch", "step", "learning_rate", "loss", "quality_loss"[, "scene_loss",
        "distortion_loss"]}`, each loss the mean over the epoch's images of what was optimised.
    """
    accelerator = accelerator or make_accelerator()
    device = accelerator.device
    train_indices = np.asarray(train_indices, dtype=np.int64)
    n_train = len(train_indices)
    if n_train == 0:
        raise ValueError("no training images")
    labels = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if labels.ndim != 1 or len(labels) != len(cache):
        raise ValueError(f"labels must have one value per cached image ({len(cache)}), got shape {tuple(labels.shape)}")
    scenes = None if scene_labels is None else torch.as_tensor(np.asarray(scene_labels, dtype=np.float32))
    distortions = None if distortion_labels is None else torch.as_tensor(np.asarray(distortion_labels, dtype=np.int64))
    for name, value in (("scene_labels", scenes), ("distortion_labels", distortions)):
        if value is not None and len(value) != len(cache):
            raise ValueError(f"{name} must have one row per cached image ({len(cache)}), got {len(value)}")
    if args.warmup_steps and args.warmup_ratio:
        raise ValueError("give --warmup-steps or --warmup-ratio, not both")

    config = model.config
    if accelerator.num_processes > 1 and max(config.fusion_dropout, config.fusion_attention_dropout, config.head_dropout) > 0:
        warnings.warn("fusion/head dropout > 0: its masks depend on how a batch is split across processes, so "
                      "results will differ (slightly) with the number of processes")
    model.to(device)
    params = trainable_parameters(model)
    if not params:
        raise ValueError("the model has no trainable parameters")
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    warmup_steps = args.warmup_steps or round(args.warmup_ratio * total_steps)

    def batches(step: int):
        epoch, offset = divmod(step, steps_per_epoch)
        order = rng_for(args.seed, stream, epoch).permutation(n_train)
        return step, epoch, order[offset * args.batch_size : (offset + 1) * args.batch_size]

    def loss_share(batch):
        """This process's share of the batch-mean loss, and its sums of each loss term and its count."""
        step, epoch, rows = batch
        mine = train_indices[rows[local_indices(len(rows), accelerator)]]
        torch.manual_seed(seed_for(args.seed, stream, step))  # prompt dropout: same masks on every process
        sums = torch.zeros(len(_STATS) + 1, device=device)
        sums[-1] = len(mine)
        if not len(mine):
            return None, sums
        index = torch.as_tensor(mine)
        out = model(
            pixel_values=cache.batch(mine, keys=(args.seed, stream, epoch)).to(device),
            dropout_generators=[torch.Generator().manual_seed(seed_for(args.seed, stream, step, int(i))) for i in mine],
            labels=labels[index].to(device),
            scene_labels=None if scenes is None else scenes[index].to(device),
            distortion_labels=None if distortions is None else distortions[index].to(device),
        )
        for k, name in enumerate(_STATS):
            value = getattr(out, name)
            if value is not None:
                sums[k] = value.detach() * len(mine)
        return out.loss * (len(mine) / len(rows)), sums

    own_schedule = args.lr_scheduler_type in LR_SCHEDULERS
    drop = [name for name, given in (("scene_loss", scenes), ("distortion_loss", distortions)) if given is None]
    trainer = Trainer(
        params, LossGradient(params.values(), loss_share, names=_STATS, what="the MP-IQE training loss"), batches,
        accelerator=accelerator, optimizer="adamw", learning_rate=args.learning_rate, weight_decay=args.weight_decay,
        lr_scheduler_type=None if own_schedule else args.lr_scheduler_type, warmup_steps=warmup_steps,
        lr_at=functools.partial(learning_rate_at, total_steps=total_steps, base_lr=args.learning_rate,
                                scheduler=args.lr_scheduler_type, warmup_steps=warmup_steps) if own_schedule else None,
        max_grad_norm=args.max_grad_norm if args.max_grad_norm and args.max_grad_norm > 0 else None,
        mixed_precision=args.mixed_precision, callbacks=[_EpochRecords(steps_per_epoch, drop)],
        signature=_run_signature(args, n_train, stream), output_dir=output_dir,
        checkpointing_steps=args.checkpointing_steps, keep_checkpoints=args.keep_checkpoints,
        report_to=args.report_to, run_name="mpiqe", progress=args.progress, desc=f"MP-IQE split {stream}",
    )
    model.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        history = trainer.fit(total_steps, args.resume_from_checkpoint)
    model.eval()
    return history


__all__ = ["LR_SCHEDULERS", "learning_rate_at", "train_mpiqe"]
