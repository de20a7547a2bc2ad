"""Few-shot fine-tuning of a GRMP-IQA model, with quality-aware gradient regularization (GRMP-IQA stage 2).

What trains (`select_trainable`, design §2): the text context, the top `k` blocks of both CLIP towers
and their final norms (vision `post_layernorm`, text `final_layer_norm`); the visual prompts and
everything below the top blocks stay frozen. SGD (lr 1e-3, weight decay 1e-4), full batch by default,
optional x0.3 learning-rate decay (on a training-loss plateau, or the released code's test-driven rule).

Mode: as in the released `finetune.py`, the model trains in train mode, so the dropout of the (frozen)
visual prompts is active (`prompt_dropout=True`, the default; CLIP itself has no dropout). Every dropout
mask is drawn per image from a stream keyed by (seed, ..., image), never from the global RNG, so results do
not depend on how samples are batched or shared out over processes. `prompt_dropout=False` trains in eval
mode (this package before the fidelity change).

The frozen-trunk cache: everything that enters the first trainable vision block (patch embeddings, the
frozen visual prompts, the lower blocks) is fixed once the crop AND the lower layers' dropout masks are
fixed, so those activations are computed once per image and pool entry and reused at every epoch
(`FewShotTrainer.trunk_hidden`). Each image gets a fixed pool of `crop_pool` entries, each a keyed random
crop (+ flip) with its own keyed dropout draw for the lower layers; every epoch each sample draws one entry
of its pool from the stream keyed by (seed, epoch, image), and the top blocks draw fresh masks keyed by
(seed, epoch, image). Recomputing the trunk from the same entry gives the same activations, so the cache
changes speed, not results (tested). With `crop_pool=None` every epoch draws fresh crops and masks (then
nothing can be cached); `batch_crops=True` reproduces the released augmentation (one crop offset per batch,
seeded by the step, with its flip rule), which cannot be cached either. The teacher's scene targets are
cached the same way (see `gradreg`).

Processes: the model is NOT wrapped in DDP. Sample `j` of the training list belongs to process
`j % num_processes`; each process sums the gradients of its samples' losses (two VJPs of one forward
pass), the sums are added across processes, divided by the global count and only then projected
(`gradreg.qgr_direction`, per unit: each layer's q/k/v weights and biases form one unit, as OpenAI CLIP's
fused `in_proj`). Every random choice is keyed, so 1 and 2 processes train the same parameters.

Checkpoints (`checkpointing.py`, safetensors + JSON, never pickle) hold the trainable parameters, the
optimizer and scheduler states, the RNG, the step and the bookkeeping; `resume_from_checkpoint="latest"`
continues exactly. The model passed in must be the same starting model as in the first run (checked).
A NaN/inf loss stops the run with `NonFiniteLossError`; the last good checkpoint stays in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..evaluation.metrics import compute_metrics
from ..modeling.prompt_learning import embed_image, finish_vision, pool_image, run_vision_layers
from ..modeling.modeling_grmp_iqa import quality_loss
from .checkpointing import (
    load_checkpoint, load_optimizer_state, load_rng_state, optimizer_state, resolve_checkpoint, rng_state,
    save_checkpoint,
)
from .common import check_finite, reduce_sum, rng_for, seed_for, seeded_permutation, trainable_parameters
from .data import ImageCache
from .gradreg import (
    PROJECTION_MODES, SceneTeacher, parameter_groups, qgr_direction, scene_logits, scene_loss_sum, scene_prompt_ids,
    scene_text_features, two_vjps,
)

# stream keys (second element of every rng key), so that the streams never overlap
POOL_KEY, CHOICE_KEY, FRESH_KEY = 101, 102, 103
POOL_DROPOUT_KEY, HEAD_DROPOUT_KEY, FRESH_DROPOUT_KEY = 104, 105, 106
SELECT_METRICS = ("srcc", "plcc+srcc")
LR_DECAY_RULES = ("train_loss", "released")
MIXED_PRECISION = {None: None, "no": None, "fp16": torch.float16, "bf16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------
# Trainable set and the staged student forward
# ----------------------------------------------------------------------------------------------


def _num_layers(model) -> tuple[int, int]:
    clip = model.clip
    return len(clip.vision_model.encoder.layers), len(clip.text_model.encoder.layers)


def select_trainable(model, top_k: int = 4, train_context: bool = True) -> dict[str, torch.nn.Parameter]:
    """Set `requires_grad` for fine-tuning and return `{name: parameter}` of the trainable set.

    Trainable: the text context (unless `train_context=False`), and with `top_k > 0` the top `top_k`
    blocks of the vision and text towers plus their final norms. Everything else (embeddings, lower
    blocks, projections, logit scale, the visual prompts and their extra norm) is frozen.
    """
    n_vision, n_text = _num_layers(model)
    if not isinstance(top_k, int) or not 0 <= top_k <= min(n_vision, n_text):
        raise ValueError(
            f"top_k must be an integer in [0, {min(n_vision, n_text)}] (the towers have {n_vision} vision and "
            f"{n_text} text blocks), got {top_k!r}"
        )
    model.requires_grad_(False)
    if train_context:
        model.text_context.requires_grad_(True)
    if top_k:
        clip = model.clip
        for layer in list(clip.vision_model.encoder.layers)[n_vision - top_k :]:
            layer.requires_grad_(True)
        for layer in list(clip.text_model.encoder.layers)[n_text - top_k :]:
            layer.requires_grad_(True)
        clip.vision_model.post_layernorm.requires_grad_(True)
        clip.text_model.final_layer_norm.requires_grad_(True)
    params = trainable_parameters(model)
    if not params:
        raise ValueError("nothing to train: top_k=0 and train_context=False")
    return params


def dropout_generators(keys_per_sample) -> list[torch.Generator]:
    """One CPU `torch.Generator` per sample, seeded from that sample's integer keys (its dropout stream)."""
    return [torch.Generator().manual_seed(seed_for(*keys)) for keys in keys_per_sample]


def vision_trunk(model, pixel_values: torch.Tensor, end: int, generators=None) -> torch.Tensor:
    """The hidden states entering vision block `end` (the frozen trunk), without gradients. In train mode
    the prompts' dropout masks come from `generators` (one per image; see `DeepVisualPrompts.tokens`)."""
    with torch.no_grad():
        prompts = model.visual_prompts
        hidden = embed_image(model.clip, prompts, pixel_values, generators)
        return run_vision_layers(model.clip, prompts, hidden, 0, end, generators)


def vision_head(model, hidden: torch.Tensor, start: int, generators=None) -> torch.Tensor:
    """Projected image features from the hidden states entering block `start` (differentiable)."""
    prompts = model.visual_prompts
    hidden = run_vision_layers(model.clip, prompts, hidden, start, generators=generators)
    return pool_image(model.clip, finish_vision(model.clip, prompts, hidden))


def quality_logits(model, image_features: torch.Tensor) -> torch.Tensor:
    """`GRMPIQAModel.forward`'s logits from projected image features (the same three operations; a test
    checks that `quality_logits(vision_head(vision_trunk(x)))` equals `model(x).logits`)."""
    image = F.normalize(image_features, dim=-1)
    text = F.normalize(model.get_text_features(), dim=-1)
    return model.clip.logit_scale.exp() * image @ text.t().to(image.dtype)


def resolve_tokenizer(model, tokenizer=None):
    """The CLIP tokenizer for the scene prompts: `tokenizer`, or the one of the model's backbone."""
    if tokenizer is not None:
        return tokenizer
    source = getattr(model.config, "base_model_name_or_path", None)
    from ..models import TINY_BACKBONE

    if source == TINY_BACKBONE:
        from ..testing import tiny_tokenizer

        return tiny_tokenizer()
    if not source:
        raise ValueError("QGR needs the CLIP tokenizer for the scene prompts: pass tokenizer=... (the model's "
                         "config names no backbone)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, revision=getattr(model.config, "base_model_revision", None))
    except Exception as exc:  # noqa: BLE001 - re-raised with the fix
        raise ValueError(f"QGR needs the CLIP tokenizer for the scene prompts; loading it from the model's backbone "
                         f"{source!r} failed ({exc}). Pass tokenizer=... or a local backbone directory.") from exc


def _processor_settings(processor) -> dict:
    return {
        "crop_size": int(processor.crop_size), "resize_size": int(processor.resize_size),
        "resize_mode": processor.resize_mode, "resample": processor.resample,
        "image_mean": [round(float(v), 6) for v in processor.image_mean],
        "image_std": [round(float(v), 6) for v in processor.image_std],
        "do_normalize": bool(getattr(processor, "do_normalize", True)),
    }


class FinetuneHistory(list):
    """The per-epoch history (a list of dicts with `epoch`, `step`, `loss`, ...), plus how the returned
    model was chosen: `selection` (None: the last epoch, else the monitored set's name), `selected_epoch`
    and `selected_metrics`."""

    selection: str | None = None
    selected_epoch: int | None = None
    selected_metrics: dict | None = None
    resumed_from: str | None = None
    stopped: str | None = None  # why training ended before `epochs` (the released learning-rate floor)


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


class FewShotTrainer:
    """Fine-tuning state and steps; `finetune()` is the simple entry point. See the module docstring.

    Args (all keyword-only but `model`, `images`, `labels`):
        model: a `GRMPIQAModel`; its trainable set is set by `select_trainable(model, top_k)`.
        images: an `ImageCache` built with `model.image_processor`, or a list of images (paths, PIL
            images, arrays), decoded once here.
        labels: quality in [0, 1] (higher = better), one per training sample.
        indices: the rows of `images` that are the training samples (default: all of them).
        qgr_lambda: QGR strength (5 in GRMP-IQA); 0 = plain fine-tuning with the quality loss only.
        projection: "qgr" or "prograd" (`gradreg.project_gradients`).
        top_k: number of top blocks of each tower trained.
        batch_size: samples per step over all processes (None: the whole training set, the paper's choice).
        micro_batch_size: samples per forward pass on one process (None: all of its samples at once);
            gradients of the micro-batches are summed, so it changes memory, not results.
        augment, flip, crop_pool: random crops (+ flips) from a fixed pool of `crop_pool` (crop, dropout
            draw) entries per image (None: fresh crops every epoch, no trunk cache); `augment=False`: centre
            crops only.
        batch_crops: the released augmentation instead: one crop offset per batch, drawn with
            `torch.manual_seed(steps_per_epoch * epoch + batch)` and `randint(margin, (3,))` (margin =
            resized - crop size, 20 for 244/224), flipped when the left offset < margin / 2. No trunk cache.
        prompt_dropout: train in train mode with the visual prompts' dropout active (the released code);
            False: eval mode.
        grouping: the QGR units, "fused_qkv" (the released rule on OpenAI CLIP's fused q/k/v tensors) or
            "per_tensor" (`gradreg.parameter_groups`).
        literal_scene_names: scene prompts as the released code tokenizes them ("a photo of a still_life").
        mixed_precision: None, "fp16" (the released code's `autocast`) or "bf16" for the forward passes.
        cache_trunk, cache_teacher: use the frozen-trunk cache / the cached teacher targets (results are
            the same either way; off = recompute every step).
        eval_sets: `{name: (indices, labels)}` scored (centre crops) every `eval_every` epochs and at the end.
        eval_before_training: also score the eval sets before the first step (a candidate for selection).
        select_on: the name of an eval set whose best `select_metric` picks the returned parameters (None:
            the last epoch). `select_metric`: "srcc" or "plcc+srcc" (the released code's).
        lr_decay_rule: "train_loss" (with `lr_decay_patience`: x`lr_decay_factor` when the training loss stops
            improving for that many epochs) or "released" (x`lr_decay_factor` when the `select_on` set has not
            improved for more than `lr_decay_patience` evaluations and more than 10 epochs are done; training
            stops once the rate falls below `stop_below_lr`).
    """

    def __init__(
        self,
        model,
        images,
        labels,
        *,
        indices=None,
        qgr_lambda: float = 5.0,
        projection: str = "qgr",
        top_k: int = 4,
        train_context: bool = True,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.0,
        batch_size: int | None = None,
        micro_batch_size: int | None = None,
        augment: bool = True,
        flip: bool = True,
        crop_pool: int | None = 4,
        cache_trunk: bool = True,
        cache_teacher: bool = True,
        lr_decay_patience: int | None = None,
        lr_decay_factor: float = 0.3,
        min_lr: float = 0.0,
        lr_decay_rule: str = "train_loss",
        stop_below_lr: float | None = None,
        eval_sets: dict | None = None,
        eval_every: int = 1,
        eval_before_training: bool = False,
        select_on: str | None = None,
        select_metric: str = "srcc",
        batch_crops: bool = False,
        prompt_dropout: bool = True,
        grouping: str = "fused_qkv",
        literal_scene_names: bool = False,
        mixed_precision: str | None = None,
        seed: int = 0,
        tokenizer=None,
        accelerator=None,
        batched_vjp: bool = False,
        max_cache_gib: float = 8.0,
        cache_batch_size: int = 32,
        progress: bool = True,
    ):
        if projection not in PROJECTION_MODES:
            raise ValueError(f"projection must be one of {PROJECTION_MODES}, got {projection!r}")
        if not math.isfinite(qgr_lambda) or qgr_lambda < 0:
            raise ValueError(f"qgr_lambda must be a finite number >= 0, got {qgr_lambda}")
        if crop_pool is not None and crop_pool < 1:
            raise ValueError(f"crop_pool must be >= 1 or None (fresh crops every epoch), got {crop_pool}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (full batch), got {batch_size}")
        if micro_batch_size is not None and micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1 or None, got {micro_batch_size}")
        if eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {eval_every}")
        eval_sets = dict(eval_sets or {})
        if select_on is not None and select_on not in eval_sets:
            raise ValueError(f"select_on={select_on!r} names no eval set (have {sorted(eval_sets)})")
        if select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric must be one of {SELECT_METRICS}, got {select_metric!r}")
        if lr_decay_rule not in LR_DECAY_RULES:
            raise ValueError(f"lr_decay_rule must be one of {LR_DECAY_RULES}, got {lr_decay_rule!r}")
        if lr_decay_rule == "released" and (select_on is None or lr_decay_patience is None):
            raise ValueError("lr_decay_rule='released' decays on the select_on set: give select_on and lr_decay_patience")
        if mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {sorted(k for k in MIXED_PRECISION if k)} or None, "
                             f"got {mixed_precision!r}")
        if batch_crops and not augment:
            raise ValueError("batch_crops draws random crops: it needs augment=True")
        self.model = model
        self.accelerator = accelerator
        self.device = accelerator.device if accelerator is not None else next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype  # crops are cast to the model's dtype (float64 in tests)
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self.seed, self.lam, self.projection, self.top_k = int(seed), float(qgr_lambda), projection, top_k
        self.batched_vjp, self.micro_batch_size, self.cache_batch_size = batched_vjp, micro_batch_size, cache_batch_size
        self.flip = flip
        self.batch_crops = batch_crops
        self.pool = None if batch_crops else (crop_pool if augment else 1)
        self.augment = augment
        self.prompt_dropout = bool(prompt_dropout) and model.visual_prompts is not None
        self.autocast_dtype = MIXED_PRECISION[mixed_precision]
        self.select_metric, self.lr_decay_rule, self.stop_below_lr = select_metric, lr_decay_rule, stop_below_lr
        self.eval_before_training = eval_before_training

        # ---------------- images and samples
        if not isinstance(images, ImageCache):
            images = ImageCache(model.image_processor, images, progress=self.progress)
        elif _processor_settings(images.processor) != _processor_settings(model.image_processor):
            raise ValueError(
                "the ImageCache was built with other preprocessing than the model's: "
                f"{_processor_settings(images.processor)} vs {_processor_settings(model.image_processor)}"
            )
        self.images = images
        indices = list(range(len(images))) if indices is None else [int(i) for i in indices]
        labels = np.asarray(labels, dtype=np.float64).reshape(-1)
        if len(labels) != len(indices):
            raise ValueError(f"{len(indices)} training images but {len(labels)} labels")
        self.train_indices, self.train_labels = self._drop_failed(indices, labels, "training")
        if not self.train_indices:
            raise ValueError("no readable training image")
        self.num_samples = len(self.train_indices)
        self.batch_size = min(batch_size or self.num_samples, self.num_samples)
        self.steps_per_epoch = math.ceil(self.num_samples / self.batch_size)
        self.labels_tensor = torch.tensor(self.train_labels, dtype=self.dtype, device=self.device)
        self.eval_sets = {}
        for name, (eval_indices, eval_labels) in eval_sets.items():
            kept = self._drop_failed([int(i) for i in eval_indices], np.asarray(eval_labels, dtype=np.float64), name)
            self.eval_sets[name] = kept
        self.eval_every, self.select_on = eval_every, select_on

        # ---------------- model, trainable set, optimizer
        model.to(self.device).eval()
        self.trainable = select_trainable(model, top_k, train_context)
        self.names, self.params = list(self.trainable), list(self.trainable.values())
        self.num_trainable = sum(p.numel() for p in self.params)
        self.start = _num_layers(model)[0] - top_k
        self.start_fingerprint = self._fingerprint()
        self.groups = parameter_groups(self.names, grouping)
        self.optimizer = torch.optim.SGD(self.params, lr=learning_rate, momentum=momentum, weight_decay=weight_decay)
        self.scheduler = None
        self.lr_decay_patience, self.lr_decay_factor = lr_decay_patience, lr_decay_factor
        if lr_decay_patience is not None and lr_decay_rule == "train_loss":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=lr_decay_factor, patience=lr_decay_patience, min_lr=min_lr
            )

        # ---------------- caches
        self.cache_trunk = cache_trunk and self.pool is not None
        self.cache_teacher = cache_teacher and self.pool is not None
        self.max_cache_bytes = max_cache_gib * 2**30
        self.local_positions = [p for p in range(self.num_samples) if p % self.world == self.rank]
        self.teacher = None
        self.teacher_table = None  # (num_samples, pool, n_scenes), every process holds all of it
        self.trunk: dict[tuple[int, int], torch.Tensor] = {}  # (image index, crop id) -> (T, D)
        self.eval_trunk: dict[int, torch.Tensor] = {}
        self.scene_ids = None
        if self.lam != 0:
            self.scene_ids = scene_prompt_ids(resolve_tokenizer(model, tokenizer), literal=literal_scene_names)
            self.scene_ids = self.scene_ids.to(self.device)
        self.settings = {
            "qgr_lambda": self.lam, "projection": projection, "grouping": grouping, "top_k": top_k,
            "train_context": train_context, "prompt_dropout": self.prompt_dropout, "batch_crops": batch_crops,
            "literal_scene_names": literal_scene_names, "mixed_precision": mixed_precision,
            "lr_decay_rule": lr_decay_rule, "stop_below_lr": stop_below_lr, "select_metric": select_metric,
            "eval_before_training": eval_before_training,
            "learning_rate": learning_rate, "weight_decay": weight_decay, "momentum": momentum,
            "batch_size": self.batch_size, "augment": augment, "flip": flip, "crop_pool": self.pool,
            "lr_decay_patience": lr_decay_patience, "lr_decay_factor": lr_decay_factor, "min_lr": min_lr,
            "seed": self.seed, "num_samples": self.num_samples, "select_on": select_on, "eval_every": eval_every,
            "train_indices_sha256": hashlib.sha256(np.asarray(self.train_indices, np.int64).tobytes()).hexdigest(),
        }
        # training state
        self.step = 0
        self.history = FinetuneHistory()
        self.accumulator = self._new_accumulator()
        self.best_metric = -math.inf
        self.best_epoch = None
        self.best_metrics = None
        self.best_state: list[torch.Tensor] | None = None
        self.evaluations_since_best = 0  # the released rule's `ct`
        self.stopped: str | None = None
        self.prepared = False

    # ------------------------------------------------------------------ helpers

    def _drop_failed(self, indices, labels, what):
        failed = [i for i in indices if self.images.images[i] is None]
        if failed:
            warnings.warn(f"{len(failed)} {what} image(s) could not be read and are left out: rows {failed[:20]}")
            keep = [k for k, i in enumerate(indices) if self.images.images[i] is not None]
            return [indices[k] for k in keep], labels[keep]
        return list(indices), labels

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name, param in zip(self.names, self.params):
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    @staticmethod
    def _new_accumulator() -> dict:
        return {"loss": 0.0, "loss_semantic": 0.0, "projected": 0.0, "count": 0, "steps": 0, "seconds": 0.0}

    def _chunks(self, items, size):
        size = size or max(len(items), 1)
        return [items[i : i + size] for i in range(0, len(items), size)]

    def _crop(self, image_index: int, crop_id: int, epoch: int, batch_index: int = 0) -> torch.Tensor:
        if not self.augment:
            return self.images.crop(image_index)
        if self.batch_crops:
            return self.images.crop_at(image_index, *self.batch_offsets(epoch, batch_index))
        if self.pool is None:
            return self.images.crop(image_index, rng_for(self.seed, FRESH_KEY, epoch, image_index), self.flip)
        return self.images.crop(image_index, rng_for(self.seed, POOL_KEY, crop_id, image_index), self.flip)

    def batch_offsets(self, epoch: int, batch_index: int) -> tuple[int, int, bool]:
        """`(top, left, flip)` of every image of a batch, as the released code draws them: the torch seed
        `steps_per_epoch * epoch + batch_index`, `randint(margin, (3,))`, flip when left < margin / 2."""
        processor = self.images.processor
        if processor.resize_mode != "square":
            raise ValueError("batch_crops (the released augmentation) needs square resizing (resize_mode='square')")
        margin = max(processor.resize_size, processor.crop_size) - processor.crop_size
        if margin == 0:
            return 0, 0, False
        generator = torch.Generator().manual_seed(self.steps_per_epoch * epoch + batch_index)
        offsets = torch.randint(margin, (3,), generator=generator)
        top, left = int(offsets[0]), int(offsets[1])
        return top, left, self.flip and left < margin // 2

    def crop_ids(self, positions, epoch: int) -> list[int]:
        """The crop of each sample at `epoch`: an index into its pool, drawn from (seed, epoch, image)."""
        if self.pool is None or self.pool == 1:
            return [0] * len(positions)
        return [int(rng_for(self.seed, CHOICE_KEY, epoch, self.train_indices[p]).integers(self.pool)) for p in positions]

    def pixels(self, positions, crop_ids, epoch: int, batch_index: int = 0) -> torch.Tensor:
        crops = [self._crop(self.train_indices[p], c, epoch, batch_index) for p, c in zip(positions, crop_ids)]
        return torch.stack(crops).to(self.device, self.dtype)

    def trunk_generators(self, positions, crop_ids, epoch: int):
        """Dropout streams of the frozen layers: a pool entry's own (so the cached trunk is exact), or fresh
        ones per (epoch, image) when crops are fresh. None without prompt dropout."""
        if not self.prompt_dropout:
            return None
        images = [self.train_indices[p] for p in positions]
        if self.pool is None:
            return dropout_generators((self.seed, FRESH_DROPOUT_KEY, epoch, i) for i in images)
        return dropout_generators((self.seed, POOL_DROPOUT_KEY, c, i) for c, i in zip(crop_ids, images))

    def head_generators(self, positions, epoch: int, trunk_generators=None):
        """Dropout streams of the trainable layers: fresh every epoch, keyed by (seed, epoch, image); with
        fresh crops the trunk's streams simply continue."""
        if not self.prompt_dropout:
            return None
        if self.pool is None:
            return trunk_generators
        return dropout_generators((self.seed, HEAD_DROPOUT_KEY, epoch, self.train_indices[p]) for p in positions)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _training_mode(self) -> None:
        # train mode only switches the visual prompts' dropout on (CLIP has none)
        self.model.train(self.prompt_dropout)

    def batches(self, epoch: int) -> list[list[int]]:
        """Sample positions of each step of `epoch` (over all processes): the whole set in order for
        full-batch training, else a permutation keyed by (seed, epoch)."""
        if self.batch_size >= self.num_samples:
            return [list(range(self.num_samples))]
        order = seeded_permutation(self.num_samples, self.seed, epoch).tolist()
        return self._chunks(order, self.batch_size)

    # ------------------------------------------------------------------ caches

    def prepare(self) -> None:
        """Compute the frozen-trunk cache and the teacher targets, from the model as it is now (the
        starting model: call before any update, and before loading a checkpoint's parameters)."""
        if self.prepared:
            return
        started = time.perf_counter()
        local_items = [(p, c) for p in self.local_positions for c in range(self.pool or 1)]
        if self.cache_trunk:
            per_item = self._trunk_bytes_per_item()
            eval_items = sum(len(self._local_eval_positions(n)) for n in self.eval_sets)
            needed = per_item * (len(local_items) + eval_items)
            if needed > self.max_cache_bytes:
                warnings.warn(f"the frozen-trunk cache would need {needed / 2**30:.1f} GiB (> max_cache_gib="
                              f"{self.max_cache_bytes / 2**30:g}); recomputing the trunk every step instead "
                              "(same results, slower). Lower crop_pool or raise max_cache_gib.")
                self.cache_trunk = False
        if self.lam != 0:
            self.teacher = SceneTeacher(self.model.clip, self.scene_ids, copy_weights=not self.cache_teacher)
        bar = tqdm(total=len(local_items), desc="Caching frozen trunk / teacher", unit="crop",
                   disable=not self.progress or not (self.cache_trunk or self.cache_teacher) or not local_items)
        table = None
        if self.lam != 0 and self.cache_teacher:
            table = torch.zeros(self.num_samples, self.pool, self.teacher.num_classes, device=self.device,
                                dtype=self.dtype)
        if self.cache_trunk or table is not None:
            self._training_mode()  # the pool entries' dropout draws of the frozen layers
            for chunk in self._chunks(local_items, self.cache_batch_size):
                positions, crops = [p for p, _ in chunk], [c for _, c in chunk]
                pixels = self.pixels(positions, crops, epoch=0)
                with self._autocast():
                    if self.cache_trunk:
                        generators = self.trunk_generators(positions, crops, epoch=0)
                        hidden = vision_trunk(self.model, pixels, self.start, generators)
                        for (p, c), h in zip(chunk, hidden):
                            self.trunk[(self.train_indices[p], c)] = h.clone()
                    if table is not None:
                        probs = self.teacher.probs(pixels)
                        for (p, c), row in zip(chunk, probs):
                            table[p, c] = row
                bar.update(len(chunk))
        bar.close()
        if table is not None:
            self.teacher_table = reduce_sum(self.accelerator, [table])[0]
        if self.cache_trunk:
            self.model.eval()
            for name in self.eval_sets:
                indices = self.eval_sets[name][0]
                for chunk in self._chunks(self._local_eval_positions(name), self.cache_batch_size):
                    rows = [indices[p] for p in chunk]
                    pixels = self.images.batch(rows).to(self.device, self.dtype)
                    with self._autocast():
                        hidden = vision_trunk(self.model, pixels, self.start)
                    for row, h in zip(rows, hidden):
                        self.eval_trunk[row] = h.clone()
        self.prepare_seconds = time.perf_counter() - started
        self.prepared = True

    def _trunk_bytes_per_item(self) -> int:
        vision = self.model.config.clip_config.vision_config
        tokens = 1 + self.model.config.num_visual_prompts + (vision.image_size // vision.patch_size) ** 2
        return tokens * vision.hidden_size * torch.finfo(torch.float32).bits // 8

    def _local_eval_positions(self, name) -> list[int]:
        return [p for p in range(len(self.eval_sets[name][0])) if p % self.world == self.rank]

    def trunk_hidden(self, positions, crop_ids, epoch: int, pixels=None, generators=None) -> torch.Tensor:
        """Hidden states entering the first trainable block, from the cache or recomputed (in the current mode)
        from `pixels` with the trunk's dropout streams `generators` (default: `trunk_generators`)."""
        if self.cache_trunk:
            return torch.stack([self.trunk[(self.train_indices[p], c)] for p, c in zip(positions, crop_ids)])
        if pixels is None:
            pixels = self.pixels(positions, crop_ids, epoch)
        if generators is None:
            generators = self.trunk_generators(positions, crop_ids, epoch)
        return vision_trunk(self.model, pixels, self.start, generators)

    def teacher_targets(self, positions, crop_ids, epoch: int, pixels=None) -> torch.Tensor:
        if self.teacher_table is not None:
            return self.teacher_table[torch.as_tensor(positions, device=self.device),
                                      torch.as_tensor(crop_ids, device=self.device)]
        if pixels is None:
            pixels = self.pixels(positions, crop_ids, epoch)
        return self.teacher.probs(pixels)

    # ------------------------------------------------------------------ one step

    def local_losses(self, positions, epoch: int, batch_index: int = 0):
        """`(quality loss sum, semantic loss sum or None)` of this process's `positions`, from one forward
        pass (the image features serve both losses)."""
        crop_ids = self.crop_ids(positions, epoch)
        pixels = None
        if not self.cache_trunk or (self.lam != 0 and self.teacher_table is None):
            pixels = self.pixels(positions, crop_ids, epoch, batch_index)
        with self._autocast():
            # with fresh crops the head continues the trunk's dropout streams, so they are made here
            trunk_generators = None if self.cache_trunk else self.trunk_generators(positions, crop_ids, epoch)
            hidden = self.trunk_hidden(positions, crop_ids, epoch, pixels, trunk_generators)
            generators = self.head_generators(positions, epoch, trunk_generators)
            features = vision_head(self.model, hidden, self.start, generators)
            labels = self.labels_tensor[torch.as_tensor(positions, device=self.device)]
            loss_quality = quality_loss(quality_logits(self.model, features), labels) * len(positions)
            if self.lam == 0:
                return loss_quality, None
            targets = self.teacher_targets(positions, crop_ids, epoch, pixels)
            student = scene_logits(self.model.clip, features, scene_text_features(self.model.clip, self.scene_ids))
            return loss_quality, scene_loss_sum(student, targets)

    def train_step(self, batch_positions, epoch: int, batch_index: int = 0) -> dict:
        """One optimizer step on the samples `batch_positions` (over all processes); `batch_index` is the
        step's position within its epoch (it seeds the released per-batch crops)."""
        self.prepare()  # caches come from the starting model: before the first update
        self._training_mode()
        started = time.perf_counter()
        local = [p for p in batch_positions if p % self.world == self.rank]
        g_d = g_g = None
        sums = [0.0, 0.0, 0.0]
        for chunk in self._chunks(local, self.micro_batch_size) if local else []:
            loss_quality, loss_semantic = self.local_losses(chunk, epoch, batch_index)
            if self.lam != 0:
                d, g = two_vjps(self.params, loss_quality, loss_semantic, batched=self.batched_vjp)
            else:
                d = list(torch.autograd.grad(loss_quality, self.params, allow_unused=True, materialize_grads=True))
                g = []
            if g_d is None:
                g_d, g_g = d, g
            else:  # micro-batches: sum the gradient sums
                torch._foreach_add_(g_d, d)
                if g:
                    torch._foreach_add_(g_g, g)
            sums[0] += float(loss_quality.detach())
            sums[1] += float(loss_semantic.detach()) if loss_semantic is not None else 0.0
            sums[2] += len(chunk)
        if g_d is None:  # no sample of this step here: take part in the reduction with zeros
            g_d = [torch.zeros_like(p) for p in self.params]
            g_g = [torch.zeros_like(p) for p in self.params] if self.lam != 0 else []
        grads, stats = qgr_direction(g_d, g_g, tuple(sums), self.lam, self.projection, self.accelerator, self.groups)
        next_step = self.step + 1
        check_finite(stats["loss"], "the fine-tuning (quality) loss", next_step)
        if stats["loss_semantic"] is not None:
            check_finite(stats["loss_semantic"], "the semantic (scene) loss", next_step)
        for param, grad in zip(self.params, grads):
            param.grad = grad.to(param.dtype)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step = next_step
        stats["seconds"] = time.perf_counter() - started
        return stats

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def scores(self, name: str) -> np.ndarray:
        """Quality scores of eval set `name` (centre crops, eval mode), identical on every process."""
        was_training = self.model.training
        self.model.eval()
        indices = self.eval_sets[name][0]
        scores = torch.zeros(len(indices), dtype=torch.float64, device=self.device)
        for chunk in self._chunks(self._local_eval_positions(name), self.cache_batch_size):
            rows = [indices[p] for p in chunk]
            with self._autocast():
                if self.cache_trunk:
                    hidden = torch.stack([self.eval_trunk[r] for r in rows])
                else:
                    hidden = vision_trunk(self.model, self.images.batch(rows).to(self.device, self.dtype), self.start)
                logits = quality_logits(self.model, vision_head(self.model, hidden, self.start))
            scores[torch.as_tensor(chunk, device=self.device)] = logits.float().softmax(dim=-1)[:, 0].double()
        self.model.train(was_training)
        return reduce_sum(self.accelerator, [scores])[0].cpu().numpy()

    def evaluate(self) -> dict:
        out = {}
        for name, (_, labels) in self.eval_sets.items():
            metrics = compute_metrics(self.scores(name), labels)
            out.update({f"{name}_srcc": metrics["srcc"], f"{name}_plcc": metrics["plcc"]})
        return out

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> tuple[dict, dict]:
        tensors = {f"param.{n}": p for n, p in zip(self.names, self.params)}
        opt_tensors, opt_meta = optimizer_state(self.optimizer)
        tensors.update(opt_tensors)
        tensors.update(rng_state())
        if self.best_state is not None:
            tensors.update({f"best.{n}": t for n, t in zip(self.names, self.best_state)})
        state = {
            "optimizer": opt_meta,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "history": list(self.history),
            "accumulator": self.accumulator,
            "best": {"metric": self.best_metric if math.isfinite(self.best_metric) else None,
                     "epoch": self.best_epoch, "metrics": self.best_metrics},
            "evaluations_since_best": self.evaluations_since_best,
            "stopped": self.stopped,
            "settings": self.settings,
            "start_fingerprint": self.start_fingerprint,
            "trainable": self.names,
        }
        return tensors, state

    def save(self, output_dir, keep_last: int | None = 2) -> None:
        tensors, state = self.state()
        if self.is_main:
            save_checkpoint(output_dir, self.step, tensors, state, keep_last=keep_last)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def load(self, path) -> None:
        """Restore a checkpoint written by `save` (after `prepare`, on the same starting model)."""
        tensors, state = load_checkpoint(path)
        if state.get("trainable") != self.names:
            raise ValueError(f"checkpoint {path} trains other parameters ({len(state.get('trainable', []))} tensors) "
                             f"than this run ({len(self.names)}): different top_k or model?")
        differing = {k: (state["settings"].get(k), v) for k, v in self.settings.items() if state["settings"].get(k) != v}
        if differing:
            raise ValueError(f"checkpoint {path} was written with other settings: " +
                             ", ".join(f"{k}: {a!r} (checkpoint) vs {b!r} (now)" for k, (a, b) in differing.items()))
        if state["start_fingerprint"] != self.start_fingerprint:
            raise ValueError(f"checkpoint {path} continues a run that started from another model: pass the same "
                             "starting model (e.g. the same --model / --backbone and seed) to resume")
        with torch.no_grad():
            for name, param in zip(self.names, self.params):
                param.copy_(tensors[f"param.{name}"].to(param.device))
        load_optimizer_state(self.optimizer, {k: v.to(self.device) for k, v in tensors.items()}, state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        load_rng_state(tensors)
        self.step = int(state["step"])
        self.history = FinetuneHistory(state["history"])
        self.accumulator = dict(state["accumulator"])
        best = state["best"]
        self.best_metric = -math.inf if best["metric"] is None else float(best["metric"])
        self.best_epoch, self.best_metrics = best["epoch"], best["metrics"]
        if f"best.{self.names[0]}" in tensors:
            self.best_state = [tensors[f"best.{n}"].to(self.device) for n in self.names]
        self.evaluations_since_best = int(state.get("evaluations_since_best", 0))
        self.stopped = state.get("stopped")
        self.history.resumed_from = str(path)

    # ------------------------------------------------------------------ the loop

    def fit(self, epochs: int, output_dir=None, checkpointing_steps: int | None = None,
            keep_checkpoints: int | None = 2) -> FinetuneHistory:
        """Train until `epochs` epochs are done (continuing from the current step after `load`)."""
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        if checkpointing_steps is not None and (checkpointing_steps < 1 or output_dir is None):
            raise ValueError("checkpointing_steps needs an integer >= 1 and an output_dir")
        self.prepare()
        total_steps = epochs * self.steps_per_epoch
        if self.eval_before_training and self.step == 0 and self.eval_sets and not self.history:
            self._evaluate_before_training()
        bar = tqdm(total=total_steps, initial=min(self.step, total_steps), desc="Fine-tuning", unit="step",
                   disable=not self.progress)
        while self.step < total_steps and self.stopped is None:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            batch = self.batches(epoch)[offset]
            stats = self.train_step(batch, epoch, offset)
            acc = self.accumulator
            acc["loss"] += stats["loss"] * stats["count"]
            acc["loss_semantic"] += (stats["loss_semantic"] or 0.0) * stats["count"]
            acc["projected"] += stats["projected"]
            acc["count"] += stats["count"]
            acc["steps"] += 1
            acc["seconds"] += stats["seconds"]
            if offset == self.steps_per_epoch - 1:
                self._end_epoch(epoch, epochs)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{stats['loss']:.4f}")
            done = self.step == total_steps or self.stopped is not None
            if checkpointing_steps and (self.step % checkpointing_steps == 0 or done):
                self.save(output_dir, keep_last=keep_checkpoints)
        bar.close()
        self.model.eval()
        self._select()
        return self.history

    def _selection_value(self, entry: dict) -> float:
        """The monitored number of an evaluation: SRCC, or PLCC + SRCC (the released code's); NaN -> -inf."""
        prefix = self.select_on + "_"
        value = entry[prefix + "srcc"] + (entry[prefix + "plcc"] if self.select_metric == "plcc+srcc" else 0.0)
        return value if math.isfinite(value) else -math.inf

    def _consider(self, entry: dict, epoch: int) -> bool:
        """Keep the current parameters if `entry` is the best evaluation so far (strictly better)."""
        metric = self._selection_value(entry)
        if self.best_state is not None and not metric > self.best_metric:
            return False
        self.best_metric, self.best_epoch = metric, epoch
        self.best_metrics = {k: v for k, v in entry.items() if k.startswith(self.select_on + "_")}
        self.best_state = [p.detach().clone() for p in self.params]
        return True

    def _evaluate_before_training(self) -> None:
        """Score the eval sets before the first step (the released code's epoch -1): the starting model is a
        candidate for selection."""
        entry = {"epoch": 0, "step": 0, "lr": self.optimizer.param_groups[0]["lr"], **self.evaluate()}
        if self.select_on is not None:
            self._consider(entry, 0)
        self.history.append(entry)

    def _end_epoch(self, epoch: int, epochs: int) -> None:
        acc = self.accumulator
        entry = {
            "epoch": epoch + 1,
            "step": self.step,
            "loss": acc["loss"] / acc["count"],
            "loss_semantic": acc["loss_semantic"] / acc["count"] if self.lam != 0 else None,
            "projected": acc["projected"] / acc["steps"] if self.lam != 0 else None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": acc["seconds"],
        }
        if self.eval_sets and ((epoch + 1) % self.eval_every == 0 or epoch + 1 == epochs):
            entry.update(self.evaluate())
            if self.select_on is not None:
                self.evaluations_since_best += 1
                if self._consider(entry, epoch + 1):
                    self.evaluations_since_best = 0
        if self.scheduler is not None:
            self.scheduler.step(entry["loss"])
        if self.lr_decay_rule == "released":
            self._released_decay(epoch, entry)
        self.history.append(entry)
        self.accumulator = self._new_accumulator()

    def _released_decay(self, epoch: int, entry: dict) -> None:
        """The released schedule: x factor after more than `lr_decay_patience` evaluations without a new best
        (and past epoch 10, 0-based); stop once the rate is below `stop_below_lr`."""
        if not (self.evaluations_since_best > self.lr_decay_patience and epoch > 10):
            return
        self.evaluations_since_best = 0
        for group in self.optimizer.param_groups:
            group["lr"] *= self.lr_decay_factor
        entry["lr_decayed_to"] = self.optimizer.param_groups[0]["lr"]
        if self.stop_below_lr is not None and self.optimizer.param_groups[0]["lr"] < self.stop_below_lr:
            self.stopped = f"learning rate {self.optimizer.param_groups[0]['lr']:.3g} < {self.stop_below_lr:g} after epoch {epoch + 1}"
            entry["stopped"] = self.stopped

    def _select(self) -> None:
        self.history.selection = self.select_on
        self.history.stopped = self.stopped
        if self.select_on is not None and self.best_state is not None:
            with torch.no_grad():
                for param, best in zip(self.params, self.best_state):
                    param.copy_(best)
            self.history.selected_epoch, self.history.selected_metrics = self.best_epoch, self.best_metrics
        elif self.history:
            self.history.selected_epoch = self.history[-1]["epoch"]


def finetune(
    model,
    images,
    labels,
    epochs: int = 100,
    qgr_lambda: float = 5.0,
    top_k: int = 4,
    seed: int = 0,
    accelerator=None,
    progress: bool = True,
    output_dir=None,
    checkpointing_steps: int | None = None,
    resume_from_checkpoint=None,
    keep_checkpoints: int | None = 2,
    **options,
) -> FinetuneHistory:
    """Fine-tune `model` in place on (images, labels in [0, 1]) with QGR; returns the per-epoch history.

    `images` is a list of images (paths, PIL images, arrays) or an `ImageCache` (then `indices=` picks the
    training rows). Defaults are the paper's: SGD lr 1e-3, weight decay 1e-4, full batch, lambda 5,
    top 4 blocks; `qgr_lambda=0` is plain fine-tuning. `checkpointing_steps=N` writes a checkpoint every N
    steps under `<output_dir>/checkpoints/`; `resume_from_checkpoint="latest"` (or a checkpoint folder)
    continues a run exactly. Every other option of `FewShotTrainer` (learning_rate, weight_decay, momentum,
    batch_size, crop_pool, augment, projection, eval_sets, select_on, lr_decay_patience, tokenizer, ...)
    can be passed by keyword. The model is left in eval mode.
    """
    trainer = FewShotTrainer(model, images, labels, qgr_lambda=qgr_lambda, top_k=top_k, seed=seed,
                             accelerator=accelerator, progress=progress, **options)
    trainer.prepare()
    if resume_from_checkpoint is not None:
        if str(resume_from_checkpoint) == "latest" and output_dir is None:
            raise ValueError('resume_from_checkpoint="latest" needs output_dir')
        path = resolve_checkpoint(output_dir, resume_from_checkpoint)
        if path is not None:
            trainer.load(path)
    history = trainer.fit(epochs, output_dir=output_dir, checkpointing_steps=checkpointing_steps,
                          keep_checkpoints=keep_checkpoints)
    model.eval()
    return history


__all__ = [
    "FewShotTrainer", "FinetuneHistory", "finetune", "quality_logits", "resolve_tokenizer", "select_trainable",
    "vision_head", "vision_trunk",
]
