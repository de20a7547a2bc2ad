"""Learnable prompts around a frozen `transformers.CLIPModel`, shared by every model of this package.

- `TextContext`: CoOp's learnable context vectors, placed around each class name's tokens.
- `DeepVisualPrompts`: VPT-deep prompt tokens, inserted after CLS and replaced before each prompted layer.
- `encode_text_embeddings` / `encode_prompted_image`: the two CLIP towers run with those prompts; the
  vision tower in stages (`embed_image`, `run_vision_layers`, `image_features_from_hidden`) so that the
  models can start from cached activations entering any block.
- `encoder_layer_rows`: a CLIP block computing some rows only. Pooling reads the CLS token alone, and each
  prompted block replaces the previous block's prompt outputs, so the rest need not be computed.

Shipped as Hub remote code: imports only torch, transformers and the standard library.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import eager_attention_forward

# CoOp's placeholder for a context slot; any single-token word works, its embedding is replaced.
CONTEXT_PLACEHOLDER = "X"


def build_prompt_token_ids(tokenizer, class_names, n_ctx: int, ctx_init: str | None = None, suffix: str = "."):
    """Tokenize `"{context} {class}{suffix}"` for each class, as CoOp does.

    Returns `(input_ids, class_lengths, n_ctx)`: `input_ids` padded to the longest prompt (a list of
    lists; positions `1 .. n_ctx` hold the context placeholders or the `ctx_init` tokens), the token
    count of each class name, and the context length (that of `ctx_init` when given).
    """
    if ctx_init:
        ctx_init = " ".join(ctx_init.replace("_", " ").split())
        n_ctx = len(tokenizer(ctx_init, add_special_tokens=False)["input_ids"])
        prefix = ctx_init
    else:
        prefix = " ".join([CONTEXT_PLACEHOLDER] * n_ctx)
        placeholder_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        if len(placeholder_ids) != n_ctx:
            raise ValueError(f"the tokenizer splits {CONTEXT_PLACEHOLDER!r} into several tokens; cannot place context")
    names = [" ".join(str(name).replace("_", " ").split()) for name in class_names]
    class_lengths = [len(tokenizer(name, add_special_tokens=False)["input_ids"]) for name in names]
    prompts = [f"{prefix} {name}{suffix}" for name in names]
    encoded = tokenizer(prompts, padding=True)["input_ids"]
    encoded = [list(map(int, ids)) for ids in encoded]
    for prompt, ids, class_len in zip(prompts, encoded, class_lengths):
        # SOS + context + class must be followed by at least the EOS token
        if len(ids) < 2 + n_ctx + class_len:
            raise ValueError(f"tokenized prompt {prompt!r} is shorter than expected: {ids}")
    return encoded, class_lengths, n_ctx


def eos_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Where CLIP pools the text features: the same rule as `CLIPTextTransformer.forward`."""
    if eos_token_id == 2:
        # legacy CLIP configs (eos_token_id wrongly 2): the EOS token has the largest id
        return input_ids.to(torch.int).argmax(dim=-1)
    return (input_ids.to(torch.int) == eos_token_id).int().argmax(dim=-1)


class TextContext(nn.Module):
    """CoOp: `n_ctx` context vectors shared by all classes, in the text tower's embedding space."""

    def __init__(self, n_ctx: int, width: int, position: str = "end"):
        super().__init__()
        self.position = position
        self.ctx = nn.Parameter(torch.empty(n_ctx, width))

    def forward(self, token_embeds: torch.Tensor, class_lengths: list[int]) -> torch.Tensor:
        """Replace the placeholder slots of `token_embeds` (n_cls, L, D) with the context.

        The sequence length and the EOS position do not change with the layout.
        """
        n_cls, n_ctx = token_embeds.shape[0], self.ctx.shape[0]
        ctx = self.ctx.to(token_embeds.dtype)
        prefix = token_embeds[:, :1]
        if self.position == "end":
            return torch.cat([prefix, ctx.unsqueeze(0).expand(n_cls, -1, -1), token_embeds[:, 1 + n_ctx :]], dim=1)
        rows = []
        half = n_ctx // 2
        for i, class_len in enumerate(class_lengths):
            name = token_embeds[i, 1 + n_ctx : 1 + n_ctx + class_len]
            rest = token_embeds[i, 1 + n_ctx + class_len :]
            if self.position == "front":
                parts = [prefix[i], name, ctx, rest]
            else:  # middle
                parts = [prefix[i], ctx[:half], name, ctx[half:], rest]
            rows.append(torch.cat(parts, dim=0))
        return torch.stack(rows)


class DeepVisualPrompts(nn.Module):
    """VPT-deep prompt tokens for a ViT: one set of `num_tokens` tokens per prompted layer.

    All tokens pass through one shared projection and dropout; an optional extra LayerNorm is applied
    to every token after the last block (before CLIP's `post_layernorm`). With `per_image_dropout` (the
    released code: dropout acts on the batch-expanded tokens) every image gets its own dropout mask;
    without it one mask is shared by the batch.
    """

    def __init__(self, num_tokens, depth, width, patch_size, num_channels, dropout, projection, norm, eps,
                 per_image_dropout: bool = True, after_pre_layrnorm: bool = True):
        super().__init__()
        self.embeddings = nn.Parameter(torch.empty(depth, num_tokens, width))
        self.projection = nn.Linear(width, width) if projection else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width, eps=eps) if norm else nn.Identity()
        self.per_image_dropout = per_image_dropout
        self.after_pre_layrnorm = after_pre_layrnorm
        # VPT's uniform bound: Xavier over (patch pixels, width)
        self.init_bound = math.sqrt(6.0 / float(num_channels * patch_size * patch_size + width))

    @property
    def depth(self) -> int:
        return self.embeddings.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.embeddings.shape[1]

    def tokens(self, layer: int, batch_size: int, dtype: torch.dtype, generators=None) -> torch.Tensor:
        """The prompt tokens of `layer` for a batch, (batch_size, num_tokens, width).

        `generators` (training only): one `torch.Generator` per image that draws that image's dropout masks,
        layer after layer, so that a sample's masks depend on its own key and never on the batch it is in.
        """
        prompts = self.projection(self.embeddings[layer])
        if generators is not None and self.training and self.dropout.p > 0:
            if len(generators) != batch_size:
                raise ValueError(f"{len(generators)} dropout generators for a batch of {batch_size}")
            keep = 1.0 - self.dropout.p
            masks = torch.stack([torch.rand(prompts.shape, generator=g, device=g.device) < keep for g in generators])
            return (prompts.unsqueeze(0) * masks.to(prompts.device, prompts.dtype) / keep).to(dtype)
        if self.per_image_dropout:
            return self.dropout(prompts.to(dtype).unsqueeze(0).expand(batch_size, -1, -1))
        return self.dropout(prompts).to(dtype).unsqueeze(0).expand(batch_size, -1, -1)

    def reset_parameters(self):
        nn.init.uniform_(self.embeddings, -self.init_bound, self.init_bound)
        if isinstance(self.projection, nn.Linear):
            nn.init.kaiming_normal_(self.projection.weight, a=0, mode="fan_out")
            nn.init.zeros_(self.projection.bias)
        if isinstance(self.norm, nn.LayerNorm):
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)


def build_visual_prompts(config) -> DeepVisualPrompts | None:
    """The visual prompts a `PromptedCLIPConfig` asks for (None when `num_visual_prompts == 0`)."""
    if config.num_visual_prompts == 0:
        return None
    vision = config.clip_config.vision_config
    return DeepVisualPrompts(
        num_tokens=config.num_visual_prompts,
        depth=config.num_prompted_layers,
        width=vision.hidden_size,
        patch_size=vision.patch_size,
        num_channels=vision.num_channels,
        dropout=config.visual_prompt_dropout,
        projection=config.visual_prompt_projection,
        norm=config.visual_prompt_norm,
        eps=config.visual_prompt_norm_eps or vision.layer_norm_eps,
        per_image_dropout=config.visual_prompt_dropout_per_image,
        after_pre_layrnorm=config.visual_prompt_position == "after_pre_layrnorm",
    )


# ----------------------------------------------------------------------------------------------
# Text tower
# ----------------------------------------------------------------------------------------------


def encode_text_embeddings(clip, token_embeds: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """CLIP's text tower from token embeddings: positions, causal encoder, final norm, EOS pool, projection.

    `transformers`' `CLIPTextModel.forward` takes no `inputs_embeds`, so this mirrors it step by step.
    `input_ids` (same shape as the embeddings' first two dims) only locates the EOS token.
    """
    text = clip.text_model
    hidden = text.embeddings(inputs_embeds=token_embeds)
    mask = create_causal_mask(config=text.config, inputs_embeds=hidden, attention_mask=None, cache=None)
    hidden = text.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
    hidden = text.final_layer_norm(hidden)
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eos_positions(input_ids, text.eos_token_id)]
    return clip.text_projection(pooled)


# ----------------------------------------------------------------------------------------------
# Vision tower, in stages
# ----------------------------------------------------------------------------------------------


def embed_image(clip, prompts: DeepVisualPrompts | None, pixel_values: torch.Tensor, generators=None) -> torch.Tensor:
    """Patch + position embeddings, CLIP's `pre_layrnorm`, and the first layer's prompt tokens after CLS:
    inserted after the norm (the released `VPTVisionTransformer`), or before it for configs saved before the
    fidelity change (`visual_prompt_position="before_pre_layrnorm"`)."""
    vision = clip.vision_model
    hidden = vision.embeddings(pixel_values)
    if prompts is None:
        return vision.pre_layrnorm(hidden)
    after = prompts.after_pre_layrnorm
    if after:
        hidden = vision.pre_layrnorm(hidden)
    tokens = prompts.tokens(0, hidden.shape[0], hidden.dtype, generators)
    hidden = torch.cat([hidden[:, :1], tokens, hidden[:, 1:]], dim=1)
    return hidden if after else vision.pre_layrnorm(hidden)


def encoder_layer_rows(layer, hidden: torch.Tensor, rows: list[slice]) -> torch.Tensor:
    """`CLIPEncoderLayer` computing the outputs of the rows `rows` only (concatenated in that order): queries,
    residuals and MLP for those rows, keys and values from every row. Equal to those rows of
    `layer(hidden, None)`, for the cost of the keys and values of the rows left out. Uses the layer's own
    submodules and attention implementation."""
    attn = layer.self_attn
    normed = layer.layer_norm1(hidden)
    batch, length = normed.shape[:2]

    def pick(tensor):  # contiguous: on a strided view the matmul kernels depend on memory alignment,
        # so two copies of one model (e.g. saved and reloaded) would differ in the last bit
        return tensor[:, rows[0]].contiguous() if len(rows) == 1 else torch.cat([tensor[:, r] for r in rows], dim=1)

    residual = pick(hidden)
    queries = residual.shape[1]
    query = attn.q_proj(pick(normed)).view(batch, queries, -1, attn.head_dim).transpose(1, 2)
    key = attn.k_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    value = attn.v_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
    # the dispatch of `CLIPAttention.forward` ("eager" and an unset implementation are not registered)
    attention = ALL_ATTENTION_FUNCTIONS.get(attn.config._attn_implementation, eager_attention_forward)
    out, _ = attention(attn, query, key, value, None, scaling=attn.scale,
                       dropout=attn.dropout if attn.training else 0.0)
    hidden = residual + attn.out_proj(out.reshape(batch, queries, -1))
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def run_vision_layers(clip, prompts, hidden: torch.Tensor, start: int = 0, end: int | None = None,
                      generators=None, skip_prompt_queries: bool = False, cls_only_last: bool = False) -> torch.Tensor:
    """Vision blocks `start .. end-1`; before each prompted block after the first, its own prompts replace
    the previous layer's prompt outputs (`generators`: per-image dropout streams, see `DeepVisualPrompts`).

    Outputs that are thrown away need not be computed (the same values, to float rounding):
    `skip_prompt_queries`: a block whose prompt outputs the next block (run here) replaces computes the other
    rows only; `cls_only_last`: the tower's last block (when it runs) returns the CLS token alone, (B, 1, D).
    """
    layers = clip.vision_model.encoder.layers
    end = len(layers) if end is None else end
    n = prompts.num_tokens if prompts is not None else 0
    has_prompt_rows = True
    for index in range(start, end):
        if prompts is not None and 0 < index < prompts.depth:
            tokens = prompts.tokens(index, hidden.shape[0], hidden.dtype, generators)
            hidden = torch.cat([hidden[:, :1], tokens, hidden[:, 1 + n if has_prompt_rows else 1 :]], dim=1)
        if cls_only_last and index == len(layers) - 1:
            hidden = encoder_layer_rows(layers[index], hidden, [slice(0, 1)])
        elif skip_prompt_queries and prompts is not None and index + 1 < min(end, prompts.depth):
            hidden = encoder_layer_rows(layers[index], hidden, [slice(0, 1), slice(1 + n, None)])
            has_prompt_rows = False
        else:
            hidden = layers[index](hidden, None)
            has_prompt_rows = True
    return hidden


def finish_vision(clip, prompts, hidden: torch.Tensor) -> torch.Tensor:
    """All tokens after the last block: the prompts' extra norm (when visual prompts are on)."""
    return prompts.norm(hidden) if prompts is not None else hidden


def pool_image(clip, hidden: torch.Tensor) -> torch.Tensor:
    """CLS token -> CLIP's `post_layernorm` -> `visual_projection`."""
    return clip.visual_projection(clip.vision_model.post_layernorm(hidden[:, 0]))


def image_features_from_hidden(clip, prompts, hidden: torch.Tensor, start: int, generators=None,
                               skip_unused_queries: bool = True) -> torch.Tensor:
    """Projected image features from the hidden states entering block `start`: the remaining blocks, the
    prompts' extra norm, `post_layernorm` and `visual_projection`. Only the CLS token is pooled, so with
    `skip_unused_queries` the blocks compute only the rows something reads (`run_vision_layers`); the norms
    are per token, so pooling sees the same values."""
    hidden = run_vision_layers(clip, prompts, hidden, start, generators=generators,
                               skip_prompt_queries=skip_unused_queries, cls_only_last=skip_unused_queries)
    return pool_image(clip, finish_vision(clip, prompts, hidden))


def encode_prompted_image(clip, prompts, pixel_values: torch.Tensor, generators=None,
                          skip_unused_queries: bool = True) -> torch.Tensor:
    """Projected image features with visual prompts (without: `CLIPModel.get_image_features`, to float rounding
    when `skip_unused_queries`)."""
    hidden = embed_image(clip, prompts, pixel_values, generators)
    return image_features_from_hidden(clip, prompts, hidden, 0, generators, skip_unused_queries)
