"""The few-shot / data-efficiency protocol shared by every training runner of the package.

1. `load_labelled_dataset`: an IQA dataset as files + labels in [0, 1] (higher = better) + identifiers
   + the grouping that keeps one reference's distorted versions on one side (synthetic datasets).
2. `protocol_splits`: `num_splits` random 80/20 splits (seed 2024 by default, by reference where
   known); the training set is N images (`num_images`) or a fraction of the 80% pool
   (`train_fraction`); an optional validation set is drawn from the rest of the pool — never from
   the test set — for model selection.
3. `split_record` / `protocol_report`: the report layout (`splits`, `median`, `mean`, `selection`,
   `config`) that runners write as `report.json` and the Hub model cards read.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

from ..data import image_paths, load_iqa_dataset, make_splits, minmax_scale, read_iqa_info
from ..data.splits import Split
from .metrics import compute_metrics, summarize

#: How the reported model of each split was chosen: on a validation set carved from the training
#: pool, the last epoch of a schedule, a fixed number of steps, or (paper mode only) the best test score.
SELECTION_MODES = ("val", "last", "fixed", "best_test")
REPORT_METRICS = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")


@dataclass
class LabelledData:
    """A labelled IQA dataset ready for training: row `i` is `files[i]` with `labels[i]` in [0, 1]."""

    dataset: object  # the datasets.Dataset (all columns, e.g. scenes / distortion)
    files: list[str]
    image_ids: list[str]
    labels: np.ndarray  # float64 in [0, 1], higher = better
    groups: list | None  # reference of each row, for grouped splits (None: every image its own group)
    name: str
    label_note: str

    def __len__(self) -> int:
        return len(self.files)


def load_labelled_dataset(data_dir, dataset: str = "imagefolder", **load_options) -> LabelledData:
    """Load a dataset and map its scores to [0, 1], higher = better.

    The registry's nominal score range is used when the dataset is known; otherwise (e.g. a plain
    imagefolder) the scores are min-max scaled over the whole dataset (our choice: an affine map, so no
    correlation changes), and a `DMOS`-style direction must be given with `higher_is_better=False`. (The
    released GRMP-IQA code does neither: it min-max scales the labels within the training subset and,
    separately, within the test subset of each split; `--paper-mode` does that for the training labels.)
    """
    try:
        data = load_iqa_dataset(dataset, data_dir, normalize=True, **load_options)
        labels = np.asarray(data["mos"], dtype=np.float64)
        note = "nominal score range of the dataset mapped to [0, 1], higher = better"
    except ValueError as exc:
        if "normalize=True needs the score range" not in str(exc):
            raise
        data = load_iqa_dataset(dataset, data_dir, **load_options)
        raw = np.asarray(data["mos"], dtype=np.float64)
        low, high = float(raw.min()), float(raw.max())
        labels = minmax_scale(raw)
        if load_options.get("higher_is_better") is False:
            labels = 1.0 - labels
        note = f"scores min-max scaled from [{low:g}, {high:g}] to [0, 1] (range unknown to the registry)"
    info = read_iqa_info(data)
    groups = list(data["ref"]) if "ref" in data.column_names and any(r not in (None, "") for r in data["ref"]) else None
    return LabelledData(
        dataset=data,
        files=image_paths(data),
        image_ids=list(data["image_id"]),
        labels=labels,
        groups=groups,
        name=str(info.get("dataset") or dataset),
        label_note=note,
    )


def select_rows(data: LabelledData, rows) -> LabelledData:
    """The rows `rows` of `data` (in that order), e.g. to leave out images that cannot be read before
    the splits are drawn."""
    rows = [int(r) for r in rows]
    return LabelledData(
        dataset=data.dataset.select(rows) if hasattr(data.dataset, "select") else data.dataset,
        files=[data.files[r] for r in rows],
        image_ids=[data.image_ids[r] for r in rows],
        labels=np.asarray(data.labels)[rows],
        groups=None if data.groups is None else [data.groups[r] for r in rows],
        name=data.name,
        label_note=data.label_note,
    )


def protocol_splits(
    data: LabelledData | int,
    num_images: int | None = 50,
    train_fraction: float | None = None,
    num_splits: int = 10,
    seed: int = 2024,
    train_ratio: float = 0.8,
    val_images: int = 0,
    groups=None,
) -> list[Split]:
    """The protocol's splits. `train` holds `num_images` images (or `train_fraction` of the pool, or
    the whole pool when both are None), `test` the other 20%, `val` (when `val_images > 0`) images
    of the pool that are not in `train`. Grouped by reference when the data has references.

    The test set of split `i` does not depend on `num_images`, `train_fraction` or `val_images`.
    """
    if num_images is not None and train_fraction is not None:
        raise ValueError("give num_images (N-shot) or train_fraction (data efficiency), not both")
    if groups is None and isinstance(data, LabelledData):
        groups = data.groups
    n = len(data) if isinstance(data, LabelledData) else int(data)
    common = dict(num_splits=num_splits, train_ratio=train_ratio, seed=seed, group_by=groups)
    splits = make_splits(n, num_train=num_images, train_fraction=train_fraction, **common)
    if val_images <= 0:
        return splits
    pools = make_splits(n, **common)  # same random draws: same test sets, the whole pool as train
    out = []
    for split, pool in zip(splits, pools):
        rest = np.setdiff1d(pool.train, split.train)
        if len(rest) < val_images:
            raise ValueError(
                f"split {split.index}: {val_images} validation images asked for, but only {len(rest)} pool "
                "images are left after the training set"
            )
        rng = np.random.default_rng([int(seed), split.index, 1])
        val = np.sort(rng.choice(rest, size=val_images, replace=False))
        out.append(Split(index=split.index, train=split.train, val=val, test=split.test))
    return out


def released_splits(n: int, num_images: int | None = 50, num_splits: int = 10, seed: int = 2024,
                    train_ratio: float = 0.8) -> list[Split]:
    """The released `finetune.py`'s splits: numpy's global generator seeded once (`setup_seed`), then for
    each split the SAME index array shuffled again in place (the shuffles accumulate), the first
    `int(0.8 n)` positions as the pool, `num_images` drawn from it with `np.random.choice(replace=False)`,
    the rest as the test set. Rows, not references (no grouping). Reproduced with a private
    `RandomState(seed)`, which draws the same numbers as the released global one."""
    rng = np.random.RandomState(seed)
    order = np.arange(n)
    out = []
    for index in range(num_splits):
        rng.shuffle(order)
        cut = int(n * train_ratio)
        pool = order[:cut]
        if num_images is not None and num_images > len(pool):
            raise ValueError(f"{num_images} training images asked for, but the 80% pool has only {len(pool)}")
        train = pool if num_images is None else rng.choice(pool, size=num_images, replace=False)
        out.append(Split(index=index, train=np.sort(train), test=np.sort(order[cut:].copy())))
    return out


def split_record(split: Split, data: LabelledData, test_scores, **extra) -> dict:
    """One split of the report: image identifiers of each part and the test metrics."""
    test_scores = np.asarray(test_scores, dtype=np.float64)
    metrics = compute_metrics(test_scores, data.labels[split.test])
    ids = np.asarray(data.image_ids, dtype=object)
    return {
        "index": split.index,
        "train": ids[split.train].tolist(),
        "val": ids[split.val].tolist(),
        "test": ids[split.test].tolist(),
        **{k: metrics[k] for k in REPORT_METRICS},
        "n_test": int(metrics["n"]),
        "plcc_logistic_fit": metrics["plcc_logistic_fit"],
        "plcc_logistic_fit_reason": metrics["plcc_logistic_fit_reason"],
        **extra,
    }


def protocol_report(records: list[dict], selection: str, config: dict, provenance: dict | None = None,
                    **extra) -> dict:
    """The report: per-split records, the median and mean of each metric over splits, how the model of
    each split was selected, the full configuration, and its `provenance` (default: from the `model` /
    `backbone` of `config` and the accelerator in use, see `grmp_iqa_hf.provenance.for_run`)."""
    from .. import provenance as _provenance

    if selection not in SELECTION_MODES:
        raise ValueError(f"selection must be one of {SELECTION_MODES}, got {selection!r}")
    summary = summarize([{k: r[k] for k in REPORT_METRICS} for r in records])
    if provenance is None:
        provenance = _provenance.for_run(config)
    fits = [r.get("plcc_logistic_fit") for r in records]
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "num_splits": len(records),
        # the median / mean of plcc_logistic and rmse cover only the splits whose logistic fit is ok
        "plcc_logistic_fit_ok_splits": sum(f == "ok" for f in fits),
        "median": summary["median"],
        "mean": summary["mean"],
        "std": summary["std"],
        "selection": selection,
        "selection_uses_test_set": selection == "best_test",
        "splits": records,
        "config": config,
        "provenance": provenance,
        **extra,
    }
