"""The base class of every prompt-learned CLIP quality model in this package.

It owns the frozen `CLIPModel`, building a model from a CLIP checkpoint (`from_clip`), the text
feature cache used at inference, weight initialisation of the prompt modules, and saving the image
processor next to the weights. Method-specific models (GRMP-IQA, MP-IQE) add their prompts and heads.

Shipped as Hub remote code: imports only torch, transformers and relative modules.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import AutoTokenizer, CLIPModel, PreTrainedModel

from .configuration_prompted_clip import PromptedCLIPConfig
from .prediction import IQAPredictionMixin
from .prompt_learning import DeepVisualPrompts, TextContext, encode_text_embeddings


class PromptBank:
    """One set of class prompts sharing a `TextContext`: token ids with placeholder slots, and each
    class name's token count (needed by the "middle"/"front" layouts)."""

    def __init__(self, context: TextContext, input_ids: list[list[int]], class_lengths: list[int]):
        self.context, self.input_ids, self.class_lengths = context, input_ids, class_lengths


class PromptedCLIPPreTrainedModel(IQAPredictionMixin, PreTrainedModel):
    """Frozen CLIP + learnable prompts. Subclasses define `prompt_banks()` and `forward`."""

    config_class = PromptedCLIPConfig
    base_model_prefix = ""
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["CLIPEncoderLayer", "CLIPTextEmbeddings", "CLIPVisionEmbeddings"]

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
    def from_pretrained(cls, *args, **kwargs):
        # transformers re-creates parameters on load (requires_grad=True): restore the frozen backbone.
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True gives a tuple
        model.freeze_backbone()
        return loaded

    @torch.no_grad()
    def _init_context_from_tokens(self):
        # CoOp: the context placeholders of each bank hold the ctx_init tokens; start from their embeddings.
        token_embedding = self.clip.text_model.embeddings.token_embedding
        for bank in self.prompt_banks().values():
            n_ctx = bank.context.ctx.shape[0]
            ids = torch.tensor(bank.input_ids[0][1 : 1 + n_ctx], device=token_embedding.weight.device)
            bank.context.ctx.copy_(token_embedding(ids))

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
        """Text features of bank `name`. At inference (eval mode, no grad) they are computed once and
        cached, since they do not depend on the image; the cache is keyed by the parameters' storage and
        version counters, so any in-place update, `load_state_dict` or device move invalidates it."""
        bank = self.prompt_banks()[name]
        if self.training or torch.is_grad_enabled():
            return self.compute_text_features(bank)
        params = [bank.context.ctx, *self.clip.text_model.parameters(), self.clip.text_projection.weight]
        key = tuple((p.device, p.data_ptr(), p._version) for p in params)
        cached = self._text_feature_cache.get(name)
        if cached is None or cached[0] != key:
            cached = (key, self.compute_text_features(bank))
            self._text_feature_cache[name] = cached
        return cached[1]

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained` (safetensors only) plus the image processor's config, so that
        `AutoImageProcessor.from_pretrained(dir, trust_remote_code=True)` preprocesses like the model."""
        kwargs.pop("safe_serialization", None)  # safetensors is the only format we write
        if kwargs.get("is_main_process", True):
            # before the weights, so that `push_to_hub=True` uploads it too
            os.makedirs(save_directory, exist_ok=True)
            self.image_processor.save_pretrained(save_directory)
        super().save_pretrained(save_directory, *args, **kwargs)
