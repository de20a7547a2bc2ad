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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..modeling.constants import released_preprocessing
from ..modeling.modeling_grmp_iqa import GRMPIQAModel
from ..data import minmax_scale
from ..models import load_backbone
from ..training.common import make_accelerator, seed_for
from ..training.data import ImageCache
from ..training.finetune import finetune, resolve_tokenizer
from ..json_io import to_jsonable, write_json
from ..scoring import score_rows
from ..training.gradreg import GROUPINGS, PROJECTION_MODES
from .arguments import RunArguments, field_help, optional_int, parse_arguments
from ..evaluation.protocol import (
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
    "mixed_precision": "fp16", "loss_scaling": False,
}


@dataclass(kw_only=True)
class FewShotConfig(RunArguments):
    """Everything a few-shot run depends on (recorded in the report): the flags of
    `examples/finetune_fewshot.py` (`--field-name`; the shared ones come from `RunArguments`). Give
    `--backbone` (fresh prompts) or `--model` (e.g. the output of meta_pretrain.py)."""

    # the protocol
    data_dir: str = field(metadata=field_help("Labelled dataset folder."))
    dataset: str = field(default="imagefolder", metadata=field_help("Dataset format (imagefolder, livec, koniq10k, ...)."))
    methods: list[str] = field(default_factory=lambda: ["grmp_iqa"], metadata=field_help(
        "What to run; the first one is the report's main method.", choices=list(METHODS), aliases=["--method"]))
    baselines: bool = field(default=False, metadata=field_help(f"Also run every baseline: {', '.join(BASELINES)}."))
    num_images: int | None = field(default=50, metadata=field_help("N-shot training set ('full': the whole pool).",
                                                               parse=optional_int))
    train_fraction: float | None = field(default=None, metadata=field_help(
        "Data efficiency: train on this fraction of the 80% pool (instead of --num-images)."))
    num_splits: int = field(default=10, metadata=field_help("Number of splits."))
    seed: int = field(default=2024, metadata=field_help("Seed of the splits and of every random choice of training."))
    val_images: int = field(default=0, metadata=field_help(
        "Validation images from the training pool (not training images) for model selection."))
    selection: str | None = field(default=None, metadata=field_help(
        "Model selection: val (with --val-images) or last (the default without).", choices=["last", "val"]))
    paper_mode: bool = field(default=False, metadata=field_help(
        "Every choice of the released finetune.py: its splits, cv2-style bicubic 244x244 resize, ImageNet "
        "statistics, per-batch crops, labels min-max scaled within the training images, test scored every 5 epochs "
        "with best PLCC+SRCC reported (model selection on the test set), test-driven x0.3 lr decay, fp16 autocast; "
        "each labelled in report.json."))
    # fine-tuning
    epochs: int | None = field(default=None, metadata=field_help("Epochs (default: 100; 2000 with --paper-mode)."))
    qgr_lambda: float = field(default=5.0, metadata=field_help("QGR strength lambda (0 turns QGR off)."))
    projection: str = field(default="qgr", metadata=field_help(
        "qgr (GRMP-IQA) or prograd (ProGrad's original rule).", choices=list(PROJECTION_MODES)))
    grouping: str = field(default="fused_qkv", metadata=field_help(
        "Units of the QGR rule: fused_qkv (OpenAI CLIP's tensors, q/k/v together, as released) or per_tensor "
        "(each transformers tensor).", choices=list(GROUPINGS), aliases=["--qgr-grouping", "--qgr_grouping"]))
    prompt_dropout: bool = field(default=True, metadata=field_help(
        "Train mode: the frozen visual prompts' dropout active, as released (--no-prompt-dropout: eval mode)."))
    top_k_blocks: int = field(default=4, metadata=field_help("Top blocks of each tower trained."))
    learning_rate: float = field(default=1e-3, metadata=field_help("SGD learning rate."))
    coop_learning_rate: float | None = field(default=None, metadata=field_help(
        "Learning rate of the CoOp baseline (default: --learning-rate)."))
    weight_decay: float = field(default=1e-4, metadata=field_help("SGD weight decay."))
    momentum: float = field(default=0.0, metadata=field_help("SGD momentum."))
    batch_size: int | None = field(default=None, metadata=field_help(
        "Samples per step ('full', the default: the whole training set).", parse=optional_int))
    micro_batch_size: int | None = field(default=None, metadata=field_help(
        "Samples per forward pass per process (memory only; same results).", parse=optional_int))
    augment: bool = field(default=True, metadata=field_help("Random crops + flips (--no-augment: centre crops only)."))
    crop_pool: int | None = field(default=4, metadata=field_help(
        "Random crops cached per image ('fresh': new crops every epoch, no trunk cache).", parse=optional_int))
    lr_decay_patience: int | None = field(default=None, metadata=field_help(
        "Multiply the lr by --lr-decay-factor after this many epochs without a lower training loss (default: off)."))
    lr_decay_factor: float = field(default=0.3, metadata=field_help("Factor of --lr-decay-patience."))
    eval_every: int | None = field(default=None, metadata=field_help(
        "Epochs between validation scores (default 10; 5 with --paper-mode)."))
    cache_trunk: bool = field(default=True, metadata=field_help(
        "Cache the frozen lower blocks' output (--no-cache-trunk recomputes every step: same results, slower)."))
    max_cache_gib: float = field(default=8.0, metadata=field_help("Memory limit of the trunk cache."))
    save_model: bool = field(default=False, metadata=field_help("Save each split's final model (save_pretrained)."))

    def __post_init__(self):
        super().__post_init__()
        self.methods = list(self.methods)
        if self.baselines:
            self.methods += [m for m in BASELINES if m not in self.methods]

    @classmethod
    def from_command_line(cls, argv=None, description: str | None = None) -> "FewShotConfig":
        """Parse the flags (see `protocols.arguments.parse_arguments`) and validate; `--train-fraction`
        without `--num-images` replaces the default N-shot size."""
        argv = list(sys.argv[1:] if argv is None else argv)
        flags = {a.split("=")[0].replace("_", "-") for a in argv if a.startswith("--")}
        if "--train-fraction" in flags and "--num-images" not in flags:
            argv += ["--num-images", "none"]
        return parse_arguments(cls, argv, description, validate=lambda config: config.validate())

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
            mixed_precision=self.mixed_precision, lr_scheduler_type=self.lr_scheduler_type,
            warmup_steps=self.warmup_steps, report_to=self.report_to,
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
            self.tokenizer = resolve_tokenizer(meta)  # its backbone's (--backbone and --model exclude each other)
            self.meta_config = meta.config
            self.backbone_name = meta.config.base_model_name_or_path
        else:
            self.clip, self.tokenizer = load_backbone(config.backbone, seed=config.seed)
            self.backbone_name = config.backbone
        self.clip.requires_grad_(False)

    def _paper(self, overrides: dict) -> dict:
        if self.config.paper_mode:
            overrides.update(released_preprocessing(self.clip.config.vision_config.image_size))
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
# The runner
# ----------------------------------------------------------------------------------------------


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
        caches = {k: c.subset(keep) for k, c in caches.items()}
    del probe

    if config.paper_mode:
        splits = released_splits(len(data), num_images=config.num_images, num_splits=config.num_splits,
                                 seed=config.seed)
    else:
        splits = protocol_splits(data, num_images=config.num_images, train_fraction=config.train_fraction,
                                 num_splits=config.num_splits, seed=config.seed, val_images=config.val_images)
    base_config = {
        **to_jsonable(dataclasses.asdict(config)),
        "epochs": config.resolved_epochs(),
        "training_options": to_jsonable(config.training_options()),
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
        write_json(out / method / "report.json", report, main_process=is_main)
    primary = dict(reports[config.methods[0]])
    primary["comparison"] = {
        m: {"median": r["median"], "mean": r["mean"], "selection": r["selection"]} for m, r in reports.items()
    }
    primary["seconds"] = round(time.perf_counter() - started, 1)
    write_json(out / "report.json", primary, main_process=is_main)
    accelerator.wait_for_everyone()
    return primary


def print_summary(report: dict) -> None:
    """Print the run's headline (per method: the median SRCC, PLCC and logistic PLCC) as JSON, once."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    summary = {m: {k: round(v, 4) if v is not None else None for k, v in r["median"].items()
                   if k in ("srcc", "plcc", "plcc_logistic")} for m, r in report["comparison"].items()}
    print(json.dumps({"output_dir": report["config"]["output_dir"], "selection": report["selection"],
                      "num_processes": report["num_processes"], "median": summary}, indent=1))


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
            keep_checkpoints=config.keep_checkpoints or None,  # 0 keeps all
            eval_sets=eval_sets, select_on=select_on, tokenizer=factory.tokenizer, **options, **training,
        )
        write_json(split_dir / "history.json", list(history), main_process=accelerator.is_main_process)
        extra.update(
            epochs=config.resolved_epochs(), selected_epoch=history.selected_epoch,
            final_train_loss=history[-1].get("loss") if history else None,
            stopped_early=getattr(history, "stopped", None),
            trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        )
        if selection == "best_test":
            extra["selected_test_srcc_during_training"] = (history.selected_metrics or {}).get("test_srcc")
            extra["selected_test_plcc_during_training"] = (history.selected_metrics or {}).get("test_plcc")
    test_scores = score_rows(model, cache, split.test, accelerator)["scores"]
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
    write_json(record_path, record, main_process=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    return record


__all__ = ["BASELINES", "CLIP_IQA_PROMPTS", "FewShotConfig", "METHODS", "print_summary", "run_fewshot"]
