"""Few-shot fine-tuning of a GRMP-IQA model, with quality-aware gradient regularization (GRMP-IQA stage 2).

What trains (`model.set_trainable`, design §2): the text context, the top `k` blocks of both CLIP towers
and their final norms (vision `post_layernorm`, text `final_layer_norm`); the visual prompts and
everything below the top blocks stay frozen. SGD (lr 1e-3, weight decay 1e-4), full batch by default,
optional x0.3 learning-rate decay (on a training-loss plateau, or the released code's test-driven rule), or
any `transformers.get_scheduler` schedule by name (`lr_scheduler_type`, `warmup_steps`).

The loop is `trainer.Trainer`; this module is its gradient rule (`gradreg.QGRGradient` over `local_losses`),
its batches (`batches`) and its callback (this class: per-epoch records, evaluation, selection, decay).

Mode: as in the released `finetune.py`, the model trains in train mode, so the dropout of the (frozen)
visual prompts is active (`prompt_dropout=True`, the default; CLIP itself has no dropout; False: eval mode,
this package before the fidelity change). Crops, the per-image dropout streams and the frozen-trunk and
teacher caches (computed once from the starting model: they change speed, not results) are
`fewshot_data.SampleCaches`.

Processes: the model is NOT wrapped in DDP. Sample `j` of the training list belongs to process
`j % num_processes` (so each process caches only its own samples' trunks); each process sums the gradients
of its samples' losses (two VJPs of one forward pass), the loop adds the sums across processes, and only
then are they divided by the global count and projected (`gradreg.qgr_direction`, per unit: each layer's
q/k/v weights and biases form one unit, as OpenAI CLIP's fused `in_proj`). Every random choice is keyed,
so 1 and 2 processes train the same parameters.

Checkpoints, exact resume, the NaN/inf stop, mixed precision (`mixed_precision`: the released code's fp16
autocast is "fp16") and trackers are the loop's. The model passed in must be the same starting model as in
the first run (checked).
"""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import torch

from ..evaluation.metrics import compute_metrics
from ..modeling.modeling_grmp_iqa import quality_loss
from .common import reduce_sum, seeded_permutation
from .data import ImageCache
from .fewshot_data import SampleCaches, chunks
from .gradreg import (
    PROJECTION_MODES, QGRGradient, parameter_groups, scene_logits, scene_loss_sum, scene_prompt_ids, scene_text_features,
)
from .trainer import Trainer, TrainerCallback

SELECT_METRICS = ("srcc", "plcc+srcc")
LR_DECAY_RULES = ("train_loss", "released")


# ----------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------


def resolve_tokenizer(model, tokenizer=None):
    """The CLIP tokenizer for the scene prompts: `tokenizer`, or the one of the model's backbone."""
    if tokenizer is not None:
        return tokenizer
    from ..models import TINY_BACKBONE, load_backbone

    source = getattr(model.config, "base_model_name_or_path", None)
    if source == TINY_BACKBONE:
        return load_backbone(TINY_BACKBONE)[1]
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
        "crop_size": int(processor.crop_side), "resize_size": int(processor.resize_size),
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


class FewShotTrainer(SampleCaches, TrainerCallback):
    """Fine-tuning state and steps; `finetune()` is the simple entry point. See the module docstring.

    Args (all keyword-only but `model`, `images`, `labels`):
        model: a `GRMPIQAModel`; its trainable set is set by `model.set_trainable(top_k, train_context)`.
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
        mixed_precision: "no", "fp16" (the released code's `autocast`) or "bf16" for the forward passes; None:
            the accelerator's (accelerate's config), else "no".
        loss_scaling: with fp16, dynamic loss scaling (default); False: unscaled gradients, as released.
        lr_scheduler_type, warmup_steps: a `transformers.get_scheduler` schedule by name, stepped every optimizer
            step (instead of the per-epoch rules below). report_to: trackers, see `trainer.resolve_report_to`.
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
        loss_scaling: bool = True,
        lr_scheduler_type: str | None = None,
        warmup_steps: int = 0,
        report_to="auto",
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
        if lr_scheduler_type is not None and (lr_decay_patience is not None or lr_decay_rule == "released"):
            raise ValueError("lr_scheduler_type (a per-step schedule) and lr_decay_patience / the released rule "
                             "(per-epoch decays) would both set the learning rate: choose one")
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

        # ---------------- model, trainable set
        model.to(self.device).eval()
        self.trainable = model.set_trainable(top_k_blocks=top_k, context=train_context)
        self.names, self.params = list(self.trainable), list(self.trainable.values())
        self.num_trainable = sum(p.numel() for p in self.params)
        self.start = len(model.clip.vision_model.encoder.layers) - top_k
        self.lr_decay_patience, self.lr_decay_factor = lr_decay_patience, lr_decay_factor

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
            "literal_scene_names": literal_scene_names,
            "lr_decay_rule": lr_decay_rule, "stop_below_lr": stop_below_lr, "select_metric": select_metric,
            "eval_before_training": eval_before_training, "batch_size": self.batch_size, "augment": augment, "flip": flip, "crop_pool": self.pool,
            "lr_decay_patience": lr_decay_patience, "lr_decay_factor": lr_decay_factor, "min_lr": min_lr,
            "seed": self.seed, "num_samples": self.num_samples, "select_on": select_on, "eval_every": eval_every,
            "train_indices_sha256": hashlib.sha256(np.asarray(self.train_indices, np.int64).tobytes()).hexdigest(),
        }
        # the loop: QGR over this trainer's losses (lambda 0: the quality loss alone), this trainer's batches,
        # and this trainer as the callback (epoch records, evaluation, selection, per-epoch decay)
        self.rule = QGRGradient(self.params, self._micro_batch_losses, self.lam, projection,
                                parameter_groups(self.names, grouping), batched_vjp)
        self.loop = Trainer(
            self.trainable, self.rule, self._batch, accelerator=accelerator, optimizer="sgd",
            learning_rate=learning_rate, weight_decay=weight_decay, momentum=momentum,
            lr_scheduler_type=lr_scheduler_type, warmup_steps=warmup_steps, mixed_precision=mixed_precision,
            loss_scaling=loss_scaling, callbacks=[self], signature=self.settings, report_to=report_to,
            run_name="fewshot", progress=progress, desc="Fine-tuning",
        )
        self.plateau = None
        if lr_decay_patience is not None and lr_decay_rule == "train_loss":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.loop.optimizer, mode="min", factor=lr_decay_factor, patience=lr_decay_patience, min_lr=min_lr
            )
        self.epochs = None
        self.accumulator = self._new_accumulator()
        self.evaluations_since_best = 0  # the released rule's `ct`
        self.prepared = False

    @property
    def step(self) -> int:
        return self.loop.step

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.loop.optimizer

    # ------------------------------------------------------------------ helpers

    def _drop_failed(self, indices, labels, what):
        failed = [i for i in indices if self.images.images[i] is None]
        if failed:
            warnings.warn(f"{len(failed)} {what} image(s) could not be read and are left out: rows {failed[:20]}")
            keep = [k for k, i in enumerate(indices) if self.images.images[i] is not None]
            return [indices[k] for k in keep], labels[keep]
        return list(indices), labels

    @staticmethod
    def _new_accumulator() -> dict:
        return {"loss": 0.0, "loss_semantic": 0.0, "projected": 0.0, "count": 0, "steps": 0, "seconds": 0.0}

    def _autocast(self):
        return self.loop.autocast()

    def _training_mode(self) -> None:
        # train mode only switches the visual prompts' dropout on (CLIP has none)
        self.model.train(self.prompt_dropout)

    def batches(self, epoch: int) -> list[list[int]]:
        """Sample positions of each step of `epoch` (over all processes): the whole set in order for
        full-batch training, else a permutation keyed by (seed, epoch)."""
        if self.batch_size >= self.num_samples:
            return [list(range(self.num_samples))]
        order = seeded_permutation(self.num_samples, self.seed, epoch).tolist()
        return chunks(order, self.batch_size)

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
            features = self.model.image_features_from_hidden(hidden, self.start, generators)
            labels = self.labels_tensor[torch.as_tensor(positions, device=self.device)]
            loss_quality = quality_loss(self.model.quality_logits(features), labels) * len(positions)
            if self.lam == 0:
                return loss_quality, None
            targets = self.teacher_targets(positions, crop_ids, epoch, pixels)
            student = scene_logits(self.model.clip, features, scene_text_features(self.model.clip, self.scene_ids))
            return loss_quality, scene_loss_sum(student, targets)

    def _micro_batch_losses(self, batch):
        """What the QGR rule differentiates: per micro-batch of this process's samples of the step,
        `(quality loss sum, semantic loss sum or None, count)`."""
        positions, epoch, batch_index = batch
        self._training_mode()  # (evaluations switch to eval mode)
        local = [p for p in positions if p % self.world == self.rank]
        for chunk in chunks(local, self.micro_batch_size) if local else []:
            loss_quality, loss_semantic = self.local_losses(chunk, epoch, batch_index)
            yield loss_quality, loss_semantic, len(chunk)

    def _batch(self, step: int):
        epoch, offset = divmod(step, self.steps_per_epoch)
        return self.batches(epoch)[offset], epoch, offset

    def train_step(self, batch_positions, epoch: int, batch_index: int = 0) -> dict:
        """One optimizer step on the samples `batch_positions` (over all processes); `batch_index` is the
        step's position within its epoch (it seeds the released per-batch crops)."""
        self.prepare()  # caches come from the starting model: before the first update
        return self.loop.train_step((list(batch_positions), epoch, batch_index))

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def scores(self, name: str) -> np.ndarray:
        """Quality scores of eval set `name` (centre crops, eval mode), identical on every process."""
        was_training = self.model.training
        self.model.eval()
        indices = self.eval_sets[name][0]
        scores = torch.zeros(len(indices), dtype=torch.float64, device=self.device)
        for chunk in chunks(self._local_eval_positions(name), self.cache_batch_size):
            rows = [indices[p] for p in chunk]
            with self._autocast():
                if self.cache_trunk:
                    hidden = torch.stack([self.eval_trunk[r] for r in rows])
                else:
                    hidden = self._trunk(self.images.batch(rows).to(self.device, self.dtype))
                logits = self.model.quality_logits(self.model.image_features_from_hidden(hidden, self.start))
            scores[torch.as_tensor(chunk, device=self.device)] = logits.float().softmax(dim=-1)[:, 0].double()
        self.model.train(was_training)
        return reduce_sum(self.accelerator, [scores])[0].cpu().numpy()

    def evaluate(self) -> dict:
        out = {}
        for name, (_, labels) in self.eval_sets.items():
            metrics = compute_metrics(self.scores(name), labels)
            out.update({f"{name}_srcc": metrics["srcc"], f"{name}_plcc": metrics["plcc"]})
        return out

    # ------------------------------------------------------------------ the loop

    def fit(self, epochs: int, output_dir=None, checkpointing_steps: int | None = None,
            keep_checkpoints: int | None = 2, resume_from_checkpoint=None) -> FinetuneHistory:
        """Train until `epochs` epochs are done, continuing from `resume_from_checkpoint` ("latest" under
        `output_dir`, or a checkpoint folder) when given."""
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        self.loop.configure_checkpoints(output_dir, checkpointing_steps, keep_checkpoints)
        self.prepare()  # from the starting model, before a checkpoint's parameters are loaded
        self.epochs = epochs
        self.loop.fit(epochs * self.steps_per_epoch, resume_from_checkpoint)
        history = FinetuneHistory(self.loop.history)
        history.selection, history.stopped, history.resumed_from = self.select_on, self.loop.stopped, self.loop.resumed_from
        best = self.loop.best_info
        if self.select_on is not None and best is not None:
            history.selected_epoch, history.selected_metrics = best["epoch"], best["metrics"]
        elif history:
            history.selected_epoch = history[-1]["epoch"]
        return history

    # the loop's callback: per-epoch records, evaluation, selection and the per-epoch learning-rate rules

    def on_train_begin(self, loop) -> None:
        if self.eval_before_training and loop.step == 0 and self.eval_sets and not loop.history:
            self._evaluate_before_training()

    def on_step_end(self, loop, stats) -> None:
        acc = self.accumulator
        acc["loss"] += stats["loss"] * stats["count"]
        acc["loss_semantic"] += (stats["loss_semantic"] or 0.0) * stats["count"]
        acc["projected"] += stats["projected"]
        acc["count"] += stats["count"]
        acc["steps"] += 1
        acc["seconds"] += stats["seconds"]
        epoch, offset = divmod(loop.step - 1, self.steps_per_epoch)
        if offset == self.steps_per_epoch - 1:
            self._end_epoch(epoch, stats["lr"])

    def on_train_end(self, loop) -> None:
        self.model.eval()
        if self.select_on is not None:
            loop.restore_best()

    def state_dict(self) -> tuple[dict, dict]:
        plateau = None if self.plateau is None else self.plateau.state_dict()
        return {}, {"accumulator": self.accumulator, "evaluations_since_best": self.evaluations_since_best,
                    "plateau": plateau}

    def load_state_dict(self, tensors, state) -> None:
        self.accumulator = dict(state["accumulator"])
        self.evaluations_since_best = int(state["evaluations_since_best"])
        if self.plateau is not None:
            plateau = dict(state["plateau"])
            if plateau["best"] is None:  # strict JSON stores the initial inf as null
                plateau["best"] = self.plateau.mode_worse
            self.plateau.load_state_dict(plateau)

    def _selection_value(self, entry: dict) -> float:
        """The monitored number of an evaluation: SRCC, or PLCC + SRCC (the released code's); NaN -> -inf."""
        prefix = self.select_on + "_"
        value = entry[prefix + "srcc"] + (entry[prefix + "plcc"] if self.select_metric == "plcc+srcc" else 0.0)
        return value if math.isfinite(value) else -math.inf

    def _consider(self, entry: dict, epoch: int) -> bool:
        """Keep the current parameters if `entry` is the best evaluation so far (strictly better)."""
        metric, best = self._selection_value(entry), self.loop.best_info
        if best is not None and not metric > (-math.inf if best["metric"] is None else best["metric"]):
            return False
        self.loop.keep_best({"metric": metric, "epoch": epoch,
                             "metrics": {k: v for k, v in entry.items() if k.startswith(self.select_on + "_")}})
        return True

    def _evaluate_before_training(self) -> None:
        """Score the eval sets before the first step (the released code's epoch -1): the starting model is a
        candidate for selection."""
        entry = {"epoch": 0, "step": 0, "lr": self.loop.lr, **self.evaluate()}
        if self.select_on is not None:
            self._consider(entry, 0)
        self.loop.history.append(entry)
        self.loop.log({f"epoch/{k}": v for k, v in entry.items()}, step=0)

    def _end_epoch(self, epoch: int, lr: float) -> None:
        acc = self.accumulator
        entry = {
            "epoch": epoch + 1,
            "step": self.step,
            "loss": acc["loss"] / acc["count"],
            "loss_semantic": acc["loss_semantic"] / acc["count"] if self.lam != 0 else None,
            "projected": acc["projected"] / acc["steps"] if self.lam != 0 else None,
            "lr": lr,  # of the epoch's last step
            "seconds": acc["seconds"],
        }
        if self.eval_sets and ((epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs):
            entry.update(self.evaluate())
            if self.select_on is not None:
                self.evaluations_since_best += 1
                if self._consider(entry, epoch + 1):
                    self.evaluations_since_best = 0
        if self.plateau is not None:
            self.plateau.step(entry["loss"])
        if self.lr_decay_rule == "released":
            self._released_decay(epoch, entry)
        self.loop.history.append(entry)
        self.loop.log({f"epoch/{k}": v for k, v in entry.items()}, step=self.step)
        self.accumulator = self._new_accumulator()

    def _released_decay(self, epoch: int, entry: dict) -> None:
        """The released schedule: x factor after more than `lr_decay_patience` evaluations without a new best
        (and past epoch 10, 0-based); stop once the rate is below `stop_below_lr`."""
        if not (self.evaluations_since_best > self.lr_decay_patience and epoch > 10):
            return
        self.evaluations_since_best = 0
        for group in self.optimizer.param_groups:
            group["lr"] *= self.lr_decay_factor
        entry["lr_decayed_to"] = self.loop.lr
        if self.stop_below_lr is not None and self.loop.lr < self.stop_below_lr:
            self.loop.stopped = f"learning rate {self.loop.lr:.3g} < {self.stop_below_lr:g} after epoch {epoch + 1}"
            entry["stopped"] = self.loop.stopped


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
    return trainer.fit(epochs, output_dir=output_dir, checkpointing_steps=checkpointing_steps,
                       keep_checkpoints=keep_checkpoints, resume_from_checkpoint=resume_from_checkpoint)


__all__ = ["FewShotTrainer", "FinetuneHistory", "finetune", "resolve_tokenizer"]
