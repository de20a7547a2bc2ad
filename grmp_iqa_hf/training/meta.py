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
- `meta_tasks.py`: the tasks (one per distortion type) and their keyed support / query draws
  (`MetaTaskSampler`, and `OfficialTaskSampler` for the released data).
- `evaluate_adaptation`: query loss / SRCC after k SGD adaptation steps on held-out tasks (model
  selection, and the measured benefit of meta-pre-training).
- `meta_pretrain`: the training loop (`trainer.Trainer` with the `MetaGradient` / `OfficialMetaGradient` rule);
  its runner (data, model, saving) is `grmp_iqa_hf.protocols.meta.run_meta_pretraining`, behind
  `examples/meta_pretrain.py`.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, grad
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..evaluation.metrics import compute_metrics
from .checkpointing import load_optimizer_state, optimizer_state
from .common import local_indices, make_accelerator, rng_for, trainable_parameters
from .data import ImageCache
from .meta_tasks import (  # noqa: F401 - the tasks' public names stay importable from here
    MetaTask, MetaTaskSampler, OfficialCaches, OfficialTaskSampler, build_tasks, split_holdout,
)
from .trainer import GradientRule, Trainer, TrainerCallback

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


class MetaGradient(GradientRule):
    """Reptile / FOMAML / MAML (`meta_gradients`) as the training loop's gradient rule. A step's task slots are
    shared out over processes (slot `t` to process `t % n`); each sums its tasks' meta-gradients and losses,
    the loop sums them over processes, and `combine` averages over the step's tasks. Batches are
    `(step, task_ids, phase)`. The inner loops take their own gradients, so fp16 runs without loss scaling."""

    checks = {"query_loss": "the meta-training query loss"}
    scales_loss = False

    def __init__(self, model, sampler, names, algorithm: str, inner_lr: float, inner_steps: int):
        self.model, self.sampler, self.names = model, sampler, list(names)
        self.algorithm, self.inner_lr, self.inner_steps = algorithm, inner_lr, inner_steps

    def local(self, trainer, batch):
        step, task_ids, _ = batch
        mine = local_indices(len(task_ids), trainer.accelerator)
        params = dict(zip(trainer.names, trainer.params))
        if not mine:
            return [torch.zeros_like(params[n]) for n in self.names], torch.zeros(2, device=trainer.device)
        stats: dict = {}
        pairs = [self.sampler.task_pair(step, slot, task_ids[slot], trainer.device) for slot in mine]
        with trainer.autocast():
            grads = meta_gradients(self.model, pairs, self.algorithm, self.inner_lr, self.inner_steps,
                                   [self.sampler.task_seed(step, slot) for slot in mine], stats)
        # sums, so that the reduction weights tasks equally
        losses = torch.tensor([stats["support_loss"], stats["query_loss"]], device=trainer.device) * len(mine)
        return [grads[n] * len(mine) for n in self.names], losses

    def combine(self, trainer, batch, grads, sums):
        count = len(batch[1])
        losses = sums / count
        return [g / count for g in grads], {"support_loss": float(losses[0]), "query_loss": float(losses[1]),
                                            "task_ids": batch[1]}


class OfficialMetaGradient(GradientRule):
    """The released `pretrain.py`'s phase (`official_phase`) as the training loop's gradient rule. Its task
    model is never reset and visits the phase's tasks in order, which cannot be split over processes: every
    process runs the whole phase (identical results, nothing to sum). The task model and its Adam are part of
    the checkpoints."""

    checks = {"query_loss": "the meta-training query loss"}
    scales_loss = False
    distributed = False

    def __init__(self, model, sampler, params: dict, inner_lr: float):
        self.model, self.sampler, self.inner_lr = model, sampler, inner_lr
        # the never-reset task model, and the Adam carried into the first source's phase
        self.task_params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        self.optimizer = torch.optim.Adam(list(self.task_params.values()), lr=inner_lr)

    def local(self, trainer, batch):
        step, task_ids, phase = batch
        tasks = [self.sampler.task_batches(step, slot, t, trainer.device) for slot, t in enumerate(task_ids)]
        stats: dict = {}
        with trainer.autocast():
            grads, self.optimizer = official_phase(
                self.model, self.task_params, self.optimizer, tasks, self.inner_lr, new_optimizer_per_task=phase > 0,
                task_seeds=[self.sampler.task_seed(step, s) for s in range(len(task_ids))], stats=stats)
        losses = torch.tensor([stats["support_loss"], stats["query_loss"]], device=trainer.device)
        return [grads[n] for n in self.task_params], losses

    def combine(self, trainer, batch, grads, sums):
        return grads, {"support_loss": float(sums[0]), "query_loss": float(sums[1]), "task_ids": batch[1]}

    def state_dict(self):
        tensors, meta = optimizer_state(self.optimizer, prefix="task_optimizer")
        tensors.update({f"task_model.{n}": p for n, p in self.task_params.items()})
        return tensors, {"task_optimizer": meta}

    def load_state_dict(self, tensors, state):
        with torch.no_grad():
            for n, p in self.task_params.items():
                p.copy_(tensors[f"task_model.{n}"])
        load_optimizer_state(self.optimizer, tensors, state["task_optimizer"], prefix="task_optimizer")


class _MetaRecords(TrainerCallback):
    """History, held-out evaluations and selection of `meta_pretrain`."""

    def __init__(self, model, args, train_tasks, holdout_sampler, selection_set, accelerator):
        self.model, self.args, self.train_tasks = model, args, train_tasks
        self.holdout_sampler, self.selection_set, self.accelerator = holdout_sampler, selection_set, accelerator
        self.evaluations: list[dict] = []

    def evaluate(self, trainer, step: int) -> dict | None:
        args, entry = self.args, {"step": step}
        if self.holdout_sampler is not None:
            result = evaluate_adaptation(self.model, self.holdout_sampler, (0, args.eval_adapt_steps), args.inner_lr,
                                         args.eval_visits, device=trainer.device)
            entry.update({f"{m}@{k}": v[m] for k, v in result.items() for m in v})
        if self.selection_set is not None:
            entry["selection_srcc"] = self.selection_set.srcc(self.model, self.accelerator)
        if len(entry) == 1:
            return None
        self.evaluations.append(entry)
        trainer.log({f"heldout/{k}": v for k, v in entry.items() if k != "step"}, step=step)
        return entry

    def on_train_begin(self, trainer):
        if trainer.step == 0 and trainer.max_steps > 0 and self.holdout_sampler is not None and not self.evaluations:
            first = self.evaluate(trainer, 0)
            if self.args.progress:
                self.accelerator.print(f"before meta-training: {json.dumps(first)}")
        self.model.train()

    def on_step_end(self, trainer, stats):
        args, done = self.args, trainer.step
        trainer.history.append({"step": done, "support_loss": stats["support_loss"], "query_loss": stats["query_loss"],
                                "lr": stats["lr"], "tasks": [self.train_tasks[t].name for t in stats["task_ids"]]})
        if args.eval_steps and (done % args.eval_steps == 0 or done == trainer.max_steps):
            entry = self.evaluate(trainer, done)
            self.model.train()
            if entry is not None and args.selection != "last":
                metric = f"query_loss@{args.eval_adapt_steps}" if args.selection == "heldout" else "selection_srcc"
                score = entry[metric] if args.selection == "heldout" else -entry[metric]  # lower is better
                best = trainer.best_info  # (a NaN score is stored as None: never beaten, as NaN never is)
                if best is None or (best["score"] is not None and score < best["score"]):
                    trainer.keep_best({"step": done, "score": score, "metric": metric})

    def on_train_end(self, trainer):
        self.model.eval()
        if self.args.selection != "last":
            trainer.restore_best()

    def state_dict(self):
        return {}, {"evaluations": self.evaluations}

    def load_state_dict(self, tensors, state):
        self.evaluations = list(state["evaluations"])


# what a checkpoint must share with the run that resumes it (besides the loop's own settings)
_SIGNATURE = ("algorithm", "seed", "tasks_per_step", "support_size", "query_size", "support_batch_size",
              "query_batch_size", "inner_lr", "inner_steps", "augment", "selection", "eval_steps", "eval_adapt_steps",
              "eval_visits")


def meta_pretrain(model, cache: ImageCache, train_tasks: list[MetaTask], holdout_tasks: list[MetaTask],
                  args, accelerator=None, selection_set=None) -> dict:
    """The meta-training loop: `args.max_steps` meta-steps of `args.algorithm` over `train_tasks`, with
    evaluation on `holdout_tasks` every `args.eval_steps` and selection of the best evaluated step
    (`args.selection="heldout"`) or the last one. Tasks of a step are split across processes and their
    meta-gradients summed explicitly (`MetaGradient`; `OfficialMetaGradient` for "official"). The loop is
    `trainer.Trainer` (checkpoints under `args.output_dir/checkpoints/`, trackers, mixed precision, the
    schedule: constant unless `args.lr_scheduler_type`).

    Leaves `model` with the selected parameters (in eval mode) and returns the summary (history,
    evaluations, selection, settings).
    """
    args = args.resolved()
    output_dir = Path(args.output_dir)
    accelerator = accelerator or make_accelerator(output_dir)
    model.to(accelerator.device)
    params = trainable_parameters(model)
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
        rule = OfficialMetaGradient(model, sampler, params, args.inner_lr)
        cache = cache.query  # held-out evaluation uses the query preprocessing

        def batches(step):  # the phase's tasks in a keyed order
            tasks = phase_tasks[step % len(phase_tasks)]
            return step, [tasks[i] for i in rng_for(args.seed, step).permutation(len(tasks))], step % len(phase_tasks)
    else:
        sampler = MetaTaskSampler(cache, train_tasks, args.seed, args.support_size, args.query_size, augment=args.augment)
        if args.max_steps is None:
            args.max_steps = 200
        rule = MetaGradient(model, sampler, params, args.algorithm, args.inner_lr, args.inner_steps)

        def batches(step):
            return step, sampler.step_tasks(step, args.tasks_per_step), None
    holdout_sampler = (MetaTaskSampler(cache, holdout_tasks, args.seed, args.support_size, args.query_size, augment=False)
                       if holdout_tasks else None)
    if args.selection == "dataset" and selection_set is None:
        raise ValueError("selection 'dataset' needs selection_set (an object with .srcc(model, accelerator); "
                         "run_meta_pretraining builds it from --selection-data-dir)")

    config = {k: v for k, v in asdict(args).items() if k not in ("progress",)}
    config.update(num_processes=accelerator.num_processes, train_tasks=[t.name for t in train_tasks],
                  holdout_tasks=[t.name for t in holdout_tasks], trainable_parameters=sum(p.numel() for p in params.values()))
    records = _MetaRecords(model, args, train_tasks, holdout_sampler, selection_set, accelerator)
    trainer = Trainer(
        params, rule, batches, accelerator=accelerator, optimizer=args.outer_optimizer, learning_rate=args.outer_lr,
        lr_scheduler_type=args.lr_scheduler_type, warmup_steps=args.warmup_steps, mixed_precision=args.mixed_precision,
        callbacks=[records], signature={k: config[k] for k in (*_SIGNATURE, "train_tasks", "holdout_tasks")},
        output_dir=output_dir, checkpointing_steps=args.checkpointing_steps, keep_checkpoints=args.keep_checkpoints,
        report_to=args.report_to, run_name="meta_pretrain", progress=args.progress,
        desc=f"Meta-pre-training ({args.algorithm})",
    )
    started = time.perf_counter()
    trainer.fit(args.max_steps, args.resume_from_checkpoint)

    selected = {"mode": "initial (max_steps 0)"} if args.max_steps == 0 else {"mode": "last", "step": args.max_steps}
    if trainer.best_params is not None and args.selection != "last":
        selected = {"mode": args.selection, **trainer.best_info}
        if args.selection == "dataset":
            selected["data"] = args.selection_data_dir
            selected["note"] = ("the released pretrain.py's choice: the step with the best SRCC on this dataset; it "
                                "leaks when the same dataset is later a fine-tuning target")
    return {
        "algorithm": args.algorithm,
        "selected": selected,
        "history": trainer.history,
        "evaluations": records.evaluations,
        "config": config,
        "seconds": round(time.perf_counter() - started, 1),
    }
