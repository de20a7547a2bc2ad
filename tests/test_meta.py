"""Meta-prompt pre-training: meta-gradients against independent references, task sampling, the loop."""

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from grmp_iqa_hf.modeling import GRMPIQAModel
from grmp_iqa_hf.training.common import trainable_parameters
from grmp_iqa_hf.protocols.meta import MetaPretrainArguments, run_meta_pretraining
from grmp_iqa_hf.training.meta import MetaTaskSampler, build_tasks, meta_gradients, official_phase, split_holdout

from conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def meta_model():
    """Tiny GRMP-IQA with 6 visual prompts, dropout 0 (so every reference is deterministic)."""
    from grmp_iqa_hf.models import build_model

    return build_model(num_visual_prompts=6, visual_prompt_dropout=0.0).train()


def _tasks(n_tasks=2, n=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    make = lambda: {"pixel_values": torch.randn(n, 3, 64, 64, generator=g, dtype=dtype),  # noqa: E731
                    "labels": torch.rand(n, generator=g, dtype=dtype)}
    return [(make(), make()) for _ in range(n_tasks)]


# ------------------------------------------------------------------ two independent references


def _reference_func(model, tasks, algorithm, inner_lr, inner_steps):
    """Meta-gradients written directly with `torch.func` transforms (grad of grad for maml)."""
    theta = {n: p.detach().clone() for n, p in trainable_parameters(model).items()}

    def loss(weights, batch):
        return functional_call(model, weights, (batch["pixel_values"],), {"labels": batch["labels"]}, strict=False).loss

    def adapt(weights, support, second_order):
        for _ in range(inner_steps):
            g = torch.func.grad(loss)(weights, support)
            if not second_order:
                g = {k: v.detach() for k, v in g.items()}
            weights = {k: weights[k] - inner_lr * g[k] for k in weights}
        return weights

    per_task = []
    for support, query in tasks:
        if algorithm == "maml":
            per_task.append(torch.func.grad(lambda w: loss(adapt(w, support, True), query))(theta))
        elif algorithm == "fomaml":
            per_task.append(torch.func.grad(loss)(adapt(theta, support, False), query))
        else:
            phi = adapt(theta, support, False)
            per_task.append({k: theta[k] - phi[k] for k in theta})
    return {k: sum(g[k] for g in per_task) / len(per_task) for k in theta}


def _reference_autograd(model, tasks, algorithm, inner_lr, inner_steps):
    """Meta-gradients with `torch.autograd.grad(create_graph=True)` on explicit leaf copies: no torch.func
    transforms, a second path to the same mathematics."""
    names = list(trainable_parameters(model))
    theta = [p.detach().clone().requires_grad_(True) for p in trainable_parameters(model).values()]
    total = [torch.zeros_like(t) for t in theta]

    def loss(weights, batch):
        return functional_call(model, dict(zip(names, weights)), args=(), kwargs=batch, strict=False).loss

    for support, query in tasks:
        phi = list(theta)
        for _ in range(inner_steps):
            grads = torch.autograd.grad(loss(phi, support), phi, create_graph=algorithm == "maml")
            phi = [w - inner_lr * g for w, g in zip(phi, grads)]
        if algorithm == "maml":
            task = torch.autograd.grad(loss(phi, query), theta)
        elif algorithm == "fomaml":
            leaves = [w.detach().requires_grad_(True) for w in phi]
            task = torch.autograd.grad(loss(leaves, query), leaves)
        else:
            task = [t.detach() - w.detach() for t, w in zip(theta, phi)]
        total = [acc + g.detach() for acc, g in zip(total, task)]
    return {n: t / len(tasks) for n, t in zip(names, total)}


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile"])
def test_meta_gradients_match_independent_references(meta_model, algorithm):
    tasks = _tasks()
    ours = meta_gradients(meta_model, tasks, algorithm, inner_lr=0.5, inner_steps=2)
    assert set(ours) == set(trainable_parameters(meta_model))
    # the same attention kernel as meta_gradients (math for second order), so only the method differs
    kernel = sdpa_kernel(SDPBackend.MATH) if algorithm == "maml" else contextlib.nullcontext()
    with kernel:
        for reference in (_reference_func, _reference_autograd):
            ref = reference(meta_model, tasks, algorithm, inner_lr=0.5, inner_steps=2)
            flat_ours = torch.cat([ours[n].flatten() for n in ref])
            flat_ref = torch.cat([ref[n].flatten() for n in ref])
            assert flat_ref.norm() > 0
            rel = ((flat_ours - flat_ref).norm() / flat_ref.norm()).item()
            assert rel < 1e-4, (reference.__name__, rel)


def test_maml_differs_from_fomaml(meta_model):
    """The second-order term is really there (a maml that silently dropped it would equal fomaml)."""
    tasks = _tasks()
    maml = meta_gradients(meta_model, tasks, "maml", inner_lr=0.5, inner_steps=2)
    fo = meta_gradients(meta_model, tasks, "fomaml", inner_lr=0.5, inner_steps=2)
    diff = sum((maml[n] - fo[n]).norm() ** 2 for n in maml) ** 0.5
    assert diff > 1e-3 * sum(maml[n].norm() ** 2 for n in maml) ** 0.5


def test_maml_gradient_matches_finite_differences(meta_model):
    """Directional derivative of the adapted query loss, central differences in float64."""
    m64 = type(meta_model)(meta_model.config).double().train()
    m64.load_state_dict(meta_model.state_dict())
    m64.freeze_backbone()
    tasks = _tasks(n_tasks=1, dtype=torch.float64)
    lr, steps = 0.5, 2
    grads = meta_gradients(m64, tasks, "maml", inner_lr=lr, inner_steps=steps)
    params = trainable_parameters(m64)
    names = list(params)
    support, query = tasks[0]

    def adapted_query_loss(weights):
        phi = dict(weights)
        for _ in range(steps):
            with torch.enable_grad():
                leaves = {n: w.detach().requires_grad_(True) for n, w in phi.items()}
                loss = functional_call(m64, leaves, args=(), kwargs=support, strict=False).loss
                g = torch.autograd.grad(loss, list(leaves.values()))
            phi = {n: phi[n] - lr * gi for n, gi in zip(names, g)}
        with torch.no_grad():
            return functional_call(m64, phi, args=(), kwargs=query, strict=False).loss.item()

    gen = torch.Generator().manual_seed(3)
    theta = {n: p.detach().clone() for n, p in params.items()}
    for _ in range(2):
        direction = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in theta.items()}
        eps = 1e-6  # central differences: the truncation error (~eps^2) dominates above this
        plus = adapted_query_loss({n: theta[n] + eps * direction[n] for n in names})
        minus = adapted_query_loss({n: theta[n] - eps * direction[n] for n in names})
        numeric = (plus - minus) / (2 * eps)
        analytic = sum((grads[n] * direction[n]).sum().item() for n in names)
        assert abs(numeric - analytic) <= 1e-5 * abs(analytic), (numeric, analytic)


def test_meta_gradients_validate_inputs(meta_model):
    with pytest.raises(ValueError, match="supports"):
        meta_gradients(meta_model, _tasks(1), "official")
    with pytest.raises(ValueError, match="at least one task"):
        meta_gradients(meta_model, [], "maml")


def test_official_task_model_is_never_reset(meta_model):
    params = trainable_parameters(meta_model)
    task_params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    tasks = [([support], [query]) for support, query in _tasks()]
    _, opt = official_phase(meta_model, task_params, None, tasks, inner_lr=1e-2)
    after_first = {n: p.detach().clone() for n, p in task_params.items()}
    assert any(not torch.equal(after_first[n], params[n]) for n in params)
    grads, carried = official_phase(meta_model, task_params, opt, tasks, inner_lr=1e-2)
    assert carried is opt  # the first source's phase keeps its Adam (the released TID2013 phase)
    # the second call starts where the first ended (never reset to theta), and keeps moving
    assert any(not torch.equal(after_first[n], task_params[n]) for n in params)
    # theta - mean of the per-task snapshots: theta itself untouched by the task model
    assert all(torch.isfinite(g).all() for g in grads.values())


# ------------------------------------------------------------------ tasks


def test_tasks_and_sampling_are_keyed_and_grouped():
    from grmp_iqa_hf.training.data import ImageCache
    from grmp_iqa_hf.models import build_model

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (70, 70, 3), dtype=np.uint8) for _ in range(30)]
    distortions = ["blur"] * 15 + ["noise"] * 15
    refs = [f"ref{i % 5}" for i in range(30)]
    labels = rng.random(30)
    tasks = build_tasks(distortions, labels, refs)
    assert [t.name for t in tasks] == ["blur", "noise"]
    train, hold = split_holdout(tasks, ["noise"], seed=0)
    assert [t.name for t in train] == ["blur"] and [t.name for t in hold] == ["noise"]
    with pytest.raises(ValueError, match="none would be left"):
        split_holdout(tasks, 2, seed=0)

    cache = ImageCache(build_model().image_processor, images, progress=False)
    sampler = MetaTaskSampler(cache, tasks, seed=5, support_size=6, query_size=3)
    support, query = sampler.support_query_rows(tasks[0], np.random.default_rng(1))
    s_refs = {tasks[0].refs[i] for i in support}
    q_refs = {tasks[0].refs[i] for i in query}
    assert s_refs and q_refs and not (s_refs & q_refs), "support and query must not share references"
    a = sampler.task_pair(step=3, slot=1, task_index=0)
    b = sampler.task_pair(step=3, slot=1, task_index=0)
    c = sampler.task_pair(step=4, slot=1, task_index=0)
    assert torch.equal(a[0]["pixel_values"], b[0]["pixel_values"])
    assert not torch.equal(a[0]["pixel_values"], c[0]["pixel_values"])
    assert sampler.step_tasks(7, 2) == sampler.step_tasks(7, 2)


# ------------------------------------------------------------------ the loop


def _args(output_dir, **overrides):
    base = dict(output_dir=str(output_dir), distortions=["gaussian_blur", "jpeg", "white_noise"], levels=[1, 3, 5],
                pristine_size=64, holdout=1, max_steps=3, tasks_per_step=2, support_size=4, query_size=4,
                inner_steps=1, inner_lr=0.5, eval_steps=0, num_visual_prompts=4, progress=False, seed=1)
    base.update(overrides)
    return MetaPretrainArguments(**base)


def _prompts(path):
    from safetensors.torch import load_file

    weights = load_file(os.path.join(path, "model.safetensors"))
    return {k: v for k, v in weights.items() if not k.startswith("clip.")}


def test_loop_learns_saves_and_resumes_exactly(tmp_path):
    run_meta_pretraining(_args(tmp_path / "zero", max_steps=0))
    full = run_meta_pretraining(_args(tmp_path / "full", max_steps=4, checkpointing_steps=2, eval_steps=2))
    assert full["selected"]["mode"] == "heldout" and len(full["evaluations"]) == 3  # steps 0, 2, 4
    loaded = GRMPIQAModel.from_pretrained(tmp_path / "full")
    assert loaded.config.training_info["algorithm"] == "reptile"
    assert all(not p.requires_grad for p in loaded.clip.parameters())

    # resume: a run that stops after its step-2 checkpoint, continued from "latest", ends identical
    partial = _args(tmp_path / "resumed", max_steps=4, checkpointing_steps=2, eval_steps=2)
    run_meta_pretraining(partial)

    for f in (tmp_path / "resumed").glob("model.safetensors"):
        f.unlink()
    run_meta_pretraining(_args(tmp_path / "resumed", max_steps=4, checkpointing_steps=2, eval_steps=2,
                               resume_from_checkpoint="latest"))
    a, b, zero = _prompts(tmp_path / "full"), _prompts(tmp_path / "resumed"), _prompts(tmp_path / "zero")
    assert set(a) == set(b) == set(zero)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert max((a[k] - zero[k]).abs().max().item() for k in a) > 1e-4, "meta-training changed nothing"
    history = json.loads((tmp_path / "resumed" / "meta_history.json").read_text())
    assert [h["step"] for h in history["history"]] == [1, 2, 3, 4]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from grmp_iqa_hf.training import meta
    from grmp_iqa_hf.training.checkpointing import list_checkpoints
    from grmp_iqa_hf.training.common import NonFiniteLossError

    calls = []
    original = meta.meta_gradients

    def poisoned(model, tasks, algorithm, inner_lr, inner_steps, task_seeds=None, stats=None):
        grads = original(model, tasks, algorithm, inner_lr, inner_steps, task_seeds, stats)
        calls.append(1)
        if len(calls) >= 3:  # steps 1 and 2 are fine, step 3 has a NaN query loss
            stats["query_loss"] = float("nan")
        return grads

    monkeypatch.setattr(meta, "meta_gradients", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        run_meta_pretraining(_args(tmp_path, max_steps=4, checkpointing_steps=2))
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2]
    state = load_file(str(list_checkpoints(tmp_path)[-1][1] / "state.safetensors"))
    assert state and all(torch.isfinite(t).all() for t in state.values())
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["maml"])
def test_one_and_two_processes_agree(tmp_path, algorithm):
    """`accelerate launch` with 1 and with 2 CPU processes (gloo): the same prompts."""
    script = str(REPO_ROOT / "examples" / "meta_pretrain.py")
    common = ["--algorithm", algorithm, "--distortions", "gaussian_blur", "jpeg", "white_noise", "--levels", "1", "3", "5",
              "--pristine-size", "64", "--holdout", "1", "--max-steps", "2", "--tasks-per-step", "2",
              "--support-size", "4", "--query-size", "4", "--inner-steps", "1", "--eval-steps", "0",
              "--num-visual-prompts", "4", "--no-progress", "--seed", "3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    accelerate = [sys.executable, "-m", "accelerate.commands.launch"]
    one = subprocess.run(accelerate + ["--num_processes", "1", "--cpu", script, "--output-dir", str(tmp_path / "one")]
                         + common, env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(accelerate + ["--config_file", str(REPO_ROOT / "examples/accelerate/multi_cpu_2proc.yaml"),
                                       script, "--output-dir", str(tmp_path / "two")] + common,
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    info = json.loads((tmp_path / "two" / "meta_history.json").read_text())
    assert info["config"]["num_processes"] == 2
    a, b = _prompts(tmp_path / "one"), _prompts(tmp_path / "two")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_official_runs_one_phase_per_epoch_and_selects_on_a_dataset(tmp_path):
    """`--algorithm official` end to end: released defaults (Adam 1e-4, no held-out types), one outer update
    per data source and epoch over all of its types, and `--selection dataset` (the released choice: the best
    SRCC on a labelled dataset, scored once per epoch) recorded as such."""
    from grmp_iqa_hf.testing import write_noise_folder

    selection_dir = write_noise_folder(tmp_path / "selection", 12)
    summary = run_meta_pretraining(_args(
        tmp_path / "official", algorithm="official", holdout=None, max_steps=None, epochs=2, inner_lr=None,
        support_batch_size=3, query_batch_size=2, eval_steps=None, selection_data_dir=str(selection_dir)))
    config = summary["config"]
    assert config["inner_lr"] == 1e-4 and config["max_steps"] == 2 and config["holdout_tasks"] == []
    assert [sorted(h["tasks"]) for h in summary["history"]] == [["gaussian_blur", "jpeg", "white_noise"]] * 2
    assert [e["step"] for e in summary["evaluations"]] == [1, 2]
    assert all(-1 <= e["selection_srcc"] <= 1 for e in summary["evaluations"])
    best = max(summary["evaluations"], key=lambda e: e["selection_srcc"])
    assert summary["selected"]["mode"] == "dataset" and summary["selected"]["step"] == best["step"]
    assert "leaks" in summary["selected"]["note"]
    info = GRMPIQAModel.from_pretrained(tmp_path / "official").config.training_info
    assert info["algorithm"] == "official" and info["selected"]["mode"] == "dataset"


def test_bf16_named_schedule_resume_and_trackers(tmp_path):
    """`mixed_precision="bf16"` on a CPU trains like fp32; `lr_scheduler_type="cosine"` with 2 warm-up steps is
    recorded in the checkpoints and continued by a resumed run (Adam's state too); TensorBoard gets the scalars."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from grmp_iqa_hf.models import build_model

    lr = 0.003
    common = dict(max_steps=5, algorithm="fomaml", outer_lr=lr, lr_scheduler_type="cosine", warmup_steps=2,
                  checkpointing_steps=2, keep_checkpoints=0)
    runs = {"fp32": {}, "bf16": {"mixed_precision": "bf16"},
            "resumed": {"resume_from_checkpoint": str(tmp_path / "fp32" / "checkpoints" / "step_00000002")}}
    summaries = {}
    for name, extra in runs.items():
        if name != "fp32":  # the same synthetic tasks: not built again
            shutil.copytree(tmp_path / "fp32" / "synthetic_data", tmp_path / name / "synthetic_data")
        summaries[name] = run_meta_pretraining(_args(tmp_path / name, **common, **extra))
    expected = [0.0, lr / 2] + [lr / 2 * (1 + math.cos(math.pi * k / 3)) for k in range(3)]
    assert [h["lr"] for h in summaries["fp32"]["history"]] == pytest.approx(expected)
    state = json.loads((tmp_path / "fp32" / "checkpoints" / "step_00000002" / "state.json").read_text())
    assert state["settings"]["lr_scheduler_type"] == "cosine" and state["settings"]["warmup_steps"] == 2
    assert state["scheduler"]["last_epoch"] == 2
    assert summaries["resumed"]["history"] == summaries["fp32"]["history"]  # rates and losses
    prompts = {name: _prompts(tmp_path / name) for name in runs}
    assert all(torch.equal(prompts["resumed"][k], prompts["fp32"][k]) for k in prompts["fp32"])
    assert all(math.isfinite(h["query_loss"]) for h in summaries["bf16"]["history"])
    start = build_model("tiny-random", seed=1, num_visual_prompts=4).state_dict()
    assert max(float((v - start[k]).abs().max()) for k, v in prompts["bf16"].items()) > 1e-4
    pixels = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores = {k: GRMPIQAModel.from_pretrained(tmp_path / k)(pixel_values=pixels).scores for k in ("fp32", "bf16")}
    assert float((scores["fp32"] - scores["bf16"]).abs().max()) < 0.05
    tags = EventAccumulator(str(tmp_path / "fp32" / "logs" / "meta_pretrain")).Reload().Tags()["scalars"]
    assert {"train/query_loss", "train/support_loss", "train/lr"} <= set(tags)
