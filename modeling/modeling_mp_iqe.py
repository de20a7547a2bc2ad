"""MP-IQE (our reconstruction): CLIP with VPT-deep visual prompts, dual CoOp text prompts (one bank for the
scene classes, one for the distortion classes) and a multimodal encoder in which the prompt embeddings
attend to the image patch tokens and are pooled into a quality score.

Pan et al., "Multi-Modal Prompt Learning on Blind Image Quality Assessment", arXiv 2404.14949. No code of
the method exists; every choice below the abstract's level is a config field, listed with its reason in
`configuration_mp_iqe.RECONSTRUCTION_NOTES`.

    image ──CLIP vision tower + deep visual prompts──► CLS ──► image embedding ──┐
                                                  └──► patch tokens (keys/values) │ scene / distortion
    scene prompts (9)      ─CLIP text tower─┐                                      │ logits (similarity)
    distortion prompts (11) ─CLIP text tower─┴► 20 text features (queries) ────────┘
         queries ──[self-attn ► cross-attn to patches ► FFN] x L──► pool ──► MLP ──► sigmoid ──► score

Shipped as Hub remote code: imports only torch, transformers and relative modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from .configuration_mp_iqe import MPIQEConfig
from .constants import IGNORE_INDEX
from .modeling_prompted_clip import PromptBank, PromptedCLIPPreTrainedModel
from .prompt_learning import TextContext, build_prompt_token_ids, build_visual_prompts, finish_vision, pool_image


@dataclass
class MPIQEOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): `quality_loss + scene_loss_weight * scene_loss +
            distortion_loss_weight * distortion_loss`, over the labels given.
        scores (`torch.FloatTensor` of shape `(batch_size,)`): quality in [0, 1], higher = better
            (`sigmoid(quality_logits)`).
        quality_logits (`torch.FloatTensor` of shape `(batch_size,)`): the quality head's output.
        scene_logits (`torch.FloatTensor` of shape `(batch_size, num_scene_classes)`): multi-label scene logits.
        distortion_logits (`torch.FloatTensor` of shape `(batch_size, num_distortion_classes)`): distortion logits.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): normalised image features
            (prompted vision tower, CLS token).
        text_embeds (`torch.FloatTensor` of shape `(num_queries, projection_dim)`): normalised features of the
            scene prompts followed by the distortion prompts.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_queries, fusion_hidden_size)`): the
            multimodal encoder's output for each prompt query.
        pooled_output (`torch.FloatTensor` of shape `(batch_size, pooled_size)`): the pooled queries, input of
            the quality MLP.
        quality_loss, scene_loss, distortion_loss (`torch.FloatTensor` of shape `()`, *optional*): the
            unweighted terms of `loss`, for the labels given.
    """

    loss: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    quality_logits: torch.FloatTensor | None = None
    scene_logits: torch.FloatTensor | None = None
    distortion_logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    pooled_output: torch.FloatTensor | None = None
    quality_loss: torch.FloatTensor | None = None
    scene_loss: torch.FloatTensor | None = None
    distortion_loss: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------


class ClassSpecificTextContext(TextContext):
    """CoOp's class-specific context (CSC): `n_ctx` context vectors per class, shape (n_cls, n_ctx, width)."""

    def __init__(self, n_cls: int, n_ctx: int, width: int, position: str = "end"):
        nn.Module.__init__(self)
        self.position = position
        self.ctx = nn.Parameter(torch.empty(n_cls, n_ctx, width))

    def forward(self, token_embeds: torch.Tensor, class_lengths: list[int]) -> torch.Tensor:
        n_cls, n_ctx = token_embeds.shape[0], self.ctx.shape[1]
        if n_cls != self.ctx.shape[0]:
            raise ValueError(f"class-specific context holds {self.ctx.shape[0]} classes, got {n_cls} prompts")
        ctx = self.ctx.to(token_embeds.dtype)
        prefix = token_embeds[:, :1]
        if self.position == "end":
            return torch.cat([prefix, ctx, token_embeds[:, 1 + n_ctx :]], dim=1)
        rows, half = [], n_ctx // 2
        for i, class_len in enumerate(class_lengths):
            name = token_embeds[i, 1 + n_ctx : 1 + n_ctx + class_len]
            rest = token_embeds[i, 1 + n_ctx + class_len :]
            if self.position == "front":
                parts = [prefix[i], name, ctx[i], rest]
            else:  # middle
                parts = [prefix[i], ctx[i, :half], name, ctx[i, half:], rest]
            rows.append(torch.cat(parts, dim=0))
        return torch.stack(rows)


def build_text_context(config: MPIQEConfig, num_classes: int, n_ctx: int) -> TextContext:
    width = config.clip_config.text_config.hidden_size
    if config.class_specific_context:
        return ClassSpecificTextContext(num_classes, n_ctx, width, config.class_token_position)
    return TextContext(n_ctx, width, config.class_token_position)


# ----------------------------------------------------------------------------------------------
# Multimodal encoder
# ----------------------------------------------------------------------------------------------


class MPIQEAttention(nn.Module):
    """Multi-head attention (as `CLIPAttention`): self-attention when `key_value_states` is None, else
    cross-attention from `hidden_states` to `key_value_states`."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, hidden_size // num_heads, dropout
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, key_value_states: torch.Tensor | None = None) -> torch.Tensor:
        source = hidden_states if key_value_states is None else key_value_states
        query, key, value = self._heads(self.q_proj(hidden_states)), self._heads(self.k_proj(source)), self._heads(self.v_proj(source))
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(hidden_states.shape)
        return self.out_proj(out)


class MPIQEMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.activation_fn = ACT2FN[hidden_act]
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class MPIQEFusionLayer(nn.Module):
    """Pre-norm layer: queries self-attend, then cross-attend to the image tokens, then an FFN; each
    sub-block is residual (the structure of `torch.nn.TransformerDecoderLayer(norm_first=True)`)."""

    def __init__(self, config: MPIQEConfig):
        super().__init__()
        width, eps = config.fusion_hidden_size, config.fusion_layer_norm_eps
        heads, attn_dropout = config.fusion_num_attention_heads, config.fusion_attention_dropout
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.self_attn = MPIQEAttention(width, heads, attn_dropout)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.cross_attn = MPIQEAttention(width, heads, attn_dropout)
        self.layer_norm3 = nn.LayerNorm(width, eps=eps)
        self.mlp = MPIQEMLP(width, config.fusion_intermediate_size, config.fusion_hidden_act)
        self.dropout = nn.Dropout(config.fusion_dropout)

    def forward(self, hidden_states: torch.Tensor, image_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.dropout(self.self_attn(self.layer_norm1(hidden_states)))
        hidden_states = hidden_states + self.dropout(self.cross_attn(self.layer_norm2(hidden_states), image_states))
        return hidden_states + self.dropout(self.mlp(self.layer_norm3(hidden_states)))


class MPIQEMultimodalEncoder(nn.Module):
    """The prompt features (queries) attend to the image tokens through `fusion_num_layers` layers."""

    def __init__(self, config: MPIQEConfig, text_dim: int, image_dim: int):
        super().__init__()
        width = config.fusion_hidden_size
        self.normalize_inputs = config.fusion_normalize_inputs
        self.group_sizes = (len(config.scene_classes), len(config.distortion_classes))
        self.text_input_projection = nn.Linear(text_dim, width)
        self.image_input_projection = nn.Linear(image_dim, width)
        self.image_layer_norm = nn.LayerNorm(width, eps=config.fusion_layer_norm_eps)
        self.query_type_embeddings = (
            nn.Parameter(torch.empty(len(self.group_sizes), width)) if config.fusion_query_type_embeddings else None
        )
        self.layers = nn.ModuleList([MPIQEFusionLayer(config) for _ in range(config.fusion_num_layers)])
        self.final_layer_norm = nn.LayerNorm(width, eps=config.fusion_layer_norm_eps)

    def embed_queries(self, text_features: torch.Tensor) -> torch.Tensor:
        """(num_queries, text_dim) -> (num_queries, width)."""
        if self.normalize_inputs:
            text_features = F.normalize(text_features, dim=-1)
        queries = self.text_input_projection(text_features)
        if self.query_type_embeddings is not None:
            types = [emb.expand(n, -1) for emb, n in zip(self.query_type_embeddings, self.group_sizes)]
            queries = queries + torch.cat(types).to(queries.dtype)
        return queries

    def embed_image_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, image_dim) -> (batch, tokens, width): the keys/values of every cross-attention."""
        if self.normalize_inputs:
            image_tokens = F.normalize(image_tokens, dim=-1)
        return self.image_layer_norm(self.image_input_projection(image_tokens))

    def forward(self, text_features: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        image_states = self.embed_image_tokens(image_tokens)
        queries = self.embed_queries(text_features.to(image_states.dtype))
        hidden_states = queries.unsqueeze(0).expand(image_states.shape[0], -1, -1)
        for layer in self.layers:
            hidden_states = layer(hidden_states, image_states)
        return self.final_layer_norm(hidden_states)


class MPIQEQualityHead(nn.Module):
    """Pools the query outputs (`mean`, `attention` or `flatten`) and maps them to one quality logit."""

    def __init__(self, config: MPIQEConfig):
        super().__init__()
        width = config.fusion_hidden_size
        self.pooling = config.pooling
        self.attention_scorer = nn.Linear(width, 1) if config.pooling == "attention" else None
        size = width * config.num_queries if config.pooling == "flatten" else width
        layers: list[nn.Module] = []
        for hidden in config.head_hidden_sizes:
            layers += [nn.Linear(size, hidden), ACT2FN[config.head_hidden_act], nn.Dropout(config.head_dropout)]
            size = hidden
        self.mlp = nn.Sequential(*layers)
        self.output = nn.Linear(size, 1)

    def pool(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            return hidden_states.mean(dim=1)
        if self.pooling == "attention":
            weights = self.attention_scorer(hidden_states).softmax(dim=1)  # (B, Q, 1)
            return (weights * hidden_states).sum(dim=1)
        return hidden_states.flatten(1)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool(hidden_states)
        return self.output(self.mlp(pooled)).squeeze(-1), pooled


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def _check_quality_labels(labels: torch.Tensor, batch_size: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.shape != (batch_size,):
        raise ValueError(f"labels must have shape ({batch_size},) (one quality score per image), got {tuple(labels.shape)}")
    if not labels.is_floating_point():
        labels = labels.float()
    if not torch.all(torch.isfinite(labels)) or torch.any((labels < 0) | (labels > 1)):
        raise ValueError(
            "labels must be finite quality scores scaled to [0, 1] (higher = better); "
            f"got min {labels.min().item():.4g}, max {labels.max().item():.4g}"
        )
    return labels


def quality_loss(quality_logits: torch.Tensor, labels: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Mean over the batch of BCE(sigmoid(logit), label) (from the logit), squared or absolute error."""
    labels = _check_quality_labels(labels, quality_logits.shape[0]).to(quality_logits)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(quality_logits, labels)
    if kind == "mse":
        return F.mse_loss(quality_logits.sigmoid(), labels)
    if kind == "l1":
        return F.l1_loss(quality_logits.sigmoid(), labels)
    raise ValueError(f"unknown quality loss {kind!r}")


def scene_loss(scene_logits: torch.Tensor, scene_labels: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE, mean over classes, summed over labelled images and divided by the batch size.

    `scene_labels`: (B, num_scenes) multi-hot floats in [0, 1]; a row of NaN = no scene label (counts 0)."""
    batch, num = scene_logits.shape
    scene_labels = torch.as_tensor(scene_labels, device=scene_logits.device)
    if scene_labels.shape != (batch, num):
        raise ValueError(
            f"scene_labels must be multi-hot with shape ({batch}, {num}) (one column per scene class), "
            f"got {tuple(scene_labels.shape)}"
        )
    if not scene_labels.is_floating_point():
        raise ValueError(f"scene_labels must be floats (multi-hot 0/1; NaN rows = no label), got {scene_labels.dtype}")
    missing = torch.isnan(scene_labels)
    labelled = ~missing.any(dim=1)
    if torch.any(missing.any(dim=1) & ~missing.all(dim=1)):
        raise ValueError("scene_labels rows must be fully labelled or all NaN (no label); found partly NaN rows")
    values = scene_labels[labelled]
    if not torch.all(torch.isfinite(values)) or torch.any((values < 0) | (values > 1)):
        raise ValueError("scene_labels must be multi-hot values in [0, 1] (or NaN rows for images without a label)")
    targets = torch.where(labelled[:, None], scene_labels, torch.zeros_like(scene_labels)).to(scene_logits.dtype)
    per_image = F.binary_cross_entropy_with_logits(scene_logits, targets, reduction="none").mean(dim=1)
    return (per_image * labelled.to(per_image.dtype)).sum() / batch


def distortion_loss(distortion_logits: torch.Tensor, distortion_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over labelled images and divided by the batch size.

    `distortion_labels`: (B,) class indices; `IGNORE_INDEX` (-100) = no distortion label (counts 0)."""
    batch, num = distortion_logits.shape
    distortion_labels = torch.as_tensor(distortion_labels, device=distortion_logits.device)
    if distortion_labels.shape != (batch,):
        raise ValueError(
            f"distortion_labels must be class indices with shape ({batch},), got {tuple(distortion_labels.shape)}"
        )
    if distortion_labels.is_floating_point() or distortion_labels.is_complex() or distortion_labels.dtype == torch.bool:
        raise ValueError(f"distortion_labels must be integer class indices, got {distortion_labels.dtype}")
    valid = (distortion_labels == IGNORE_INDEX) | ((distortion_labels >= 0) & (distortion_labels < num))
    if not torch.all(valid):
        bad = sorted(set(distortion_labels[~valid].tolist()))
        raise ValueError(f"distortion_labels must be in [0, {num}) or {IGNORE_INDEX} (no label); got {bad}")
    per_image = F.cross_entropy(distortion_logits, distortion_labels.long(), ignore_index=IGNORE_INDEX, reduction="none")
    return per_image.sum() / batch


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


class MPIQEModel(PromptedCLIPPreTrainedModel):
    """CLIP (frozen) + deep visual prompts (`visual_prompts`) + scene and distortion CoOp contexts
    (`scene_context`, `distortion_context`) + a multimodal encoder (`multimodal_encoder`) + a quality head.

    `forward(pixel_values, labels=None, scene_labels=None, distortion_labels=None)` scores a batch;
    `predict(images)` scores files, PIL images or arrays; `from_clip(clip_or_id, tokenizer)` builds a fresh
    model around a CLIP checkpoint.
    """

    config_class = MPIQEConfig

    def __init__(self, config: MPIQEConfig):
        super().__init__(config)
        if config.scene_prompt_input_ids is None or config.distortion_prompt_input_ids is None:
            raise ValueError(
                "this config has no tokenized prompts: build the model with MPIQEModel.from_clip(clip, tokenizer)"
            )
        self.scene_context = build_text_context(config, len(config.scene_classes), config.scene_n_ctx)
        self.distortion_context = build_text_context(config, len(config.distortion_classes), config.distortion_n_ctx)
        self.visual_prompts = build_visual_prompts(config)
        clip_config = config.clip_config
        image_dim = clip_config.projection_dim if config.fusion_image_projection == "clip" else clip_config.vision_config.hidden_size
        self.multimodal_encoder = MPIQEMultimodalEncoder(config, clip_config.projection_dim, image_dim)
        self.quality_head = MPIQEQualityHead(config)
        self.class_logit_head = nn.Linear(config.fusion_hidden_size, 1) if config.auxiliary_logits == "fusion" else None
        self.post_init()
        self.freeze_backbone()

    def _init_weights(self, module):
        super()._init_weights(module)  # prompt modules
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            # (the visual prompts' own Linear is re-initialised by DeepVisualPrompts.reset_parameters afterwards)
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MPIQEMultimodalEncoder) and module.query_type_embeddings is not None:
            nn.init.normal_(module.query_type_embeddings, std=std)

    @classmethod
    def tokenize_prompts(cls, config: MPIQEConfig, tokenizer) -> None:
        for bank in ("scene", "distortion"):
            ids, lengths, n_ctx = build_prompt_token_ids(
                tokenizer, getattr(config, f"{bank}_classes"), getattr(config, f"{bank}_n_ctx"), config.ctx_init,
                config.prompt_suffix,
            )
            setattr(config, f"{bank}_prompt_input_ids", ids)
            setattr(config, f"{bank}_prompt_class_lengths", lengths)
            setattr(config, f"{bank}_n_ctx", n_ctx)

    @torch.no_grad()
    def _init_context_from_tokens(self):
        # the ctx_init tokens sit in the context slots of every prompt; class-specific contexts all start there
        token_embedding = self.clip.text_model.embeddings.token_embedding
        for bank in self.prompt_banks().values():
            n_ctx = bank.context.ctx.shape[-2]
            ids = torch.tensor(bank.input_ids[0][1 : 1 + n_ctx], device=token_embedding.weight.device)
            bank.context.ctx.copy_(token_embedding(ids).expand_as(bank.context.ctx))

    def prompt_banks(self) -> dict[str, PromptBank]:
        config = self.config
        return {
            "scene": PromptBank(self.scene_context, config.scene_prompt_input_ids, config.scene_prompt_class_lengths),
            "distortion": PromptBank(
                self.distortion_context, config.distortion_prompt_input_ids, config.distortion_prompt_class_lengths
            ),
        }

    # ------------------------------------------------------------------ towers

    def encode_image(self, pixel_values: torch.Tensor, dropout_generators=None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(image_features, image_tokens)`: projected, unnormalised CLS features (B, projection_dim) and the
        last layer's tokens the queries attend to (B, N, D), as `fusion_image_tokens` /
        `fusion_image_projection` ask. `dropout_generators`: see `forward`."""
        clip, prompts = self.clip, self.visual_prompts
        # the fusion reads the last block's patch tokens, so that block runs in full here
        hidden = self.vision_hidden_states(pixel_values, len(clip.vision_model.encoder.layers), dropout_generators)
        hidden = finish_vision(clip, prompts, hidden)
        image_features = pool_image(clip, hidden)
        n_prompts = prompts.num_tokens if prompts is not None else 0
        if self.config.fusion_image_tokens == "patches":
            tokens = hidden[:, 1 + n_prompts :]
        elif self.config.fusion_image_tokens == "patches_and_cls":
            tokens = torch.cat([hidden[:, :1], hidden[:, 1 + n_prompts :]], dim=1)
        else:
            tokens = hidden
        if self.config.fusion_image_projection == "clip":
            tokens = clip.visual_projection(clip.vision_model.post_layernorm(tokens))
        return image_features, tokens

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected, unnormalised image features through the prompted vision tower (CLS token)."""
        return self.image_features_from_hidden(self.vision_hidden_states(pixel_values, 0), 0)

    def head_modules(self) -> list[nn.Module]:
        """The multimodal encoder and heads: randomly initialised, so `set_trainable` always trains them (its
        `context` means the scene and distortion contexts)."""
        return [m for m in (self.multimodal_encoder, self.quality_head, self.class_logit_head) if m is not None]

    def get_text_features(self) -> torch.Tensor:
        """Projected, unnormalised features of the scene prompts then the distortion prompts (cached at inference)."""
        return torch.cat([self.text_features("scene"), self.text_features("distortion")])

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        scene_labels: torch.Tensor | None = None,
        distortion_labels: torch.Tensor | None = None,
        dropout_generators: list[torch.Generator] | None = None,
    ) -> MPIQEOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`): images
                preprocessed by `model.image_processor`.
            labels (`torch.FloatTensor` of shape `(batch_size,)`, *optional*): quality in [0, 1], higher = better.
            scene_labels (`torch.FloatTensor` of shape `(batch_size, num_scene_classes)`, *optional*): multi-hot
                scene labels; a row of NaN marks an image without a scene label.
            distortion_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): distortion class
                indices; -100 marks an image without a distortion label.
            dropout_generators (`list[torch.Generator]`, *optional*): in train mode, one generator per image that
                draws that image's visual-prompt dropout masks (reproducible however a batch is split up);
                default: torch's global RNG.

        The loss sums the terms of the labels given; each term is a mean over the batch, where images without
        that label count zero.
        """
        config = self.config
        image_features, image_tokens = self.encode_image(pixel_values, dropout_generators)
        text_features = self.get_text_features().to(image_features.dtype)
        hidden_states = self.multimodal_encoder(text_features, image_tokens)
        quality_logits, pooled = self.quality_head(hidden_states)

        image_embeds = F.normalize(image_features, dim=-1)
        text_embeds = F.normalize(text_features, dim=-1)
        if self.class_logit_head is None:
            class_logits = self.clip.logit_scale.exp() * image_embeds @ text_embeds.t()
        else:
            class_logits = self.class_logit_head(hidden_states).squeeze(-1)
        num_scenes = len(config.scene_classes)
        scene_logits, distortion_logits = class_logits[:, :num_scenes], class_logits[:, num_scenes:]

        terms = {}
        if labels is not None:
            terms["quality"] = (1.0, quality_loss(quality_logits, labels, config.quality_loss))
        if scene_labels is not None:
            terms["scene"] = (config.scene_loss_weight, scene_loss(scene_logits, scene_labels))
        if distortion_labels is not None:
            terms["distortion"] = (config.distortion_loss_weight, distortion_loss(distortion_logits, distortion_labels))
        loss = sum(weight * value for weight, value in terms.values()) if terms else None

        return MPIQEOutput(
            loss=loss,
            scores=quality_logits.sigmoid(),
            quality_logits=quality_logits,
            scene_logits=scene_logits,
            distortion_logits=distortion_logits,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            last_hidden_state=hidden_states,
            pooled_output=pooled,
            quality_loss=terms["quality"][1] if "quality" in terms else None,
            scene_loss=terms["scene"][1] if "scene" in terms else None,
            distortion_loss=terms["distortion"][1] if "distortion" in terms else None,
        )


MPIQEConfig.register_for_auto_class()
MPIQEModel.register_for_auto_class("AutoModel")

__all__ = [
    "IGNORE_INDEX",
    "MPIQEModel",
    "MPIQEOutput",
    "distortion_loss",
    "quality_loss",
    "scene_loss",
]
