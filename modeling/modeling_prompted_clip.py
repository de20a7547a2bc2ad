"""The base class of every prompt-learned CLIP quality model in this package.

It owns the frozen `CLIPModel`, building a model from a CLIP checkpoint (`from_clip`), the text
feature cache used at inference, weight initialisation of the prompt modules, and saving the image
processor next to the weights. Method-specific models (GRMP-IQA, MP-IQE) add their prompts and heads.

Shipped as Hub remote code: imports only torch, transformers and relative modules.
"""

from __future__ import annotations

import copy
import os

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, CLIPModel, PreTrainedConfig, PreTrainedModel
from transformers.utils import cached_file, logging

from .configuration_prompted_clip import PromptedCLIPConfig
from .image_processing_iqa import _HUB_KWARGS, crop_mismatch_message, saved_image_processor
from .prediction import IQAPredictionMixin
from .prompt_learning import (
    DeepVisualPrompts,
    TextContext,
    embed_image,
    encode_text_embeddings,
    image_features_from_hidden,
    run_vision_layers,
)

# Prompts-only checkpoints: the parameters that differ from the base CLIP, next to a config that names the
# base (PEFT's file name, so the Hub shows it as an adapter).
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"

logger = logging.get_logger(__name__)


class PromptBank:
    """One set of class prompts sharing a `TextContext`: token ids with placeholder slots, and each
    class name's token count (needed by the "middle"/"front" layouts)."""

    def __init__(self, context: TextContext, input_ids: list[list[int]], class_lengths: list[int]):
        self.context, self.input_ids, self.class_lengths = context, input_ids, class_lengths


class PromptedCLIPPreTrainedModel(IQAPredictionMixin, PreTrainedModel):
    """Frozen CLIP + learnable prompts. Subclasses define `visual_prompts` (a `DeepVisualPrompts` or None),
    `prompt_banks()` and `forward`."""

    config_class = PromptedCLIPConfig
    base_model_prefix = ""
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["CLIPEncoderLayer", "CLIPTextEmbeddings", "CLIPVisionEmbeddings"]
    # Vision blocks compute only the rows something reads: the last block the pooled CLS token, a block before a
    # prompt replacement every row but its prompts. False computes every row (the same features to float
    # rounding; the benchmarks' "before").
    skip_unused_queries: bool = True

    def __init__(self, config: PromptedCLIPConfig):
        super().__init__(config)
        self.clip = CLIPModel._from_config(config.clip_config)
        self._text_feature_cache: dict[str, tuple[tuple, torch.Tensor]] = {}

    # ------------------------------------------------------------------ construction

    def _init_weights(self, module):
        # CLIP's own modules are initialised by CLIPModel (a sub-model); only prompt modules land here.
        if isinstance(module, TextContext):
            nn.init.normal_(module.ctx, std=self.config.ctx_init_std)
        elif isinstance(module, DeepVisualPrompts):
            module.reset_parameters()

    def freeze_backbone(self):
        """CLIP frozen, every other parameter (prompts, heads) trainable."""
        for name, param in self.named_parameters():
            param.requires_grad_(not name.startswith("clip."))
        return self

    @classmethod
    def tokenize_prompts(cls, config: PromptedCLIPConfig, tokenizer) -> None:
        """Write the tokenized prompts (and the context length) into `config`. Subclasses implement."""
        raise NotImplementedError

    @classmethod
    def from_clip(cls, clip, tokenizer=None, revision: str | None = None, **config_overrides):
        """Build the model around a CLIP backbone.

        Args:
            clip: a `transformers.CLIPModel`, or a Hub id / local directory of one (its tokenizer is then
                loaded from the same place).
            tokenizer: the CLIP tokenizer; required when `clip` is a model instance.
            revision: Hub revision of `clip` when it is an id.
            **config_overrides: any field of the config (e.g. `n_ctx`, `ctx_init`, `num_visual_prompts`).

        The CLIP weights are copied in and frozen (`requires_grad=False`); prompt parameters are
        trainable. With `ctx_init`, the context starts as that phrase's token embeddings.
        """
        if isinstance(clip, (str, os.PathLike)):
            source = str(clip)
            clip = CLIPModel.from_pretrained(source, revision=revision)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
            config_overrides.setdefault("base_model_name_or_path", source)
            config_overrides.setdefault("base_model_revision", revision)
        elif not isinstance(clip, CLIPModel):
            raise TypeError(f"clip must be a CLIPModel or a Hub id / directory, got {type(clip).__name__}")
        elif tokenizer is None:
            raise ValueError("from_clip(<CLIPModel instance>) needs its tokenizer: pass tokenizer=...")
        else:
            config_overrides.setdefault("base_model_name_or_path", clip.config.name_or_path or None)
        config = cls.config_class(clip_config=clip.config.to_dict(), **config_overrides)
        cls.tokenize_prompts(config, tokenizer)
        model = cls(config)
        model.clip.load_state_dict(clip.state_dict())
        if config.ctx_init:
            model._init_context_from_tokens()
        return model.freeze_backbone().eval()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, base_model_name_or_path=None, **kwargs):
        """`PreTrainedModel.from_pretrained`, reading safetensors only (a checkpoint holding only a pickle,
        e.g. `pytorch_model.bin`, is refused without being opened), with the backbone frozen.

        A prompts-only checkpoint (`save_pretrained(..., adapter_only=True)`) is rebuilt from its base CLIP,
        found at `config.base_model_name_or_path` (revision `config.base_model_revision`) unless
        `base_model_name_or_path` names another copy of it (a Hub id or a local directory).
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError("this model is loaded from safetensors only (pickled weights are never unpickled)")
        kwargs["use_safetensors"] = True
        config = kwargs.get("config")
        if not isinstance(config, PreTrainedConfig):
            config_kwargs = {k: kwargs[k] for k in (*_HUB_KWARGS, "revision") if k in kwargs}
            config = cls.config_class.from_pretrained(config or pretrained_model_name_or_path, **config_kwargs)
        config = _with_saved_preprocessing(config, pretrained_model_name_or_path, kwargs)
        kwargs["config"] = config
        if getattr(config, "adapter_only", False):
            kwargs.pop("config")
            return cls._from_adapter(pretrained_model_name_or_path, config, base_model_name_or_path, **kwargs)
        # transformers re-creates parameters on load (requires_grad=True): restore the frozen backbone.
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True gives a tuple
        model.freeze_backbone()
        return loaded

    # ------------------------------------------------------------------ prompts-only checkpoints

    def adapter_state_dict(self, base_model=None) -> dict[str, torch.Tensor]:
        """The tensors of a prompts-only checkpoint: every tensor outside the CLIP backbone (prompts, heads)
        plus the backbone tensors that differ from the base CLIP (fine-tuned blocks, if any).

        `base_model` is the base `CLIPModel`, or its Hub id / directory; default: the one this model was built
        from (`config.base_model_name_or_path` at `config.base_model_revision`).
        """
        if not isinstance(base_model, CLIPModel):
            base_model = _load_base_clip(base_model, None) if base_model else _load_base_clip(
                self.config.base_model_name_or_path, self.config.base_model_revision)
        base_state = base_model.state_dict()
        tensors = {}
        for name, tensor in self.state_dict().items():
            if name.startswith("clip."):
                reference = base_state.get(name[len("clip."):])
                if reference is None or reference.shape != tensor.shape:
                    raise ValueError(
                        f"the base CLIP does not match this model's backbone at {name!r} "
                        f"({'missing' if reference is None else f'shape {tuple(reference.shape)}'} vs "
                        f"{tuple(tensor.shape)}): pass the base it was built from"
                    )
                if torch.equal(reference.to(tensor.device, tensor.dtype), tensor):
                    continue
            tensors[name] = tensor.detach().contiguous().cpu()
        return tensors

    @classmethod
    def _from_adapter(cls, pretrained_model_name_or_path, config, base_model_name_or_path=None, **kwargs):
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if kwargs.get(k) is not None}
        weights = cached_file(pretrained_model_name_or_path, ADAPTER_WEIGHTS_NAME, revision=kwargs.get("revision"),
                              **hub_kwargs)
        base_hub_kwargs = {k: v for k, v in hub_kwargs.items() if k != "subfolder"}
        if base_model_name_or_path:
            base = _load_base_clip(base_model_name_or_path, None, **base_hub_kwargs)
        else:
            base = _load_base_clip(config.base_model_name_or_path, config.base_model_revision, **base_hub_kwargs)
        config = copy.deepcopy(config)
        config.adapter_only = False  # the model in memory is complete
        config.name_or_path = str(pretrained_model_name_or_path)
        model = cls(config)
        model.clip.load_state_dict(base.state_dict())
        adapter = load_file(weights)
        missing, unexpected = model.load_state_dict(adapter, strict=False)
        missing = [name for name in missing if not name.startswith("clip.")]
        if missing or unexpected:
            raise ValueError(
                f"{weights} does not fit {cls.__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if isinstance(dtype, torch.dtype):
            model = model.to(dtype)
        return model.freeze_backbone().eval()

    @torch.no_grad()
    def _init_context_from_tokens(self):
        # CoOp: the context placeholders of each bank hold the ctx_init tokens; start from their embeddings.
        token_embedding = self.clip.text_model.embeddings.token_embedding
        for bank in self.prompt_banks().values():
            n_ctx = bank.context.ctx.shape[0]
            ids = torch.tensor(bank.input_ids[0][1 : 1 + n_ctx], device=token_embedding.weight.device)
            bank.context.ctx.copy_(token_embedding(ids))

    # ------------------------------------------------------------------ trainable set

    def head_modules(self) -> list[nn.Module]:
        """Method-specific modules with no pre-trained values (none here); `set_trainable` always trains them."""
        return []

    def set_trainable(self, top_k_blocks: int = 4, context: bool = True) -> dict[str, nn.Parameter]:
        """Set `requires_grad` for fine-tuning and return `{name: parameter}` of the trainable set.

        Trainable: the text context of every prompt bank (unless `context=False`), with `top_k_blocks > 0` the
        top `top_k_blocks` blocks of the vision and text towers plus their final norms (`post_layernorm`,
        `final_layer_norm`), and the `head_modules()`. Everything else (embeddings, lower blocks, projections,
        logit scale, the visual prompts and their extra norm) is frozen.
        """
        vision_layers = list(self.clip.vision_model.encoder.layers)
        text_layers = list(self.clip.text_model.encoder.layers)
        n_vision, n_text = len(vision_layers), len(text_layers)
        if not isinstance(top_k_blocks, int) or not 0 <= top_k_blocks <= min(n_vision, n_text):
            raise ValueError(
                f"top_k must be an integer in [0, {min(n_vision, n_text)}] (the towers have {n_vision} vision and "
                f"{n_text} text blocks), got {top_k_blocks!r}"
            )
        self.requires_grad_(False)
        if context:
            for bank in self.prompt_banks().values():
                bank.context.requires_grad_(True)
        if top_k_blocks:
            for layer in vision_layers[n_vision - top_k_blocks :] + text_layers[n_text - top_k_blocks :]:
                layer.requires_grad_(True)
            self.clip.vision_model.post_layernorm.requires_grad_(True)
            self.clip.text_model.final_layer_norm.requires_grad_(True)
        for module in self.head_modules():
            module.requires_grad_(True)
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        if not params:
            raise ValueError("nothing to train: top_k=0 and train_context=False")
        return params

    # ------------------------------------------------------------------ vision tower in stages

    def _check_block(self, index, name: str) -> None:
        n = len(self.clip.vision_model.encoder.layers)
        if not isinstance(index, int) or not 0 <= index <= n:
            raise ValueError(f"{name} must be a block index in [0, {n}] (the vision tower has {n} blocks), got {index!r}")

    def vision_hidden_states(self, pixel_values: torch.Tensor, end: int, dropout_generators=None) -> torch.Tensor:
        """The hidden states (every token) entering vision block `end` (0: the embeddings with the first prompts;
        the block count: the last block's output). Gradients flow unless the caller turns them off (training
        caches a frozen trunk under `torch.no_grad`). `dropout_generators`: see `forward`."""
        self._check_block(end, "end")
        hidden = embed_image(self.clip, self.visual_prompts, pixel_values, dropout_generators)
        return run_vision_layers(self.clip, self.visual_prompts, hidden, 0, end, dropout_generators,
                                 skip_prompt_queries=self.skip_unused_queries)

    def image_features_from_hidden(self, hidden: torch.Tensor, start: int, dropout_generators=None) -> torch.Tensor:
        """Projected, unnormalised image features from the hidden states entering block `start` (blocks
        `start..`, the prompts' extra norm, `post_layernorm`, CLS pooling, projection). Composed with
        `vision_hidden_states(pixel_values, start)` this is `get_image_features(pixel_values)` for every `start`."""
        self._check_block(start, "start")
        return image_features_from_hidden(self.clip, self.visual_prompts, hidden, start, dropout_generators,
                                          self.skip_unused_queries)

    # ------------------------------------------------------------------ text features

    def prompt_banks(self) -> dict[str, PromptBank]:
        raise NotImplementedError

    def compute_text_features(self, bank: PromptBank) -> torch.Tensor:
        """Projected (unnormalised) text features of one prompt bank, recomputed (differentiable)."""
        token_embedding = self.clip.text_model.embeddings.token_embedding
        ids = torch.tensor(bank.input_ids, device=token_embedding.weight.device)
        embeds = bank.context(token_embedding(ids), bank.class_lengths)
        return encode_text_embeddings(self.clip, embeds, ids)

    def text_features(self, name: str) -> torch.Tensor:
        """Text features of bank `name`. At inference (eval mode, no grad or no trainable text parameter) they
        are computed once and cached, since they do not depend on the image; the cache is keyed by the parameters' storage and
        version counters, so any in-place update, `load_state_dict` or device move invalidates it."""
        bank = self.prompt_banks()[name]
        params = [bank.context.ctx, *self.clip.text_model.parameters(), self.clip.text_projection.weight]
        # with gradients on, the cache serves only a frozen text side (e.g. a quality loss on the images)
        if self.training or (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
            return self.compute_text_features(bank)
        device_type = params[0].device.type
        autocast = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        key = (autocast, *((p.device, p.data_ptr(), p._version) for p in params))  # autocast: features differ
        cached = self._text_feature_cache.get(name)
        if cached is None or cached[0] != key:
            cached = (key, self.compute_text_features(bank))
            self._text_feature_cache[name] = cached
        return cached[1]

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, save_directory, *args, adapter_only: bool = False, base_model=None, **kwargs):
        """`PreTrainedModel.save_pretrained` (safetensors only) plus the image processor's config, so that
        `AutoImageProcessor.from_pretrained(dir, trust_remote_code=True)` preprocesses like the model, and the
        "image-quality-assessment" pipeline: `pipeline_iqa.py` next to the weights and `custom_pipelines` in
        config.json, so that `pipeline(model=dir, trust_remote_code=True)` works without the package.

        With `adapter_only=True` the weights file is `adapter_model.safetensors`, holding only
        `adapter_state_dict(base_model)` (the prompts, plus backbone tensors that were fine-tuned); the
        config records the base CLIP (`base_model_name_or_path`, `base_model_revision`) that
        `from_pretrained` rebuilds the rest from. `base_model` is compared against and, when it is a Hub id
        or directory, recorded as the base.
        """
        from transformers.dynamic_module_utils import custom_object_save

        from .pipeline_iqa import ImageQualityAssessmentPipeline, custom_pipelines

        kwargs.pop("safe_serialization", None)  # safetensors is the only format we write
        is_main = kwargs.get("is_main_process", True)
        if adapter_only and kwargs.get("push_to_hub"):
            raise ValueError("adapter_only=True cannot push_to_hub here: save, then `grmp-iqa push --adapter-only`")
        tensors = self.adapter_state_dict(base_model) if adapter_only else None
        if is_main:
            # before the weights, so that `push_to_hub=True` uploads them too: the image processor and the
            # pipeline's code (`pipeline(model=..., trust_remote_code=True)` without the package)
            os.makedirs(save_directory, exist_ok=True)
            self.image_processor.save_pretrained(save_directory)
            custom_object_save(ImageQualityAssessmentPipeline, save_directory)
        elif adapter_only:
            return
        original = self.config
        self.config = copy.deepcopy(original)  # what config.json says; the model's own config stays as it is
        self.config.custom_pipelines = custom_pipelines()
        if adapter_only:
            self.config.adapter_only = True
            if isinstance(base_model, (str, os.PathLike)):
                self.config.base_model_name_or_path, self.config.base_model_revision = str(base_model), None
            kwargs["state_dict"] = {}  # config.json and the remote code through transformers; weights below
        try:
            super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            self.config = original
        if not adapter_only:
            return
        for name in os.listdir(save_directory):
            if name.startswith("model") and name.endswith((".safetensors", ".safetensors.index.json")):
                os.remove(os.path.join(save_directory, name))
        save_file(tensors, os.path.join(save_directory, ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})


def _with_saved_preprocessing(config, pretrained_model_name_or_path, kwargs):
    """`config` with the preprocessing of the checkpoint's `preprocessor_config.json`, when it has one: that file
    is what `AutoImageProcessor` and pipelines read, so it wins over the copy in `config.json` and every entry
    point (`predict`, the CLI, pipelines, `AutoImageProcessor`) preprocesses alike. A crop that does not fit the
    backbone is refused (`crop_mismatch_message`). The caller's config object is never modified."""
    hub_kwargs = {k: kwargs[k] for k in (*_HUB_KWARGS, "revision") if kwargs.get(k) is not None}
    processor = saved_image_processor(pretrained_model_name_or_path, **hub_kwargs)
    if processor is None:
        return config
    if processor.crop_side != config.image_size:
        raise ValueError(crop_mismatch_message(processor.crop_side, config.image_size))
    changes = config.preprocessing_changes(processor)
    if not changes:
        return config
    logger.warning(
        "%s: preprocessor_config.json and config.json disagree on the preprocessing; preprocessor_config.json wins: "
        "%s", pretrained_model_name_or_path,
        ", ".join(f"{k}={v!r} (config.json: {getattr(config, k)!r})" for k, v in changes.items()))
    config = copy.deepcopy(config)
    config.update(changes)
    return config


def _load_base_clip(source, revision=None, **hub_kwargs) -> CLIPModel:
    if not source:
        raise ValueError(
            "a prompts-only checkpoint needs its base CLIP, but none is recorded: pass base_model / "
            "base_model_name_or_path (a Hub id or a directory of a transformers CLIP checkpoint)"
        )
    try:
        return CLIPModel.from_pretrained(str(source), revision=revision, use_safetensors=True, **hub_kwargs)
    except OSError as err:
        raise OSError(
            f"cannot load the base CLIP {str(source)!r}{f' at revision {revision}' if revision else ''} of a "
            f"prompts-only checkpoint ({err}). Pass base_model_name_or_path=<Hub id or directory of that CLIP>."
        ) from err
