"""`grmp_iqa_hf.convert`: checkpoints of the released GRMP-IQA code, converted and checked against the released
code itself (run from ../shared/reference/grmp-iqa-official through tests/official_reference.py; every test that
needs it skips cleanly when it is absent).

The released model is a tiny `VPTCLIP` (2 vision layers of width 768, 224 px, 32 px patches, text width 64, the real
49408-token vocabulary) with every parameter moved off its default, inside the released `CustomCLIP` of
`finetune.py` (or of `pretrain.py`, whose text encoder keeps no token embedding), with its context moved too.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import types
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import official_reference as ref
from grmp_iqa_hf import GRMPIQAModel
from grmp_iqa_hf.convert import (
    OfficialCheckpointError,
    RefusedGlobalError,
    convert_official_checkpoint,
    load_official_checkpoint,
    read_official_state_dict,
)

CLASSNAMES = [["good", "bad"], ["clear", "unclear"], ["high quality", "low quality"]]
# the converted model must give the released logits2 to this (fp32, eval mode, the same pixel tensors)
LOGIT_TOLERANCE = 1e-4
# real photos through each side's own preprocessing (torch bicubic vs cv2.INTER_CUBIC: within 1 grey level)
SCORE_TOLERANCE = 3e-3
NUM_PHOTOS = 6


@pytest.fixture(scope="module", autouse=True)
def _one_thread_module():
    # module-scoped fixtures build the released models: keep them on one thread too (see conftest.one_thread)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _move_ctx(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ctx = model.prompt_learner2.ctx
        ctx.add_(0.05 * torch.randn(ctx.shape, generator=generator))


@pytest.fixture(scope="module")
def released():
    """The released models around one tiny `VPTCLIP`: `finetune` (finetune.py's CustomCLIP) and `pretrain`
    (pretrain.py's), in eval mode, with their classes registered in sys.modules so that pickle can name them."""
    ref.require_released()
    clip_model = ref.tiny_released_clip(seed=0)
    names = ["CustomCLIP", "PromptLearner", "TextEncoder"]
    finetune_defs = ref.load_definitions("finetune.py", names)
    pretrain_defs = ref.load_definitions("pretrain.py", names)
    registered = {}
    for module_name, defs in (("released_finetune", finetune_defs), ("released_pretrain", pretrain_defs)):
        module = types.ModuleType(module_name)
        for name in names:
            setattr(module, name, getattr(defs, name))
        registered[module_name] = sys.modules.get(module_name)
        sys.modules[module_name] = module
    with ref.cuda_calls_are_no_ops(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        finetune = finetune_defs.CustomCLIP(CLASSNAMES, clip_model)
        pretrain = pretrain_defs.CustomCLIP(CLASSNAMES, clip_model)
    _move_ctx(finetune, 2)
    _move_ctx(pretrain, 3)
    yield types.SimpleNamespace(finetune=finetune.eval(), pretrain=pretrain.eval(), clip=clip_model)
    for module_name, previous in registered.items():
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, released):
    """A local base holding only the CLIP tokenizer (the real vocabulary; tokenizes like the released one)."""
    directory = tmp_path_factory.mktemp("base_tokenizer")
    ref.hf_clip_tokenizer(tmp_path_factory.mktemp("tokenizer_files")).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def finetuned_file(tmp_path_factory, released):
    """A fine-tuned checkpoint as the released code keeps it: `torch.save(CustomCLIP.state_dict())`, fp32."""
    path = tmp_path_factory.mktemp("official") / "clive_50_prompt_lda_5.0.pt"
    torch.save(released.finetune.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, finetuned_file, base_dir):
    output = tmp_path_factory.mktemp("converted") / "model"
    model = convert_official_checkpoint(finetuned_file, output, base=base_dir)
    return model, output


@pytest.fixture(scope="module")
def full_base_dir(tmp_path_factory, converted, base_dir):
    """A local base with the transformers CLIP too, for files that lack part of the backbone. Its weights are the
    converted fine-tuned model's backbone, i.e. the released tiny CLIP (checked against the released forward in
    `test_forward_parity_with_the_released_logits`)."""
    model, _ = converted
    directory = tmp_path_factory.mktemp("base_full")
    model.clip.save_pretrained(directory)
    _copy_files(base_dir, directory)
    return directory


def _copy_files(source: Path, target: Path) -> None:
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())


def _pixels(seed: int = 0, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def _released_logits(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), ref.cuda_calls_are_no_ops():
        return model.eval()(pixels)


def _logits(model: GRMPIQAModel, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(pixel_values=pixels).logits


# ---------------------------------------------------------------------------------------------
# forward parity
# ---------------------------------------------------------------------------------------------


def test_forward_parity_with_the_released_logits(released, converted, finetuned_file, base_dir):
    model, output = converted
    pixels = _pixels(0)
    expected = _released_logits(released.finetune, pixels)
    got = _logits(model, pixels)
    diff = (got - expected).abs().max().item()
    print(f"max |logit diff| vs released logits2: {diff:.3g} (logits up to {expected.abs().max().item():.3g})")
    assert diff < LOGIT_TOLERANCE
    # the logits depend on the image: a mapping error would not hide behind constant outputs
    assert expected.std(dim=0).min() > 1e-2

    # the saved folder: safetensors only, the released architecture and preprocessing, the provenance
    assert (output / "model.safetensors").is_file() and not list(output.glob("*.bin"))
    reloaded = GRMPIQAModel.from_pretrained(output)
    assert (_logits(reloaded, pixels) - got).abs().max().item() == 0.0
    config = reloaded.config
    assert config.visual_prompt_position == "after_pre_layrnorm"
    assert config.visual_prompt_norm_eps == 1e-6 and config.visual_prompt_dropout_per_image
    assert config.num_visual_prompts == 100 and config.num_prompted_layers == 2
    assert (config.resize_mode, config.resize_size, config.resample) == ("square", 244, "bicubic_no_antialias")
    assert config.image_mean == [0.485, 0.456, 0.406] and config.image_std == [0.229, 0.224, 0.225]
    assert config.quality_classes == ["high quality", "low quality"] and config.n_ctx == 4
    assert config.clip_config.vision_config.hidden_act == "quick_gelu"
    assert config.clip_config.text_config.eos_token_id == 49407
    assert config.base_model_name_or_path == str(base_dir)
    info = config.training_info
    assert info["file"] == finetuned_file.name
    assert info["sha256"] == hashlib.sha256(finetuned_file.read_bytes()).hexdigest()
    assert info["kind"].startswith("fine-tuned")
    assert info["visual_prompts"] == {"tokens": 100, "deep_prompt_layers_in_file": 11, "layers_prompted": 2,
                                      "deep_prompt_layers_unused": 10}
    assert info["prompt_token_check"].startswith("passed")
    preprocessor = json.loads((output / "preprocessor_config.json").read_text())
    assert preprocessor["resample"] == "bicubic_no_antialias" and preprocessor["size"] == {"height": 244, "width": 244}


def test_predict_on_real_photos_matches_the_released_pipeline(released, converted, clive_dir):
    cv2 = pytest.importorskip("cv2", reason="cv2.resize is the released pipeline's resize (pip install -e '.[dev]')")
    from PIL import Image

    from grmp_iqa_hf import IQAImageProcessor, load_image
    from grmp_iqa_hf.modeling.image_processing_iqa import CLIP_MEAN, CLIP_STD

    model, _ = converted
    photos = sorted((clive_dir / "images").glob("*.JPG"))[:NUM_PHOTOS]
    assert len(photos) == NUM_PHOTOS
    batch = []
    for photo in photos:  # finetune.py: images resized to 244x244 by cv2 (INTER_CUBIC), centre crop, ImageNet
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        resized = cv2.resize(rgb, (244, 244), interpolation=cv2.INTER_CUBIC)
        batch.append(torch.from_numpy(resized.transpose(2, 0, 1).copy()))
    data = torch.stack(batch)[:, :, 10:234, 10:234].float() / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    data = (data - mean[:, None, None]) / std[:, None, None]
    expected = torch.softmax(_released_logits(released.finetune, data), dim=-1)[:, 0].numpy()
    got = model.predict([str(p) for p in photos], batch_size=NUM_PHOTOS)
    diff = float(np.abs(got - expected).max())
    print(f"max |score diff| on {len(photos)} CLIVE photos: {diff:.3g} (scores {expected.min():.4f}..{expected.max():.4f})")
    assert diff < SCORE_TOLERANCE

    # The tiny random model is not very sensitive to its input, so show that this comparison would see a wrong
    # pipeline: Pillow's antialiased bicubic resize, or CLIP's mean/std, move the scores 10x more than the diff.
    images = [load_image(str(p)) for p in photos]
    kwargs = model.config.image_processor_kwargs()
    for change in ({"resample": "bicubic"}, {"image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}):
        pixels = IQAImageProcessor(**{**kwargs, **change})(images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            wrong = float(np.abs(model(pixel_values=pixels).scores.numpy() - expected).max())
        print(f"  with {change}: max |score diff| {wrong:.3g}")
        assert wrong > 10 * diff


# ---------------------------------------------------------------------------------------------
# converter inputs
# ---------------------------------------------------------------------------------------------


def test_meta_pretraining_file_dataparallel_fp32(released, full_base_dir, tmp_path):
    # pretrain.py: torch.save(meta_model.state_dict()) of nn.DataParallel(CustomCLIP); no token embedding in it
    wrapped = nn.DataParallel(released.pretrain)
    state = wrapped.state_dict()
    assert all(name.startswith("module.") for name in state)
    assert not any("token_embedding" in name for name in state)
    path = tmp_path / "best_prompt.pt"
    torch.save(state, path)

    model = convert_official_checkpoint(path, tmp_path / "out", base=full_base_dir)
    pixels = _pixels(1)
    diff = (_logits(model, pixels) - _released_logits(released.pretrain, pixels)).abs().max().item()
    print(f"DataParallel meta-pre-training file: max |logit diff| {diff:.3g}")
    assert diff < LOGIT_TOLERANCE
    info = model.config.training_info
    assert info["prefix_removed"] == "module." and info["kind"].startswith("meta-pre-trained")
    assert info["from_base"] == ["text_model.embeddings.token_embedding.weight"]
    assert info["prompt_token_check"].startswith("passed")


def test_nested_fp16_state_dict(released, base_dir, tmp_path):
    # fp16 weights: the reference is the released model with the same fp16 rounding of its weights (computed in
    # fp32), so the parity tolerance stays 1e-4. The rounding itself (relative error <= 2**-11 per weight) moves
    # the logits by ~5e-3 against the unrounded model: that difference is the file's, not the converter's.
    state = {name: tensor.half() for name, tensor in released.finetune.state_dict().items()}
    path = tmp_path / "fp16.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = load_official_checkpoint(path, base=base_dir)

    rounded = copy.deepcopy(released.finetune)
    rounded.load_state_dict({name: tensor.float() for name, tensor in state.items()})
    pixels = _pixels(2)
    got = _logits(model, pixels)
    diff = (got - _released_logits(rounded, pixels)).abs().max().item()
    rounding = (got - _released_logits(released.finetune, pixels)).abs().max().item()
    print(f"fp16 file: max |logit diff| {diff:.3g} vs the released model with fp16-rounded weights; "
          f"{rounding:.3g} vs the unrounded fp32 model (the fp16 rounding of the weights)")
    assert diff < LOGIT_TOLERANCE
    assert rounding < 0.05  # fp16 keeps 11 significant bits: relative weight error <= 2**-11
    info = model.config.training_info
    assert info["format"] == "state dict, nested under 'state_dict'" and info["other_entries"] == ["epoch"]
    assert info["dtypes"] == {"float16": len(state)}
    assert model.text_context.ctx.dtype == torch.float32


def test_whole_module_pickle(released, base_dir, tmp_path):
    # torch.save(custom_clip): a pickle naming the released classes, read through the allow-list unpickler
    path = tmp_path / "custom_clip_module.pt"
    torch.save(released.finetune, path)
    tensors, info = read_official_state_dict(path)
    assert info["format"] == "pickled module (released_finetune.CustomCLIP)"
    assert info["loader"] == "allow-list unpickler"
    reference = released.finetune.state_dict()
    assert set(tensors) == set(reference)
    assert all(torch.equal(tensors[name], reference[name]) for name in reference)

    model = load_official_checkpoint(path, base=base_dir)
    pixels = _pixels(3)
    assert (_logits(model, pixels) - _released_logits(released.finetune, pixels)).abs().max().item() < LOGIT_TOLERANCE

    # the same wrapped in DataParallel (`module.` names), and in torch's legacy (pre-1.6, non-zip) format, which
    # stores each module class's source next to it
    wrapped = tmp_path / "dataparallel_module.pt"
    torch.save(nn.DataParallel(released.finetune), wrapped)
    tensors, info = read_official_state_dict(wrapped)
    assert info["prefix_removed"] == "module." and set(tensors) == set(reference)
    legacy = tmp_path / "legacy_module.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Couldn't retrieve source code for container ..."
        torch.save(released.finetune, legacy, _use_new_zipfile_serialization=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensors, info = read_official_state_dict(legacy)
    assert info["loader"] == "allow-list unpickler"
    assert all(torch.equal(tensors[name], reference[name]) for name in reference)


class _Payload:
    """Unpickling this creates (opens for writing) `marker`: stands in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("carrier", ["state_dict", "module"])
def test_malicious_pickle_is_refused_and_never_run(released, base_dir, tmp_path, carrier):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    if carrier == "state_dict":
        small = {name: t for name, t in released.finetune.state_dict().items() if name.startswith("prompt_learner2")}
        torch.save({"state_dict": small, "note": _Payload(marker)}, path)
    else:  # a trojan released model: a real CustomCLIP pickle with the payload among its attributes
        released.finetune.note = _Payload(marker)
        try:
            torch.save(released.finetune, path)
        finally:
            del released.finetune.note

    with pytest.raises(RefusedGlobalError) as info:
        convert_official_checkpoint(path, tmp_path / "out", base=base_dir)
    assert isinstance(info.value, ValueError)
    assert info.value.global_name == f"{open.__module__}.open"
    assert repr(info.value.global_name) in str(info.value), str(info.value)
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "out").exists()

    # control: the payload is live, an unrestricted load of the same file creates the marker
    loaded = torch.load(path, weights_only=False)
    note = loaded["note"] if carrier == "state_dict" else loaded.__dict__.pop("note")
    note.close()
    assert marker.exists(), "the payload does not work: this test would prove nothing"


def test_unknown_global_is_named(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "ratio": Fraction(1, 3)}, path)
    with pytest.raises(RefusedGlobalError, match=r"'fractions\.Fraction'"):
        read_official_state_dict(path)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_not_a_grmp_iqa_checkpoint_names_the_missing_tensors(released, base_dir, tmp_path):
    path = tmp_path / "plain_vptclip.pt"
    torch.save(released.clip.state_dict(), path)  # the CLIP alone: `visual.*`, no CustomCLIP names
    with pytest.raises(OfficialCheckpointError) as info:
        convert_official_checkpoint(path, tmp_path / "out", base=base_dir)
    message = str(info.value)
    for name in ("prompt_learner2.ctx", "image_encoder.prompt_embeddings", "image_encoder.deep_prompt_embeddings",
                 "image_encoder.prompt_proj.weight", "image_encoder.prompt_norm.bias"):
        assert name in message, message
    assert "not a GRMP-IQA checkpoint" in message

    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(OfficialCheckpointError, match="not a PyTorch checkpoint"):
        read_official_state_dict(text)
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        read_official_state_dict(tmp_path / "missing.pt")

    scripted = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script: still the way TorchScript is written
        torch.jit.script(nn.Linear(2, 2)).save(str(scripted))
    with pytest.raises(OfficialCheckpointError, match="TorchScript"):
        read_official_state_dict(scripted)


def test_shapes_that_do_not_match_the_base(released, base_dir, tmp_path):
    from grmp_iqa_hf.testing import tiny_clip

    # a meta-pre-training file (no token embedding) with a base of other shapes
    other = tmp_path / "other_base"
    tiny_clip(seed=0)[0].save_pretrained(other)
    _copy_files(base_dir, other)
    state = {f"module.{k}": v for k, v in released.finetune.state_dict().items() if "token_embedding" not in k}
    path = tmp_path / "meta.pt"
    torch.save(state, path)
    with pytest.raises(OfficialCheckpointError) as info:
        load_official_checkpoint(path, base=other)
    message = str(info.value)
    assert "does not match the base CLIP" in message, message
    assert "vision_model.embeddings.patch_embedding.weight: (768, 3, 32, 32) in the file, (32, 3, 8, 8) in the base" \
        in message, message


def test_a_base_with_another_token_embedding_is_caught(released, base_dir, full_base_dir, tmp_path):
    # same shapes, other weights: the stored prompt token embeddings (token_prefix / token_suffix) disagree
    from transformers import CLIPModel

    other = tmp_path / "other_weights"
    clip = CLIPModel.from_pretrained(full_base_dir)
    with torch.no_grad():
        clip.text_model.embeddings.token_embedding.weight.mul_(1.5)
    clip.save_pretrained(other)
    _copy_files(base_dir, other)
    state = {f"module.{k}": v for k, v in released.pretrain.state_dict().items()}
    path = tmp_path / "meta.pt"
    torch.save(state, path)
    with pytest.raises(OfficialCheckpointError, match="is not the CLIP this checkpoint was trained from"):
        load_official_checkpoint(path, base=other)


def test_an_unavailable_base_is_an_os_error(finetuned_file, tmp_path):
    from huggingface_hub import is_offline_mode

    with pytest.raises(OSError) as info:
        load_official_checkpoint(finetuned_file, base="no-such-org/no-such-clip")
    message = str(info.value)
    assert "no-such-org/no-such-clip" in message and "--base" in message, message
    if is_offline_mode():
        assert "HF_HUB_OFFLINE" in message, message
    with pytest.raises(OSError, match="no such folder"):
        load_official_checkpoint(finetuned_file, base=str(tmp_path / "nowhere"))
