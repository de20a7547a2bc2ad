"""MPIQEModel against independent references (transformers' CLIPModel, torch.nn.TransformerDecoderLayer,
torch's loss functions), its save / load / remote-code paths, and its training loop and runner."""

import copy
import csv
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel

from conftest import save_tiny_model, text_feature_calls
from grmp_iqa_hf import MPIQEConfig, MPIQEModel
from grmp_iqa_hf.modeling.configuration_mp_iqe import RECONSTRUCTION_NOTES, render_reconstruction_notes
from grmp_iqa_hf.models import MODEL_CLASSES, build_model
from grmp_iqa_hf.training.common import NonFiniteLossError
from grmp_iqa_hf.training.data import ImageCache
from grmp_iqa_hf.protocols.mpiqe import MPIQETrainingArguments, run_mpiqe
from grmp_iqa_hf.scoring import score_rows
from grmp_iqa_hf.training.mpiqe import learning_rate_at, train_mpiqe

from test_modeling import scores_with_remote_code  # loads remote code in a process without the package

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENES = ["animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others"]
DISTORTIONS = ["jpeg2000 compression", "jpeg compression", "noise", "blur", "color", "contrast", "overexposure",
               "underexposure", "spatial", "quantization", "other"]


def perturb(model, scale=0.3, seed=0):
    """Stand-in for training: move every trainable parameter, so scores depend on all of them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(scale * torch.randn(param.shape, generator=generator))
    return model


@pytest.fixture
def model(tiny):
    clip, tok = tiny
    torch.manual_seed(0)
    return MPIQEModel.from_clip(clip, tok, num_visual_prompts=5)


# ------------------------------------------------------------------ structure and outputs


def test_output_shapes_and_fields(model, pixel_values):
    out = model(pixel_values=pixel_values)
    assert out.loss is None
    assert out.scores.shape == (3,) and out.quality_logits.shape == (3,)
    assert out.scene_logits.shape == (3, 9) and out.distortion_logits.shape == (3, 11)
    assert out.image_embeds.shape == (3, 32) and out.text_embeds.shape == (20, 32)
    assert out.last_hidden_state.shape == (3, 20, 32) and out.pooled_output.shape == (3, 32)
    assert torch.all((out.scores > 0) & (out.scores < 1))
    torch.testing.assert_close(out.scores, out.quality_logits.sigmoid())
    assert model.config.scene_classes == SCENES and model.config.distortion_classes == DISTORTIONS
    assert MODEL_CLASSES["mp_iqe"] is MPIQEModel


def test_trainable_parameters_and_shared_visual_prompts(model):
    from grmp_iqa_hf.modeling.prompt_learning import DeepVisualPrompts, TextContext

    assert type(model.visual_prompts) is DeepVisualPrompts  # the shared implementation, not a copy
    assert type(model.scene_context) is TextContext and type(model.distortion_context) is TextContext
    assert model.visual_prompts.embeddings.shape == (4, 5, 32)  # one set per vision layer (VPT-deep)
    assert model.visual_prompts.embeddings.abs().max() <= model.visual_prompts.init_bound
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    prefixes = {n.split(".")[0] for n in trainable}
    assert prefixes == {"scene_context", "distortion_context", "visual_prompts", "multimodal_encoder", "quality_head"}
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("clip."))
    # the encoder/head are initialised by the config's rule, not torch's defaults
    assert torch.all(model.quality_head.output.bias == 0)
    assert model.multimodal_encoder.layers[0].mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.2)


def test_text_path_and_similarity_logits_match_clip(tiny, pixel_values):
    clip, tok = tiny
    model = MPIQEModel.from_clip(clip, tok, ctx_init="a photo of a", num_visual_prompts=0)
    assert model.config.scene_n_ctx == model.config.distortion_n_ctx == 4
    texts = [f"a photo of a {c.replace('_', ' ')}." for c in SCENES + DISTORTIONS]
    with torch.no_grad():
        reference = torch.cat([clip.get_text_features(**tok([t], return_tensors="pt")).pooler_output for t in texts])
        ours = model.get_text_features()
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
        out = model(pixel_values)
        enc = tok(texts, padding=True, return_tensors="pt")
        logits = clip(input_ids=enc.input_ids, attention_mask=enc.attention_mask, pixel_values=pixel_values).logits_per_image
    torch.testing.assert_close(out.scene_logits, logits[:, :9], rtol=0, atol=1e-4)
    torch.testing.assert_close(out.distortion_logits, logits[:, 9:], rtol=0, atol=1e-4)


def test_image_path_matches_clip_without_prompts(tiny, pixel_values):
    clip, tok = tiny
    model = MPIQEModel.from_clip(clip, tok, num_visual_prompts=0)
    with torch.no_grad():
        features, tokens = model.encode_image(pixel_values)
        hidden = clip.vision_model(pixel_values=pixel_values).last_hidden_state
        expected_tokens = clip.visual_projection(clip.vision_model.post_layernorm(hidden[:, 1:]))
        expected_features = clip.get_image_features(pixel_values=pixel_values).pooler_output
    torch.testing.assert_close(features, expected_features, rtol=0, atol=1e-5)
    torch.testing.assert_close(tokens, expected_tokens, rtol=0, atol=1e-5)
    assert tokens.shape == (3, 64, 32)  # 64 px / patch 8 = 64 patch tokens


@pytest.mark.parametrize("which, count", [("patches", 64), ("patches_and_cls", 65), ("all", 1 + 5 + 64)])
def test_attended_tokens(tiny, pixel_values, which, count):
    clip, tok = tiny
    model = MPIQEModel.from_clip(clip, tok, num_visual_prompts=5, fusion_image_tokens=which,
                                 fusion_image_projection="none")
    with torch.no_grad():
        _, tokens = model.encode_image(pixel_values)
    assert tokens.shape == (3, count, 32)
    assert model.multimodal_encoder.image_input_projection.in_features == 32  # vision width (= 32 in the tiny CLIP)


def test_fusion_layer_matches_torch_transformer_decoder_layer(tiny):
    clip, tok = tiny
    model = perturb(MPIQEModel.from_clip(clip, tok, num_visual_prompts=0, fusion_num_attention_heads=4), scale=0.1)
    ours = model.multimodal_encoder.layers[0]
    reference = torch.nn.TransformerDecoderLayer(
        d_model=32, nhead=4, dim_feedforward=128, dropout=0.0, activation="gelu", batch_first=True, norm_first=True,
    ).eval()
    with torch.no_grad():
        for mha, attn in ((reference.self_attn, ours.self_attn), (reference.multihead_attn, ours.cross_attn)):
            mha.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
            mha.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
            mha.out_proj.load_state_dict(attn.out_proj.state_dict())
        for norm, mine in ((reference.norm1, ours.layer_norm1), (reference.norm2, ours.layer_norm2),
                           (reference.norm3, ours.layer_norm3)):
            norm.load_state_dict(mine.state_dict())
        reference.linear1.load_state_dict(ours.mlp.fc1.state_dict())
        reference.linear2.load_state_dict(ours.mlp.fc2.state_dict())
        generator = torch.Generator().manual_seed(3)
        queries, image = torch.randn(2, 20, 32, generator=generator), torch.randn(2, 50, 32, generator=generator)
        torch.testing.assert_close(ours(queries, image), reference(queries, image), rtol=0, atol=1e-5)


def test_pooling_and_head(tiny, pixel_values):
    clip, tok = tiny
    model = perturb(MPIQEModel.from_clip(clip, tok, num_visual_prompts=2))
    with torch.no_grad():
        out = model(pixel_values)
        head = model.quality_head
        pooled = out.last_hidden_state.mean(dim=1)
        logit = head.output(F.gelu(head.mlp[0](pooled))).squeeze(-1)
    torch.testing.assert_close(out.pooled_output, pooled)
    torch.testing.assert_close(out.quality_logits, logit)


@pytest.mark.parametrize("overrides", [
    {"pooling": "attention"}, {"pooling": "flatten", "head_hidden_sizes": []}, {"auxiliary_logits": "fusion"},
    {"class_specific_context": True, "fusion_num_layers": 1, "fusion_query_type_embeddings": False},
])
def test_options_run(tiny, pixel_values, overrides):
    clip, tok = tiny
    model = MPIQEModel.from_clip(clip, tok, num_visual_prompts=2, **overrides).train()
    out = model(pixel_values, labels=torch.tensor([0.1, 0.5, 0.9]), distortion_labels=torch.tensor([0, 3, 10]))
    assert out.scene_logits.shape == (3, 9) and out.distortion_logits.shape == (3, 11)
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "context" in n)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_class_specific_context_reduces_to_shared(tiny, position):
    clip, tok = tiny
    shared = perturb(MPIQEModel.from_clip(clip, tok, num_visual_prompts=0, class_token_position=position))
    csc = MPIQEModel.from_clip(clip, tok, num_visual_prompts=0, class_token_position=position,
                               class_specific_context=True)
    assert csc.scene_context.ctx.shape == (9, 4, 32) and csc.distortion_context.ctx.shape == (11, 4, 32)
    with torch.no_grad():
        csc.scene_context.ctx.copy_(shared.scene_context.ctx.expand(9, -1, -1))
        csc.distortion_context.ctx.copy_(shared.distortion_context.ctx.expand(11, -1, -1))
        torch.testing.assert_close(csc.get_text_features(), shared.get_text_features(), rtol=0, atol=1e-6)
        # one class's context changes that class's prompt only (a random change: LayerNorm removes constant shifts)
        csc.scene_context.ctx[4].add_(torch.randn(4, 32))
        changed = (csc.get_text_features() - shared.get_text_features()).abs().amax(dim=1) > 1e-4
    assert changed.tolist() == [i == 4 for i in range(20)]


def test_class_specific_context_from_phrase(tiny):
    clip, tok = tiny
    model = MPIQEModel.from_clip(clip, tok, num_visual_prompts=0, ctx_init="a photo of a", class_specific_context=True)
    ids = tok("a photo of a", add_special_tokens=False, return_tensors="pt").input_ids[0]
    expected = clip.text_model.embeddings.token_embedding(ids)
    for ctx in (model.scene_context.ctx, model.distortion_context.ctx):
        torch.testing.assert_close(ctx, expected.expand_as(ctx))


# ------------------------------------------------------------------ losses and gradients


def test_loss_matches_torch_reference_and_reaches_trainable_params(tiny, pixel_values):
    clip, tok = tiny
    model = MPIQEModel.from_clip(clip, tok, num_visual_prompts=4, scene_loss_weight=0.7,
                                 distortion_loss_weight=0.3).train()
    labels = torch.tensor([0.0, 0.3, 1.0])
    scenes = torch.zeros(3, 9)
    scenes[0, [2, 5]] = 1
    scenes[1, 7] = 1
    scenes[2, 0] = 1
    distortions = torch.tensor([3, 2, 10])
    torch.manual_seed(0)
    out = model(pixel_values, labels=labels, scene_labels=scenes, distortion_labels=distortions)
    expected = (F.binary_cross_entropy(out.scores, labels)
                + 0.7 * F.binary_cross_entropy(out.scene_logits.sigmoid(), scenes)
                + 0.3 * F.cross_entropy(out.distortion_logits, distortions))
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
            if not name.endswith("k_proj.bias"):  # softmax is invariant to a key bias: its gradient is ~0
                assert param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_missing_auxiliary_labels_count_zero(model, pixel_values):
    scenes = torch.zeros(3, 9)
    scenes[0, 1] = 1
    scenes[1] = float("nan")
    scenes[2, 8] = 1
    distortions = torch.tensor([-100, 4, 5])
    with torch.no_grad():
        out = model(pixel_values, scene_labels=scenes, distortion_labels=distortions)
        bce = F.binary_cross_entropy_with_logits(out.scene_logits, torch.nan_to_num(scenes), reduction="none").mean(1)
        ce = F.cross_entropy(out.distortion_logits[1:], distortions[1:], reduction="none")
    torch.testing.assert_close(out.scene_loss, (bce[0] + bce[2]) / 3)
    torch.testing.assert_close(out.distortion_loss, ce.sum() / 3)
    assert out.quality_loss is None
    torch.testing.assert_close(out.loss, out.scene_loss + out.distortion_loss)


def test_quality_only_loss(model, pixel_values):
    out = model(pixel_values, labels=torch.tensor([0.2, 0.4, 0.6]))
    assert out.scene_loss is None and out.distortion_loss is None
    torch.testing.assert_close(out.loss, F.binary_cross_entropy(out.scores, torch.tensor([0.2, 0.4, 0.6])))


def test_label_validation(model, pixel_values):
    cases = [
        ({"labels": torch.tensor([0.5, 0.5])}, r"labels must have shape \(3,\)"),
        ({"labels": torch.tensor([0.5, 0.5, 1.5])}, r"\[0, 1\]"),
        ({"scene_labels": torch.zeros(3, 8)}, r"scene_labels must be multi-hot with shape \(3, 9\)"),
        ({"scene_labels": torch.zeros(3, 9, dtype=torch.long)}, "must be floats"),
        ({"scene_labels": torch.full((3, 9), 2.0)}, r"in \[0, 1\]"),
        ({"scene_labels": torch.tensor([[float("nan")] + [0.0] * 8] * 3)}, "partly NaN"),
        ({"distortion_labels": torch.tensor([1.0, 2.0, 3.0])}, "integer class indices"),
        ({"distortion_labels": torch.tensor([[1], [2], [3]])}, r"shape \(3,\)"),
        ({"distortion_labels": torch.tensor([0, 11, -1])}, r"\[0, 11\) or -100 .* \[-1, 11\]"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            model(pixel_values, **kwargs)


def test_config_validation(tiny):
    clip, tok = tiny
    for overrides, message in [
        ({"fusion_num_attention_heads": 5}, "divisible"),
        ({"pooling": "max"}, "pooling"),
        ({"fusion_image_tokens": "cls"}, "fusion_image_tokens"),
        ({"quality_loss": "huber"}, "quality_loss"),
        ({"scene_loss_weight": -1.0}, "scene_loss_weight"),
        ({"scene_classes": []}, "scene_classes"),
    ]:
        with pytest.raises(ValueError, match=message):
            MPIQEModel.from_clip(clip, tok, **overrides)
    with pytest.raises(ValueError, match="from_clip"):
        MPIQEModel(MPIQEConfig(clip_config=clip.config.to_dict()))


def test_reconstruction_notes_name_real_fields(tiny):
    clip, tok = tiny
    config = MPIQEModel.from_clip(clip, tok, num_visual_prompts=3).config
    fields = set(MPIQEConfig.__dataclass_fields__)
    for note in RECONSTRUCTION_NOTES:
        assert set(note["fields"]) <= fields, note["topic"]
    notes = config.reconstruction_notes()
    assert notes[1]["values"]["num_visual_prompts"] == 3
    table = render_reconstruction_notes(config)
    assert table.count("\n") == len(RECONSTRUCTION_NOTES) + 1 and "`fusion_num_layers=2`" in table


def test_text_features_cached_at_inference(model, pixel_values):
    calls, first, second = text_feature_calls(model, pixel_values)
    assert len(calls) == 2 and torch.equal(first, second)  # one per bank, once


# ------------------------------------------------------------------ saving and loading


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return save_tiny_model(MPIQEModel, tmp_path_factory.mktemp("model") / "mpiqe", lambda m: perturb(m, scale=0.5))


def test_save_pretrained_files(saved):
    _, path = saved
    files = set(os.listdir(path))
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert {"modeling_mp_iqe.py", "configuration_mp_iqe.py", "modeling_prompted_clip.py", "prompt_learning.py",
            "preprocessor_config.json"} <= files
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "mp_iqe"
    assert config["auto_map"] == {"AutoConfig": "configuration_mp_iqe.MPIQEConfig",
                                  "AutoModel": "modeling_mp_iqe.MPIQEModel"}
    assert len(config["scene_prompt_input_ids"]) == 9 and len(config["distortion_prompt_input_ids"]) == 11


def test_automodel_round_trip_is_identical(saved, pixel_values):
    model, path = saved
    with torch.no_grad():
        expected = model(pixel_values)
        loaded = AutoModel.from_pretrained(path)
        assert type(loaded) is MPIQEModel
        out = loaded(pixel_values)
    assert expected.scores.std() > 1e-3  # the scores depend on the input: the comparison means something
    assert torch.max(torch.abs(out.scores - expected.scores)) < 1e-6
    assert torch.max(torch.abs(out.distortion_logits - expected.distortion_logits)) < 1e-5
    assert not any(p.requires_grad for n, p in loaded.named_parameters() if n.startswith("clip."))
    assert loaded.multimodal_encoder.query_type_embeddings.requires_grad


def test_remote_code_without_the_package(saved, pixel_values, tmp_path):
    model, path = saved
    with torch.no_grad():
        expected = model(pixel_values).scores
    assert torch.max(torch.abs(scores_with_remote_code(path, pixel_values, tmp_path) - expected)) < 1e-6


def test_predict_and_build_model(saved):
    model, _ = saved
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (50 + 10 * i, 80, 3), dtype=np.uint8)) for i in range(3)]
    scores = model.predict(images, batch_size=2)
    assert scores.shape == (3,) and np.all((scores > 0) & (scores < 1))
    built = build_model("tiny-random", method="mp_iqe", seed=0, num_visual_prompts=2)
    assert isinstance(built, MPIQEModel) and built.config.base_model_name_or_path == "tiny-random"


# ------------------------------------------------------------------ training


def make_imagefolder(root, n=24, labels=True, seed=0):
    """A small imagefolder dataset: random images whose brightness is the MOS, with LIQE-style labels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    kinds = ["gaussian blur", "jpeg", "white noise", "contrast change"]
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "mos"] + (["distortion", "scenes"] if labels else []))
        for i in range(n):
            level = rng.uniform(20, 230)
            pixels = np.clip(rng.normal(level, 30, (72, 80, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{i:03d}.png")
            extra = [kinds[i % 4], ";".join(SCENES[j] for j in sorted({i % 9, (i * 5) % 9}))] if labels else []
            writer.writerow([f"images/{i:03d}.png", f"{100 * level / 255:.3f}"] + extra)
    return root


def small_args(data_dir, output_dir, **changes):
    base = dict(data_dir=str(data_dir), output_dir=str(output_dir), epochs=2, batch_size=8, num_splits=1,
                learning_rate=3e-3, num_visual_prompts=2, progress=False)
    return MPIQETrainingArguments(**{**base, **changes})


def test_learning_rate_schedule():
    assert learning_rate_at(0, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(0.1)
    assert learning_rate_at(9, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(1.0)
    assert learning_rate_at(55, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(0.5)
    assert learning_rate_at(100, 100, 1.0, "cosine") == pytest.approx(0.0)
    assert learning_rate_at(70, 100, 2.0, "constant") == 2.0


def test_exact_resume_from_a_mid_epoch_checkpoint(tmp_path):
    data = make_imagefolder(tmp_path / "data")
    full = run_mpiqe(small_args(data, tmp_path / "a", checkpointing_steps=2, keep_checkpoints=0))
    steps = sorted(p.name for p in (tmp_path / "a" / "split_00" / "checkpoints").iterdir())
    assert steps == ["step_00000002", "step_00000004", "step_00000006"]  # 19 train images: 3 steps per epoch
    # a run that died after step 2 (mid-epoch 1): only that checkpoint exists
    shutil.copytree(tmp_path / "a" / "split_00" / "checkpoints" / "step_00000002",
                    tmp_path / "b" / "split_00" / "checkpoints" / "step_00000002")
    resumed = run_mpiqe(small_args(data, tmp_path / "b", checkpointing_steps=2, resume_from_checkpoint="latest"))
    assert resumed["history"] == full["history"]
    assert resumed["splits"][0]["srcc"] == full["splits"][0]["srcc"]
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # resuming a finished run re-uses the split's result instead of training again
    again = run_mpiqe(small_args(data, tmp_path / "b", resume_from_checkpoint="latest"))
    assert again["splits"][0]["history"] == full["history"]
    # a checkpoint is only resumed by the run that wrote it
    shutil.copytree(tmp_path / "a" / "split_00" / "checkpoints" / "step_00000002",
                    tmp_path / "c" / "split_00" / "checkpoints" / "step_00000002")
    with pytest.raises(ValueError, match="different run"):
        run_mpiqe(small_args(data, tmp_path / "c", resume_from_checkpoint="latest", learning_rate=1e-2))
    with pytest.raises(ValueError, match="not a checkpoint of this run"):
        run_mpiqe(small_args(data, tmp_path / "c", resume_from_checkpoint=str(
            tmp_path / "a" / "split_00" / "checkpoints" / "step_00000004")))


def test_quality_only_dataset_and_non_finite_loss(tmp_path):
    data = make_imagefolder(tmp_path / "data", n=12, labels=False)
    report = run_mpiqe(small_args(data, tmp_path / "out", epochs=1))
    assert report["auxiliary_labels"] == {"scene": False, "distortion": False}
    assert set(report["history"][0]) == {"epoch", "step", "learning_rate", "loss", "quality_loss"}
    assert report["history"][0]["loss"] == report["history"][0]["quality_loss"]

    model = build_model("tiny-random", method="mp_iqe", num_visual_prompts=2)
    cache = ImageCache(model.image_processor, [str(p) for p in sorted((data / "images").iterdir())], progress=False)
    with torch.no_grad():
        model.quality_head.output.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 1:"):
        train_mpiqe(model, cache, range(12), np.full(12, 0.5), small_args(data, tmp_path / "nan"))


def test_one_and_two_processes_agree(tmp_path):
    # accelerate's debug_launcher runs MULTI_CPU (gloo) with 2 processes, in a subprocess of its own
    data = make_imagefolder(tmp_path / "data", n=16)
    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESS_SCRIPT.format(data=str(data), out=str(tmp_path / "two")))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "num_processes=2" in result.stdout
    one = run_mpiqe(small_args(data, tmp_path / "one"))
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert two["config"]["num_processes"] == 2 and one["config"]["num_processes"] == 1
    for a, b in zip(one["history"], two["history"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


TWO_PROCESS_SCRIPT = """
from accelerate import debug_launcher

from grmp_iqa_hf.training.common import make_accelerator  # imported once, before the fork
from grmp_iqa_hf.protocols.mpiqe import MPIQETrainingArguments, run_mpiqe

def train():
    accelerator = make_accelerator()
    print(f"num_processes={{accelerator.num_processes}}", flush=True)
    assert accelerator.num_processes == 2
    args = MPIQETrainingArguments(data_dir={data!r}, output_dir={out!r}, epochs=2, batch_size=8, num_splits=1,
                                  learning_rate=3e-3, num_visual_prompts=2, progress=False)
    run_mpiqe(args, accelerator=accelerator)

if __name__ == "__main__":
    debug_launcher(train, num_processes=2)
"""


def test_example_script_on_clive(clive_dir, tmp_path):
    # the first 250 LIVEC photos (real images, MOS, scene and distortion labels), to keep the test short
    data = tmp_path / "clive250"
    data.mkdir()
    (data / "images").symlink_to(clive_dir / "images", target_is_directory=True)
    lines = (clive_dir / "metadata.csv").read_text().splitlines()
    (data / "metadata.csv").write_text("\n".join(lines[:251]) + "\n")
    spec = importlib.util.spec_from_file_location("train_mpiqe", os.path.join(REPO_ROOT, "examples", "train_mpiqe.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "run"
    example.main([
        "--backbone", "tiny-random", "--data-dir", str(data), "--epochs", "3", "--seed", "0",
        "--output-dir", str(out), "--num-splits", "1", "--batch-size", "16", "--num-visual-prompts", "4",
        "--no-progress",
    ])
    report = json.loads((out / "report.json").read_text())
    losses = [epoch["loss"] for epoch in report["history"]]
    assert len(losses) == 3 and losses[2] < losses[1] < losses[0]
    assert report["auxiliary_labels"] == {"scene": True, "distortion": True}
    split = report["splits"][0]
    assert split["n_train"] == 200 and split["n_test"] == 50  # the whole 80% pool by default
    assert math.isfinite(split["srcc"]) and math.isfinite(split["plcc"])
    assert report["median"]["srcc"] == split["srcc"]
    loaded = AutoModel.from_pretrained(out)
    assert isinstance(loaded, MPIQEModel) and loaded.config.training_info["n_train"] == 200


def test_bf16_named_schedule_resume_and_trackers(tmp_path):
    """`mixed_precision="bf16"` on a CPU trains like fp32; "cosine" with 2 warm-up steps is recorded in the
    checkpoints and continued by a resumed run; a transformers schedule by name; TensorBoard gets the scalars."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = make_imagefolder(tmp_path / "data", n=10, labels=False)
    files = [str(p) for p in sorted((data / "images").iterdir())]
    start = build_model("tiny-random", method="mp_iqe", num_visual_prompts=2)
    cache = ImageCache(start.image_processor, files, progress=False)
    labels = np.linspace(0.1, 0.9, 10)
    base = dict(epochs=5, batch_size=10, warmup_steps=2, checkpointing_steps=2, keep_checkpoints=0)
    runs = {"fp32": {}, "bf16": {"mixed_precision": "bf16"}, "linear": {"lr_scheduler_type": "linear"},
            "resumed": {"resume_from_checkpoint": str(tmp_path / "fp32" / "checkpoints" / "step_00000002")}}
    models, histories = {}, {}
    for name, extra in runs.items():
        models[name] = copy.deepcopy(start)
        histories[name] = train_mpiqe(models[name], cache, range(10), labels,
                                      small_args(data, tmp_path, **base, **extra), output_dir=tmp_path / name)
    # one step per epoch: MP-IQE's own cosine with 2 warm-up steps, and transformers' linear one
    rates = {k: [h["learning_rate"] for h in histories[k]] for k in histories}
    assert rates["fp32"] == pytest.approx([learning_rate_at(s, 5, 3e-3, "cosine", 2) for s in range(5)])
    assert rates["linear"] == pytest.approx([0.0, 1.5e-3, 3e-3, 2e-3, 1e-3])
    state = json.loads((tmp_path / "fp32" / "checkpoints" / "step_00000002" / "state.json").read_text())
    assert state["settings"]["lr_scheduler_type"] == "cosine" and state["settings"]["warmup_steps"] == 2
    assert histories["resumed"] == histories["fp32"]  # rates and losses
    trained = {k: {n: p.detach() for n, p in m.named_parameters() if p.requires_grad} for k, m in models.items()}
    assert all(torch.equal(trained["resumed"][n], trained["fp32"][n]) for n in trained["fp32"])
    assert all(math.isfinite(h["loss"]) for h in histories["bf16"])
    moved = max(float((p - start.state_dict()[n]).abs().max()) for n, p in trained["bf16"].items())
    assert moved > 1e-4
    scores = {k: score_rows(models[k], cache, range(10))["scores"] for k in ("fp32", "bf16")}
    assert np.abs(scores["fp32"] - scores["bf16"]).max() < 0.05
    tags = EventAccumulator(str(tmp_path / "fp32" / "logs" / "mpiqe")).Reload().Tags()["scalars"]
    assert {"train/loss", "train/lr", "epoch/loss", "epoch/quality_loss"} <= set(tags)
