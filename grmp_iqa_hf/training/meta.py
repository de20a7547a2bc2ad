"""Meta-prompt pre-training (GRMP-IQA stage 1): learn prompt parameters over distortion tasks so that
they adapt fast to a new IQA dataset. CLIP stays frozen; only the model's trainable parameters (the
text context and the visual prompts) are meta-learned.

- `meta_gradients`: the meta-gradient of one meta-step for `maml` (second order through the inner SGD
  steps, with `torch.func`), `fomaml` (first order) and `reptile` (theta - phi). Every algorithm is
  expressed as a gradient, so one outer optimizer applies them all: Reptile's
  `theta += beta * mean(phi_t - theta)` is SGD with learning rate beta on `mean(theta - phi_t)`.
- `official_phase` + `OfficialTaskSampler`: the released `pretrain.py`, for reproduction only (see
  `run_meta_pretraining` with `algorithm="official"`): one outer update per data source and epoch over all
  of that source's distortion types in a shuffled order; per task, the images split 80/20 into a support
  and a query part, labels min-max scaled within each part, and a task model that is NEVER reset to the
  meta parameters takes one Adam step (lr 1e-4) on each support batch (75 images) followed by one on the
  next query batch (50 images, cycling); then `theta += 0.01 * mean_i(theta_i - theta)`.
- `MetaTaskSampler`: one task per distortion type; each visit draws a support and a query set
  (80/20 by reference where known), keyed by (seed, step, task) only.
- `evaluate_adaptation`: query loss / SRCC after k SGD adaptation steps on held-out tasks (model
  selection, and the measured benefit of meta-pre-training).
- `run_meta_pretraining`: the Accelerate loop behind `examples/meta_pretrain.py`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, grad
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from ..evaluation.metrics import compute_metrics
from .checkpointing import (
    load_checkpoint, load_optimizer_state, load_rng_state, optimizer_state, resolve_checkpoint, rng_state,
    save_checkpoint,
)
from .common import check_finite, local_indices, make_accelerator, reduce_sum, rng_for, seed_for, trainable_parameters
from ..data.registry import minmax_scale
from ..modeling.image_processing_iqa import IMAGENET_MEAN, IMAGENET_STD, IQAImageProcessor
from .data import ImageCache

ALGORITHMS = ("reptile", "fomaml", "maml", "official")
#: How the saved parameters are chosen: the lowest held-out query loss, the last step, or (the released
#: `pretrain.py`'s choice, which leaks when that dataset is also a fine-tuning target) the best SRCC on a
#: labelled dataset.
SELECTIONS = ("heldout", "last", "dataset")
# Evaluation draws use "steps" from here on: a key range that training steps never reach.
EVALUATION_KEY = 2**40

# ----------------------------------------------------------------------------------------------
# Meta-gradients
# ----------------------------------------------------------------------------------------------


def _loss_at(model, params: dict, batch: dict) -> torch.Tensor:
    """The model's own loss with `params` substituted for its trainable parameters."""
    return functional_call(model, params, args=(), kwargs={"pixel_values": batch["pixel_values"],
                                                             "labels": batch["labels"]}, strict=False).loss


def _sgd_adapt(model, params: dict, support: dict, inner_lr: float, inner_steps: int, differentiable: bool) -> dict:
    """`inner_steps` plain SGD steps on the support set. With `differentiable`, the steps stay in the
    graph of the enclosing `torch.func.grad` (second order); otherwise each step's gradient is a constant."""
    for _ in range(inner_steps):
        grads = grad(lambda p: _loss_at(model, p, support))(params) if differentiable else _plain_grad(model, params, support)[0]
        params = {n: params[n] - inner_lr * grads[n] for n in params}
    return params


def _plain_grad(model, params: dict, batch: dict) -> tuple[dict, torch.Tensor]:
    """`(gradient, loss)` at `params`, first order, with plain autograd: `torch.func.grad` always builds
    a graph that could be differentiated again, which made first-order steps about 1.7x slower."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    loss = _loss_at(model, leaves, batch)
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())))), loss.detach()


def _with_value(loss: torch.Tensor):
    """`(loss, detached loss)`: the form `torch.func.grad(..., has_aux=True)` needs to also return the value."""
    return loss, loss.detach()


@contextlib.contextmanager
def _task_rng(seed: int | None):
    """Dropout (and any other torch randomness) of one task, keyed by the task's seed."""
    if seed is None:
        yield
        return
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def meta_gradients(model, tasks, algorithm: str = "maml", inner_lr: float = 1e-2, inner_steps: int = 1,
                   task_seeds=None, stats: dict | None = None) -> dict[str, torch.Tensor]:
    """The meta-gradient of `model`'s trainable parameters (`requires_grad=True`) over `tasks`.

    Args:
        model: a model whose `forward(pixel_values=..., labels=...)` returns `.loss`.
        tasks: a list of `(support, query)` pairs of dicts with `pixel_values` and `labels` (in [0, 1]).
        algorithm: `"maml"`: the gradient of the query loss after `inner_steps` SGD steps on the
            support loss, through those steps (second order). `"fomaml"`: the gradient of the query
            loss at the adapted parameters. `"reptile"`: `theta - phi`, phi the adapted parameters.
        inner_lr, inner_steps: the inner plain-SGD optimiser.
        task_seeds: optional seed per task for dropout, so results do not depend on which process
            computes which task.
        stats: if a dict, receives the mean `support_loss` (before adaptation) and `query_loss` (after).

    Returns:
        `{parameter name: tensor}`, averaged over tasks, detached, on the parameters' devices.

    Second-order gradients through attention need the math SDPA kernel (the fused CPU and flash
    kernels have no double backward), so `maml` runs under `sdpa_kernel(SDPBackend.MATH)`.
    """
    if algorithm not in ("maml", "fomaml", "reptile"):
        raise ValueError(f"meta_gradients supports 'maml', 'fomaml' and 'reptile', got {algorithm!r}")
    if inner_steps < 1 and algorithm == "reptile":
        raise ValueError("reptile needs inner_steps >= 1 (with 0 steps theta - phi is always zero)")
    if not tasks:
        raise ValueError("meta_gradients needs at least one task")
    theta = {n: p.detach() for n, p in trainable_parameters(model).items()}
    if not theta:
        raise ValueError("the model has no trainable parameters (requires_grad=True)")
    seeds = list(task_seeds) if task_seeds is not None else [None] * len(tasks)
    if len(seeds) != len(tasks):
        raise ValueError(f"{len(tasks)} tasks but {len(seeds)} task seeds")

    total = {n: torch.zeros_like(p) for n, p in theta.items()}
    support_losses, query_losses = [], []
    kernel = sdpa_kernel(SDPBackend.MATH) if algorithm == "maml" else contextlib.nullcontext()
    with kernel:
        for (support, query), task_seed in zip(tasks, seeds):
            with _task_rng(task_seed):
                if algorithm == "maml":
                    def adapted_query_loss(params, support=support, query=query):
                        adapted = _sgd_adapt(model, params, support, inner_lr, inner_steps, differentiable=True)
                        return _with_value(_loss_at(model, adapted, query))

                    task_grad, q_loss = grad(adapted_query_loss, has_aux=True)(theta)
                else:
                    phi = _sgd_adapt(model, theta, support, inner_lr, inner_steps, differentiable=False)
                    if algorithm == "fomaml":
                        task_grad, q_loss = _plain_grad(model, phi, query)
                    else:
                        task_grad = {n: theta[n] - phi[n] for n in theta}
                        q_loss = _loss_at(model, phi, query).detach() if stats is not None else None
                if stats is not None:
                    with torch.no_grad():
                        support_losses.append(float(_loss_at(model, theta, support)))
                    query_losses.append(float(q_loss))
            for n in total:
                total[n] += task_grad[n].detach()
    if stats is not None:
        stats["support_loss"] = float(np.mean(support_losses))
        stats["query_loss"] = float(np.mean(query_losses))
    return {n: g / len(tasks) for n, g in total.items()}


def official_phase(model, task_params: dict, optimizer: torch.optim.Optimizer | None, tasks, inner_lr: float = 1e-4,
                   new_optimizer_per_task: bool = False, task_seeds=None, stats: dict | None = None):
    """One phase of the released `pretrain.py` (one data source's tasks, in the given order), as a gradient
    for an SGD outer step. Returns `(meta_gradient, optimizer)`.

    Args:
        model: the meta model; its trainable parameters are theta (read only here).
        task_params: the persistent task model (leaf tensors, `{name: tensor}`): NOT reset to theta between
            tasks, phases or epochs (the released defect, kept for reproduction).
        optimizer: the Adam over `task_params` carried from the previous phase (None: a new one).
        tasks: a list of `(support_batches, query_batches)`, each a list of dicts with `pixel_values` and
            `labels`. Support batch `b` is followed by query batch `b mod len(query_batches)`, one Adam step each.
        inner_lr: the Adam learning rate (1e-4 released).
        new_optimizer_per_task: a new Adam for every task (the released KADID-10k phase) instead of the
            carried one (the released TID2013 phase, which inherits the last KADID task's Adam from the
            previous epoch). The optimizer of the last task is returned for the next phase.
        task_seeds: a seed per task for dropout (the released task model trains in train mode).
        stats: if a dict, receives the mean support and query losses.

    The meta-gradient is `theta - mean_i(theta_i)` (theta_i: the task model after task i), so SGD with
    learning rate 0.01 performs the released `theta += 0.01 * mean_i(theta_i - theta)`.
    """
    theta = {n: p.detach() for n, p in trainable_parameters(model).items()}
    if not tasks:
        raise ValueError("official_phase needs at least one task")
    seeds = list(task_seeds) if task_seeds is not None else [None] * len(tasks)
    snapshots = {n: torch.zeros_like(p) for n, p in theta.items()}
    support_losses, query_losses = [], []

    def adam_step(batch):
        loss = _loss_at(model, task_params, batch)
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(task_params.values(), torch.autograd.grad(loss, list(task_params.values()))):
            p.grad = g
        optimizer.step()
        return float(loss.detach())

    for (support_batches, query_batches), task_seed in zip(tasks, seeds):
        if optimizer is None or new_optimizer_per_task:
            optimizer = torch.optim.Adam(list(task_params.values()), lr=inner_lr)
        if not support_batches or not query_batches:
            raise ValueError("every task needs at least one support batch and one query batch")
        with _task_rng(task_seed):
            for index, support in enumerate(support_batches):
                support_losses.append(adam_step(support))
                query_losses.append(adam_step(query_batches[index % len(query_batches)]))
        for n in snapshots:
            snapshots[n] += task_params[n].detach()
    if stats is not None:
        stats["support_loss"] = float(np.mean(support_losses))
        stats["query_loss"] = float(np.mean(query_losses))
    return {n: theta[n] - snapshots[n] / len(tasks) for n in theta}, optimizer


# ----------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Evaluation on held-out tasks
# ----------------------------------------------------------------------------------------------


def evaluate_adaptation(model, sampler: MetaTaskSampler, adapt_steps=(0, 5), inner_lr: float = 1e-2,
                        visits: int = 2, device=None) -> dict:
    """Fast adaptation on held-out tasks: for each task and visit, adapt the model's trainable
    parameters with plain SGD on a support set and measure the query loss and SRCC after each number
    of steps in `adapt_steps`. Support / query draws are keyed by `visits` (fixed across calls), so
    two parameter sets are compared on identical data. Returns
    `{k: {"query_loss": mean, "srcc": mean over tasks of the pooled-visit SRCC}}`."""
    was_training = model.training
    model.eval()
    adapt_steps = sorted(set(int(k) for k in adapt_steps))
    theta = {n: p.detach() for n, p in trainable_parameters(model).items()}
    results = {k: {"query_loss": [], "srcc": []} for k in adapt_steps}
    for task_index, task in enumerate(sampler.tasks):
        per_k_scores = {k: [] for k in adapt_steps}
        per_k_labels = []
        per_k_losses = {k: [] for k in adapt_steps}
        for visit in range(visits):
            support, query = sampler.task_pair(EVALUATION_KEY + visit, task_index, task_index, device=device)
            params, done = dict(theta), 0
            per_k_labels.append(query["labels"].cpu().numpy())
            for k in adapt_steps:
                params = _sgd_adapt(model, params, support, inner_lr, k - done, differentiable=False)
                done = k
                with torch.no_grad():
                    out = functional_call(model, params, args=(), kwargs=query, strict=False)
                per_k_losses[k].append(float(out.loss))
                per_k_scores[k].append(out.scores.cpu().numpy())
        labels = np.concatenate(per_k_labels)
        for k in adapt_steps:
            results[k]["query_loss"].append(float(np.mean(per_k_losses[k])))
            results[k]["srcc"].append(compute_metrics(np.concatenate(per_k_scores[k]), labels)["srcc"])
    model.train(was_training)
    return {k: {"query_loss": float(np.mean(v["query_loss"])), "srcc": float(np.nanmean(v["srcc"]))}
            for k, v in results.items()}


# ----------------------------------------------------------------------------------------------
# The training loop
# ----------------------------------------------------------------------------------------------


@dataclass
class MetaPretrainArguments:
    """Settings of `run_meta_pretraining` (the flags of `examples/meta_pretrain.py`)."""

    output_dir: str
    backbone: str | None = "tiny-random"
    model: str | None = None
    pristine_dir: str | None = None  # "skimage" or None (with no data_dir) = scikit-image's photos
    data_dir: list[str] = field(default_factory=list)
    dataset: list[str] = field(default_factory=list)
    distortions: list[str] | None = None  # synthetic engine: subset of types (default all 25)
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    pristine_size: int = 256
    holdout: list[str] | int | None = None  # 3 types; none for official (the released code trains on all)
    algorithm: str = "reptile"
    max_steps: int | None = None  # 200; official: `epochs` x the number of data sources
    epochs: int = 50  # official only: one outer update per data source and epoch
    tasks_per_step: int = 4
    support_size: int = 16
    query_size: int = 8
    support_batch_size: int = 75  # official only: the released support / query batch sizes
    query_batch_size: int = 50
    inner_lr: float | None = None  # 1e-2 (SGD); official: 1e-4 (Adam), the released value
    inner_steps: int = 3
    outer_lr: float | None = None
    outer_optimizer: str | None = None
    augment: bool = True
    eval_steps: int | None = None  # 50; official: once per epoch
    eval_adapt_steps: int = 5
    eval_visits: int = 2
    selection: str | None = None  # heldout; official: last, or "dataset" with selection_data_dir
    selection_data_dir: str | None = None  # "dataset" selection: the SRCC on this labelled dataset
    selection_dataset: str = "imagefolder"
    seed: int = 0
    checkpointing_steps: int | None = None
    resume_from_checkpoint: str | None = None
    keep_checkpoints: int = 2
    num_visual_prompts: int | None = None
    n_ctx: int | None = None
    ctx_init: str | None = None
    progress: bool = True

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
        if self.model and self.backbone not in (None, "tiny-random"):
            raise ValueError("give --model (a GRMP-IQA checkpoint) or --backbone (a CLIP), not both")
        return self


def _load_model(args: MetaPretrainArguments):
    from ..models import build_model
    from ..modeling.modeling_grmp_iqa import GRMPIQAModel

    if args.model:
        from ..provenance import resolve_model_source

        return GRMPIQAModel.from_pretrained(args.model, revision=resolve_model_source(args.model).load_revision)
    overrides = {k: v for k, v in (("num_visual_prompts", args.num_visual_prompts), ("n_ctx", args.n_ctx),
                                   ("ctx_init", args.ctx_init)) if v is not None}
    return build_model(args.backbone, seed=args.seed, **overrides)


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


@dataclass
class OfficialCaches:
    """The two image caches of `algorithm="official"`: support images resized to 256/224 of the crop (random
    crops are taken from them) and query images resized straight to the crop size, both with the released
    ImageNet statistics."""

    support: ImageCache
    query: ImageCache


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
        support, query = official_processors(processor.crop_size)
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
        from ..evaluation.fewshot import score_rows

        was_training = model.training
        scores = score_rows(model, self.cache, self.rows, accelerator)  # eval mode, rows shared over processes
        model.train(was_training)
        return float(compute_metrics(scores, self.labels)["srcc"])


def _selection_set(args, model, accelerator) -> _SelectionSet:
    from ..evaluation.protocol import load_labelled_dataset

    data = load_labelled_dataset(args.selection_data_dir, args.selection_dataset)
    return _SelectionSet(data.files, data.labels, model.image_processor, args.progress and accelerator.is_main_process)


def _outer_optimizer(args, params):
    if args.outer_optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.outer_lr)
    if args.outer_optimizer == "adam":
        return torch.optim.Adam(params, lr=args.outer_lr)
    raise ValueError(f"--outer-optimizer must be 'sgd' or 'adam', got {args.outer_optimizer!r}")


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
    summary = meta_pretrain(model, cache, train_tasks, holdout_tasks, args, accelerator)
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
        (output_dir / "meta_history.json").write_text(json.dumps(summary, indent=1))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def meta_pretrain(model, cache: ImageCache, train_tasks: list[MetaTask], holdout_tasks: list[MetaTask],
                  args: MetaPretrainArguments, accelerator=None) -> dict:
    """The meta-training loop: `args.max_steps` meta-steps of `args.algorithm` over `train_tasks`, with
    evaluation on `holdout_tasks` every `args.eval_steps` and selection of the best evaluated step
    (`args.selection="heldout"`) or the last one. Tasks of a step are split across processes and their
    meta-gradients summed explicitly. Checkpoints go under `args.output_dir/checkpoints/`.

    Leaves `model` with the selected parameters (in eval mode) and returns the summary (history,
    evaluations, selection, settings).
    """
    args = args.resolved()
    output_dir = Path(args.output_dir)
    accelerator = accelerator or make_accelerator(output_dir)
    device = accelerator.device
    model.to(device)
    params = trainable_parameters(model)
    names = list(params)
    official = None
    if args.algorithm == "official":
        if not isinstance(cache, OfficialCaches):
            raise ValueError("algorithm 'official' needs the released preprocessing: pass prepare_tasks()'s OfficialCaches")
        sampler = OfficialTaskSampler(cache.support, cache.query, train_tasks, args.seed, args.support_batch_size,
                                      args.query_batch_size, augment=args.augment)
        # one phase (outer update) per data source and epoch, in the order the sources were given
        sources = list(dict.fromkeys(t.source for t in train_tasks))
        phase_tasks = [[i for i, t in enumerate(train_tasks) if t.source == source] for source in sources]
        if args.max_steps is None:
            args.max_steps = args.epochs * len(sources)
        if not args.eval_steps and args.selection != "last":
            args.eval_steps = len(sources)  # once per epoch, as the released code
        # the never-reset task model, and the Adam carried into the first source's phase
        official = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        official_opt = torch.optim.Adam(list(official.values()), lr=args.inner_lr)
        cache = cache.query  # held-out evaluation uses the query preprocessing
    else:
        sampler = MetaTaskSampler(cache, train_tasks, args.seed, args.support_size, args.query_size, augment=args.augment)
        if args.max_steps is None:
            args.max_steps = 200
    holdout_sampler = (MetaTaskSampler(cache, holdout_tasks, args.seed, args.support_size, args.query_size, augment=False)
                       if holdout_tasks else None)
    selection_set = _selection_set(args, model, accelerator) if args.selection == "dataset" else None
    optimizer = _outer_optimizer(args, list(params.values()))

    state = {"history": [], "evaluations": [], "best": None}
    best_params = None
    start_step = 0
    checkpoint = resolve_checkpoint(output_dir, args.resume_from_checkpoint)
    if checkpoint is not None:
        tensors, saved = load_checkpoint(checkpoint)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(tensors[f"model.{n}"])
        load_optimizer_state(optimizer, tensors, saved["optimizer"])
        if official is not None:
            with torch.no_grad():
                for n, p in official.items():
                    p.copy_(tensors[f"task_model.{n}"])
            load_optimizer_state(official_opt, tensors, saved["task_optimizer"], prefix="task_optimizer")
        if any(k.startswith("best.") for k in tensors):
            best_params = {n: tensors[f"best.{n}"].to(device) for n in names}
        load_rng_state(tensors)
        state = saved["loop"]
        start_step = int(saved["step"])
        accelerator.print(f"Resumed from {checkpoint} at step {start_step}")

    config = {k: v for k, v in asdict(args).items() if k not in ("progress",)}
    config.update(num_processes=accelerator.num_processes, train_tasks=[t.name for t in train_tasks],
                  holdout_tasks=[t.name for t in holdout_tasks], trainable_parameters=sum(p.numel() for p in params.values()))
    if accelerator.trackers == [] and accelerator.log_with:
        accelerator.init_trackers("meta_pretrain", config={k: str(v) for k, v in config.items()})

    def evaluate(step):
        entry = {"step": step}
        if holdout_sampler is not None:
            result = evaluate_adaptation(model, holdout_sampler, (0, args.eval_adapt_steps), args.inner_lr,
                                         args.eval_visits, device=device)
            entry.update({f"{m}@{k}": v[m] for k, v in result.items() for m in v})
        if selection_set is not None:
            entry["selection_srcc"] = selection_set.srcc(model, accelerator)
        if len(entry) == 1:
            return None
        state["evaluations"].append(entry)
        accelerator.log({f"heldout/{k}": v for k, v in entry.items() if k != "step"}, step=step)
        return entry

    def save(step):
        tensors = {f"model.{n}": p for n, p in params.items()}
        opt_tensors, opt_meta = optimizer_state(optimizer)
        tensors.update(opt_tensors)
        extra = {}
        if official is not None:
            tensors.update({f"task_model.{n}": p for n, p in official.items()})
            t_tensors, extra["task_optimizer"] = optimizer_state(official_opt, prefix="task_optimizer")
            tensors.update(t_tensors)
        if best_params is not None:
            tensors.update({f"best.{n}": p for n, p in best_params.items()})
        tensors.update(rng_state())
        save_checkpoint(output_dir, step, tensors, {"optimizer": opt_meta, "loop": state, "config": config, **extra},
                        keep_last=args.keep_checkpoints)

    if start_step == 0 and args.max_steps > 0 and holdout_sampler is not None and not state["evaluations"]:
        first = evaluate(0)
        if args.progress:
            accelerator.print(f"before meta-training: {json.dumps(first)}")

    bar = tqdm(total=args.max_steps, initial=start_step, desc=f"Meta-pre-training ({args.algorithm})",
               disable=not (args.progress and accelerator.is_main_process))
    model.train()
    started = time.perf_counter()
    for step in range(start_step, args.max_steps):
        stats: dict = {}
        if args.algorithm == "official":
            # one never-reset task model visits the phase's tasks in order: not parallel across processes,
            # so every process runs the whole sequence (identical results)
            phase = step % len(phase_tasks)
            task_ids = [phase_tasks[phase][i] for i in rng_for(args.seed, step).permutation(len(phase_tasks[phase]))]
            tasks = [sampler.task_batches(step, slot, t, device) for slot, t in enumerate(task_ids)]
            grads, official_opt = official_phase(
                model, official, official_opt, tasks, args.inner_lr, new_optimizer_per_task=phase > 0,
                task_seeds=[sampler.task_seed(step, s) for s in range(len(task_ids))], stats=stats)
            flat = [grads[n] for n in names]
            losses = torch.tensor([stats["support_loss"], stats["query_loss"]], device=device)
        else:
            task_ids = sampler.step_tasks(step, args.tasks_per_step)
            mine = local_indices(len(task_ids), accelerator)
            flat = [torch.zeros_like(params[n]) for n in names]
            losses = torch.zeros(2, device=device)
            if mine:
                pairs = [sampler.task_pair(step, slot, task_ids[slot], device) for slot in mine]
                grads = meta_gradients(model, pairs, args.algorithm, args.inner_lr, args.inner_steps,
                                       [sampler.task_seed(step, slot) for slot in mine], stats)
                flat = [grads[n] * len(mine) for n in names]  # sums, so that the reduction weights tasks equally
                losses = torch.tensor([stats["support_loss"], stats["query_loss"]], device=device) * len(mine)
            flat = [g / len(task_ids) for g in reduce_sum(accelerator, flat + [losses])]
            flat, losses = flat[:-1], flat[-1]
        support_loss, query_loss = float(losses[0]), float(losses[1])
        check_finite(query_loss, "the meta-training query loss", step + 1)
        optimizer.zero_grad(set_to_none=True)
        for n, g in zip(names, flat):
            params[n].grad = g.to(params[n].dtype)
        optimizer.step()
        record = {"step": step + 1, "support_loss": support_loss, "query_loss": query_loss,
                  "tasks": [train_tasks[t].name for t in task_ids]}
        state["history"].append(record)
        accelerator.log({"train/support_loss": support_loss, "train/query_loss": query_loss}, step=step + 1)
        bar.update(1)
        bar.set_postfix(query_loss=f"{query_loss:.4f}")
        done = step + 1
        if args.eval_steps and (done % args.eval_steps == 0 or done == args.max_steps):
            entry = evaluate(done)
            model.train()
            if entry is not None and args.selection != "last":
                metric = f"query_loss@{args.eval_adapt_steps}" if args.selection == "heldout" else "selection_srcc"
                score = entry[metric] if args.selection == "heldout" else -entry[metric]  # lower is better
                if state["best"] is None or score < state["best"]["score"]:
                    state["best"] = {"step": done, "score": score, "metric": metric}
                    best_params = {n: p.detach().clone() for n, p in params.items()}
        if args.checkpointing_steps and done % args.checkpointing_steps == 0 and done < args.max_steps:
            if accelerator.is_main_process:
                save(done)
            accelerator.wait_for_everyone()
    bar.close()
    model.eval()

    selected = {"mode": "initial (max_steps 0)"} if args.max_steps == 0 else {"mode": "last", "step": args.max_steps}
    if best_params is not None and args.selection != "last":
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(best_params[n])
        selected = {"mode": args.selection, **state["best"]}
        if args.selection == "dataset":
            selected["data"] = args.selection_data_dir
            selected["note"] = ("the released pretrain.py's choice: the step with the best SRCC on this dataset; it "
                                "leaks when the same dataset is later a fine-tuning target")
    return {
        "algorithm": args.algorithm,
        "selected": selected,
        "history": state["history"],
        "evaluations": state["evaluations"],
        "config": config,
        "seconds": round(time.perf_counter() - started, 1),
    }
