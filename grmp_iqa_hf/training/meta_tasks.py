"""The tasks of meta-prompt pre-training (`meta.py`): one task per distortion type, and the keyed draws of
each task visit.

- `MetaTask`, `build_tasks`, `split_holdout`: the tasks and the held-out types used for selection.
- `MetaTaskSampler`: each visit draws a support and a query set (80/20 by reference where known), keyed by
  (seed, step, task) only, so no draw depends on the number of processes.
- `OfficialTaskSampler` + `OfficialCaches`: the data of the released `pretrain.py` (its split, crops, batch
  sizes and the two preprocessings), keyed instead of unseeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..data.registry import minmax_scale
from .common import rng_for, seed_for
from .data import ImageCache


@dataclass
class MetaTask:
    """One distortion type: the rows (indices into the image cache) of its images, their labels in
    [0, 1] (higher = better) and their reference ids (None when unknown)."""

    name: str
    rows: np.ndarray
    labels: np.ndarray
    refs: list | None = None
    source: str = ""  # the data source (dataset) the type comes from: `official` runs one phase per source

    def __len__(self) -> int:
        return len(self.rows)


def build_tasks(distortions, labels, refs=None, valid=None, min_images: int = 4, sources=None) -> list[MetaTask]:
    """One `MetaTask` per distinct distortion name (in first-seen order); rows not in `valid` (images
    that failed to decode) are left out; tasks with fewer than `min_images` images are dropped.
    `sources` (one per row) names each row's data source."""
    labels = np.asarray(labels, dtype=np.float64)
    valid = set(range(len(labels))) if valid is None else set(int(i) for i in valid)
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(distortions):
        if name in (None, "", "reference") or i not in valid:
            continue
        by_name.setdefault(str(name), []).append(i)
    tasks = []
    for name, rows in by_name.items():
        if len(rows) < min_images:
            continue
        rows = np.asarray(rows, dtype=np.int64)
        tasks.append(MetaTask(name, rows, labels[rows], None if refs is None else [refs[i] for i in rows],
                              "" if sources is None else str(sources[rows[0]])))
    return tasks


def split_holdout(tasks: list[MetaTask], holdout, seed: int) -> tuple[list[MetaTask], list[MetaTask]]:
    """`(train_tasks, holdout_tasks)`: `holdout` is a list of task names, or a count drawn with `seed`."""
    names = [t.name for t in tasks]
    if isinstance(holdout, int):
        if holdout >= len(tasks):
            raise ValueError(f"cannot hold out {holdout} of {len(tasks)} distortion types: none would be left to train on")
        chosen = set(np.asarray(names, dtype=object)[rng_for(seed, 7919).permutation(len(tasks))[:holdout]])
    else:
        chosen = set(holdout)
        unknown = chosen - set(names)
        if unknown:
            raise ValueError(f"held-out distortion types {sorted(unknown)} not found; available: {names}")
    return [t for t in tasks if t.name not in chosen], [t for t in tasks if t.name in chosen]


class MetaTaskSampler:
    """Draws the tasks of a meta-step and each task's support / query sets.

    Every draw is keyed: the task types of step `s` by `(seed, s)`, the support / query sets of task
    slot `t` by `(seed, s, t)`, its crops by `(seed, s, t, 0 or 1)` and its dropout by a seed derived
    from `(seed, s, t)`. No draw depends on the process count or on which process computes the task.
    """

    def __init__(self, cache: ImageCache, tasks: list[MetaTask], seed: int, support_size: int = 16,
                 query_size: int = 8, support_fraction: float = 0.8, augment: bool = True):
        if not tasks:
            raise ValueError("no meta-training tasks")
        self.cache, self.tasks, self.seed = cache, tasks, int(seed)
        self.support_size, self.query_size = support_size, query_size
        self.support_fraction, self.augment = support_fraction, augment

    def step_tasks(self, step: int, tasks_per_step: int) -> list[int]:
        """Task indices of meta-step `step` (without repetition while there are enough types)."""
        rng = rng_for(self.seed, step)
        n = len(self.tasks)
        if tasks_per_step <= n:
            return rng.permutation(n)[:tasks_per_step].tolist()
        return rng.integers(0, n, size=tasks_per_step).tolist()

    def support_query_rows(self, task: MetaTask, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Split the task's images 80/20 (by reference when known) and subsample each side."""
        positions = np.arange(len(task))
        if task.refs is not None and len(set(task.refs)) >= 2:
            refs = np.asarray([str(r) for r in task.refs], dtype=object)
            unique = np.unique(refs)
            order = rng.permutation(len(unique))
            n_support = min(len(unique) - 1, max(1, int(round(self.support_fraction * len(unique)))))
            support_refs = set(unique[order[:n_support]])
            in_support = np.array([r in support_refs for r in refs])
        else:
            order = rng.permutation(len(task))
            n_support = min(len(task) - 1, max(1, int(round(self.support_fraction * len(task)))))
            in_support = np.zeros(len(task), dtype=bool)
            in_support[order[:n_support]] = True
        support, query = positions[in_support], positions[~in_support]
        support = rng.permutation(support)[: self.support_size]
        query = rng.permutation(query)[: self.query_size]
        return np.sort(support), np.sort(query)

    def batch(self, task: MetaTask, positions: np.ndarray, keys) -> dict:
        rows = task.rows[positions]
        pixel_values = self.cache.batch(rows, keys=keys if self.augment else None)
        return {"pixel_values": pixel_values, "labels": torch.as_tensor(task.labels[positions], dtype=torch.float32)}

    def task_pair(self, step: int, slot: int, task_index: int, device=None) -> tuple[dict, dict]:
        task = self.tasks[task_index]
        support, query = self.support_query_rows(task, rng_for(self.seed, step, slot))
        pair = (self.batch(task, support, (self.seed, step, slot, 0)), self.batch(task, query, (self.seed, step, slot, 1)))
        if device is not None:
            pair = tuple({k: v.to(device) for k, v in b.items()} for b in pair)
        return pair

    def task_seed(self, step: int, slot: int) -> int:
        return seed_for(self.seed, step, slot, 2)


class OfficialTaskSampler:
    """The data of one task visit of the released `pretrain.py` (`load_data`), keyed instead of unseeded.

    The task's images are split 80/20 by row (`train_test_split(train_size=0.8)`: floor(0.8 n) support
    images, both parts in a random order); each part's labels are min-max scaled within the part (the
    released dataset class scales over its own CSV); support images come from `support_cache` (square
    resize to 256/224 of the crop) with a random horizontal flip and a random crop (offsets in
    [0, margin), as `np.random.randint`), query images from `query_cache` (square resize straight to the
    crop size); batches of `support_batch_size` (75) and `query_batch_size` (50) in that order.
    """

    def __init__(self, support_cache: ImageCache, query_cache: ImageCache, tasks: list[MetaTask], seed: int,
                 support_batch_size: int = 75, query_batch_size: int = 50, support_fraction: float = 0.8,
                 augment: bool = True):
        if not tasks:
            raise ValueError("no meta-training tasks")
        self.support_cache, self.query_cache, self.tasks, self.seed = support_cache, query_cache, tasks, int(seed)
        self.support_batch_size, self.query_batch_size = support_batch_size, query_batch_size
        self.support_fraction, self.augment = support_fraction, augment

    def split(self, task: MetaTask, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        order = rng.permutation(len(task))
        n_support = min(len(task) - 1, max(1, int(math.floor(self.support_fraction * len(task)))))
        return order[:n_support], order[n_support:]

    def _support_crop(self, row: int, rng: np.random.Generator) -> torch.Tensor:
        cache = self.support_cache
        if not self.augment:
            return cache.crop(row)
        _, height, width = cache.images[row].shape
        flip = bool(rng.random() < 0.5)  # the released order: flip, then crop
        top = int(rng.integers(0, max(height - cache.crop_size, 1)))
        left = int(rng.integers(0, max(width - cache.crop_size, 1)))
        return cache.crop_at(row, top, left, flip)

    def task_batches(self, step: int, slot: int, task_index: int, device=None) -> tuple[list[dict], list[dict]]:
        """`(support_batches, query_batches)` of task slot `slot` of outer step `step`."""
        task = self.tasks[task_index]
        support, query = self.split(task, rng_for(self.seed, step, slot))
        crop_rng = rng_for(self.seed, step, slot, 0)
        support_pixels = [self._support_crop(int(task.rows[p]), crop_rng) for p in support]
        query_pixels = [self.query_cache.crop(int(task.rows[p])) for p in query]
        out = []
        for pixels, positions, size in ((support_pixels, support, self.support_batch_size),
                                        (query_pixels, query, self.query_batch_size)):
            labels = torch.as_tensor(minmax_scale(task.labels[positions]), dtype=torch.float32)  # within the part
            batches = []
            for start in range(0, len(positions), size):
                batch = {"pixel_values": torch.stack(pixels[start : start + size]), "labels": labels[start : start + size]}
                batches.append({k: v.to(device) for k, v in batch.items()} if device is not None else batch)
            out.append(batches)
        return out[0], out[1]

    def task_seed(self, step: int, slot: int) -> int:
        return seed_for(self.seed, step, slot, 2)



@dataclass
class OfficialCaches:
    """The two image caches of `algorithm="official"`: support images resized to 256/224 of the crop (random
    crops are taken from them) and query images resized straight to the crop size, both with the released
    ImageNet statistics."""

    support: ImageCache
    query: ImageCache


__all__ = ["MetaTask", "MetaTaskSampler", "OfficialCaches", "OfficialTaskSampler", "build_tasks", "split_holdout"]
