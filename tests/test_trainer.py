"""The training loop itself (`grmp_iqa_hf.training.trainer`) on a toy least-squares problem: schedules by name
and their resume, the fp16 loss scaler, the NaN stop, trackers and the errors. The three methods' trainers are
tested on it in test_finetune.py, test_meta.py and test_mpiqe.py."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from grmp_iqa_hf.training.checkpointing import list_checkpoints
from grmp_iqa_hf.training.common import NonFiniteLossError, rng_for
from grmp_iqa_hf.training.trainer import (
    GradientRule, LossGradient, Trainer, TrainerCallback, resolve_mixed_precision,
)

X = torch.from_numpy(np.random.default_rng(0).normal(size=(12, 3))).float()
Y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.3


def toy(start=0.0, **options):
    """A linear model trained on a keyed batch of 4 of the 12 rows per step with the mean squared error."""
    weight = torch.nn.Parameter(torch.full((3,), start))
    bias = torch.nn.Parameter(torch.zeros(()))

    def loss_fn(rows):
        residual = X[rows] @ weight + bias - Y[rows]
        loss = residual.square().mean()
        return loss, torch.stack([loss.detach() * len(rows), torch.tensor(float(len(rows)))])

    rule = LossGradient([weight, bias], loss_fn, names=("loss",))
    batches = lambda step: rng_for(7, step).permutation(12)[:4].tolist()  # noqa: E731
    options = {"progress": False, "report_to": "none", **options}
    return Trainer({"weight": weight, "bias": bias}, rule, batches, **options)


class Recorder(TrainerCallback):
    def __init__(self):
        self.lrs = []

    def on_step_end(self, trainer, stats):
        self.lrs.append(stats["lr"])


def lrs_of(trainer, steps):
    rates = []
    while trainer.step < steps:
        rates.append(trainer.train_step(trainer.batches(trainer.step))["lr"])
    return rates


def test_named_schedule_is_checkpointed_and_resumed(tmp_path):
    options = dict(optimizer="adam", learning_rate=0.1, lr_scheduler_type="cosine", warmup_steps=2,
                   checkpointing_steps=3, keep_checkpoints=None)
    straight, seen = toy(output_dir=tmp_path / "a", **options), Recorder()
    straight.callbacks.append(seen)
    straight.fit(8)
    assert seen.lrs[:3] == pytest.approx([0.0, 0.05, 0.1])  # linear warm-up over 2 steps, then cosine down
    assert 0 < seen.lrs[-1] < seen.lrs[3] < 0.1
    checkpoints = list_checkpoints(tmp_path / "a")
    assert [s for s, _ in checkpoints] == [3, 6, 8]
    state = json.loads((checkpoints[0][1] / "state.json").read_text())
    assert state["settings"]["lr_scheduler_type"] == "cosine" and state["settings"]["warmup_steps"] == 2
    assert state["scheduler"]["last_epoch"] == 3 and state["settings"]["lr_schedule_steps"] == 8

    # killed after step 3: the resumed run continues the schedule and the optimizer exactly
    resumed, seen_again = toy(output_dir=tmp_path / "b", **options), Recorder()
    resumed.callbacks.append(seen_again)
    resumed.fit(8, resume_from_checkpoint=checkpoints[0][1])
    assert seen_again.lrs == seen.lrs[3:]
    for a, b in zip(straight.params, resumed.params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a schedule over another number of steps is another run
    with pytest.raises(ValueError, match="different run.*lr_schedule_steps: 8 .checkpoint. vs 5"):
        toy(output_dir=tmp_path / "c", **options).fit(5, resume_from_checkpoint=checkpoints[0][1])


def test_default_schedule_and_errors(tmp_path):
    trainer = toy(learning_rate=0.2, lr_at=lambda step: 0.1 * (step + 1))
    assert lrs_of(trainer, 3) == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        toy(optimizer="lion")
    with pytest.raises(ValueError, match="momentum is an option of 'sgd'"):
        toy(optimizer="adamw", momentum=0.9)
    with pytest.raises(ValueError, match="unknown lr_scheduler_type 'cosinus'"):
        toy(lr_scheduler_type="cosinus")
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        toy(mixed_precision="fp8")
    with pytest.raises(ValueError, match="unknown tracker 'tensorbored'"):
        toy(report_to="tensorbored")
    first = toy(output_dir=tmp_path, checkpointing_steps=2)
    first.fit(2)
    with pytest.raises(ValueError, match="different run, with other settings: learning_rate: 0.001 .checkpoint. vs 0.5"):
        toy(output_dir=tmp_path, learning_rate=0.5).fit(4, resume_from_checkpoint="latest")
    with pytest.raises(ValueError, match="started from another model"):
        toy(start=1.0, output_dir=tmp_path).fit(4, resume_from_checkpoint="latest")
    with pytest.raises(ValueError, match="needs the output_dir"):
        toy().fit(1, resume_from_checkpoint="latest")


def test_non_finite_loss_stops_before_the_update(tmp_path):
    trainer = toy(output_dir=tmp_path, checkpointing_steps=1)
    original = trainer.rule.loss_fn
    poison = torch.tensor([float("nan"), 1.0])  # the loss sum, not the count
    trainer.rule.loss_fn = lambda rows: (lambda l, s: (l, s * poison) if trainer.step == 2 else (l, s))(*original(rows))
    with pytest.raises(NonFiniteLossError, match="the training loss is nan at step 3"):
        trainer.fit(5)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 2]


class ScaledSum(GradientRule):
    """d/dw of sum(w * x) = x, with an infinite gradient at step 1 (as an fp16 overflow)."""

    def __init__(self, weight):
        self.weight = weight

    def local(self, trainer, batch):
        x = torch.full((2,), float("inf") if trainer.step == 1 else 2.0 ** -20)
        with trainer.autocast():
            loss = (self.weight * x).sum()
        (grad,) = torch.autograd.grad(trainer.scale(loss), [self.weight])
        return [grad], torch.tensor([1.0])

    def combine(self, trainer, batch, grads, sums):
        return grads, {"loss": 1.0}


def test_fp16_loss_scaling_unscales_and_skips_non_finite_steps():
    weight = torch.nn.Parameter(torch.ones(2))
    trainer = Trainer({"w": weight}, ScaledSum(weight), lambda step: None, learning_rate=1.0, mixed_precision="fp16",
                      progress=False, report_to="none")
    stats = trainer.train_step(None)
    assert stats["loss_scale"] == 2.0 ** 16
    torch.testing.assert_close(weight.detach(), torch.full((2,), 1 - 2.0 ** -20), rtol=0, atol=0)  # unscaled exactly
    stats = trainer.train_step(None)  # infinite gradient: no update, the scale halves
    torch.testing.assert_close(weight.detach(), torch.full((2,), 1 - 2.0 ** -20), rtol=0, atol=0)
    assert stats["skipped"] and trainer.scaler.value == 2.0 ** 15 and trainer.step == 2
    # without fp16 nothing is scaled
    plain = Trainer({"w": torch.nn.Parameter(torch.ones(2))}, ScaledSum(weight), lambda s: None, progress=False,
                    report_to="none")
    assert not plain.scaler.enabled and plain.scale(torch.tensor(3.0)) == 3.0


def test_mixed_precision_defaults_to_the_accelerators():
    accelerator = SimpleNamespace(mixed_precision="bf16", device=torch.device("cpu"), process_index=0, num_processes=1)
    assert resolve_mixed_precision(None, accelerator) == "bf16" and resolve_mixed_precision("no", accelerator) == "no"
    trainer = toy(accelerator=accelerator)
    assert trainer.mixed_precision == "bf16" and not trainer.scaler.enabled
    with trainer.autocast():
        assert (X @ X.t()).dtype == torch.bfloat16
    assert resolve_mixed_precision(None, None) == "no"


def test_trackers_write_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = toy(output_dir=tmp_path, run_name="toy")
    trainer.report_to = ["tensorboard"]
    trainer.fit(3)
    events = EventAccumulator(str(tmp_path / "logs" / "toy")).Reload()
    assert {"train/loss", "train/lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert not trainer.trackers  # finished


def test_make_accelerator_takes_accelerates_mixed_precision(monkeypatch):
    """`accelerate launch --mixed_precision bf16` sets ACCELERATE_MIXED_PRECISION: the accelerator and the
    trainers (which default to the accelerator's setting) take it."""
    from accelerate.state import AcceleratorState

    from grmp_iqa_hf.training.common import make_accelerator

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    AcceleratorState._reset_state(reset_partial_state=True)  # the state is one per process: start afresh
    try:
        accelerator = make_accelerator(cpu=True)
        assert accelerator.mixed_precision == "bf16"
        assert toy(accelerator=accelerator).mixed_precision == "bf16"
        assert toy(accelerator=accelerator, mixed_precision="no").mixed_precision == "no"  # an explicit choice wins
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
