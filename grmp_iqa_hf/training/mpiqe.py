"""MP-IQE training under Hugging Face Accelerate, and the protocol runner behind `examples/train_mpiqe.py`.

`train_mpiqe` fits a model's trainable parameters (prompts, multimodal encoder, head; CLIP stays frozen)
with the model's own loss: quality, plus the scene / distortion terms when those labels are given.

- Every random choice is keyed, never drawn from a shared stream: the order of epoch `e` is a
  permutation from `(seed, stream, e)`, the random crop + flip of image `i` in epoch `e` comes from
  `(seed, stream, e, i)` (`ImageCache.batch`), and the visual-prompt dropout masks of image `i` in
  step `s` from its own stream `(seed, stream, s, i)` (each image has its own mask, as the released
  GRMP-IQA prompts; the torch RNG is also reseeded with `(seed, stream, step)` for anything else).
- Data parallel without DDP: the samples of each batch are dealt round robin to the processes; each
  process back-propagates `loss_local * n_local / n_batch`, and the gradients (with the loss statistics)
  are summed over processes in one collective (`reduce_sum`) before the optimizer step, so every
  process holds the same parameters. The MP-IQE loss is a mean of per-image terms (an image without a
  scene / distortion label counts zero in that term), so this gives exactly the gradient of the global
  batch: results do not depend on the number of processes (up to float summation order), as long as
  the model's fusion/head dropout is 0 (the default; prompt dropout is keyed per image).
- The learning rate is a pure function of the step (linear warm-up, then cosine or constant), so no
  scheduler state is stored. Checkpoints (`checkpointing.py`: safetensors + JSON, atomic) every
  `checkpointing_steps` hold the trainable parameters, AdamW's state and the epoch statistics so far;
  resuming from one continues bit-for-bit where the run stopped.
- A NaN / infinite loss stops the run with `NonFiniteLossError` before the step is applied.

`run_mpiqe(args)` is the protocol: load the dataset and its scene / distortion labels (datasets without
them train on quality alone), make the splits (`protocol_splits`: `num_splits` random 80/20 splits,
training on the whole 80% pool by default, or `num_images` images (N-shot), or `train_fraction` of it),
train one fresh model per split for a fixed schedule (selection `"last"`: the test set is never used
for choices), score the test part, and write under `output_dir`:

- `report.json`: `protocol_report` (per split: the image ids of each part, `srcc`, `plcc`,
  `plcc_logistic`, `krcc`, `rmse`, `history`; over splits: `median`, `mean`, `std`) plus a top-level
  `history` (= split 0's per-epoch list of `{"epoch", "loss", "quality_loss", "scene_loss",
  "distortion_loss", "learning_rate", "step"}`: the mean over the epoch's images of each loss term as
  optimised (with augmentation and dropout), the learning rate of the epoch's last step and the number
  of optimizer steps so far; the scene/distortion keys only when those labels are used), the model
  config and its reconstruction notes;
- the model of split 0 (`save_pretrained(output_dir)`: safetensors + config + remote code + the image
  processor's config), so `AutoModel.from_pretrained(output_dir)` loads it;
- `split_XX/checkpoints/step_*/` (training checkpoints) and `split_XX/result.json` (a finished split,
  skipped when the run is resumed); `split_XX/model/` for every split with `save_split_models`.

`resume_from_checkpoint="latest"` resumes every split from its newest checkpoint (finished splits are
read back, splits without a checkpoint start fresh); a checkpoint folder resumes that split, the splits
before it must be finished. Without it, a split starts fresh and its old checkpoints are deleted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..data.labels import DISTORTION_CLASSES, SCENE_CLASSES, dataset_auxiliary_labels
from ..data.splits import Split
from ..evaluation.protocol import load_labelled_dataset, protocol_report, protocol_splits, split_record
from ..modeling.configuration_mp_iqe import MPIQEConfig
from ..modeling.modeling_mp_iqe import IGNORE_INDEX, MPIQEModel
from .checkpointing import (
    checkpoint_root,
    load_checkpoint,
    load_optimizer_state,
    optimizer_state,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
)
from .common import check_finite, local_indices, make_accelerator, reduce_sum, rng_for, seed_for, trainable_parameters
from .data import ImageCache

LR_SCHEDULERS = ("cosine", "constant")
_STATS = ("loss", "quality_loss", "scene_loss", "distortion_loss")


@dataclass
class MPIQETrainingArguments:
    """Everything `run_mpiqe` needs; `examples/train_mpiqe.py` exposes each field as `--field-name`."""

    data_dir: str = field(metadata={"help": "Dataset folder (e.g. an imagefolder with metadata.csv)."})
    output_dir: str = field(metadata={"help": "Where report.json, the model and checkpoints go."})
    backbone: str = field(
        default="tiny-random",
        metadata={"help": "'tiny-random' (offline test model) or a CLIP Hub id / local directory."},
    )
    dataset: str = field(default="imagefolder", metadata={"help": "Loader name (imagefolder, livec, koniq10k, ...)."})
    epochs: int = field(default=10, metadata={"help": "Training epochs per split."})
    seed: int = field(default=0, metadata={"help": "Seed of model initialisation, data order, crops and dropout."})
    batch_size: int = field(default=32, metadata={"help": "Images per optimizer step (over all processes)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "Learning-rate schedule.", "choices": list(LR_SCHEDULERS)})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of the steps with linear warm-up."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 = no clipping)."})
    num_splits: int = field(default=10, metadata={"help": "Number of random 80/20 splits."})
    num_images: int | None = field(
        default=None, metadata={"help": "N-shot: train on N images of the 80 percent pool (default: the whole pool)."}
    )
    train_fraction: float | None = field(
        default=None, metadata={"help": "Train on this fraction of the 80 percent pool (instead of --num-images)."}
    )
    split_seed: int = field(default=2024, metadata={"help": "Seed of the protocol's splits."})
    auxiliary_labels: bool = field(
        default=True, metadata={"help": "Use the dataset's scene / distortion labels when it has them."}
    )
    unknown_distortion: str = field(
        default="error",
        metadata={"help": "Distortion names outside the label table: error, ignore (no label) or other.",
                  "choices": ["error", "ignore", "other"]},
    )
    checkpointing_steps: int | None = field(default=None, metadata={"help": "Save a checkpoint every N steps."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (per split, under --output-dir) or a checkpoint folder."}
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "Checkpoints kept per split (0 = all)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Images per forward pass when scoring test sets."})
    save_split_models: bool = field(default=False, metadata={"help": "Also save every split's model (split_XX/model)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    # model settings (None = MPIQEConfig's default)
    num_visual_prompts: int | None = field(default=None, metadata={"help": "Deep visual prompt tokens per layer."})
    n_ctx: int | None = field(default=None, metadata={"help": "Context vectors of each text prompt bank."})
    ctx_init: str | None = field(default=None, metadata={"help": "Initialise the contexts from a phrase."})
    fusion_num_layers: int | None = field(default=None, metadata={"help": "Multimodal encoder depth."})
    fusion_hidden_size: int | None = field(default=None, metadata={"help": "Multimodal encoder width."})
    fusion_num_attention_heads: int | None = field(default=None, metadata={"help": "Multimodal encoder heads."})
    scene_loss_weight: float | None = field(default=None, metadata={"help": "Weight of the scene loss."})
    distortion_loss_weight: float | None = field(default=None, metadata={"help": "Weight of the distortion loss."})
    quality_loss: str | None = field(default=None, metadata={"help": "bce, mse or l1."})
    model_config: str | None = field(
        default=None, metadata={"help": "JSON object of any other MPIQEConfig fields, e.g. '{\"pooling\": \"attention\"}'."}
    )

    _MODEL_FIELDS = ("num_visual_prompts", "n_ctx", "ctx_init", "fusion_num_layers", "fusion_hidden_size",
                     "fusion_num_attention_heads", "scene_loss_weight", "distortion_loss_weight", "quality_loss")

    def __post_init__(self):
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}")
        for name in ("epochs", "batch_size", "num_splits", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpointing_steps is not None and self.checkpointing_steps < 1:
            raise ValueError(f"checkpointing_steps must be >= 1, got {self.checkpointing_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.num_images is not None and self.train_fraction is not None:
            raise ValueError("give --num-images (N-shot) or --train-fraction, not both")
        self.model_overrides()  # validate the JSON early

    def model_overrides(self) -> dict:
        """The `MPIQEConfig` fields this run sets (the explicit flags win over `model_config`)."""
        overrides = {}
        if self.model_config:
            extra = json.loads(self.model_config) if isinstance(self.model_config, str) else dict(self.model_config)
            if not isinstance(extra, dict):
                raise ValueError(f"model_config must be a JSON object, got {self.model_config!r}")
            unknown = sorted(set(extra) - set(MPIQEConfig.__dataclass_fields__))
            if unknown:
                raise ValueError(f"model_config has fields MPIQEConfig does not know: {unknown}")
            overrides.update(extra)
        overrides.update({k: getattr(self, k) for k in self._MODEL_FIELDS if getattr(self, k) is not None})
        return overrides

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


def learning_rate_at(step: int, total_steps: int, base_lr: float, scheduler: str = "cosine", warmup_steps: int = 0) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warm-up, then cosine decay to 0 or constant."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if scheduler == "constant":
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _run_signature(args: MPIQETrainingArguments, n_train: int, stream: int) -> dict:
    # what must agree between a checkpoint and the run resuming from it
    keys = ("epochs", "seed", "batch_size", "learning_rate", "weight_decay", "lr_scheduler", "warmup_ratio",
            "max_grad_norm")
    return {"n_train": int(n_train), "stream": int(stream), **{k: getattr(args, k) for k in keys}}


def train_mpiqe(
    model: MPIQEModel,
    cache: ImageCache,
    train_indices,
    labels,
    args: MPIQETrainingArguments,
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
        args: the hyper-parameters (`epochs`, `batch_size`, `learning_rate`, ...; `checkpointing_steps`,
            `resume_from_checkpoint`, `keep_checkpoints`).
        scene_labels: optional (len(cache), 9) multi-hot array (NaN rows: no label).
        distortion_labels: optional (len(cache),) class indices (`IGNORE_INDEX`: no label).
        stream: an extra key of every random stream (the split index), so splits draw independently.
        output_dir: where `checkpoints/` go (needed for checkpointing and resuming).
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

    config = model.config
    if accelerator.num_processes > 1 and max(config.fusion_dropout, config.fusion_attention_dropout, config.head_dropout) > 0:
        warnings.warn("fusion/head dropout > 0: its masks depend on how a batch is split across processes, so "
                      "results will differ (slightly) with the number of processes")
    model.to(device)
    params = trainable_parameters(model)
    if not params:
        raise ValueError("the model has no trainable parameters")
    names, tensors = list(params), list(params.values())
    optimizer = torch.optim.AdamW(tensors, lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    warmup_steps = round(args.warmup_ratio * total_steps)
    signature = _run_signature(args, n_train, stream)

    step, history = 0, []
    sums = dict.fromkeys(_STATS, 0.0)
    seen = 0
    checkpoint = None
    if args.resume_from_checkpoint == "latest":
        if output_dir is None:
            raise ValueError("resume_from_checkpoint='latest' needs the output_dir that holds the checkpoints")
        checkpoint = resolve_checkpoint(output_dir, "latest")  # None: nothing saved yet, a fresh start
    elif args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(output_dir, args.resume_from_checkpoint)
    if checkpoint is not None:
        saved, state = load_checkpoint(checkpoint)
        if state.get("signature") != signature:
            raise ValueError(
                f"checkpoint {checkpoint} was written by a different run: its settings {state.get('signature')} "
                f"differ from this run's {signature}"
            )
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(saved[f"param.{name}"].to(device))
        load_optimizer_state(optimizer, {k: v.to(device) for k, v in saved.items()}, state["optimizer"])
        step, history, seen = state["step"], state["history"], state["seen"]
        sums = {k: float(v) for k, v in state["sums"].items()}
        if accelerator.is_main_process:
            print(f"Resumed from {checkpoint} (step {step} of {total_steps})")

    def save(at_step: int):
        if output_dir is None:
            return
        if accelerator.is_main_process:
            opt_tensors, opt_meta = optimizer_state(optimizer)
            tensors_out = {f"param.{n}": p for n, p in params.items()} | opt_tensors | rng_state()
            state = {"signature": signature, "optimizer": opt_meta, "history": history, "seen": seen, "sums": sums,
                     "epoch": at_step // steps_per_epoch}
            keep = args.keep_checkpoints if args.keep_checkpoints > 0 else None
            save_checkpoint(output_dir, at_step, tensors_out, state, keep_last=keep)
        accelerator.wait_for_everyone()

    bar = tqdm(total=total_steps, initial=step, desc=f"MP-IQE split {stream}",
               disable=not args.progress or not accelerator.is_main_process)
    cuda_devices = [device] if device.type == "cuda" else []
    model.train()
    with torch.random.fork_rng(devices=cuda_devices):
        for epoch in range(step // steps_per_epoch, args.epochs):
            order = rng_for(args.seed, stream, epoch).permutation(n_train)
            for batch_in_epoch in range(steps_per_epoch):
                if epoch * steps_per_epoch + batch_in_epoch < step:
                    continue  # resumed mid-epoch
                batch = order[batch_in_epoch * args.batch_size : (batch_in_epoch + 1) * args.batch_size]
                mine = train_indices[batch[local_indices(len(batch), accelerator)]]
                lr = learning_rate_at(step, total_steps, args.learning_rate, args.lr_scheduler, warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                torch.manual_seed(seed_for(args.seed, stream, step))  # prompt dropout: same masks on every process
                optimizer.zero_grad(set_to_none=True)
                stats = torch.zeros(len(_STATS), device=device)
                if len(mine):
                    index = torch.as_tensor(mine)
                    pixel_values = cache.batch(mine, keys=(args.seed, stream, epoch)).to(device)
                    out = model(
                        pixel_values=pixel_values,
                        dropout_generators=[torch.Generator().manual_seed(seed_for(args.seed, stream, step, int(i)))
                                            for i in mine],
                        labels=labels[index].to(device),
                        scene_labels=None if scenes is None else scenes[index].to(device),
                        distortion_labels=None if distortions is None else distortions[index].to(device),
                    )
                    (out.loss * (len(mine) / len(batch))).backward()
                    for k, name in enumerate(_STATS):
                        value = getattr(out, name)
                        if value is not None:
                            stats[k] = value.detach() * len(mine)
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in tensors]
                *grads, stats = reduce_sum(accelerator, grads + [stats])
                loss_value = stats[0].item() / len(batch)
                check_finite(loss_value, "the MP-IQE training loss", step + 1)
                for param, grad in zip(tensors, grads):
                    param.grad = grad
                if args.max_grad_norm and args.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(tensors, args.max_grad_norm)
                optimizer.step()
                step += 1
                seen += len(batch)
                for k, name in enumerate(_STATS):
                    sums[name] += stats[k].item()
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_value:.4f}")
                if batch_in_epoch == steps_per_epoch - 1:
                    record = {"epoch": epoch + 1, "step": step, "learning_rate": lr}
                    record.update({name: sums[name] / seen for name in _STATS})
                    if scenes is None:
                        record.pop("scene_loss")
                    if distortions is None:
                        record.pop("distortion_loss")
                    history.append(record)
                    sums, seen = dict.fromkeys(_STATS, 0.0), 0
                if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                    save(step)
    bar.close()
    model.eval()
    return history


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def predict_indices(model: MPIQEModel, cache: ImageCache, indices, accelerator: Accelerator | None = None,
                    batch_size: int = 64) -> dict[str, np.ndarray]:
    """Scores (centre crops, exactly `model.image_processor`) and class logits of the images `indices`.

    The images are shared out among processes and the results summed back, so every process returns all
    of them: `{"scores": (N,), "scene_logits": (N, S), "distortion_logits": (N, D)}`."""
    indices = np.asarray(indices, dtype=np.int64)
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    config = model.config
    width = 1 + len(config.scene_classes) + len(config.distortion_classes)
    table = torch.zeros(len(indices), width, dtype=torch.float64, device=device)
    model.eval()
    mine = np.asarray(local_indices(len(indices), accelerator), dtype=np.int64)
    for start in range(0, len(mine), batch_size):
        rows = mine[start : start + batch_size]
        out = model(pixel_values=cache.batch(indices[rows]).to(device))
        table[torch.as_tensor(rows, device=device)] = torch.cat(
            [out.scores[:, None], out.scene_logits, out.distortion_logits], dim=1
        ).double()
    (table,) = reduce_sum(accelerator, [table])
    table = table.cpu().numpy()
    num_scenes = len(config.scene_classes)
    return {"scores": table[:, 0], "scene_logits": table[:, 1 : 1 + num_scenes],
            "distortion_logits": table[:, 1 + num_scenes :]}


def auxiliary_metrics(predictions: dict, scene_labels=None, distortion_labels=None) -> dict:
    """Test-set accuracy of the auxiliary heads: `distortion_accuracy` (top-1) and `scene_top1_accuracy`
    (the top-scoring scene is one of the image's scenes), over labelled images."""
    out = {}
    if distortion_labels is not None:
        labelled = distortion_labels != IGNORE_INDEX
        if labelled.any():
            predicted = predictions["distortion_logits"].argmax(1)
            out["distortion_accuracy"] = float((predicted[labelled] == distortion_labels[labelled]).mean())
    if scene_labels is not None:
        labelled = ~np.isnan(scene_labels).any(1)
        if labelled.any():
            top = predictions["scene_logits"].argmax(1)
            out["scene_top1_accuracy"] = float(np.asarray(scene_labels[labelled, top[labelled]], dtype=np.float64).mean())
    return out


# ----------------------------------------------------------------------------------------------
# The protocol runner
# ----------------------------------------------------------------------------------------------


def _split_dir(output_dir: Path, index: int) -> Path:
    return output_dir / f"split_{index:02d}"


def _resume_plan(args: MPIQETrainingArguments, output_dir: Path) -> dict[int, str | None]:
    """split index -> what that split resumes from ('latest', a folder, or None for a fresh start)."""
    spec, indices = args.resume_from_checkpoint, range(args.num_splits)
    if spec is None:
        return dict.fromkeys(indices)
    if spec == "latest":
        return dict.fromkeys(indices, "latest")
    path = Path(spec).resolve()
    for index in indices:
        if path.parent == checkpoint_root(_split_dir(output_dir, index)).resolve():
            resolve_checkpoint(None, path)  # a complete checkpoint folder, or a clear error
            unfinished = [i for i in range(index) if not (_split_dir(output_dir, i) / "result.json").is_file()]
            if unfinished:
                raise ValueError(f"cannot resume split {index} from {spec}: split(s) {unfinished} before it are not "
                                 "finished (use --resume-from-checkpoint latest)")
            return {i: (str(path) if i == index else None) for i in indices}
    raise ValueError(
        f"--resume-from-checkpoint {spec} is not a checkpoint of this run: expected "
        f"{output_dir}/split_XX/checkpoints/step_NNNNNNNN (or 'latest')"
    )


def _drop_failed(split: Split, failed: set[int]) -> Split:
    keep = lambda a: np.asarray([i for i in a if int(i) not in failed], dtype=np.int64)  # noqa: E731
    return Split(index=split.index, train=keep(split.train), val=keep(split.val), test=keep(split.test))


def run_mpiqe(args: MPIQETrainingArguments, accelerator: Accelerator | None = None) -> dict:
    """Train and evaluate MP-IQE with the protocol (see the module docstring); returns the report."""
    from ..models import load_backbone

    started = time.time()
    output_dir = Path(args.output_dir)
    plan = _resume_plan(args, output_dir)
    accelerator = accelerator or make_accelerator(output_dir, log_with=None)
    main = accelerator.is_main_process
    data = load_labelled_dataset(args.data_dir, args.dataset)
    scene_labels = distortion_labels = None
    if args.auxiliary_labels:
        scene_labels, distortion_labels = dataset_auxiliary_labels(data.dataset, unknown_distortion=args.unknown_distortion)

    overrides = args.model_overrides()
    clip, tokenizer = load_backbone(args.backbone, seed=args.seed)
    overrides.setdefault("base_model_name_or_path", args.backbone)

    def fresh_model(split_index: int) -> MPIQEModel:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_for(args.seed, split_index))
            return MPIQEModel.from_clip(clip, tokenizer, **overrides)

    probe = fresh_model(0)
    if scene_labels is not None and probe.config.scene_classes != list(SCENE_CLASSES):
        raise ValueError("the dataset's scene labels are LIQE's 9 classes; this model has other scene_classes "
                         "(pass --no-auxiliary-labels to train on quality alone)")
    if distortion_labels is not None and probe.config.distortion_classes != list(DISTORTION_CLASSES):
        raise ValueError("the dataset's distortion labels are LIQE's 11 classes; this model has other "
                         "distortion_classes (pass --no-auxiliary-labels to train on quality alone)")
    cache = ImageCache(probe.image_processor, data.files, progress=args.progress and main)
    failed = set(cache.failed)
    splits = protocol_splits(data, num_images=args.num_images, train_fraction=args.train_fraction,
                             num_splits=args.num_splits, seed=args.split_seed)
    splits = [_drop_failed(s, failed) for s in splits]

    records = []
    for split in splits:
        split_dir = _split_dir(output_dir, split.index)
        result_file = split_dir / "result.json"
        if args.resume_from_checkpoint is not None and result_file.is_file():
            records.append(json.loads(result_file.read_text()))
            continue
        if plan[split.index] is None and main:
            shutil.rmtree(checkpoint_root(split_dir), ignore_errors=True)  # a fresh start: no stale checkpoints
        accelerator.wait_for_everyone()
        split_started = time.time()
        model = probe if split.index == 0 else fresh_model(split.index)
        history = train_mpiqe(
            model, cache, split.train, data.labels, dataclasses.replace(args, resume_from_checkpoint=plan[split.index]),
            scene_labels=scene_labels, distortion_labels=distortion_labels, stream=split.index,
            output_dir=split_dir, accelerator=accelerator,
        )
        predictions = predict_indices(model, cache, split.test, accelerator, args.eval_batch_size)
        extra = auxiliary_metrics(
            predictions,
            None if scene_labels is None else scene_labels[split.test],
            None if distortion_labels is None else distortion_labels[split.test],
        )
        record = split_record(split, data, predictions["scores"], n_train=int(len(split.train)), history=history,
                              seconds=round(time.time() - split_started, 2), **extra)
        records.append(record)
        if main:
            model.config.training_info = {
                "method": "mp_iqe", "dataset": data.name, "split": split.index, "n_train": int(len(split.train)),
                "epochs": args.epochs, "seed": args.seed, "test_srcc": record["srcc"], "test_plcc": record["plcc"],
                "auxiliary_labels": {"scene": scene_labels is not None, "distortion": distortion_labels is not None},
            }
            if split.index == 0:
                model.save_pretrained(output_dir)
            if args.save_split_models:
                model.save_pretrained(split_dir / "model")
            split_dir.mkdir(parents=True, exist_ok=True)
            tmp = result_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1))
            os.replace(tmp, result_file)
        accelerator.wait_for_everyone()

    config_record = {"training": args.to_dict(), "model": probe.config.to_diff_dict(), "num_processes": accelerator.num_processes}
    config_record["model"].pop("clip_config", None)
    for key in ("scene_prompt_input_ids", "distortion_prompt_input_ids"):
        config_record["model"].pop(key, None)
    report = protocol_report(
        records, selection="last", config=config_record,
        method="mp_iqe",
        dataset=data.name,
        label_note=data.label_note,
        n_images=len(data),
        unreadable_images={str(data.image_ids[i]): reason for i, reason in cache.failed.items()},
        auxiliary_labels={"scene": scene_labels is not None, "distortion": distortion_labels is not None},
        history=records[0]["history"] if records else [],
        history_note="top-level history = split 0's per-epoch training losses; every split's is in splits[i].history",
        reconstruction_notes=probe.config.reconstruction_notes(),
        seconds=round(time.time() - started, 2),
    )
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        tmp = output_dir / "report.json.tmp"
        tmp.write_text(json.dumps(report, indent=1, default=_json_default))
        os.replace(tmp, output_dir / "report.json")
        median = report["median"]
        print(f"MP-IQE on {data.name}: {len(records)} split(s), median test SRCC {median['srcc']:.4f}, "
              f"PLCC {median['plcc']:.4f} -> {output_dir / 'report.json'}")
    accelerator.wait_for_everyone()
    return report


def _json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to report.json")


__all__ = [
    "LR_SCHEDULERS",
    "MPIQETrainingArguments",
    "auxiliary_metrics",
    "learning_rate_at",
    "predict_indices",
    "run_mpiqe",
    "train_mpiqe",
]
