"""The meta-pre-training runner behind `examples/meta_pretrain.py`: its arguments, the tasks (labelled
distortion datasets, or the synthetic engine over pristine photos), the model to start from, the
`--selection dataset` scorer, and saving the selected model (`run_meta_pretraining`). The loop itself is
`grmp_iqa_hf.training.meta.meta_pretrain`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..evaluation.metrics import compute_metrics
from ..json_io import write_json
from ..scoring import score_rows
from ..modeling.image_processing_iqa import IMAGENET_MEAN, IMAGENET_STD, IQAImageProcessor
from ..training.common import make_accelerator
from ..training.data import ImageCache
from .arguments import RunArguments, field_help
from ..training.meta import ALGORITHMS, SELECTIONS, OfficialCaches, build_tasks, meta_pretrain, split_holdout

@dataclass(kw_only=True)
class MetaPretrainArguments(RunArguments):
    """Settings of `run_meta_pretraining`: the flags of `examples/meta_pretrain.py` (`--field-name`; the
    shared ones come from `RunArguments`). Defaults that depend on `--algorithm` are None here and filled
    by `resolved()` (the released values for `official`)."""

    # the tasks
    pristine_dir: str | None = field(default=None, metadata=field_help(
        "Folder of pristine photos for the synthetic engine (default: scikit-image's photos)."))
    data_dir: list[str] = field(default_factory=list, metadata=field_help(
        "Labelled dataset(s) with a distortion column (repeat the flag or list several).", action="extend"))
    dataset: list[str] = field(default_factory=list, metadata=field_help(
        "Format of each --data-dir (kadid10k, tid2013, imagefolder, ...).", action="extend"))
    distortions: list[str] | None = field(default=None, metadata=field_help(
        "Synthetic engine: the distortion types to use (default: all 25)."))
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5], metadata=field_help("Synthetic engine: levels."))
    pristine_size: int = field(default=256, metadata=field_help("Shorter side of the pristine photos."))
    holdout: list[str] | None = field(default=None, metadata=field_help(
        "Distortion types held out for model selection: a count or names (default: 3; 0 for official, which "
        "trains on all)."))
    support_size: int = field(default=16, metadata=field_help("Support images per task visit."))
    query_size: int = field(default=8, metadata=field_help("Query images per task visit."))
    support_batch_size: int = field(default=75, metadata=field_help(
        "official: support batch (the whole 80% part is used, in batches; the released 75)."))
    query_batch_size: int = field(default=50, metadata=field_help("official: query batch (the released 50)."))
    augment: bool = field(default=True, metadata=field_help("Random crops + flips (--no-augment: centre crops)."))
    # the meta-learning
    algorithm: str = field(default="reptile", metadata=field_help("Meta-learning algorithm.", choices=list(ALGORITHMS)))
    max_steps: int | None = field(default=None, metadata=field_help(
        "Meta steps (0 saves the initial model; default 200; official: --epochs x the number of data sources)."))
    epochs: int = field(default=50, metadata=field_help(
        "official: epochs, one outer update per data source each (the released 50)."))
    tasks_per_step: int = field(default=4, metadata=field_help("Tasks per meta step."))
    inner_lr: float | None = field(default=None, metadata=field_help(
        "Inner learning rate (default 1e-2 SGD; official: Adam 1e-4, the released value)."))
    inner_steps: int = field(default=3, metadata=field_help("Inner adaptation steps."))
    outer_lr: float | None = field(default=None, metadata=field_help(
        "Outer learning rate (default: 1.0 reptile, 0.01 official, 1e-3 (Adam) maml/fomaml)."))
    outer_optimizer: str | None = field(default=None, metadata=field_help(
        "Outer optimizer (default: sgd for reptile/official, adam otherwise).", choices=["sgd", "adam"]))
    eval_steps: int | None = field(default=None, metadata=field_help(
        "Evaluate every N steps (default 50; official: once per epoch)."))
    eval_adapt_steps: int = field(default=5, metadata=field_help("Adaptation steps when evaluating."))
    eval_visits: int = field(default=2, metadata=field_help("Visits of each held-out task when evaluating."))
    selection: str | None = field(default=None, metadata=field_help(
        "heldout (default), last (official's default) or dataset (the released choice: best SRCC on "
        "--selection-data-dir; leaks when that dataset is a fine-tuning target).", choices=list(SELECTIONS)))
    selection_data_dir: str | None = field(default=None, metadata=field_help(
        "Labelled dataset for --selection dataset (released: LIVEC)."))
    selection_dataset: str = field(default="imagefolder", metadata=field_help("Format of --selection-data-dir."))
    # fresh models
    num_visual_prompts: int | None = field(default=None, metadata=field_help(
        "Fresh models: visual prompt tokens (config default 100)."))
    n_ctx: int | None = field(default=None, metadata=field_help("Fresh models: text context length."))
    ctx_init: str | None = field(default=None, metadata=field_help("Fresh models: initialise the context from this phrase."))

    def resolved(self) -> "MetaPretrainArguments":
        """Fill the algorithm-dependent defaults (the released values for `official`)."""
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"--algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        official = self.algorithm == "official"
        if self.selection is None:
            self.selection = ("dataset" if self.selection_data_dir else "last") if official else "heldout"
        if self.selection not in SELECTIONS:
            raise ValueError(f"--selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.selection == "dataset" and not self.selection_data_dir:
            raise ValueError("--selection dataset needs --selection-data-dir (a labelled dataset scored after each "
                             "evaluation; the released code used LIVEC, a fine-tuning target: leakage)")
        if self.holdout is None:
            self.holdout = 0 if official else 3
        elif isinstance(self.holdout, (list, tuple)) and len(self.holdout) == 1 and str(self.holdout[0]).isdigit():
            self.holdout = int(self.holdout[0])  # "--holdout 3": a count, not a type name
        if self.selection == "heldout" and self.holdout in (0, []):
            raise ValueError("--selection heldout needs held-out distortion types (--holdout N or names)")
        if self.inner_lr is None:
            self.inner_lr = 1e-4 if official else 1e-2
        if self.eval_steps is None:
            self.eval_steps = 0 if official else 50  # official: resolved per epoch once the sources are known
        if self.outer_optimizer is None:
            self.outer_optimizer = "sgd" if self.algorithm in ("reptile", "official") else "adam"
        if self.outer_lr is None:
            self.outer_lr = {"reptile": 1.0, "official": 0.01}.get(self.algorithm, 1e-3)
        return self


def _load_model(args: MetaPretrainArguments):
    from ..models import build_model
    from ..modeling.modeling_grmp_iqa import GRMPIQAModel

    if args.model:
        from ..provenance import resolve_model_source

        return GRMPIQAModel.from_pretrained(args.model, revision=resolve_model_source(args.model).load_revision)
    overrides = {k: v for k, v in (("num_visual_prompts", args.num_visual_prompts), ("n_ctx", args.n_ctx),
                                   ("ctx_init", args.ctx_init)) if v is not None}
    return build_model(args.resolved_backbone, seed=args.seed, **overrides)


def _synthetic_data(args: MetaPretrainArguments, accelerator):
    """The embedded default: pristine photos x the distortion engine, written once under the output dir
    (the main process builds it, the others wait and read it)."""
    from ..data import build_synthetic_dataset, load_pristine_images
    from ..evaluation.protocol import load_labelled_dataset

    folder = Path(args.output_dir) / "synthetic_data"
    recipe = {"pristine": args.pristine_dir or "skimage", "size": args.pristine_size, "seed": args.seed,
              "distortions": args.distortions, "levels": list(args.levels)}
    marker = folder / "recipe.json"
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (marker.is_file() and json.loads(marker.read_text()) == recipe):
            pristine = load_pristine_images(None if recipe["pristine"] == "skimage" else recipe["pristine"],
                                            size=args.pristine_size)
            build_synthetic_dataset(pristine, distortions=args.distortions, levels=args.levels, label="level",
                                    seed=args.seed, output_dir=folder, progress=args.progress)
            marker.write_text(json.dumps(recipe))
    data = load_labelled_dataset(folder, "imagefolder", mos_range=(0.0, 1.0), higher_is_better=True)
    return [(data, list(data.dataset["distortion"]), "synthetic")]


def _labelled_data(args: MetaPretrainArguments):
    from ..evaluation.protocol import load_labelled_dataset

    names = list(args.dataset) or ["imagefolder"] * len(args.data_dir)
    if len(names) == 1 and len(args.data_dir) > 1:
        names = names * len(args.data_dir)
    if len(names) != len(args.data_dir):
        raise ValueError(f"{len(args.data_dir)} --data-dir but {len(names)} --dataset given")
    out = []
    for data_dir, name in zip(args.data_dir, names):
        data = load_labelled_dataset(data_dir, name)
        if "distortion" not in data.dataset.column_names:
            raise ValueError(f"{data_dir} ({name}) has no distortion column: meta-pre-training needs one task per "
                             "distortion type (KADID-10k, TID2013, or an imagefolder with a `distortion` column)")
        out.append((data, list(data.dataset["distortion"]), data.name))
    return out


def official_processors(crop_size: int) -> tuple[IQAImageProcessor, IQAImageProcessor]:
    """`(support, query)` preprocessing of the released `pretrain.py`: square resizes to 256 (for 224 px) and
    to the crop size, ImageNet mean/std. (Its skimage `transform.resize` is bilinear with Gaussian
    antialiasing; Pillow's antialiased bilinear filter is the closest we have.)"""
    common = dict(crop_size=crop_size, resize_mode="square", resample="bilinear",
                  image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))
    return (IQAImageProcessor(resize_size=round(crop_size * 256 / 224), **common),
            IQAImageProcessor(resize_size=crop_size, **common))


def prepare_tasks(args: MetaPretrainArguments, processor, accelerator):
    """`(cache, train_tasks, holdout_tasks)` from the data settings of `args`. For `algorithm="official"` the
    cache is an `OfficialCaches` (the released preprocessing) instead of one `ImageCache` for `processor`."""
    sources = _labelled_data(args) if args.data_dir else _synthetic_data(args, accelerator)
    files, labels, refs, names, origins = [], [], [], [], []
    for data, distortions, source in sources:
        prefix = f"{source}/" if len(sources) > 1 else ""
        refs += [f"{prefix}{r}" for r in data.groups] if data.groups else [f"{prefix}{i}" for i in data.image_ids]
        files += data.files
        labels += list(data.labels)
        names += [f"{prefix}{d}" if d else d for d in distortions]
        origins += [source] * len(data.files)
    progress = args.progress and accelerator.is_main_process
    if args.algorithm == "official":
        support, query = official_processors(processor.crop_side)
        cache = OfficialCaches(ImageCache(support, files, progress=progress, desc="Decoding support images"),
                               ImageCache(query, files, progress=progress, desc="Decoding query images"))
        valid = sorted(set(cache.support.valid_indices) & set(cache.query.valid_indices))
    else:
        cache = ImageCache(processor, files, progress=progress, desc="Decoding task images")
        valid = cache.valid_indices
    tasks = build_tasks(names, labels, refs, valid=valid, sources=origins)
    train, holdout = split_holdout(tasks, args.holdout, args.seed)
    return cache, train, holdout


class _SelectionSet:
    """A labelled dataset scored whole (the model's own preprocessing) for `selection="dataset"`."""

    def __init__(self, files, labels, processor, progress: bool):
        self.cache = ImageCache(processor, files, progress=progress, desc="Decoding selection images")
        self.rows = self.cache.valid_indices
        self.labels = np.asarray(labels, dtype=np.float64)[self.rows]

    def srcc(self, model, accelerator=None) -> float:
        scores = score_rows(model, self.cache, self.rows, accelerator)["scores"]  # eval mode, shared over processes
        return float(compute_metrics(scores, self.labels)["srcc"])


def _selection_set(args, model, accelerator) -> _SelectionSet:
    from ..evaluation.protocol import load_labelled_dataset

    data = load_labelled_dataset(args.selection_data_dir, args.selection_dataset)
    return _SelectionSet(data.files, data.labels, model.image_processor, args.progress and accelerator.is_main_process)


def run_meta_pretraining(args: MetaPretrainArguments, accelerator=None) -> dict:
    """Meta-pre-train the prompts of a GRMP-IQA model and save it to `args.output_dir`.

    Loads the model (`--backbone` or `--model`) and the tasks (`--data-dir` datasets, or the synthetic
    engine over `--pristine-dir`), runs `meta_pretrain`, and saves: the output dir ends with a
    `save_pretrained` checkpoint (its config's `training_info` records the meta-training settings and
    the selection), `meta_history.json`, and resumable checkpoints under `checkpoints/`.
    Returns the summary written to `meta_history.json`.
    """
    args = args.resolved()
    output_dir = Path(args.output_dir)
    accelerator = accelerator or make_accelerator(output_dir)
    model = _load_model(args).to(accelerator.device)
    cache, train_tasks, holdout_tasks = prepare_tasks(args, model.image_processor, accelerator)
    selection_set = _selection_set(args, model, accelerator) if args.selection == "dataset" else None
    summary = meta_pretrain(model, cache, train_tasks, holdout_tasks, args, accelerator, selection_set=selection_set)
    model.config.training_info = {
        "stage": "meta-prompt pre-training",
        "algorithm": args.algorithm,
        "selected": summary["selected"],
        "heldout_evaluations": summary["evaluations"][-1:],
        "settings": {k: summary["config"][k] for k in (
            "max_steps", "epochs", "tasks_per_step", "support_size", "query_size", "support_batch_size",
            "query_batch_size", "inner_lr", "inner_steps", "outer_lr", "outer_optimizer", "seed", "augment",
            "train_tasks", "holdout_tasks", "num_processes")},
        "data": args.data_dir or f"synthetic distortions of {args.pristine_dir or 'scikit-image photos'}",
    }
    if accelerator.is_main_process:
        model.save_pretrained(output_dir)
        write_json(output_dir / "meta_history.json", summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


__all__ = ["MetaPretrainArguments", "official_processors", "prepare_tasks", "run_meta_pretraining"]
