"""Few-shot fine-tuning: the staged forward against the model's own, the frozen-trunk cache
against recomputation, exact resume, NaN handling, 1 vs 2 processes, and the protocol runner."""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from grmp_iqa_hf.models import build_model
from grmp_iqa_hf.testing import tiny_clip, write_noise_folder
from grmp_iqa_hf.training.checkpointing import list_checkpoints
from grmp_iqa_hf.training.common import NonFiniteLossError
from grmp_iqa_hf.training.finetune import FewShotTrainer, finetune

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "finetune_fewshot.py"
TWO_PROCS = REPO / "examples" / "accelerate" / "multi_cpu_2proc.yaml"


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n, seed=0, size=(80, 90)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)) for _ in range(n)], rng.random(n)


def _trained(model, like: dict | None = None):
    """The trainable parameters of `model` (or, with `like`, the parameters of those names)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if (n in like if like else p.requires_grad)}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small labelled imagefolder (70 random photos with a smooth quality label)."""
    return write_noise_folder(tmp_path_factory.mktemp("fewshot-folder"), 70)


# ------------------------------------------------------------------ trainable set and forward


# (the trainable set: tests/test_modeling.py::test_set_trainable)


def test_staged_forward_equals_model_forward(pixel_values):
    model = build_model("tiny-random", seed=3)
    with torch.no_grad():
        reference = model(pixel_values=pixel_values).logits
        for start in range(5):
            hidden = model.vision_hidden_states(pixel_values, start)
            staged = model.quality_logits(model.image_features_from_hidden(hidden, start))
            torch.testing.assert_close(staged, reference, rtol=0, atol=1e-6)


# ------------------------------------------------------------------ frozen-trunk cache


def test_trunk_cache_holds_the_recomputed_activations():
    images, labels = _images(6)
    model = build_model("tiny-random", seed=0)
    trainer = FewShotTrainer(model, images, labels, top_k=2, crop_pool=3, seed=5, progress=False)
    trainer.prepare()
    assert len(trainer.trunk) == 6 * 3
    positions = list(range(6))
    for epoch in range(4):
        crops = trainer.crop_ids(positions, epoch)
        cached = trainer.trunk_hidden(positions, crops, epoch)
        pixels = trainer.pixels(positions, crops, epoch)
        model.train()  # prompt dropout on (the released fine-tuning's mode), masks from each entry's own stream
        with torch.no_grad():
            recomputed = model.vision_hidden_states(pixels, trainer.start, trainer.trunk_generators(positions, crops, epoch))
            torch.testing.assert_close(cached, recomputed, rtol=0, atol=1e-6)
            model.eval()  # the dropout really is in the cached activations
            assert not torch.allclose(cached, model.vision_hidden_states(pixels, trainer.start), atol=1e-3)
    # the pool is used: different epochs pick different crops, and the pool's crops differ
    picks = {tuple(trainer.crop_ids(positions, e)) for e in range(4)}
    assert len(picks) > 1
    assert not torch.allclose(trainer.trunk[(0, 0)], trainer.trunk[(0, 1)])


@pytest.mark.parametrize("augment", [True, False])
def test_cached_training_equals_recomputing(augment):
    """Trunk cache + cached teacher vs recomputing either every step, and micro-batches vs one pass."""
    images, labels = _images(8, seed=1)
    common = dict(epochs=3, top_k=2, seed=9, learning_rate=0.05, crop_pool=3, augment=augment, progress=False)
    results = []
    for options in ({}, {"cache_trunk": False}, {"cache_teacher": False}, {"micro_batch_size": 3}):
        model = build_model("tiny-random", seed=2)
        history = finetune(model, images, labels, **common, **options)
        results.append((_trained(model), history))
    start = _trained(build_model("tiny-random", seed=2), like=results[0][0])
    assert _max_diff(results[0][0], start) > 1e-3  # it trained
    # caching changes where activations come from, not their values (identical here)
    for params, history in results[1:3]:
        assert _max_diff(params, results[0][0]) < 1e-6
        assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in results[0][1]], rel=1e-6)
    # micro-batches only change the float summation order of the gradient sums
    assert _max_diff(results[3][0], results[0][0]) < 1e-5


# ------------------------------------------------------------------ resume, NaN


def test_resume_is_exact(tmp_path):
    images, labels = _images(12, seed=2)
    common = dict(top_k=2, seed=4, learning_rate=3.0, momentum=0.9, batch_size=5, lr_decay_patience=0,
                  crop_pool=2, progress=False)
    straight = build_model("tiny-random", seed=1)
    history = finetune(straight, images, labels, epochs=4, output_dir=tmp_path / "a", checkpointing_steps=4,
                       keep_checkpoints=None, **common)
    assert [s for s, _ in list_checkpoints(tmp_path / "a")] == [4, 8, 12]  # 3 steps per epoch
    assert history[-1]["lr"] < 3.0  # the plateau decay acted

    # a checkpoint in the middle of epoch 2 (step 4), resumed on a fresh copy of the starting model
    resumed = build_model("tiny-random", seed=1)
    step4 = list_checkpoints(tmp_path / "a")[0][1]
    history_b = finetune(resumed, images, labels, epochs=4, output_dir=tmp_path / "b", resume_from_checkpoint=step4,
                         **common)
    assert _max_diff(_trained(resumed), _trained(straight)) < 1e-6
    assert [h["loss"] for h in history_b] == pytest.approx([h["loss"] for h in history], rel=1e-6)

    # "latest": stop after 2 epochs, continue to 4
    partial = build_model("tiny-random", seed=1)
    finetune(partial, images, labels, epochs=2, output_dir=tmp_path / "c", checkpointing_steps=4, **common)
    again = build_model("tiny-random", seed=1)
    finetune(again, images, labels, epochs=4, output_dir=tmp_path / "c", resume_from_checkpoint="latest",
             checkpointing_steps=4, **common)
    assert _max_diff(_trained(again), _trained(straight)) < 1e-6

    # another starting model cannot continue this run
    with pytest.raises(ValueError, match="started from another model"):
        finetune(build_model("tiny-random", seed=2), images, labels, epochs=4, output_dir=tmp_path / "c",
                 resume_from_checkpoint="latest", **common)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    images, labels = _images(6, seed=3)
    original = FewShotTrainer.local_losses

    def poisoned(self, positions, epoch, batch_index=0):
        loss_q, loss_s = original(self, positions, epoch, batch_index)
        return (loss_q * float("nan"), loss_s) if self.step >= 2 else (loss_q, loss_s)

    monkeypatch.setattr(FewShotTrainer, "local_losses", poisoned)
    model = build_model("tiny-random", seed=0)
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        finetune(model, images, labels, epochs=5, top_k=1, output_dir=tmp_path, checkpointing_steps=1,
                 progress=False)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 2]
    tensors = load_file(str(list_checkpoints(tmp_path)[-1][1] / "state.safetensors"))
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("param."))


# ------------------------------------------------------------------ processes


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def test_one_and_two_processes_train_the_same_model(folder, tmp_path):
    args = ["--backbone", "tiny-random", "--data-dir", str(folder), "--num-images", "50", "--num-splits", "1",
            "--epochs", "6", "--learning-rate", "0.05", "--momentum", "0.9", "--top-k-blocks", "2",
            "--save-model", "--no-progress"]
    two = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(TWO_PROCS), str(EXAMPLE), *args,
         "--output-dir", str(tmp_path / "two")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(EXAMPLE), *args, "--output-dir", str(tmp_path / "one")],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    reports = {k: json.loads((tmp_path / k / "report.json").read_text()) for k in ("one", "two")}
    assert reports["two"]["num_processes"] == 2 and reports["one"]["num_processes"] == 1
    assert reports["one"]["splits"][0]["train"] == reports["two"]["splits"][0]["train"]
    weights = {k: load_file(str(tmp_path / k / "grmp_iqa" / "split_0" / "model" / "model.safetensors"))
               for k in ("one", "two")}
    start = build_model("tiny-random", seed=2024).state_dict()
    moved = max(float((weights["one"][k] - start[k]).abs().max()) for k in weights["one"])
    assert moved > 1e-3  # trained
    assert _max_diff(weights["one"], weights["two"]) < 1e-4
    assert reports["one"]["splits"][0]["srcc"] == pytest.approx(reports["two"]["splits"][0]["srcc"], abs=1e-4)


# ------------------------------------------------------------------ the runner


def test_runner_on_livec_three_splits(clive_dir, tmp_path):
    from grmp_iqa_hf.protocols.fewshot import FewShotConfig, run_fewshot

    config = FewShotConfig(data_dir=str(clive_dir), output_dir=str(tmp_path), backbone="tiny-random",
                           num_images=50, num_splits=3, epochs=2, val_images=10, eval_every=1, progress=False)
    run_fewshot(config)
    report = json.loads((tmp_path / "report.json").read_text())
    total = report["config"]["num_dataset_images"]
    assert total == 627
    assert report["selection"] == "val" and report["selection_uses_test_set"] is False
    trains = []
    for split in report["splits"]:
        train, val, test = set(split["train"]), set(split["val"]), set(split["test"])
        assert len(split["train"]) == len(train) == 50
        assert len(test) == round(0.2 * total)  # 125 of 627
        assert not (train & test) and not (val & test) and not (train & val) and len(val) == 10
        for key in ("srcc", "plcc", "krcc"):
            assert np.isfinite(split[key])
        # the logistic numbers exist exactly when the bounded fit is ok (a random backbone may give a flat fit)
        assert split["plcc_logistic_fit"] in ("ok", "degenerate")
        assert np.isfinite(split["plcc_logistic"]) == np.isfinite(split["rmse"]) == (split["plcc_logistic_fit"] == "ok")
        trains.append(frozenset(train))
        assert split["selected_epoch"] in (1, 2)
    assert len(set(trains)) == 3  # splits distinct
    assert len({frozenset(s["test"]) for s in report["splits"]}) == 3
    for key in ("srcc", "plcc"):
        assert np.isfinite(report["median"][key]) and np.isfinite(report["mean"][key])
    assert report["config"]["qgr_lambda"] == 5.0 and report["config"]["seed"] == 2024


def test_zero_shot_baseline_is_clip_iqa(folder):
    """The CLIP-IQA baseline model scores exactly as transformers' CLIP with "good photo." / "bad photo."."""
    from grmp_iqa_hf.protocols.fewshot import FewShotConfig, _ModelFactory

    factory = _ModelFactory(FewShotConfig(data_dir=str(folder), output_dir="", backbone="tiny-random", seed=5))
    model = factory.starting_model("zero_shot_clip_iqa")
    clip, tokenizer = tiny_clip(seed=5)
    pixels = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    enc = tokenizer(["good photo.", "bad photo."], padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = clip(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                         pixel_values=pixels).logits_per_image.softmax(-1)[:, 0]
        scores = model(pixel_values=pixels).scores
    torch.testing.assert_close(scores, reference, rtol=0, atol=1e-5)
    assert factory.training("zero_shot_clip_iqa") is None
    assert factory.training("coop")["top_k"] == 0 and factory.training("finetune_no_qgr")["qgr_lambda"] == 0


def test_runner_baselines_paper_mode_and_resume(folder, tmp_path):
    from grmp_iqa_hf.protocols.fewshot import BASELINES, FewShotConfig, run_fewshot

    config = FewShotConfig(data_dir=str(folder), output_dir=str(tmp_path), backbone="tiny-random", num_images=20,
                           num_splits=2, epochs=2, eval_every=1, paper_mode=True, save_model=True,
                           methods=("grmp_iqa", *BASELINES), progress=False, top_k_blocks=1)
    report = run_fewshot(config)
    assert report["selection"] == "best_test" and report["selection_uses_test_set"] is True
    assert report["paper_mode"] is True and "ImageNet" in report["config"]["paper_mode_choices"]["image_normalization"]
    # every released choice is listed and labelled as the released protocol
    choices = report["config"]["paper_mode_choices"]
    assert {"splits", "resize", "training_crops", "labels", "evaluation", "selection", "learning_rate",
            "precision", "scene_prompts", "prompt_dropout", "qgr_units"} <= set(choices)
    assert all("released protocol" in text for text in choices.values())
    options = report["config"]["training_options"]
    assert options["batch_crops"] and options["eval_before_training"] and options["select_metric"] == "plcc+srcc"
    assert options["lr_decay_rule"] == "released" and options["mixed_precision"] == "fp16"
    assert options["loss_scaling"] is False  # released: fp16 autocast, unscaled gradients
    assert report["config"]["label_scaling"].startswith("released protocol")
    history = json.loads((tmp_path / "grmp_iqa" / "split_0" / "history.json").read_text())
    assert history[0]["epoch"] == 0 and "test_srcc" in history[0]  # scored before training
    assert set(report["comparison"]) == {"grmp_iqa", *BASELINES}
    assert report["comparison"]["zero_shot_clip_iqa"]["selection"] == "fixed"
    # identical splits for every method
    ids = {m: [s["test"] for s in json.loads((tmp_path / m / "report.json").read_text())["splits"]]
           for m in report["comparison"]}
    assert all(v == ids["grmp_iqa"] for v in ids.values())
    saved = json.loads((tmp_path / "grmp_iqa" / "split_1" / "model" / "config.json").read_text())
    assert saved["image_normalization"] == "imagenet" and saved["image_mean"][0] == pytest.approx(0.485)
    assert saved["resample"] == "bicubic_no_antialias" and saved["resize_mode"] == "square"
    assert not (tmp_path / "zero_shot_clip_iqa" / "split_0" / "model").exists()
    # resuming a finished run keeps the finished splits
    again = run_fewshot(FewShotConfig(**{**config.__dict__, "resume_from_checkpoint": "latest"}))
    assert [s["srcc"] for s in again["splits"]] == [s["srcc"] for s in report["splits"]]


def test_runner_config_errors(folder):
    from grmp_iqa_hf.protocols.fewshot import FewShotConfig

    with pytest.raises(ValueError, match="--val-images"):
        FewShotConfig(data_dir=str(folder), output_dir="", backbone="tiny-random", selection="val").validate()
    with pytest.raises(ValueError, match="not both"):
        FewShotConfig(data_dir=str(folder), output_dir="", backbone="tiny-random", train_fraction=0.2).validate()
    with pytest.raises(ValueError, match="--backbone"):
        FewShotConfig(data_dir=str(folder), output_dir="").validate()
    with pytest.raises(ValueError, match="unknown method"):
        FewShotConfig(data_dir=str(folder), output_dir="", backbone="tiny-random", methods=("nope",)).validate()


def test_baselines_share_the_meta_models_backbone(folder, tmp_path):
    """With --model, the no-meta and CoOp baselines get fresh prompts around the SAME CLIP weights."""
    from grmp_iqa_hf.protocols.fewshot import FewShotConfig, _ModelFactory

    meta = build_model("tiny-random", seed=3, n_ctx=6)
    meta.save_pretrained(tmp_path / "meta")
    factory = _ModelFactory(FewShotConfig(data_dir=str(folder), output_dir="", model=str(tmp_path / "meta"), seed=5))
    start = factory.starting_model("grmp_iqa")
    fresh = factory.starting_model("grmp_iqa_no_meta")
    coop = factory.starting_model("coop")
    for other in (start, fresh, coop):
        clip_weights = {k: v for k, v in other.state_dict().items() if k.startswith("clip.")}
        assert all(torch.equal(v, meta.state_dict()[k]) for k, v in clip_weights.items())
    assert torch.equal(start.text_context.ctx, meta.text_context.ctx)
    assert fresh.config.n_ctx == 6 and not torch.equal(fresh.text_context.ctx, meta.text_context.ctx)
    assert coop.visual_prompts is None and fresh.visual_prompts is not None


def test_fresh_crops_use_a_frozen_teacher_copy():
    images, labels = _images(6, seed=4)
    model = build_model("tiny-random", seed=0)
    trainer = FewShotTrainer(model, images, labels, top_k=2, crop_pool=None, learning_rate=1.0, progress=False)
    trainer.prepare()
    assert not trainer.cache_trunk and trainer.teacher_table is None and trainer.teacher.copy_weights
    positions = list(range(6))
    assert not torch.allclose(trainer.pixels(positions, [0] * 6, 0), trainer.pixels(positions, [0] * 6, 1))
    pixels = trainer.pixels(positions, [0] * 6, 0)
    before = trainer.teacher.probs(pixels)
    for epoch in range(2):
        trainer.train_step(positions, epoch)
    assert _max_diff(_trained(model), _trained(build_model("tiny-random", seed=0), like=trainer.trainable)) > 1e-3
    torch.testing.assert_close(trainer.teacher.probs(pixels), before, rtol=0, atol=0)  # the teacher did not move
    reference, _ = tiny_clip(seed=0)  # and it is the backbone before fine-tuning
    with torch.no_grad():
        image = reference.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(trainer.teacher.clip.get_image_features(pixel_values=pixels).pooler_output, image)


def test_runner_leaves_out_unreadable_images(folder, tmp_path):
    from grmp_iqa_hf.protocols.fewshot import FewShotConfig, run_fewshot

    broken = tmp_path / "data"
    (broken / "images").mkdir(parents=True)
    lines = (folder / "metadata.csv").read_text().splitlines()[:31]
    for line in lines[1:]:
        name = line.split(",")[0]
        (broken / name).write_bytes((folder / name).read_bytes())
    (broken / "images" / "003.png").write_bytes(b"not an image")
    (broken / "metadata.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match="could not be read"):
        report = run_fewshot(FewShotConfig(data_dir=str(broken), output_dir=str(tmp_path / "out"),
                                           backbone="tiny-random", num_images=10, num_splits=1, epochs=1,
                                           progress=False))
    assert [e["image_id"] for e in report["config"]["excluded_images"]] == ["images/003.png"]
    assert report["config"]["num_dataset_images"] == 29
    split = report["splits"][0]
    assert "images/003.png" not in split["train"] + split["test"] and np.isfinite(split["srcc"])


# ------------------------------------------------------------------ the released protocol's pieces


def test_batch_crops_reproduce_the_released_offsets():
    """`batch_crops`: every image of a batch gets the offsets the released loop draws after
    `torch.random.manual_seed(len(train_loader) * epoch + batch_idx)`: `randint(20, (3,))`, flip when left < 10."""
    images, labels = _images(4, size=(260, 280))
    model = build_model("tiny-random", seed=0)
    model.config.resize_size = 84  # margin 20 over the 64-px crop, as 244 over 224
    trainer = FewShotTrainer(model, images, labels, batch_size=2, batch_crops=True, progress=False)
    assert trainer.cache_trunk is False and trainer.pool is None
    for epoch in range(3):
        for batch_index in range(trainer.steps_per_epoch):
            torch.random.manual_seed(trainer.steps_per_epoch * epoch + batch_index)
            rd = torch.randint(20, (3,))
            assert trainer.batch_offsets(epoch, batch_index) == (int(rd[0]), int(rd[1]), bool(rd[1] < 10))
            top, left, flip = trainer.batch_offsets(epoch, batch_index)
            expected = trainer.images.crop_at(1, top, left, flip)
            torch.testing.assert_close(trainer.pixels([1], [0], epoch, batch_index)[0], expected)


def test_released_learning_rate_rule(monkeypatch):
    """The released schedule with a test score that never improves after the evaluation before training:
    evaluations every 5 epochs, x0.3 once more than 5 of them brought no new best (past epoch 10, 0-based),
    stop when the rate falls below 5e-7: 7 decays, the last after epoch 210."""
    images, labels = _images(4)
    model = build_model("tiny-random", seed=0)
    trainer = FewShotTrainer(model, images, labels, top_k=1, eval_sets={"test": ([0, 1, 2, 3], labels)},
                             select_on="test", select_metric="plcc+srcc", eval_every=5, eval_before_training=True,
                             lr_decay_rule="released", lr_decay_patience=5, lr_decay_factor=0.3, stop_below_lr=5e-7,
                             progress=False)
    scores = iter([{"test_srcc": 0.5, "test_plcc": 0.5}] + [{"test_srcc": 0.4, "test_plcc": 0.5}] * 1000)
    monkeypatch.setattr(trainer, "evaluate", lambda: dict(next(scores)))
    monkeypatch.setattr(trainer.loop, "train_step", lambda batch: trainer.loop.__dict__.update(  # no computation
        step=trainer.step + 1) or {"loss": 0.5, "loss_semantic": 0.1, "projected": 0.0, "count": 4, "seconds": 0.0,
                                   "lr": trainer.loop.lr})
    history = trainer.fit(2000)
    decays = [h for h in history if "lr_decayed_to" in h]
    assert [h["epoch"] for h in decays] == [30 * k for k in range(1, 8)]
    assert decays[-1]["lr_decayed_to"] == pytest.approx(1e-3 * 0.3 ** 7)
    assert history[-1]["epoch"] == 210 and "5e-07" in history.stopped
    assert history.selected_epoch == 0  # the evaluation before training stayed the best: the starting model


# ------------------------------------------------------------------ the loop's options: precision, schedules, trackers


def test_bf16_named_schedule_resume_and_trackers(tmp_path):
    """`mixed_precision="bf16"` on a CPU trains like fp32; `lr_scheduler_type="cosine"` with 2 warm-up steps is
    recorded in the checkpoints and a resumed run continues it; TensorBoard gets the scalars."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images, labels = _images(8, seed=5)
    common = dict(epochs=6, top_k=1, seed=2, learning_rate=0.5, crop_pool=2, progress=False,
                  lr_scheduler_type="cosine", warmup_steps=2, checkpointing_steps=3, keep_checkpoints=None)
    start = build_model("tiny-random", seed=3)
    models, histories = {}, {}
    for name, extra in (("fp32", {}), ("bf16", {"mixed_precision": "bf16"}),
                        ("resumed", {"resume_from_checkpoint": tmp_path / "fp32" / "checkpoints" / "step_00000003"})):
        models[name] = copy.deepcopy(start)
        histories[name] = finetune(models[name], images, labels, output_dir=tmp_path / name, **common, **extra)
    # full batch: one step per epoch, so each epoch's rate is its step's; transformers' cosine with 2 warm-up steps
    expected = [0.0, 0.25] + [0.25 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert [h["lr"] for h in histories["fp32"]] == pytest.approx(expected)
    state = json.loads((tmp_path / "fp32" / "checkpoints" / "step_00000003" / "state.json").read_text())
    assert state["settings"]["lr_scheduler_type"] == "cosine" and state["settings"]["warmup_steps"] == 2
    assert state["scheduler"]["last_epoch"] == 3
    # resumed after step 3: the same rates, losses and parameters as the uninterrupted run
    assert [h["lr"] for h in histories["resumed"]] == [h["lr"] for h in histories["fp32"]]
    assert [h["loss"] for h in histories["resumed"]] == [h["loss"] for h in histories["fp32"]]
    assert _max_diff(_trained(models["resumed"]), _trained(models["fp32"])) == 0.0
    # bf16: finite losses, the parameters moved, scores close to fp32's
    assert all(math.isfinite(h["loss"]) for h in histories["bf16"])
    assert _max_diff(_trained(models["bf16"]), _trained(start, like=_trained(models["bf16"]))) > 1e-3
    pixels = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores = {k: models[k](pixel_values=pixels).scores for k in ("fp32", "bf16")}
    assert float((scores["fp32"] - scores["bf16"]).abs().max()) < 0.05
    tags = EventAccumulator(str(tmp_path / "fp32" / "logs" / "fewshot")).Reload().Tags()["scalars"]
    assert {"train/loss", "train/loss_semantic", "train/lr", "epoch/loss"} <= set(tags)
