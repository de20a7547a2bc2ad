"""The few-shot protocol runner of GRMP-IQA stage 2, with its baselines on identical splits.

`run_fewshot(FewShotConfig(...))` (used by `examples/finetune_fewshot.py`):

1. loads a labelled dataset (`load_labelled_dataset`), decodes every image once (unreadable files are
   left out, and listed in the report, before the splits are drawn);
2. draws the protocol's splits (`protocol_splits`: 80/20 by reference where known; N training images,
   or a fraction of the 80% pool; an optional validation set from the rest of the pool);
3. for each method and split: builds the starting model, fine-tunes it (`training.finetune`), scores the
   test set with the model's own forward pass, and records the split (`split_record`);
4. writes `<output_dir>/<method>/report.json` for every method and `<output_dir>/report.json` for the
   first one, with a `comparison` of all methods (median/mean SRCC, PLCC, ...).

Methods (`METHODS`):

- `grmp_iqa`: the meta-pre-trained model (`--model`) fine-tuned with QGR (lambda `qgr_lambda`);
  without `--model`, fresh prompts around `--backbone` (then identical to `grmp_iqa_no_meta`).
- `grmp_iqa_no_meta`: the same model structure with fresh prompts around the same backbone, QGR.
- `finetune_no_qgr`: the `grmp_iqa` starting model fine-tuned with the quality loss only (lambda 0).
- `coop`: CoOp, the text context only (no visual prompts, no CLIP block trained), quality loss only.
- `zero_shot_clip_iqa`: CLIP-IQA, the antonym prompts "Good photo." / "Bad photo.", no training.

Model selection never looks at the test set: "last" (the fixed schedule of `epochs`) or "val" (best
SRCC on `val_images` images of the training pool that are not training images). `paper_mode` reproduces
every choice of the released `finetune.py` instead (`PAPER_MODE` lists them: its splits, resize, crops,
labels, evaluation cadence, test-set selection, learning-rate rule, fp16 autocast, scene prompts), and
the report labels each one as the released protocol (`paper_mode_choices`, `selection: "best_test"`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..modeling.image_processing_iqa import IMAGENET_MEAN, IMAGENET_STD
from ..modeling.modeling_grmp_iqa import GRMPIQAModel
from ..data import minmax_scale
from ..models import TINY_BACKBONE, load_backbone
from ..training.common import make_accelerator, reduce_sum, seed_for
from ..training.data import ImageCache
from ..training.finetune import finetune, resolve_tokenizer
from .protocol import (
    load_labelled_dataset, protocol_report, protocol_splits, released_splits, select_rows, split_record,
)

METHODS = ("grmp_iqa", "grmp_iqa_no_meta", "finetune_no_qgr", "coop", "zero_shot_clip_iqa")
BASELINES = METHODS[1:]
#: The prompt-structure fields a fresh baseline model copies from the meta-pre-trained one.
STRUCTURE_FIELDS = ("n_ctx", "ctx_init", "ctx_init_std", "quality_classes", "class_token_position", "prompt_suffix",
                    "num_visual_prompts", "visual_prompt_depth", "visual_prompt_dropout", "visual_prompt_projection",
                    "visual_prompt_norm", "image_normalization", "image_mean", "image_std", "resize_size",
                    "resize_mode", "resample")
#: CLIP-IQA (Wang et al., AAAI 2023): "Good photo." vs "Bad photo." as a GRMP-IQA model with a fixed
#: one-word context placed after the class word ("front" layout), no visual prompts.
CLIP_IQA_PROMPTS = {"quality_classes": ["good", "bad"], "ctx_init": "photo", "class_token_position": "front",
                    "prompt_suffix": ".", "num_visual_prompts": 0}
#: Every choice of the released `finetune.py` that `--paper-mode` reproduces, as written into report.json
#: (`paper_mode_choices`). Each is the released protocol, not this package's recommendation.
PAPER_MODE = {
    "splits": "released protocol: numpy seeded once with --seed (2024), the same index array shuffled again for "
              "each split (cumulative), first 80% the pool, N drawn with np.random.choice; rows, not references",
    "resize": "released protocol: square resize to 244x244 (244/224 of the crop) with cv2.resize(INTER_CUBIC), "
              "no antialiasing (torch bicubic, within 1 grey level)",
    "image_normalization": "released protocol: ImageNet mean/std (CLIP's own statistics are the correct default)",
    "training_crops": "released protocol: one crop offset per batch from torch.manual_seed(steps_per_epoch * "
                      "epoch + batch) and randint(20, (3,)), flipped when the left offset < 10; test: centre [10:234]",
    "labels": "released protocol: training labels min-max scaled within the N training images",
    "prompt_dropout": "released protocol: train mode, the frozen visual prompts' dropout active",
    "scene_prompts": "released protocol: 'a photo of a still_life' tokenized as written",
    "qgr_units": "released protocol: the rule per OpenAI CLIP tensor (q/k/v fused)",
    "evaluation": "released protocol: the test split scored before training and every 5 epochs",
    "selection": "best_test: released protocol: each split reports its best test PLCC+SRCC over those "
                 "evaluations (model selection on the test set: optimistic)",
    "learning_rate": "released protocol: x0.3 after more than 5 evaluations without a new best test score "
                     "(past epoch 10), training stops when the rate falls below 5e-7; up to 2000 epochs",
    "precision": "released protocol: fp16 autocast on the forward passes, no loss scaling",
}
PAPER_MODE_TRAINING = {
    "batch_crops": True, "crop_pool": None, "prompt_dropout": True, "grouping": "fused_qkv",
    "literal_scene_names": True, "eval_before_training": True, "eval_every": 5, "select_metric": "plcc+srcc",
    "lr_decay_rule": "released", "lr_decay_patience": 5, "lr_decay_factor": 0.3, "stop_below_lr": 5e-7,
    "mixed_precision": "fp16",
}


@dataclass
class FewShotConfig:
    """Everything a few-shot run depends on (recorded in the report). See `examples/finetune_fewshot.py`."""

    data_dir: str
    output_dir: str
    dataset: str = "imagefolder"
    backbone: str | None = None
    model: str | None = None
    methods: tuple = ("grmp_iqa",)
    num_images: int | None = 50
    train_fraction: float | None = None
    num_splits: int = 10
    seed: int = 2024
    epochs: int | None = None  # 100; 2000 with paper_mode (the released maximum)
    qgr_lambda: float = 5.0
    projection: str = "qgr"
    grouping: str = "fused_qkv"
    prompt_dropout: bool = True
    top_k_blocks: int = 4
    learning_rate: float = 1e-3
    coop_learning_rate: float | None = None
    weight_decay: float = 1e-4
    momentum: float = 0.0
    batch_size: int | None = None
    micro_batch_size: int | None = None
    augment: bool = True
    crop_pool: int | None = 4
    lr_decay_patience: int | None = None
    lr_decay_factor: float = 0.3
    val_images: int = 0
    selection: str | None = None
    eval_every: int | None = None  # 10; 5 with paper_mode
    paper_mode: bool = False
    mixed_precision: str | None = None  # "fp16" with paper_mode
    save_model: bool = False
    checkpointing_steps: int | None = None
    resume_from_checkpoint: str | None = None
    cache_trunk: bool = True
    max_cache_gib: float = 8.0
    progress: bool = True

    def resolved_selection(self) -> str:
        if self.paper_mode:
            return "best_test"
        selection = self.selection or ("val" if self.val_images > 0 else "last")
        if selection not in ("val", "last"):
            raise ValueError(f"selection must be 'val' or 'last' (the test set is only used with --paper-mode), "
                             f"got {selection!r}")
        if selection == "val" and self.val_images <= 0:
            raise ValueError("selection 'val' needs --val-images > 0 (a validation set from the training pool)")
        return selection

    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else (2000 if self.paper_mode else 100)

    def training_options(self) -> dict:
        """The fine-tuning options every method shares (`training.finetune` keywords)."""
        options = dict(
            projection=self.projection, grouping=self.grouping, prompt_dropout=self.prompt_dropout,
            weight_decay=self.weight_decay, momentum=self.momentum, batch_size=self.batch_size,
            micro_batch_size=self.micro_batch_size, augment=self.augment, crop_pool=self.crop_pool,
            lr_decay_patience=self.lr_decay_patience, lr_decay_factor=self.lr_decay_factor,
            eval_every=self.eval_every or 10, cache_trunk=self.cache_trunk, max_cache_gib=self.max_cache_gib,
            mixed_precision=self.mixed_precision,
        )
        if self.paper_mode:
            options.update(PAPER_MODE_TRAINING)
            options["eval_every"] = self.eval_every or PAPER_MODE_TRAINING["eval_every"]
            if self.mixed_precision is not None:  # an explicit choice wins (e.g. "no" on a CPU)
                options["mixed_precision"] = self.mixed_precision
        return options

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {unknown}; choose from {METHODS}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods repeated: {list(self.methods)}")
        if self.backbone is None and self.model is None:
            raise ValueError("give --backbone (tiny-random, a CLIP id or directory) or --model (a GRMPIQAModel directory)")
        if self.num_images is not None and self.train_fraction is not None:
            raise ValueError("give --num-images (N-shot) or --train-fraction (data efficiency), not both")
        if self.resolved_epochs() < 0 or self.num_splits < 1:
            raise ValueError(f"epochs must be >= 0 and num_splits >= 1, got {self.epochs}, {self.num_splits}")
        if self.paper_mode and (self.train_fraction is not None or self.val_images):
            raise ValueError("--paper-mode reproduces the released N-shot protocol: --train-fraction and "
                             "--val-images do not apply")
        self.resolved_selection()


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


def _tokenizer(backbone: str):
    if backbone == TINY_BACKBONE:
        from ..testing import tiny_tokenizer

        return tiny_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(backbone)


class _ModelFactory:
    """Starting models of each method, all around one backbone CLIP."""

    def __init__(self, config: FewShotConfig):
        self.config = config
        self.meta_config = None
        if config.model is not None:
            from ..provenance import resolve_model_source

            # checked once, up front: a missing folder or Hub id is one clear error, not a retry loop
            self.model_revision = resolve_model_source(config.model).load_revision
            meta = GRMPIQAModel.from_pretrained(config.model, revision=self.model_revision)
            self.clip = meta.clip
            self.tokenizer = resolve_tokenizer(meta) if config.backbone is None else _tokenizer(config.backbone)
            self.meta_config = meta.config
            self.backbone_name = meta.config.base_model_name_or_path or config.backbone
        else:
            self.clip, self.tokenizer = load_backbone(config.backbone, seed=config.seed)
            self.backbone_name = config.backbone
        self.clip.requires_grad_(False)

    def _paper(self, overrides: dict) -> dict:
        if self.config.paper_mode:
            image_size = self.clip.config.vision_config.image_size
            overrides.update(image_normalization="imagenet", image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
                             resize_mode="square", resize_size=round(image_size * 244 / 224),
                             resample="bicubic_no_antialias")
        return overrides

    def fresh(self, **overrides) -> GRMPIQAModel:
        """Fresh prompts around the backbone (prompt initialisation seeded by the run's seed)."""
        structure = {}
        if self.meta_config is not None:
            structure = {k: getattr(self.meta_config, k) for k in STRUCTURE_FIELDS}
        structure.update(overrides)
        structure.setdefault("base_model_name_or_path", self.backbone_name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            return GRMPIQAModel.from_clip(self.clip, self.tokenizer, **self._paper(structure))

    def starting_model(self, method: str) -> GRMPIQAModel:
        if method in ("grmp_iqa", "finetune_no_qgr") and self.config.model is not None:
            model = GRMPIQAModel.from_pretrained(self.config.model, revision=self.model_revision)
            if self.config.paper_mode:
                for key, value in self._paper({}).items():
                    setattr(model.config, key, value)
            return model
        if method in ("grmp_iqa", "grmp_iqa_no_meta", "finetune_no_qgr"):
            return self.fresh()
        if method == "coop":
            return self.fresh(num_visual_prompts=0)
        if method == "zero_shot_clip_iqa":
            return self.fresh(**CLIP_IQA_PROMPTS)
        raise ValueError(f"unknown method {method!r}")

    def training(self, method: str) -> dict | None:
        """The fine-tuning settings of `method` (None: no training)."""
        c = self.config
        if method == "zero_shot_clip_iqa":
            return None
        settings = {"qgr_lambda": c.qgr_lambda, "top_k": c.top_k_blocks, "learning_rate": c.learning_rate}
        if method == "finetune_no_qgr":
            settings["qgr_lambda"] = 0.0
        elif method == "coop":
            settings.update(qgr_lambda=0.0, top_k=0, learning_rate=c.coop_learning_rate or c.learning_rate)
        return settings


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def score_rows(model, cache: ImageCache, rows, accelerator=None, batch_size: int = 32) -> np.ndarray:
    """Scores of cache rows `rows` (centre crops) with the model's own forward pass; the rows are shared
    out over processes and the scores summed back, so every process gets all of them."""
    rows = [int(r) for r in rows]
    device = next(model.parameters()).device
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    mine = [p for p in range(len(rows)) if p % world == rank]
    scores = torch.zeros(len(rows), dtype=torch.float64, device=device)
    model.eval()
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        pixels = cache.batch([rows[p] for p in chunk]).to(device)
        scores[torch.as_tensor(chunk, device=device)] = model(pixel_values=pixels).scores.double()
    return reduce_sum(accelerator, [scores])[0].cpu().numpy()


# ----------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json(path: Path, payload, is_main: bool) -> None:
    if is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(_json_safe(payload), indent=1))
        tmp.replace(path)


def run_fewshot(config: FewShotConfig, accelerator=None) -> dict:
    """Run the protocol for every method of `config`; returns the first method's report (also written
    to `<output_dir>/report.json`)."""
    config.validate()
    started = time.perf_counter()
    out = Path(config.output_dir)
    accelerator = accelerator or make_accelerator(out, log_with=None)
    is_main = accelerator.is_main_process
    selection = config.resolved_selection()

    factory = _ModelFactory(config)
    data = load_labelled_dataset(config.data_dir, config.dataset)
    caches: dict[str, ImageCache] = {}

    def cache_for(model) -> ImageCache:
        key = json.dumps(model.config.image_processor_kwargs(), sort_keys=True)
        if key not in caches:
            caches[key] = ImageCache(model.image_processor, data.files, progress=config.progress and is_main)
        return caches[key]

    # decode once with the main method's preprocessing; unreadable files leave the dataset before splitting
    probe = factory.starting_model(config.methods[0])
    first_cache = cache_for(probe)
    excluded = [{"image_id": data.image_ids[i], "reason": reason} for i, reason in sorted(first_cache.failed.items())]
    if excluded:
        keep = first_cache.valid_indices
        data = select_rows(data, keep)
        caches = {k: _SubsetCache(c, keep) for k, c in caches.items()}
    del probe

    if config.paper_mode:
        splits = released_splits(len(data), num_images=config.num_images, num_splits=config.num_splits,
                                 seed=config.seed)
    else:
        splits = protocol_splits(data, num_images=config.num_images, train_fraction=config.train_fraction,
                                 num_splits=config.num_splits, seed=config.seed, val_images=config.val_images)
    base_config = {
        **_json_safe(dataclasses.asdict(config)),
        "epochs": config.resolved_epochs(),
        "training_options": _json_safe(config.training_options()),
        "selection": selection,
        "num_processes": accelerator.num_processes,
        "dataset_name": data.name,
        "num_dataset_images": len(data),
        "label_note": data.label_note,
        "grouped_by_reference": data.groups is not None,
        "backbone_resolved": factory.backbone_name,
        "grmp_iqa_start": (f"the meta-pre-trained model {config.model}" if config.model else
                           "fresh prompts around --backbone (no --model given: the same as grmp_iqa_no_meta)"),
        "excluded_images": excluded,
        "paper_mode_choices": PAPER_MODE if config.paper_mode else None,
        "label_scaling": ("released protocol: min-max within each split's training images" if config.paper_mode
                          else data.label_note),
    }
    jobs = [(m, s) for m in config.methods for s in splits]
    bar = tqdm(total=len(jobs), desc="Few-shot protocol", unit="split", disable=not (config.progress and is_main))
    records: dict[str, list] = {m: [] for m in config.methods}
    for method, split in jobs:
        records[method].append(_run_split(config, factory, data, split, method, selection, cache_for, accelerator, out))
        bar.update(1)
        bar.set_postfix(method=method, srcc=f"{records[method][-1]['srcc']:.3f}")
    bar.close()

    reports = {}
    for method in config.methods:
        method_selection = "fixed" if factory.training(method) is None else selection
        method_config = {**base_config, "method": method, "method_training": factory.training(method),
                         "method_selection": method_selection}
        report = protocol_report(records[method], method_selection, method_config, method=method,
                                 paper_mode=config.paper_mode, num_processes=accelerator.num_processes)
        reports[method] = report
        _write_json(out / method / "report.json", report, is_main)
    primary = dict(reports[config.methods[0]])
    primary["comparison"] = {
        m: {"median": r["median"], "mean": r["mean"], "selection": r["selection"]} for m, r in reports.items()
    }
    primary["seconds"] = round(time.perf_counter() - started, 1)
    _write_json(out / "report.json", primary, is_main)
    accelerator.wait_for_everyone()
    return primary


class _SubsetCache(ImageCache):
    """An `ImageCache` view keeping only some rows (renumbered 0..n-1), without decoding again."""

    def __init__(self, cache: ImageCache, rows):  # noqa: D107 - no super().__init__: shares the decoded images
        self.processor, self.crop_size = cache.processor, cache.crop_size
        self._mean, self._std = cache._mean, cache._std
        self.images = [cache.images[r] for r in rows]
        self.failed = {}


def _run_split(config, factory, data, split, method, selection, cache_for, accelerator, out) -> dict:
    split_dir = out / method / f"split_{split.index}"
    record_path = split_dir / "record.json"
    if config.resume_from_checkpoint is not None and record_path.is_file():
        return json.loads(record_path.read_text())  # finished in an earlier run
    started = time.perf_counter()
    model = factory.starting_model(method).to(accelerator.device)
    cache = cache_for(model)
    if len(cache) != len(data):  # a cache decoded before unreadable rows were dropped
        raise RuntimeError("internal: image cache and dataset disagree")
    training = factory.training(method)
    extra = {"method": method, "selection": "fixed" if training is None else selection}
    if training is not None:
        eval_sets, select_on = {}, None
        if selection == "val":
            eval_sets["val"] = (split.val, data.labels[split.val])
            select_on = "val"
        elif selection == "best_test":
            eval_sets["test"] = (split.test, data.labels[split.test])
            select_on = "test"
        resume = None
        if config.resume_from_checkpoint is not None:
            resume = config.resume_from_checkpoint
            if resume != "latest" and split_dir.resolve() not in Path(resume).resolve().parents:
                resume = "latest"  # a checkpoint path belongs to one split; the others continue their latest
        train_labels = data.labels[split.train]
        if config.paper_mode:  # the released `normalization()`: min-max within the training images
            train_labels = minmax_scale(train_labels)
        options = config.training_options()
        history = finetune(
            model, cache, train_labels, indices=split.train, epochs=config.resolved_epochs(),
            seed=seed_for(config.seed, split.index), accelerator=accelerator, progress=config.progress,
            output_dir=split_dir, checkpointing_steps=config.checkpointing_steps, resume_from_checkpoint=resume,
            eval_sets=eval_sets, select_on=select_on, tokenizer=factory.tokenizer, **options, **training,
        )
        _write_json(split_dir / "history.json", list(history), accelerator.is_main_process)
        extra.update(
            epochs=config.resolved_epochs(), selected_epoch=history.selected_epoch,
            final_train_loss=history[-1].get("loss") if history else None,
            stopped_early=getattr(history, "stopped", None),
            trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        )
        if selection == "best_test":
            extra["selected_test_srcc_during_training"] = (history.selected_metrics or {}).get("test_srcc")
            extra["selected_test_plcc_during_training"] = (history.selected_metrics or {}).get("test_plcc")
    test_scores = score_rows(model, cache, split.test, accelerator)
    record = split_record(split, data, test_scores, **extra, seconds=round(time.perf_counter() - started, 2))
    if config.save_model and training is not None:
        model.config.training_info = {
            "stage": "few-shot fine-tuning", "method": method, "split": split.index, "dataset": data.name,
            "train_images": record["train"], "qgr_lambda": training["qgr_lambda"], "top_k": training["top_k"],
            "epochs": config.resolved_epochs(), "selection": extra["selection"], "paper_mode": config.paper_mode,
        }
        model.save_pretrained(split_dir / "model", is_main_process=accelerator.is_main_process)
        record["model_dir"] = str(split_dir / "model")
    if not all(math.isfinite(record[k]) for k in ("srcc", "plcc")):
        record["warning"] = "non-finite metrics (constant predictions?)"
    _write_json(record_path, record, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    return record


__all__ = ["BASELINES", "CLIP_IQA_PROMPTS", "FewShotConfig", "METHODS", "run_fewshot", "score_rows"]
