"""The arguments every runner shares, and the one parser of every example script.

Each runner's settings are a dataclass deriving from `RunArguments`; `parse_arguments(cls)` turns its
fields into flags with `transformers.HfArgumentParser` (`--field-name`, dashes; `--field_name` works
too), so the same setting has the same flag and the same default in every script. Field metadata:
`help`, `choices` and `aliases` as in HfArgumentParser, plus `parse` (a function from the command-line
string to the value, e.g. `optional_int` for "none"/"full"/"fresh" -> None).

Validation lives in each dataclass's `__post_init__` (it runs for Python callers too); from the command
line a `ValueError` there is a usage error: argparse's message and exit status 2.
"""

from __future__ import annotations

import copy
import dataclasses
import types
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ..models import TINY_BACKBONE
from ..training.trainer import LR_SCHEDULER_TYPES, MIXED_PRECISION

MIXED_PRECISION_CHOICES = tuple(MIXED_PRECISION)

TRACKERS = ("auto", "none", "all", "tensorboard", "wandb", "comet_ml", "mlflow", "aim", "clearml", "dvclive")


def field_help(text: str, **more) -> dict:
    """Field metadata: the `--help` text plus any other key (`choices`, `aliases`, `parse`, argparse's own)."""
    return {"help": text, **more}


def optional_int(value: str) -> int | None:
    """`int`, or None for "none", "full" or "fresh" (e.g. `--batch-size full`, `--crop-pool fresh`)."""
    return None if value.lower() in ("none", "full", "fresh") else int(value)


@dataclass(kw_only=True)
class RunArguments:
    """Settings shared by every runner (meta-pre-training, few-shot fine-tuning, MP-IQE training)."""

    output_dir: str = field(metadata={"help": "Where the report, the model and the checkpoints go."})
    backbone: str | None = field(
        default=None,
        metadata={"help": f"CLIP to build fresh prompts around: '{TINY_BACKBONE}' (offline test model), a Hub id or "
                          f"a local directory (default: {TINY_BACKBONE} unless --model is given)."},
    )
    model: str | None = field(
        default=None, metadata={"help": "Start from a saved model of this package (directory or Hub id) instead."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of every random choice (initialisation, order, crops, dropout)."})
    mixed_precision: str | None = field(
        default=None,
        metadata={"help": "Autocast dtype of the forward passes: no, bf16 or fp16 (default: accelerate's config, else "
                          "no; fp16 with the few-shot --paper-mode).", "choices": list(MIXED_PRECISION_CHOICES)},
    )
    lr_scheduler_type: str | None = field(
        default=None,
        metadata={"help": "A transformers.get_scheduler schedule by name, stepped once per optimizer step "
                          "(default: the method's own rule).", "choices": list(LR_SCHEDULER_TYPES)},
    )
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps of --lr-scheduler-type."})
    report_to: str = field(
        default="auto",
        metadata={"help": "Accelerate trackers: auto (TensorBoard when installed), none, all, or one name.",
                  "choices": list(TRACKERS)},
    )
    checkpointing_steps: int | None = field(default=None, metadata={"help": "Save a resumable checkpoint every N steps."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (under --output-dir) or a checkpoint folder."}
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "Checkpoints kept (0 = all)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars (--no-progress hides them)."})

    def __post_init__(self):
        if self.model and self.backbone:
            raise ValueError("give --model (a saved model) or --backbone (a CLIP to build fresh prompts around), not both")
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {self.mixed_precision!r}")
        if self.lr_scheduler_type is not None and self.lr_scheduler_type not in LR_SCHEDULER_TYPES:
            raise ValueError(f"lr_scheduler_type must be one of {LR_SCHEDULER_TYPES}, got {self.lr_scheduler_type!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.checkpointing_steps is not None and self.checkpointing_steps < 1:
            raise ValueError(f"checkpointing_steps must be >= 1, got {self.checkpointing_steps}")
        if self.keep_checkpoints < 0:
            raise ValueError(f"keep_checkpoints must be >= 0, got {self.keep_checkpoints}")

    @property
    def resolved_backbone(self) -> str | None:
        """The backbone to build around: the one given, else tiny-random unless a model is given."""
        return self.backbone or (None if self.model else TINY_BACKBONE)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class ArgumentParser(HfArgumentParser):
    """`HfArgumentParser` plus the `parse` field metadata (see the module docstring)."""

    @staticmethod
    def _parse_dataclass_field(parser, field: dataclasses.Field):
        parse = field.metadata.get("parse")
        metadata = {k: v for k, v in field.metadata.items() if k != "parse"}
        if "help" in metadata:
            metadata["help"] = metadata["help"].replace("%", "%%")  # argparse formats help with %
        field = copy.copy(field)
        field.metadata = types.MappingProxyType(metadata)
        first = len(parser._actions)
        HfArgumentParser._parse_dataclass_field(parser, field)
        if parse is not None:
            parser._actions[first].type = parse  # the action HfArgumentParser just added for this field
        for action in parser._actions[first:]:  # --dash-spelling first, so usage and --help show it
            action.option_strings.sort(key=lambda option: "_" in option)


def parse_arguments(dataclass_type, argv=None, description: str | None = None, validate=None):
    """Parse the command line into `dataclass_type` (one `RunArguments` subclass). A `ValueError` of its
    `__post_init__` or of `validate(args)` exits with status 2 and the message, like any other usage error."""
    parser = ArgumentParser(dataclass_type, description=description)
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
        if validate is not None:
            validate(args)
    except ValueError as exc:
        parser.error(str(exc))
    return args


__all__ = ["LR_SCHEDULER_TYPES", "MIXED_PRECISION_CHOICES", "RunArguments", "field_help", "optional_int",
           "parse_arguments"]
