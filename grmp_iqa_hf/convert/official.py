"""Convert checkpoints written by the authors' released GRMP-IQA code into a `GRMPIQAModel`.

The released code (github.com/LXDxmu/GRMP-IQA) saves its models with `torch.save`:

- `finetune.py`'s `CustomCLIP` holds the whole CLIP and the prompts: `prompt_learner2.ctx` (the CoOp context of the
  "high quality" / "low quality" prompts) with its buffers `token_prefix` / `token_suffix` (the frozen SOS, class,
  "." and EOS token embeddings), `image_encoder.*` (the VPT-deep vision tower: CLIP's ViT plus `prompt_embeddings`,
  `deep_prompt_embeddings`, `prompt_proj`, `prompt_norm`), `text_encoder.*` (transformer, positional embedding,
  `ln_final`, `text_projection`, `token_embedding`) and `logit_scale`.
- `pretrain.py` saves `meta_model.state_dict()` of an `nn.DataParallel(CustomCLIP)`: the same names under `module.`,
  without a token embedding (its `TextEncoder` keeps none); the frozen backbone is in the file all the same.
- `finetune.py` reads either, optionally nested under `"state_dict"`, fp16 or fp32. A whole pickled module
  (`torch.save(model)`) is read too.

Nothing in the file is executed (`official_reader`: torch's `weights_only` loader, or an allow-list unpickler that
builds inert stand-ins for module classes and refuses any other global by name; TorchScript archives are refused).

The output reproduces the released forward pass: first visual prompts after CLIP's `pre_layrnorm`, the extra norm's
eps 1e-6, QuickGELU, heads = width // 64, EOS pooling, and the released preprocessing (square 244x244 bicubic
resize without antialiasing, i.e. `cv2.resize(INTER_CUBIC)`, centre crop 224, ImageNet mean/std).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.utils import logging

from ..modeling.configuration_grmp_iqa import GRMPIQAConfig
from ..modeling.constants import QUALITY_CLASSES, released_preprocessing
from ..modeling.modeling_grmp_iqa import GRMPIQAModel
from .official_reader import OfficialCheckpointError, RefusedGlobalError, read_official_state_dict

logger = logging.get_logger(__name__)

DEFAULT_BASE = "openai/clip-vit-base-patch16"
#: The released `VPTVisionTransformer`: `prompt_norm = LayerNorm(768, eps=1e-6)`, `prompt_dropout = Dropout(0.1)`.
PROMPT_NORM_EPS = 1e-6
PROMPT_DROPOUT = 0.1
#: The released `build_model`: attention heads = width // 64; OpenAI CLIP's LayerNorm eps and activation.
HEAD_WIDTH = 64
LAYER_NORM_EPS = 1e-5
HIDDEN_ACT = "quick_gelu"

CTX = "prompt_learner2.ctx"
TOKEN_PREFIX = "prompt_learner2.token_prefix"
TOKEN_SUFFIX = "prompt_learner2.token_suffix"
SHALLOW_PROMPTS = "image_encoder.prompt_embeddings"
DEEP_PROMPTS = "image_encoder.deep_prompt_embeddings"
#: Every GRMP-IQA checkpoint of the released code has these (after any `module.` prefix is removed).
REQUIRED_PROMPT_TENSORS = (
    CTX, SHALLOW_PROMPTS, DEEP_PROMPTS,
    "image_encoder.prompt_proj.weight", "image_encoder.prompt_proj.bias",
    "image_encoder.prompt_norm.weight", "image_encoder.prompt_norm.bias",
)
_VISUAL_PROMPT_PARTS = {
    "prompt_proj.weight": "visual_prompts.projection.weight",
    "prompt_proj.bias": "visual_prompts.projection.bias",
    "prompt_norm.weight": "visual_prompts.norm.weight",
    "prompt_norm.bias": "visual_prompts.norm.bias",
}

# ----------------------------------------------------------------------------------------------
# OpenAI CLIP names -> transformers `CLIPModel` names
# ----------------------------------------------------------------------------------------------

_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_PARTS = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_FUSED_QKV = {"attn.in_proj_weight": "weight", "attn.in_proj_bias": "bias"}
# (transformers name, transposed): OpenAI keeps the projections as (in, out) matrices used as `x @ proj`
_VISION_TOP = {
    "conv1.weight": ("vision_model.embeddings.patch_embedding.weight", False),
    "class_embedding": ("vision_model.embeddings.class_embedding", False),
    "positional_embedding": ("vision_model.embeddings.position_embedding.weight", False),
    "ln_pre.weight": ("vision_model.pre_layrnorm.weight", False),
    "ln_pre.bias": ("vision_model.pre_layrnorm.bias", False),
    "ln_post.weight": ("vision_model.post_layernorm.weight", False),
    "ln_post.bias": ("vision_model.post_layernorm.bias", False),
    "proj": ("visual_projection.weight", True),
}
_TEXT_TOP = {
    "token_embedding.weight": ("text_model.embeddings.token_embedding.weight", False),
    "positional_embedding": ("text_model.embeddings.position_embedding.weight", False),
    "ln_final.weight": ("text_model.final_layer_norm.weight", False),
    "ln_final.bias": ("text_model.final_layer_norm.bias", False),
    "text_projection": ("text_projection.weight", True),
}
_TOWERS = {"image_encoder.": ("vision_model", _VISION_TOP), "text_encoder.": ("text_model", _TEXT_TOP)}
TOKEN_EMBEDDING = "text_model.embeddings.token_embedding.weight"
# the tensors whose shapes define the CLIP configuration (as the released `build_model` reads them)
_STRUCTURAL = (
    "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.position_embedding.weight",
    "vision_model.encoder.layers.0.mlp.fc1.weight", "visual_projection.weight",
    "text_model.embeddings.position_embedding.weight", "text_model.final_layer_norm.weight",
    "text_model.encoder.layers.0.mlp.fc1.weight", "text_projection.weight",
)


# ----------------------------------------------------------------------------------------------
# Mapping
# ----------------------------------------------------------------------------------------------


def _map_tensors(tensors: dict[str, torch.Tensor], path: Path):
    """Split the released names into transformers CLIP tensors, prompt tensors, the prompt token buffers, names
    ignored on purpose, and names that cannot be placed."""
    clip, prompts, buffers, ignored, unknown = {}, {}, {}, [], []
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            unknown.append(name)
            continue
        tensor = tensor.detach().to(torch.float32)
        if name == "logit_scale":
            clip["logit_scale"] = tensor.reshape(())
        elif name == CTX:
            prompts[CTX] = tensor
        elif name in (TOKEN_PREFIX, TOKEN_SUFFIX):
            buffers[name] = tensor
        elif re.match(r"^prompt_learner\d*\.", name):
            ignored.append(name)  # prompt_learner0 / 1 ("good/bad", "clear/unclear"): unused by the released forward
        elif name in (SHALLOW_PROMPTS, DEEP_PROMPTS):
            prompts[name] = tensor
        elif name.startswith("image_encoder.") and name[len("image_encoder."):] in _VISUAL_PROMPT_PARTS:
            prompts[name] = tensor
        else:
            tower = next((t for t in _TOWERS if name.startswith(t)), None)
            if tower is None:
                unknown.append(name)
                continue
            model_name, top = _TOWERS[tower]
            local = name[len(tower):]
            if local in top:
                target, transpose = top[local]
                if transpose:
                    if tensor.dim() != 2:
                        raise OfficialCheckpointError(f"{path}: {name} should be a matrix, got shape {tuple(tensor.shape)}")
                    tensor = tensor.t()
                clip[target] = tensor.contiguous()
                continue
            match = _BLOCK.match(local)
            if match and match.group(2) in _BLOCK_PARTS:
                clip[f"{model_name}.encoder.layers.{match.group(1)}.{_BLOCK_PARTS[match.group(2)]}"] = tensor
            elif match and match.group(2) in _FUSED_QKV:
                kind = _FUSED_QKV[match.group(2)]
                if tensor.shape[0] % 3:
                    raise OfficialCheckpointError(
                        f"{path}: {name} has shape {tuple(tensor.shape)}; a fused q/k/v tensor has 3 x width rows"
                    )
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                    clip[f"{model_name}.encoder.layers.{match.group(1)}.self_attn.{part}.{kind}"] = chunk.contiguous()
            else:
                unknown.append(name)
    return clip, prompts, buffers, ignored, unknown


def _layer_indices(tensors: dict, tower: str) -> set[int]:
    pattern = re.compile(rf"^{tower}\.encoder\.layers\.(\d+)\.")
    return {int(m.group(1)) for name in tensors if (m := pattern.match(name))}


def _layer_count(tensors: dict, tower: str, path) -> int:
    indices = _layer_indices(tensors, tower)
    if indices != set(range(len(indices))):
        raise OfficialCheckpointError(f"{path}: the {tower} layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def _heads(width: int, what: str, path) -> int:
    heads = width // HEAD_WIDTH
    if heads < 1 or width % heads:
        raise OfficialCheckpointError(f"{path}: {what} width {width} does not split into heads of {HEAD_WIDTH}")
    return heads


def _clip_config(tensors: dict, vocab_size: int, tokenizer, path) -> CLIPConfig:
    """The CLIP configuration the tensors' shapes describe, as the released `build_model` reads it."""
    conv = tensors["vision_model.embeddings.patch_embedding.weight"]
    positions = tensors["vision_model.embeddings.position_embedding.weight"].shape[0]
    grid = math.isqrt(max(positions - 1, 0))
    if conv.dim() != 4 or grid * grid != positions - 1:
        raise OfficialCheckpointError(
            f"{path}: the vision tower's conv1 {tuple(conv.shape)} and positional embedding ({positions} rows) do "
            "not describe a square ViT"
        )
    vision_width, text_width = conv.shape[0], tensors["text_model.final_layer_norm.weight"].shape[0]
    projection_dim = tensors["text_projection.weight"].shape[0]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    common = {"hidden_act": HIDDEN_ACT, "layer_norm_eps": LAYER_NORM_EPS, "projection_dim": projection_dim}
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": text_width,
        "intermediate_size": tensors["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": _layer_count(tensors, "text_model", path),
        "num_attention_heads": _heads(text_width, "text", path),
        "max_position_embeddings": tensors["text_model.embeddings.position_embedding.weight"].shape[0],
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": eos, "pad_token_id": pad,
        **common,
    }
    vision_config = {
        "hidden_size": vision_width,
        "intermediate_size": tensors["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": _layer_count(tensors, "vision_model", path),
        "num_attention_heads": _heads(vision_width, "vision", path),
        "num_channels": conv.shape[1],
        "image_size": conv.shape[-1] * grid,
        "patch_size": conv.shape[-1],
        **common,
    }
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=projection_dim)


# ----------------------------------------------------------------------------------------------
# The base: tokenizer, and the backbone tensors a file lacks
# ----------------------------------------------------------------------------------------------


class _Base:
    def __init__(self, source: str):
        self.source = source
        self.local = os.path.isdir(source)
        self._tokenizer = None
        self._clip = None

    def _cannot(self, what: str, err: Exception) -> str:
        if self.local:
            where, hint = f"the folder {self.source}", ""
        elif os.path.exists(self.source):
            where, hint = f"{self.source}", " (a file, not a folder)"
        elif os.path.isabs(self.source) or self.source.startswith((".", "~")):
            where, hint = f"{self.source}", " (no such folder)"
        else:
            from huggingface_hub import is_offline_mode

            where = f"the Hugging Face Hub id {self.source!r}"
            hint = (" (HF_HUB_OFFLINE is set and it is not in the local cache)" if is_offline_mode()
                    else " (not in the local cache and the Hub could not be reached?)")
        return (
            f"cannot load {what} from {where}{hint}: {type(err).__name__}: {err}\n"
            "Pass base= (--base) a local folder or Hub id holding the CLIP the checkpoint was trained from, in "
            "transformers format (config.json, model.safetensors and the tokenizer files)."
        )

    def tokenizer(self):
        if self._tokenizer is None:
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.source)
            except Exception as err:  # noqa: BLE001 - reported with the source and a remedy
                files = ("vocab.json", "merges.txt")
                if self.local and all(os.path.isfile(os.path.join(self.source, f)) for f in files):
                    self._tokenizer = CLIPTokenizer.from_pretrained(self.source)
                else:
                    raise OSError(self._cannot("the CLIP tokenizer", err)) from err
        return self._tokenizer

    def clip(self, reason: str) -> tuple[CLIPConfig, dict[str, torch.Tensor]]:
        if self._clip is None:
            try:
                model = CLIPModel.from_pretrained(self.source, use_safetensors=True)
            except Exception as err:  # noqa: BLE001
                raise OSError(self._cannot(f"the base CLIP weights ({reason})", err)) from err
            self._clip = (model.config, {k: v.detach().float() for k, v in model.state_dict().items()})
        return self._clip


def _describe_shapes(problems: list[str], limit: int = 12) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"\n  {shown}{more}"


def _summary(tensors: dict) -> str:
    """The backbone's size in words, from whatever structural tensors are there."""
    parts = []
    conv = tensors.get("vision_model.embeddings.patch_embedding.weight")
    positions = tensors.get("vision_model.embeddings.position_embedding.weight")
    if conv is not None and conv.dim() == 4:
        size = f", {conv.shape[-1] * math.isqrt(positions.shape[0] - 1)} px" if positions is not None else ""
        parts.append(f"ViT of width {conv.shape[0]}, {len(_layer_indices(tensors, 'vision_model'))} layers, "
                     f"{conv.shape[-1]} px patches{size}")
    norm = tensors.get("text_model.final_layer_norm.weight")
    if norm is not None:
        vocab = tensors.get(TOKEN_EMBEDDING)
        parts.append(f"text width {norm.shape[0]}, {len(_layer_indices(tensors, 'text_model'))} layers"
                     + (f", {vocab.shape[0]} tokens" if vocab is not None else ""))
    projection = tensors.get("text_projection.weight")
    if projection is not None:
        parts.append(f"embeddings of {projection.shape[0]}")
    return "; ".join(parts) or "no backbone"


def _check_against_base(path, base: _Base, file_clip: dict, base_state: dict) -> None:
    problems = []
    # the tensors that define the sizes first: they say the most
    for name in sorted(file_clip, key=lambda n: (n not in _STRUCTURAL, n)):
        tensor, reference = file_clip[name], base_state.get(name)
        if reference is None:
            problems.append(f"{name}: {tuple(tensor.shape)} in the file, absent from the base")
        elif reference.shape != tensor.shape:
            problems.append(f"{name}: {tuple(tensor.shape)} in the file, {tuple(reference.shape)} in the base")
    if problems:
        raise OfficialCheckpointError(
            f"{path} does not match the base CLIP {base.source}: the shapes differ, so it was trained from another "
            f"CLIP; pass that one as base (--base).\n  the file: {_summary(file_clip)}\n  the base: "
            f"{_summary(base_state)}{_describe_shapes(problems)}"
        )


# ----------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------


def load_official_checkpoint(path, base: str | os.PathLike | None = None) -> GRMPIQAModel:
    """A `GRMPIQAModel` (eval mode, backbone frozen) equal in its forward pass to the released `CustomCLIP` saved in
    `path`. `base` (default `openai/clip-vit-base-patch16`; a Hub id or a local folder) supplies the tokenizer
    and any backbone tensors the file lacks (a meta-pre-training file has no token embedding). See
    `convert_official_checkpoint`."""
    path = Path(path)
    base = _Base(DEFAULT_BASE if base is None else os.fspath(base))
    tensors, info = read_official_state_dict(path)
    file_clip, prompts, buffers, ignored, unknown = _map_tensors(tensors, path)

    missing = [name for name in REQUIRED_PROMPT_TENSORS if name not in prompts]
    if missing:
        sample = ", ".join(sorted(tensors)[:6]) or "no tensors at all"
        raise OfficialCheckpointError(
            f"{path} is not a GRMP-IQA checkpoint of the released code: it lacks {', '.join(missing)} (after "
            f"removing any 'module.' prefix). It holds {len(tensors)} tensors, e.g. {sample}."
        )
    backbone_unknown = [n for n in unknown if n.startswith(tuple(_TOWERS))]
    if backbone_unknown:
        raise OfficialCheckpointError(
            f"{path}: tensors of the CLIP backbone that a ViT CLIP does not have (only ViT backbones are "
            f"supported): {', '.join(backbone_unknown[:10])}"
        )

    ctx, shallow, deep = prompts[CTX], prompts[SHALLOW_PROMPTS], prompts[DEEP_PROMPTS]
    if ctx.dim() != 2:
        raise OfficialCheckpointError(
            f"{path}: {CTX} has shape {tuple(ctx.shape)}; only a context shared by all classes (n_ctx, width) is "
            "supported (the released code's CSC=False)"
        )
    if shallow.dim() != 3 or shallow.shape[0] != 1 or deep.dim() != 3 or deep.shape[1:] != shallow.shape[1:]:
        raise OfficialCheckpointError(
            f"{path}: visual prompts of shapes {SHALLOW_PROMPTS} {tuple(shallow.shape)} and {DEEP_PROMPTS} "
            f"{tuple(deep.shape)}; expected (1, tokens, width) and (layers, tokens, width)"
        )

    tokenizer = base.tokenizer()
    has_structure = all(name in file_clip for name in _STRUCTURAL)
    base_used: list[str] = []
    if has_structure and TOKEN_EMBEDDING in file_clip:
        base_state = None
        vocab_size = file_clip[TOKEN_EMBEDDING].shape[0]
    else:
        if has_structure:
            reason = ("needed for the token embedding, which the file lacks: pretrain.py's meta-pre-training "
                      "checkpoints keep none")
        else:
            reason = "needed for the CLIP backbone, which the file lacks"
        _, base_state = base.clip(reason)
        _check_against_base(path, base, file_clip, base_state)
        vocab_size = base_state[TOKEN_EMBEDDING].shape[0]
    structure = file_clip if has_structure else base_state
    clip_config = _clip_config(structure, vocab_size, tokenizer, path)

    layers = clip_config.vision_config.num_hidden_layers
    if deep.shape[0] + 1 < layers:
        raise OfficialCheckpointError(
            f"{path}: {deep.shape[0]} deep prompt layers for a {layers}-layer vision tower. The released forward drops "
            f"the prompt tokens after block {deep.shape[0] + 1}; this package keeps prompts on every layer, so the "
            "conversion would not be exact"
        )
    depth = layers  # the released forward uses deep prompt i-1 before block i, i = 1 .. layers-1
    visual = torch.cat([shallow, deep[: depth - 1]], dim=0)

    image_size = clip_config.vision_config.image_size
    placeholders = " ".join(["X"] * ctx.shape[0])
    info.update({
        "source": "checkpoint of the released GRMP-IQA code (github.com/LXDxmu/GRMP-IQA), converted by "
                  "grmp_iqa_hf.convert.convert_official_checkpoint",
        "kind": ("fine-tuned (the whole CLIP in the file)" if base_state is None else
                 "meta-pre-trained (the backbone in the file, completed from the base: see from_base)"
                 if has_structure else "prompts (the backbone from the base, but for any tensors in the file)"),
        "base": base.source,
        "prompt_learners": {"prompt_learner2": "converted (text_context.ctx): the quality prompts "
                                               + " / ".join(repr(f"{placeholders} {c}.") for c in QUALITY_CLASSES)},
        "visual_prompts": {"tokens": int(visual.shape[1]), "deep_prompt_layers_in_file": int(deep.shape[0]),
                           "layers_prompted": depth, "deep_prompt_layers_unused": int(deep.shape[0] - (depth - 1))},
    })
    for name in sorted({n.split(".", 1)[0] for n in ignored}):
        info["prompt_learners"][name] = "ignored: not used by the released forward (only prompt_learner2 scores)"
    other = sorted(n for n in unknown if n not in backbone_unknown)
    if other:
        info["ignored_tensors"] = other[:50]
        logger.warning("%s: ignored %d tensors unknown to the released CustomCLIP: %s", path, len(other), other[:10])

    config = GRMPIQAConfig(
        clip_config=clip_config.to_dict(),
        n_ctx=ctx.shape[0], ctx_init=None, quality_classes=list(QUALITY_CLASSES), class_token_position="end",
        prompt_suffix=".",
        num_visual_prompts=int(visual.shape[1]), visual_prompt_depth=None, visual_prompt_dropout=PROMPT_DROPOUT,
        visual_prompt_projection=True, visual_prompt_norm=True, visual_prompt_position="after_pre_layrnorm",
        visual_prompt_norm_eps=PROMPT_NORM_EPS, visual_prompt_dropout_per_image=True,
        **released_preprocessing(image_size),
        base_model_name_or_path=base.source, training_info=info,
    )
    GRMPIQAModel.tokenize_prompts(config, tokenizer)
    if config.n_ctx != ctx.shape[0]:
        raise OfficialCheckpointError(f"the tokenizer of {base.source} does not tokenize the context placeholders "
                                      "like CLIP's")
    if max(max(ids) for ids in config.prompt_input_ids) >= vocab_size:
        raise OfficialCheckpointError(f"the tokenizer of {base.source} gives token ids beyond the {vocab_size}-token "
                                      "embedding: it is not this CLIP's tokenizer")
    for ids in config.prompt_input_ids:
        # the released text encoder pools at argmax(token ids); this model at the first EOS: the same for CLIP's
        # tokenizer, whose EOS has the largest id
        if tokenizer.eos_token_id not in ids or ids.index(max(ids)) != ids.index(tokenizer.eos_token_id):
            raise OfficialCheckpointError(
                f"the tokenizer of {base.source} is not CLIP's: its end-of-text token (id {tokenizer.eos_token_id}) is "
                f"not the largest id of the prompt {ids}, where the released text encoder pools"
            )
    model = GRMPIQAModel(config)

    state = {"text_context.ctx": ctx, "visual_prompts.embeddings": visual}
    for part, target in _VISUAL_PROMPT_PARTS.items():
        state[target] = prompts[f"image_encoder.{part}"]
    for name, tensor in file_clip.items():
        state[f"clip.{name}"] = tensor
    expected = model.state_dict()
    for name in expected:
        if name.startswith("clip.") and name not in state and base_state is not None and name[5:] in base_state:
            state[name] = base_state[name[5:]]
            base_used.append(name[5:])
    if base_state is not None:
        surplus = sorted(name for name in base_state if f"clip.{name}" not in expected)
        if surplus:  # e.g. a base with more layers than the file's backbone
            raise OfficialCheckpointError(
                f"{path} does not match the base CLIP {base.source}: the base has tensors the file's backbone lacks "
                f"(another CLIP; pass the one the checkpoint was trained from):"
                f"{_describe_shapes([f'{n}: {tuple(base_state[n].shape)} in the base' for n in surplus])}"
            )
    problems = [f"{name}: {tuple(state[name].shape)} in the checkpoint, {tuple(tensor.shape)} in the model"
                for name, tensor in expected.items() if name in state and state[name].shape != tensor.shape]
    absent = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if problems or absent or extra:
        where = "the CLIP its own shapes describe" if base_state is None else f"the base CLIP {base.source}"
        details = problems + [f"{n}: missing" for n in absent] + [f"{n}: no place in the model" for n in extra]
        raise OfficialCheckpointError(f"{path}: the tensors do not fit {where}:{_describe_shapes(details)}")
    model.load_state_dict(state, strict=True)
    model.freeze_backbone().eval()
    if base_used:
        info["from_base"] = sorted(base_used) if len(base_used) <= 20 else f"{len(base_used)} tensors"
    info["prompt_token_check"] = _check_prompt_tokens(model, buffers, path, base, from_file=base_state is None)
    model.config.training_info = info
    return model


def _check_prompt_tokens(model: GRMPIQAModel, buffers: dict, path, base: _Base, from_file: bool) -> str:
    """The released forward builds its prompts from the stored buffers `token_prefix` (SOS) and `token_suffix`
    (class, ".", EOS, padding); this model embeds its token ids. Both must agree up to the EOS token (later positions
    do not reach the EOS output through the causal mask)."""
    if TOKEN_PREFIX not in buffers or TOKEN_SUFFIX not in buffers:
        return "not checked: the file has no prompt_learner2.token_prefix / token_suffix"
    prefix, suffix = buffers[TOKEN_PREFIX], buffers[TOKEN_SUFFIX]
    embedding = model.clip.text_model.embeddings.token_embedding.weight.detach()
    ids = torch.tensor(model.config.prompt_input_ids)
    n_ctx, eos = model.config.n_ctx, model.config.clip_config.text_config.eos_token_id
    worst, problem = 0.0, None
    if prefix.dim() != 3 or suffix.dim() != 3 or prefix.shape[0] != len(ids) or suffix.shape[0] != len(ids):
        problem = f"shapes {tuple(prefix.shape)} / {tuple(suffix.shape)} for {len(ids)} prompts"
    else:
        for row in range(len(ids)):
            end = int((ids[row] == eos).int().argmax())
            stored = torch.cat([prefix[row, :1], suffix[row, : end - n_ctx]])
            positions = torch.tensor([0, *range(1 + n_ctx, end + 1)])
            wanted = embedding[ids[row, positions]]
            if stored.shape != wanted.shape:
                problem = f"{stored.shape[0]} stored token embeddings up to EOS, {wanted.shape[0]} expected"
                break
            worst = max(worst, float((stored - wanted).abs().max()))
            if not torch.allclose(stored, wanted, rtol=1e-3, atol=1e-6):
                problem = f"max difference {worst:.3g}"
    if problem:
        cause = (f"the tokenizer of {base.source} does not tokenize like the released CLIP tokenizer" if from_file
                 else f"the base {base.source} is not the CLIP this checkpoint was trained from (or its tokenizer "
                      "differs)")
        raise OfficialCheckpointError(
            f"{path}: the prompts' token embeddings stored in the file ({TOKEN_PREFIX} / {TOKEN_SUFFIX}) do not "
            f"match the token embedding of the tokens of {QUALITY_CLASSES} ({problem}): {cause}"
        )
    return f"passed (stored prompt token embeddings vs token embedding: max difference {worst:.3g})"


def convert_official_checkpoint(path, output_dir, base: str | os.PathLike | None = None) -> GRMPIQAModel:
    """Convert a checkpoint of the released GRMP-IQA code and `save_pretrained` it (safetensors) to `output_dir`.

    Args:
        path: the `.pt` file: a `CustomCLIP` state dict (fine-tuned: the whole CLIP; meta-pre-trained from
            `pretrain.py`: `module.`-prefixed, without token embedding), optionally nested under `"state_dict"`,
            fp16 or fp32, or a whole pickled module. Nothing in it is executed.
        output_dir: where the converted model is saved; load it with `GRMPIQAModel.from_pretrained(output_dir)` or
            score with `grmp-iqa score ... --model output_dir`.
        base: Hub id or local folder of the transformers CLIP the checkpoint was trained from (default
            `openai/clip-vit-base-patch16`). It supplies the tokenizer (the prompts are tokenized now) and any
            backbone tensor the file lacks. A local folder needs no network.

    Returns:
        The converted `GRMPIQAModel` (eval mode). Its config records the released architecture and preprocessing
        (square 244 px bicubic resize without antialiasing, centre crop, ImageNet mean/std) and, in
        `training_info`, the source file, its sha256 and what was converted or ignored.

    Raises:
        FileNotFoundError: `path` does not exist.
        OSError: the base's tokenizer or weights cannot be loaded (e.g. a Hub id with `HF_HUB_OFFLINE=1` that is not
            in the cache).
        RefusedGlobalError (a ValueError): the pickle names a global outside the allow-list.
        OfficialCheckpointError (a ValueError): not a readable checkpoint, not a GRMP-IQA checkpoint (names the
            missing tensors), or shapes that do not fit the base or each other.
    """
    model = load_official_checkpoint(path, base=base)
    model.save_pretrained(output_dir)
    return model


__all__ = [
    "DEFAULT_BASE", "OfficialCheckpointError", "RefusedGlobalError", "convert_official_checkpoint",
    "load_official_checkpoint", "read_official_state_dict",
]
