"""GRMPIQAModel against transformers' own CLIPModel, and its save / load / remote-code paths."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModel

from conftest import save_tiny_model, text_feature_calls
from grmp_iqa_hf import GRMPIQAConfig, GRMPIQAModel
from grmp_iqa_hf.modeling.modeling_grmp_iqa import quality_loss
from grmp_iqa_hf.testing import tiny_clip


def clip_scores(clip, tokenizer, texts, pixel_values):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = clip(input_ids=enc.input_ids, attention_mask=enc.attention_mask, pixel_values=pixel_values)
    return out.logits_per_image.softmax(-1)


def test_parity_with_clip_zero_shot(tiny, pixel_values):
    clip, tok = tiny
    model = GRMPIQAModel.from_clip(
        clip, tok, ctx_init="a photo of a", num_visual_prompts=0, quality_classes=["good photo", "bad photo"]
    )
    assert model.config.n_ctx == 4  # "a photo of a" is 4 tokens
    with torch.no_grad():
        scores = model(pixel_values=pixel_values).scores
    reference = clip_scores(clip, tok, ["a photo of a good photo.", "a photo of a bad photo."], pixel_values)[:, 0]
    assert scores.shape == (3,)
    assert torch.max(torch.abs(scores - reference)) < 1e-5


@pytest.mark.parametrize(
    "position, texts",
    [
        ("front", ["good photo a photo of a.", "bad photo a photo of a."]),
        ("middle", ["a photo good photo of a.", "a photo bad photo of a."]),
    ],
)
def test_class_token_positions_match_clip(tiny, pixel_values, position, texts):
    clip, tok = tiny
    model = GRMPIQAModel.from_clip(
        clip, tok, ctx_init="a photo of a", num_visual_prompts=0, quality_classes=["good photo", "bad photo"],
        class_token_position=position,
    )
    with torch.no_grad():
        scores = model(pixel_values=pixel_values).scores
    reference = clip_scores(clip, tok, texts, pixel_values)[:, 0]
    assert torch.max(torch.abs(scores - reference)) < 1e-5


def test_without_visual_prompts_image_path_is_clips(tiny, pixel_values):
    clip, tok = tiny
    model = GRMPIQAModel.from_clip(clip, tok, num_visual_prompts=0)
    assert model.visual_prompts is None
    with torch.no_grad():
        ours = model.get_image_features(pixel_values)
        theirs = clip.get_image_features(pixel_values=pixel_values).pooler_output
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_legacy_eos_token_id_pools_like_clip(pixel_values):
    # OpenAI's published configs carry eos_token_id=2: CLIP then pools at the largest token id.
    clip, tok = tiny_clip(seed=3, text_config={"eos_token_id": 2})
    model = GRMPIQAModel.from_clip(clip, tok, ctx_init="a photo of a", num_visual_prompts=0,
                                   quality_classes=["good photo", "bad photo"])
    with torch.no_grad():
        scores = model(pixel_values=pixel_values).scores
    reference = clip_scores(clip, tok, ["a photo of a good photo.", "a photo of a bad photo."], pixel_values)[:, 0]
    assert torch.max(torch.abs(scores - reference)) < 1e-5


def test_visual_prompts_structure_and_outputs(tiny, pixel_values):
    clip, tok = tiny
    model = GRMPIQAModel.from_clip(clip, tok, num_visual_prompts=7)
    layers = clip.config.vision_config.num_hidden_layers
    width = clip.config.vision_config.hidden_size
    assert model.visual_prompts.embeddings.shape == (layers, 7, width)  # VPT-deep: one set per layer
    bound = model.visual_prompts.init_bound
    assert bound == pytest.approx((6 / (3 * 8 * 8 + width)) ** 0.5)
    assert model.visual_prompts.embeddings.abs().max() <= bound
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "text_context.ctx", "visual_prompts.embeddings", "visual_prompts.projection.weight",
        "visual_prompts.projection.bias", "visual_prompts.norm.weight", "visual_prompts.norm.bias",
    }
    out = model(pixel_values=pixel_values)
    assert out.logits.shape == (3, 2) and out.image_embeds.shape == (3, 32) and out.text_embeds.shape == (2, 32)
    assert torch.all((out.scores >= 0) & (out.scores <= 1))
    torch.testing.assert_close(out.scores, out.logits.softmax(-1)[:, 0])
    # visual prompts change the image features
    with torch.no_grad():
        plain = clip.get_image_features(pixel_values=pixel_values).pooler_output
    assert not torch.allclose(F.normalize(plain, dim=-1), out.image_embeds, atol=1e-3)


def test_shallow_depth_and_prompt_replacement(tiny, pixel_values):
    clip, tok = tiny
    deep = GRMPIQAModel.from_clip(clip, tok, num_visual_prompts=5, visual_prompt_dropout=0.0)
    shallow = GRMPIQAModel.from_clip(clip, tok, num_visual_prompts=5, visual_prompt_depth=1, visual_prompt_dropout=0.0)
    assert shallow.visual_prompts.embeddings.shape[0] == 1
    # changing layer 2's prompts affects the deep model only through layer 2 onwards
    with torch.no_grad():
        before = deep.get_image_features(pixel_values)
        deep.visual_prompts.embeddings[2].add_(1.0)
        after = deep.get_image_features(pixel_values)
    assert not torch.allclose(before, after)


def test_loss_is_bce_and_reaches_prompts(tiny, pixel_values):
    clip, tok = tiny
    model = GRMPIQAModel.from_clip(clip, tok, num_visual_prompts=4).train()
    labels = torch.tensor([0.0, 0.3, 1.0])
    torch.manual_seed(0)
    out = model(pixel_values=pixel_values, labels=labels)
    expected = F.binary_cross_entropy(out.scores, labels)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
            assert param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


# ------------------------------------------------------------------ the forward in stages


def test_forward_equals_its_stages_from_every_block(tiny, pixel_values):
    clip, tok = tiny
    model = GRMPIQAModel.from_clip(clip, tok, num_visual_prompts=5).train()
    n = clip.config.vision_config.num_hidden_layers

    def generators():
        return [torch.Generator().manual_seed(100 + i) for i in range(len(pixel_values))]

    reference = model(pixel_values=pixel_values, dropout_generators=generators()).logits
    for k in range(n + 1):
        gens = generators()  # one stream per image, consumed layer after layer across the two stages
        hidden = model.vision_hidden_states(pixel_values, k, gens)
        assert hidden.shape == (3, 1 + 5 + 64, 32)
        logits = model.quality_logits(model.image_features_from_hidden(hidden, k, gens))
        torch.testing.assert_close(logits, reference, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="end must be a block index in \\[0, 4\\]"):
        model.vision_hidden_states(pixel_values, n + 1)
    with pytest.raises(ValueError, match="start must be a block index"):
        model.image_features_from_hidden(hidden, -1)


def _full_and_rows(layer, hidden, n_prompts):
    """(full layer, CLS-only, all but the prompts) outputs of one block."""
    from grmp_iqa_hf.modeling.prompt_learning import encoder_layer_rows

    with torch.no_grad():
        full = layer(hidden, None)
        cls = encoder_layer_rows(layer, hidden, [slice(0, 1)])
        no_prompts = encoder_layer_rows(layer, hidden, [slice(0, 1), slice(1 + n_prompts, None)])
    return full, cls, no_prompts


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_blocks_computing_some_rows_equal_the_full_block(tiny, implementation):
    from transformers import CLIPVisionConfig
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    clip, _ = tiny
    layer = clip.vision_model.encoder.layers[-1]
    hidden = torch.randn(3, 70, 32, generator=torch.Generator().manual_seed(0))
    full, cls, no_prompts = _full_and_rows(layer, hidden, 5)
    assert cls.shape == (3, 1, 32) and no_prompts.shape == (3, 65, 32)
    torch.testing.assert_close(cls, full[:, :1], rtol=0, atol=1e-5)
    torch.testing.assert_close(no_prompts, torch.cat([full[:, :1], full[:, 6:]], 1), rtol=0, atol=1e-5)
    # one ViT-B/16-sized block (width 768, 12 heads, 1 + 100 prompts + 196 patches) with random weights
    config = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12)
    config._attn_implementation = implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = CLIPEncoderLayer(config).eval()
        for param in layer.parameters():
            param.data.normal_(0, 0.05)
        hidden = torch.randn(2, 297, 768)
    full, cls, no_prompts = _full_and_rows(layer, hidden, 100)
    torch.testing.assert_close(cls, full[:, :1], rtol=0, atol=1e-5)
    torch.testing.assert_close(no_prompts, torch.cat([full[:, :1], full[:, 101:]], 1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("depth", [None, 2, 1])
def test_skipping_unused_queries_gives_the_same_features_and_gradients(tiny, pixel_values, depth):
    clip, tok = tiny
    model = GRMPIQAModel.from_clip(clip, tok, num_visual_prompts=5, visual_prompt_depth=depth).train()
    model.set_trainable(top_k_blocks=2)
    results = []
    for skip in (True, False):
        model.skip_unused_queries = skip
        model.zero_grad()
        generators = [torch.Generator().manual_seed(i) for i in range(3)]
        out = model(pixel_values=pixel_values, labels=torch.tensor([0.1, 0.5, 0.9]), dropout_generators=generators)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        trunk = model.vision_hidden_states(pixel_values, 3, [torch.Generator().manual_seed(i) for i in range(3)])
        results.append((out.logits.detach(), grads, trunk.detach()))
    (logits, grads, trunk), (all_logits, all_grads, all_trunk) = results
    torch.testing.assert_close(logits, all_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(trunk, all_trunk, rtol=0, atol=1e-5)  # every row, prompts included
    assert grads.keys() == all_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], all_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_set_trainable(tiny):
    from grmp_iqa_hf.modeling.modeling_mp_iqe import MPIQEModel

    clip, tok = tiny
    model = GRMPIQAModel.from_clip(clip, tok, num_visual_prompts=5)
    params = model.set_trainable(top_k_blocks=2)
    assert params == {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = set(params)
    assert "text_context.ctx" in names
    assert {"clip.vision_model.post_layernorm.weight", "clip.text_model.final_layer_norm.bias"} <= names
    assert any(n.startswith("clip.vision_model.encoder.layers.3.") for n in names)
    assert any(n.startswith("clip.text_model.encoder.layers.2.") for n in names)
    assert not any(n.startswith(("clip.vision_model.encoder.layers.1.", "clip.text_model.encoder.layers.1.",
                                 "visual_prompts", "clip.visual_projection", "clip.text_projection",
                                 "clip.logit_scale", "clip.vision_model.embeddings")) for n in names)
    assert set(model.set_trainable(top_k_blocks=0)) == {"text_context.ctx"}
    assert "text_context.ctx" not in model.set_trainable(top_k_blocks=1, context=False)
    with pytest.raises(ValueError, match="top_k must be an integer in \\[0, 4\\]"):
        model.set_trainable(top_k_blocks=5)
    with pytest.raises(ValueError, match="nothing to train"):
        model.set_trainable(top_k_blocks=0, context=False)
    # MP-IQE: `context` = both text contexts; its encoder and heads (no pre-trained values) always train
    mp = MPIQEModel.from_clip(clip, tok, num_visual_prompts=5)
    prefixes = {n.split(".")[0] for n in mp.set_trainable(top_k_blocks=0)}
    assert prefixes == {"scene_context", "distortion_context", "multimodal_encoder", "quality_head"}
    prefixes = {n.split(".")[0] for n in mp.set_trainable(top_k_blocks=1, context=False)}
    assert prefixes == {"clip", "multimodal_encoder", "quality_head"}


def test_quality_loss_rejects_unscaled_labels():
    logits = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        quality_loss(logits, torch.tensor([0.5, 3.0]))
    with pytest.raises(ValueError, match="shape"):
        quality_loss(logits, torch.tensor([0.5]))


def test_text_features_cached_at_inference_and_invalidated(tiny, pixel_values):
    clip, tok = tiny
    model = GRMPIQAModel.from_clip(clip, tok, num_visual_prompts=0)
    calls, first, second = text_feature_calls(model, pixel_values)
    assert len(calls) == 1 and torch.equal(first, second)
    with torch.no_grad():
        # an in-place update (what an optimizer does) must invalidate the cache; not a constant
        # shift, which LayerNorm removes
        model.text_context.ctx.add_(torch.randn_like(model.text_context.ctx))
        third = model(pixel_values).scores
        assert len(calls) == 2 and not torch.allclose(first, third)
    model.train()
    model(pixel_values)  # training recomputes every call
    model(pixel_values)
    assert len(calls) == 4


def test_config_validation(tiny):
    clip, tok = tiny
    with pytest.raises(ValueError, match="class_token_position"):
        GRMPIQAModel.from_clip(clip, tok, class_token_position="left")
    with pytest.raises(ValueError, match="visual_prompt_depth"):
        GRMPIQAModel.from_clip(clip, tok, visual_prompt_depth=99)
    with pytest.raises(ValueError, match="tokenizer"):
        GRMPIQAModel.from_clip(clip)
    with pytest.raises(ValueError, match="from_clip"):
        GRMPIQAModel(GRMPIQAConfig(clip_config=clip.config.to_dict()))
    config = GRMPIQAConfig(clip_config=clip.config.to_dict(), image_normalization="imagenet")
    assert config.image_mean == [0.485, 0.456, 0.406] and config.resize_size == round(64 * 244 / 224)


def test_tiny_clip_is_deterministic():
    a, _ = tiny_clip(seed=5)
    b, _ = tiny_clip(seed=5)
    c, _ = tiny_clip(seed=6)
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), name
    assert not all(torch.equal(p, r) for p, r in zip(a.parameters(), c.parameters()))


def test_tiny_tokenizer_special_ids_agree_with_config(tiny):
    clip, tok = tiny
    text = clip.config.text_config
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert text.vocab_size == len(tok)
    ids = tok("a photo of a high quality.").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 9


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    def trained(model):  # "trained" prompts
        with torch.no_grad():
            model.text_context.ctx.add_(0.1 * torch.randn_like(model.text_context.ctx))

    return save_tiny_model(GRMPIQAModel, tmp_path_factory.mktemp("model") / "grmp", trained)


def test_save_pretrained_writes_safetensors_config_and_remote_code(saved_model):
    _, path = saved_model
    files = set(os.listdir(path))
    assert "model.safetensors" in files and "pytorch_model.bin" not in files
    assert {"modeling_grmp_iqa.py", "configuration_grmp_iqa.py", "prompt_learning.py",
            "image_processing_iqa.py", "preprocessor_config.json"} <= files
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "grmp_iqa"
    assert config["auto_map"] == {"AutoConfig": "configuration_grmp_iqa.GRMPIQAConfig",
                                  "AutoModel": "modeling_grmp_iqa.GRMPIQAModel"}
    assert config["prompt_input_ids"] and config["n_ctx"] == 4


def test_from_pretrained_and_automodel_give_identical_scores(saved_model, pixel_values):
    model, path = saved_model
    with torch.no_grad():
        expected = model(pixel_values).scores
        loaded = GRMPIQAModel.from_pretrained(path)
        auto = AutoModel.from_pretrained(path)
        assert type(auto) is GRMPIQAModel
        assert torch.max(torch.abs(loaded(pixel_values).scores - expected)) < 1e-6
        assert torch.max(torch.abs(auto(pixel_values).scores - expected)) < 1e-6
    assert not loaded.training
    frozen = [n for n, p in loaded.named_parameters() if n.startswith("clip.") and p.requires_grad]
    assert frozen == [] and loaded.text_context.ctx.requires_grad


# Makes `import grmp_iqa_hf` fail in a subprocess, as in an environment without the package.
BLOCK_PACKAGE_PREAMBLE = textwrap.dedent(
    """
    import sys, importlib.abc

    class BlockPackage(importlib.abc.MetaPathFinder):
        # behave as if grmp_iqa_hf were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "grmp_iqa_hf" or name.startswith("grmp_iqa_hf."):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, BlockPackage())
    """
)

REMOTE_CODE_SCRIPT = BLOCK_PACKAGE_PREAMBLE + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
    assert "grmp_iqa_hf" not in sys.modules
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        scores = model(pixel_values=torch.load(sys.argv[2])).scores
    torch.save(scores, sys.argv[3])
    """
)


def scores_with_remote_code(path, pixel_values, tmp_path) -> torch.Tensor:
    """Scores from `AutoModel.from_pretrained(path, trust_remote_code=True)` in a subprocess where
    `grmp_iqa_hf` cannot be imported (shared with the MP-IQE tests)."""
    torch.save(pixel_values, tmp_path / "pixels.pt")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_CODE_SCRIPT)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, str(script), str(path), str(tmp_path / "pixels.pt"), str(tmp_path / "scores.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(tmp_path / "scores.pt")


def test_remote_code_without_the_package(saved_model, pixel_values, tmp_path):
    model, path = saved_model
    with torch.no_grad():
        expected = model(pixel_values).scores
    remote = scores_with_remote_code(path, pixel_values, tmp_path)
    assert torch.max(torch.abs(remote - expected)) < 1e-6


def test_from_clip_local_directory(tmp_path, pixel_values):
    clip, tok = tiny_clip(seed=2)
    clip.save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    torch.manual_seed(0)
    from_dir = GRMPIQAModel.from_clip(str(tmp_path / "clip"), num_visual_prompts=0, ctx_init="a photo of a")
    from_obj = GRMPIQAModel.from_clip(clip, tok, num_visual_prompts=0, ctx_init="a photo of a")
    assert from_dir.config.base_model_name_or_path == str(tmp_path / "clip")
    with torch.no_grad():
        torch.testing.assert_close(from_dir(pixel_values).scores, from_obj(pixel_values).scores, rtol=0, atol=1e-6)


def test_predict_mixed_sizes_and_modes(saved_model, tmp_path):
    model, _ = saved_model
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 90, 3), dtype=np.uint8))
    grey = Image.fromarray(rng.integers(0, 255, (300, 120), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8), mode="RGBA")
    rgb.save(tmp_path / "x.png")
    inputs = [rgb, grey, rgba, str(tmp_path / "x.png"), np.asarray(rgb)]
    scores = model.predict(inputs, batch_size=2)
    assert scores.shape == (5,) and scores.dtype == np.float32
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    assert scores[0] == pytest.approx(scores[3], abs=1e-6) == pytest.approx(scores[4], abs=1e-6)
    # batching does not change scores
    assert np.allclose(model.predict(inputs, batch_size=5), scores, atol=1e-6)


def test_predict_names_a_broken_input(saved_model, tmp_path):
    model, _ = saved_model
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    from grmp_iqa_hf import ImageLoadError

    with pytest.raises(ImageLoadError, match="broken.jpg"):
        model.predict([str(broken)])


def test_remote_code_runs_only_when_trusted(tmp_path):
    """A checkpoint whose config points at its own code: loading it without `trust_remote_code` refuses
    and never imports that code (its import would create a marker file)."""
    from grmp_iqa_hf.models import load_model

    marker = tmp_path / "MARKER"
    (tmp_path / "evil.py").write_text(textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(marker)!r}).touch()
        from transformers import PretrainedConfig, PreTrainedModel
        class EvilConfig(PretrainedConfig):
            model_type = "evil"
        class EvilModel(PreTrainedModel):
            config_class = EvilConfig
        """))
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_model(str(tmp_path))
    assert not marker.exists()


def _imports_of_package_testing(tree) -> list[tuple[int, str]]:
    """(line, enclosing function) of every import of this package's `testing` module in `tree`."""
    import ast

    owner = {}
    for func in ast.walk(tree):  # outer functions first, so a nested function's name wins
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            owner.update({id(node): func.name for node in ast.walk(func)})
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("grmp_iqa_hf")]
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("grmp_iqa_hf")):
            names = [node.module or "", *(a.name for a in node.names)]
        else:
            continue
        if any(name.split(".")[-1] == "testing" for name in names):
            found.append((node.lineno, owner.get(id(node), "<module>")))
    return found


def test_production_code_reaches_the_test_clip_only_through_load_backbone():
    # `testing.py` (the tiny CLIP) is a test helper: outside it, only `models.load_backbone` may import it
    import ast
    from pathlib import Path

    import grmp_iqa_hf

    assert len(_imports_of_package_testing(ast.parse(
        "from . import testing\nimport grmp_iqa_hf.testing\ndef f():\n    from ..testing import tiny_tokenizer\n"
    ))) == 3
    root = Path(grmp_iqa_hf.__file__).parent
    paths = sorted({*root.rglob("*.py"), *Path(grmp_iqa_hf.modeling.__file__).parent.rglob("*.py")})
    offenders = [
        f"{path}:{line} in {func}"
        for path in paths if path.name != "testing.py"
        for line, func in _imports_of_package_testing(ast.parse(path.read_text()))
        if (path.name, func) != ("models.py", "load_backbone")
    ]
    assert not offenders, offenders
