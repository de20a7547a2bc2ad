"""The one training loop of the package: few-shot fine-tuning, meta-pre-training and MP-IQE all run on it.

A method plugs in three small pieces:

- a gradient rule (`GradientRule`): `local` gives this process's gradient sums for a batch, `combine` turns
  the sums over all processes into the update direction. The rules: `LossGradient` (the model's own loss:
  MP-IQE), `gradreg.QGRGradient` (two vector-Jacobian products, then grouping and projection: few-shot
  fine-tuning; lambda 0 is plain fine-tuning) and the meta-gradients of `meta.py`;
- a batch provider `batches(step)`: a pure function of the step. Every random choice of our methods is keyed
  by (seed, step, ...), so the step is the data position (nothing else to store for an exact resume) and no
  draw depends on the number of processes;
- callbacks (`TrainerCallback`): history records, evaluations, model selection, per-epoch learning-rate rules.

The loop owns the rest:

- processes: the model is not wrapped in DDP. Gradients from `torch.autograd.grad` / `torch.func` never pass
  through DDP's hooks, so each step sums them explicitly (`reduce_sum`, one collective for the gradients and
  one for the statistics) before the rule combines them: every process applies the same update;
- the optimizer, by name (`create_optimizer`), and the schedule: `transformers.get_scheduler` by name
  (`lr_scheduler_type`, `warmup_steps`), else the method's own (`lr_at`: the rate as a function of the step;
  None: constant, the per-epoch rules of few-shot fine-tuning being callbacks);
- mixed precision (`mixed_precision` "no" | "bf16" | "fp16"; None: the accelerator's, so that
  `accelerate launch --mixed_precision bf16` is honoured): autocast for the forward passes (`autocast`), and
  for fp16 dynamic loss scaling (`LossScaler`): rules differentiate `trainer.scale(loss)`, the loop unscales
  the summed gradients and skips the step when they are not finite;
- the NaN/inf stop (`NonFiniteLossError`, before the update, so the last checkpoint stays good);
- one checkpoint and resume path (`checkpointing.py`: safetensors + JSON, atomic): parameters, optimizer,
  scheduler, loss scaler, RNG, history, the best parameters kept for selection and every callback's state;
  a checkpoint is only resumed by the run that wrote it (same trainable set, starting weights and settings);
- trackers (`report_to`, "auto": TensorBoard when installed) and the progress bar.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..json_io import to_jsonable
from .checkpointing import (
    load_checkpoint, load_optimizer_state, load_rng_state, optimizer_state, resolve_checkpoint, rng_state,
    save_checkpoint,
)
from .common import check_finite, reduce_sum

MIXED_PRECISION = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
#: `transformers.get_scheduler` schedules selectable by name: those that need nothing but the warm-up and the
#: number of steps (the others want a metric or extra settings)
LR_SCHEDULER_TYPES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                      "inverse_sqrt")


# ----------------------------------------------------------------------------------------------
# Factories: optimizer, schedule, precision, trackers
# ----------------------------------------------------------------------------------------------


def create_optimizer(name: str, params, learning_rate: float, weight_decay: float = 0.0,
                     momentum: float = 0.0) -> torch.optim.Optimizer:
    """An optimizer by name: "sgd" (with `momentum`), "adam" or "adamw"; a new one is one entry of `OPTIMIZERS`."""
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: choose from {sorted(OPTIMIZERS)}")
    options = {"lr": learning_rate, "weight_decay": weight_decay}
    if key == "sgd":
        options["momentum"] = momentum
    elif momentum:
        raise ValueError(f"momentum is an option of 'sgd', not of {name!r}")
    return OPTIMIZERS[key](params, **options)


def check_scheduler_name(name: str) -> str:
    if name not in LR_SCHEDULER_TYPES:
        raise ValueError(f"unknown lr_scheduler_type {name!r}: choose from {list(LR_SCHEDULER_TYPES)}")
    return name


def create_scheduler(name: str, optimizer, warmup_steps: int, training_steps: int):
    """`transformers.get_scheduler(name)` over `training_steps` optimizer steps with `warmup_steps` of warm-up."""
    from transformers import get_scheduler

    check_scheduler_name(name)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=training_steps)


def resolve_mixed_precision(mixed_precision: str | None = None, accelerator=None) -> str:
    """"no", "bf16" or "fp16": `mixed_precision`, else the accelerator's (accelerate's config / environment)."""
    if mixed_precision is None:
        mixed_precision = accelerator.mixed_precision if accelerator is not None else "no"
    value = str(mixed_precision).lower()
    if value not in MIXED_PRECISION:
        raise ValueError(f"mixed_precision must be one of {list(MIXED_PRECISION)}, got {mixed_precision!r}")
    return value


def autocast(mixed_precision: str, device) -> contextlib.AbstractContextManager:
    """The forward passes' autocast: the `torch.autocast` that `accelerator.autocast()` builds, but for this
    trainer's setting (the accelerator's is one per process, and on a CPU it turns fp16 off, while the
    released fine-tuning's fp16 autocast must run on CPUs too)."""
    dtype = MIXED_PRECISION[mixed_precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def resolve_report_to(report_to="auto") -> list[str]:
    """Tracker names: "auto" = ["tensorboard"] when it is installed, else none; "none" / None = none; "all" =
    every installed one; else accelerate tracker names (a string or a list)."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    names = [] if report_to is None else [report_to] if isinstance(report_to, str) else list(report_to)
    out = []
    for name in (str(n).strip().lower() for n in names):
        if name == "auto":
            out += ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
        elif name == "all":
            out += [str(t) for t in get_available_trackers()]
        elif name in LOGGER_TYPE_TO_CLASS:
            out.append(name)
        elif name != "none":
            raise ValueError(f"unknown tracker {name!r} in report_to: use 'auto', 'none' or one of "
                             f"{sorted(LOGGER_TYPE_TO_CLASS)}")
    return list(dict.fromkeys(out))


def fingerprint(names, params) -> str:
    """sha256 of named parameter values: identifies a run's starting weights."""
    digest = hashlib.sha256()
    for name, param in zip(names, params):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------------------------
# What a method plugs in
# ----------------------------------------------------------------------------------------------


class TrainerCallback:
    """Hooks into the loop (all optional). `state_dict`/`load_state_dict` put the callback's state into the
    trainer's checkpoints: `(tensors, JSON-able dict)`; tensor names must not clash with the loop's
    (`param.`, `optimizer.`, `rng.`, `best.`)."""

    def on_train_begin(self, trainer: "Trainer") -> None:
        """After a checkpoint was loaded, before the first step of this call to `fit`."""

    def on_step_end(self, trainer: "Trainer", stats: dict) -> None:
        """After each step (`trainer.step` counts it), before the checkpoint of that step is written."""

    def on_train_end(self, trainer: "Trainer") -> None:
        """After the last step."""

    def state_dict(self) -> tuple[dict, dict]:
        return {}, {}

    def load_state_dict(self, tensors: dict, state: dict) -> None:
        pass


class GradientRule(TrainerCallback):
    """How a method turns a batch into the update direction.

    - `local(trainer, batch) -> (grads, sums)`: this process's share: a list of gradient tensors (usually sums
      over its samples) and a 1-D tensor of statistics to sum over processes;
    - `combine(trainer, batch, grads, sums) -> (direction, stats)`: from those summed over processes (they
      are identical on every process), one tensor per trained parameter and the step's statistics.

    `distributed = False`: every process computes the whole step (no sums). `scales_loss`: the rule's
    gradients come from `trainer.scale(loss)`, so fp16 loss scaling applies. `checks`: statistics that must be
    finite, with their description for the error.
    """

    distributed = True
    scales_loss = True
    checks = {"loss": "the training loss"}

    def local(self, trainer: "Trainer", batch):
        raise NotImplementedError

    def combine(self, trainer: "Trainer", batch, grads, sums):
        raise NotImplementedError


class LossGradient(GradientRule):
    """The model's own loss. `loss_fn(batch) -> (loss, sums)`: `loss` is this process's share of the step's
    mean loss (so that the gradients summed over processes are the batch-mean gradient; None when it has no
    sample of this step), `sums` a 1-D tensor: one sum over its samples per name of `names`, then its sample
    count. `stats` holds `loss` (the batch mean of the first name), `count` and the global `sums`."""

    def __init__(self, params, loss_fn, names=("loss",), what: str = "the training loss"):
        self.params, self.loss_fn, self.names = list(params), loss_fn, tuple(names)
        self.checks = {"loss": what}

    def local(self, trainer, batch):
        with trainer.autocast():
            loss, sums = self.loss_fn(batch)
        if loss is None:
            return [torch.zeros_like(p) for p in self.params], sums
        grads = torch.autograd.grad(trainer.scale(loss), self.params, allow_unused=True, materialize_grads=True)
        return list(grads), sums

    def combine(self, trainer, batch, grads, sums):
        *values, count = sums.tolist()
        totals = dict(zip(self.names, values))
        return grads, {"loss": totals[self.names[0]] / count, "count": int(count), "sums": totals}


class LossScaler:
    """Dynamic fp16 loss scaling for gradients taken with `torch.autograd.grad` (`torch.amp.GradScaler`'s rule,
    which only unscales `.grad` in place): rules differentiate `scale(loss)`; the loop unscales the summed
    gradients before the rule combines them (QGR's dot products would overflow on scaled gradients), skips
    the step when they are not finite and halves the scale; 2000 good steps in a row double it."""

    def __init__(self, enabled: bool, init_scale: float = 2.0**16, growth_interval: int = 2000):
        self.enabled, self.value, self.growth_interval, self.good_steps = enabled, init_scale, growth_interval, 0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.value if self.enabled else loss

    def unscale(self, grads: list[torch.Tensor]) -> tuple[list[torch.Tensor], bool]:
        """`(grads / scale, all finite)`; a power-of-two scale changes no rounding."""
        if not self.enabled:
            return grads, True
        grads = [g * (1.0 / self.value) for g in grads]
        return grads, bool(torch.stack([g.isfinite().all() for g in grads]).all())

    def update(self, finite: bool) -> None:
        if not self.enabled:
            return
        self.good_steps = self.good_steps + 1 if finite else 0
        if not finite:
            self.value *= 0.5
        elif self.good_steps == self.growth_interval:
            self.value, self.good_steps = self.value * 2.0, 0

    def state_dict(self) -> dict | None:
        return {"scale": self.value, "good_steps": self.good_steps} if self.enabled else None

    def load_state_dict(self, state: dict) -> None:
        self.value, self.good_steps = float(state["scale"]), int(state["good_steps"])


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


class Trainer:
    """The training loop (see the module docstring).

    Args:
        params: `{name: parameter}` trained (in a fixed order: the checkpoint and the reductions follow it).
        rule: the method's `GradientRule`. batches: `batches(step)` -> what the rule's `local` takes.
        accelerator: for the process group, the device and the default mixed precision (None: one process).
        optimizer, learning_rate, weight_decay, momentum: see `create_optimizer`.
        lr_scheduler_type, warmup_steps: a `transformers.get_scheduler` name (None: the method's default,
            `lr_at(step) -> rate` or constant).
        max_grad_norm: clip the direction's norm (None / 0: no clipping).
        mixed_precision: "no", "bf16", "fp16" or None (the accelerator's).
        loss_scaling: with fp16, dynamic loss scaling (`LossScaler`); False reproduces code without it (the
            released GRMP-IQA fine-tuning: fp16 autocast, unscaled gradients).
        callbacks: `TrainerCallback`s, after the rule (which is one too).
        signature: the method's settings that a checkpoint must share to be resumed by this run.
        output_dir, checkpointing_steps, keep_checkpoints: checkpoints every N steps and after the last step
            under `<output_dir>/checkpoints/` (None / 0 keeps all); trackers log to `<output_dir>/logs/<run_name>`.
        report_to: see `resolve_report_to`. progress, desc: the progress bar (main process only).
    """

    def __init__(self, params: dict, rule: GradientRule, batches, *, accelerator=None, optimizer: str = "sgd",
                 learning_rate: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.0,
                 lr_scheduler_type: str | None = None, warmup_steps: int = 0, lr_at=None,
                 max_grad_norm: float | None = None, mixed_precision: str | None = None, loss_scaling: bool = True, callbacks=(),
                 signature: dict | None = None, output_dir=None, checkpointing_steps: int | None = None,
                 keep_checkpoints: int | None = 2, report_to="auto", run_name: str = "train", progress: bool = True,
                 desc: str = "Training"):
        if not params:
            raise ValueError("nothing to train: no parameter requires grad")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.names, self.params = list(params), list(params.values())
        self.rule, self.batches, self.callbacks = rule, batches, [rule, *callbacks]
        self.accelerator = accelerator
        self.device = accelerator.device if accelerator is not None else self.params[0].device
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.is_main = self.rank == 0
        self.optimizer = create_optimizer(optimizer, self.params, learning_rate, weight_decay, momentum)
        self.lr_scheduler_type, self.warmup_steps, self.lr_at = lr_scheduler_type, int(warmup_steps), lr_at
        if lr_scheduler_type is not None:
            check_scheduler_name(lr_scheduler_type)
        self.scheduler = None  # built by `fit`, which knows the number of steps
        self.max_grad_norm = max_grad_norm
        self.mixed_precision = resolve_mixed_precision(mixed_precision, accelerator)
        self.scaler = LossScaler(self.mixed_precision == "fp16" and rule.scales_loss and loss_scaling)
        self.configure_checkpoints(output_dir, checkpointing_steps, keep_checkpoints)
        self.report_to, self.run_name, self.trackers = resolve_report_to(report_to), run_name, []
        self.progress, self.desc = progress and self.is_main, desc
        self.start_fingerprint = fingerprint(self.names, self.params)
        self.settings = to_jsonable({  # the method's signature wins (e.g. the name of its own schedule)
            "optimizer": str(optimizer).lower(), "learning_rate": learning_rate, "weight_decay": weight_decay,
            "momentum": momentum, "lr_scheduler_type": lr_scheduler_type, "warmup_steps": self.warmup_steps,
            "max_grad_norm": max_grad_norm, "mixed_precision": self.mixed_precision,
            "loss_scaling": self.scaler.enabled, **(signature or {}),
        })
        # the training state (all of it goes into checkpoints)
        self.step, self.max_steps, self.history, self.stopped = 0, None, [], None
        self.best_params: list[torch.Tensor] | None = None
        self.best_info: dict | None = None
        self.resumed_from: str | None = None

    def configure_checkpoints(self, output_dir=None, checkpointing_steps: int | None = None,
                              keep_checkpoints: int | None = 2) -> None:
        """Where checkpoints (and tracker logs) go, and how often: every `checkpointing_steps` steps and after
        the last one; `keep_checkpoints` newest kept (None / 0: all)."""
        if checkpointing_steps is not None and (checkpointing_steps < 1 or output_dir is None):
            raise ValueError("checkpointing_steps needs an integer >= 1 and an output_dir")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.checkpointing_steps, self.keep_checkpoints = checkpointing_steps, keep_checkpoints or None

    # ------------------------------------------------------------------ pieces the rules use

    def autocast(self):
        return autocast(self.mixed_precision, self.device)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """`loss` times the fp16 loss scale (unchanged otherwise): differentiate this."""
        return self.scaler.scale(loss)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value

    def keep_best(self, info: dict) -> None:
        """Keep a copy of the current parameters as the selected ones (restored by `restore_best`)."""
        self.best_params = [p.detach().clone() for p in self.params]
        self.best_info = to_jsonable(info)

    def restore_best(self) -> bool:
        if self.best_params is None:
            return False
        with torch.no_grad():
            for param, best in zip(self.params, self.best_params):
                param.copy_(best)
        return True

    def log(self, values: dict, step: int | None = None) -> None:
        """Numbers of `values` to the trackers (main process)."""
        values = {k: v for k, v in values.items() if _number(v)}
        for tracker in self.trackers:
            tracker.log(values, step=self.step if step is None else step)

    # ------------------------------------------------------------------ one step

    def train_step(self, batch) -> dict:
        """One optimizer step on `batch`; returns the rule's statistics plus `lr` (of this step) and `seconds`."""
        started = time.perf_counter()
        if self.lr_at is not None and self.scheduler is None:
            self.set_lr(self.lr_at(self.step))
        lr = self.lr
        grads, sums = self.rule.local(self, batch)
        if self.rule.distributed:
            grads = reduce_sum(self.accelerator, list(grads))
            (sums,) = reduce_sum(self.accelerator, [sums])
        grads, finite = self.scaler.unscale(grads)
        direction, stats = self.rule.combine(self, batch, grads, sums)
        for key, what in self.rule.checks.items():
            if stats.get(key) is not None:
                check_finite(stats[key], what, self.step + 1)
        if self.scaler.enabled:
            stats.update(loss_scale=self.scaler.value, skipped=not finite)
        self.scaler.update(finite)
        if finite:  # (under fp16 a step whose gradients overflowed is skipped)
            for param, grad in zip(self.params, direction):
                param.grad = grad.to(param.dtype)
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        stats.update(lr=lr, seconds=time.perf_counter() - started)
        return stats

    # ------------------------------------------------------------------ the loop

    def fit(self, max_steps: int, resume_from_checkpoint=None) -> list:
        """Train until `max_steps` steps are done (or a callback stops the run), continuing from
        `resume_from_checkpoint` ("latest": the newest checkpoint of `output_dir`, if any; or a folder)."""
        if max_steps < 0:
            raise ValueError(f"the number of steps must be >= 0, got {max_steps}")
        self.max_steps = int(max_steps)
        if self.lr_scheduler_type is not None and self.scheduler is None:
            self.scheduler = create_scheduler(self.lr_scheduler_type, self.optimizer, self.warmup_steps, self.max_steps)
            self.settings["lr_schedule_steps"] = self.max_steps  # the schedule's shape depends on it
        path = self.resolve_resume(resume_from_checkpoint)
        if path is not None:
            self.load(path)
        self._start_trackers()
        try:
            for callback in self.callbacks:
                callback.on_train_begin(self)
            bar = tqdm(total=self.max_steps, initial=min(self.step, self.max_steps), desc=self.desc, unit="step",
                       disable=not self.progress)
            key = next(iter(self.rule.checks), None)
            while self.step < self.max_steps and self.stopped is None:
                stats = self.train_step(self.batches(self.step))
                self.log({f"train/{k}": v for k, v in stats.items()})
                for callback in self.callbacks:
                    callback.on_step_end(self, stats)
                bar.update(1)
                if stats.get(key) is not None:
                    bar.set_postfix({key: f"{stats[key]:.4f}"})
                done = self.step >= self.max_steps or self.stopped is not None
                if self.checkpointing_steps and (self.step % self.checkpointing_steps == 0 or done):
                    self.save()
            bar.close()
            for callback in self.callbacks:
                callback.on_train_end(self)
        finally:
            for tracker in self.trackers:
                tracker.finish()
            self.trackers = []
        return self.history

    def _start_trackers(self) -> None:
        # accelerate's tracker classes, one run per trainer under its own output dir (not
        # `accelerator.init_trackers`: its logging dir is one per accelerator, shared by every split of a
        # protocol, and its `end_training` would tear down the process group between splits)
        if not self.is_main or self.output_dir is None or not self.report_to or self.trackers:
            return
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        config = {k: v if _number(v) or isinstance(v, (str, bool)) else str(v) for k, v in self.settings.items()}
        for name in self.report_to:
            kind = LOGGER_TYPE_TO_CLASS[name]
            if kind.requires_logging_directory:
                tracker = kind(self.run_name, str(self.output_dir / "logs"))
            else:
                tracker = kind(self.run_name)
            tracker.start()
            tracker.store_init_configuration(config)
            self.trackers.append(tracker)

    # ------------------------------------------------------------------ checkpoints

    def resolve_resume(self, spec) -> Path | None:
        if spec is not None and str(spec) == "latest" and self.output_dir is None:
            raise ValueError('resume_from_checkpoint="latest" needs the output_dir that holds the checkpoints')
        return resolve_checkpoint(self.output_dir, spec)

    def save(self) -> Path | None:
        """Write the checkpoint of the current step (main process; the others wait for it)."""
        if self.output_dir is None:
            raise ValueError("saving a checkpoint needs an output_dir")
        tensors = {f"param.{n}": p for n, p in zip(self.names, self.params)}
        optimizer_tensors, optimizer_meta = optimizer_state(self.optimizer)
        tensors.update(optimizer_tensors)
        tensors.update(rng_state())
        if self.best_params is not None:
            tensors.update({f"best.{n}": t for n, t in zip(self.names, self.best_params)})
        state = {
            "trainable": self.names, "start_fingerprint": self.start_fingerprint, "settings": self.settings,
            "optimizer": optimizer_meta, "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "history": self.history, "best": self.best_info,
            "stopped": self.stopped, "callbacks": {},
        }
        for callback in self.callbacks:
            extra, callback_state = callback.state_dict()
            clash = set(extra) & set(tensors)
            if clash:
                raise RuntimeError(f"internal: {type(callback).__name__} state clashes with the loop's: {sorted(clash)[:3]}")
            tensors.update(extra)
            state["callbacks"][type(callback).__name__] = callback_state
        path = None
        if self.is_main:
            path = save_checkpoint(self.output_dir, self.step, tensors, state, keep_last=self.keep_checkpoints)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        return path

    def load(self, path) -> None:
        """Continue from checkpoint `path` (call `fit`, which builds the schedule first and loads it)."""
        tensors, state = load_checkpoint(path)
        if state.get("trainable") != self.names:
            raise ValueError(f"checkpoint {path} trains other parameters ({len(state.get('trainable') or [])} tensors) "
                             f"than this run ({len(self.names)}): another model, trainable set or method?")
        if state.get("start_fingerprint") != self.start_fingerprint:
            raise ValueError(f"checkpoint {path} continues a run that started from another model: pass the same "
                             "starting model (e.g. the same --model / --backbone and seed) to resume")
        saved = state.get("settings") or {}
        differing = sorted(k for k in set(saved) | set(self.settings) if saved.get(k) != self.settings.get(k))
        if differing:
            raise ValueError(f"checkpoint {path} was written by a different run, with other settings: " + ", ".join(
                f"{k}: {saved.get(k)!r} (checkpoint) vs {self.settings.get(k)!r} (now)" for k in differing))
        with torch.no_grad():
            for name, param in zip(self.names, self.params):
                param.copy_(tensors[f"param.{name}"].to(param.device))
        load_optimizer_state(self.optimizer, {k: v.to(self.device) for k, v in tensors.items()}, state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        load_rng_state(tensors)
        self.step, self.history, self.stopped = int(state["step"]), list(state["history"]), state.get("stopped")
        self.best_info = state.get("best")
        if f"best.{self.names[0]}" in tensors:
            self.best_params = [tensors[f"best.{n}"].to(p.device) for n, p in zip(self.names, self.params)]
        for callback in self.callbacks:
            callback.load_state_dict(tensors, state["callbacks"].get(type(callback).__name__) or {})
        self.resumed_from = str(path)
        if self.is_main:
            print(f"Resumed from {path} at step {self.step}", flush=True)


__all__ = [
    "GradientRule", "LR_SCHEDULER_TYPES", "LossGradient", "LossScaler", "MIXED_PRECISION", "OPTIMIZERS", "Trainer", "TrainerCallback",
    "autocast", "create_optimizer", "create_scheduler", "fingerprint", "resolve_mixed_precision", "resolve_report_to",
]
