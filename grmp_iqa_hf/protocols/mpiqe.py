"""The MP-IQE protocol runner behind `examples/train_mpiqe.py`.

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
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from ..data.labels import DISTORTION_CLASSES, SCENE_CLASSES, dataset_auxiliary_labels
from ..data.splits import Split
from ..evaluation.protocol import load_labelled_dataset, protocol_report, protocol_splits, split_record
from ..json_io import write_json
from ..modeling.configuration_mp_iqe import MPIQEConfig
from ..modeling.modeling_mp_iqe import IGNORE_INDEX, MPIQEModel
from ..training.checkpointing import checkpoint_root, resolve_checkpoint
from ..training.common import make_accelerator, seed_for
from ..training.data import ImageCache
from ..scoring import score_rows
from ..training.mpiqe import train_mpiqe
from .arguments import LR_SCHEDULER_TYPES, RunArguments

@dataclass(kw_only=True)
class MPIQETrainingArguments(RunArguments):
    """Everything `run_mpiqe` needs; `examples/train_mpiqe.py` exposes each field as `--field-name`
    (the shared ones, `--output-dir`, `--backbone`, `--seed`, `--mixed-precision`, ..., come from
    `RunArguments`). `--model` is not supported: every split trains a fresh model."""

    data_dir: str = field(metadata={"help": "Dataset folder (e.g. an imagefolder with metadata.csv)."})
    dataset: str = field(default="imagefolder", metadata={"help": "Loader name (imagefolder, livec, koniq10k, ...)."})
    epochs: int = field(default=10, metadata={"help": "Training epochs per split."})
    batch_size: int = field(default=32, metadata={"help": "Images per optimizer step (over all processes)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str | None = field(
        default="cosine",
        metadata={"help": "Learning-rate schedule (transformers.get_scheduler name; MP-IQE's default: cosine).",
                  "choices": list(LR_SCHEDULER_TYPES), "aliases": ["--lr-scheduler", "--lr_scheduler"]},
    )
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
    eval_batch_size: int = field(default=64, metadata={"help": "Images per forward pass when scoring test sets."})
    save_split_models: bool = field(default=False, metadata={"help": "Also save every split's model (split_XX/model)."})
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
        super().__post_init__()
        if self.model:
            raise ValueError("MP-IQE trains a fresh model on every split: give --backbone, not --model")
        if self.lr_scheduler_type is None:
            raise ValueError(f"lr_scheduler_type must be one of {LR_SCHEDULER_TYPES}")
        for name in ("epochs", "batch_size", "num_splits", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
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
    clip, tokenizer = load_backbone(args.resolved_backbone, seed=args.seed)
    overrides.setdefault("base_model_name_or_path", args.resolved_backbone)

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
        predictions = score_rows(model, cache, split.test, accelerator, args.eval_batch_size,
                                 fields=("scores", "scene_logits", "distortion_logits"))
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
            write_json(result_file, record)
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
        write_json(output_dir / "report.json", report)
        median = report["median"]
        print(f"MP-IQE on {data.name}: {len(records)} split(s), median test SRCC {median['srcc']:.4f}, "
              f"PLCC {median['plcc']:.4f} -> {output_dir / 'report.json'}")
    accelerator.wait_for_everyone()
    return report


__all__ = ["MPIQETrainingArguments", "auxiliary_metrics", "run_mpiqe"]
