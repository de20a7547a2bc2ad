"""GRMP-IQA: CLIP with CoOp text context and VPT-deep visual prompts, scoring image quality as the
softmax probability of the first of two (or more) quality prompts.

Li et al., "Few-Shot Image Quality Assessment via Adaptation of Vision-Language Models", ICCV 2025
(arXiv 2409.05381). Shipped as Hub remote code: imports only torch, transformers and relative modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from .configuration_grmp_iqa import GRMPIQAConfig
from .modeling_prompted_clip import PromptBank, PromptedCLIPPreTrainedModel
from .prompt_learning import TextContext, build_prompt_token_ids, build_visual_prompts


@dataclass
class GRMPIQAOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): binary cross-entropy between `scores` and
            `labels`, when labels are given.
        scores (`torch.FloatTensor` of shape `(batch_size,)`): quality in [0, 1], higher = better: the
            softmax probability of the first quality class.
        logits (`torch.FloatTensor` of shape `(batch_size, num_classes)`): `exp(logit_scale) * cos(image, text_k)`.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): normalised image features.
        text_embeds (`torch.FloatTensor` of shape `(num_classes, projection_dim)`): normalised prompt features.
    """

    loss: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


def quality_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between p = softmax(logits)[:, 0] and labels in [0, 1], in log space
    (log(1 - p) = logsumexp of the other classes) so that it never takes log(0)."""
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    labels = labels.to(logits.dtype)
    if torch.any((labels < 0) | (labels > 1)) or not torch.all(torch.isfinite(labels)):
        raise ValueError(
            "labels must be quality scores scaled to [0, 1] (higher = better); "
            f"got min {labels.min().item():.4g}, max {labels.max().item():.4g}"
        )
    log_probs = logits.log_softmax(dim=-1)
    log_good = log_probs[:, 0]
    log_bad = torch.logsumexp(log_probs[:, 1:], dim=-1)
    return -(labels * log_good + (1 - labels) * log_bad).mean()


class GRMPIQAModel(PromptedCLIPPreTrainedModel):
    """CLIP (frozen) + CoOp context (`text_context`) + VPT-deep visual prompts (`visual_prompts`).

    `forward(pixel_values, labels=None)` scores a batch; `predict(images)` scores files, PIL images or
    arrays; `from_clip(clip_or_id, tokenizer)` builds a fresh model around a CLIP checkpoint.
    """

    config_class = GRMPIQAConfig

    def __init__(self, config: GRMPIQAConfig):
        super().__init__(config)
        if config.prompt_input_ids is None:
            raise ValueError(
                "this config has no tokenized prompts: build the model with GRMPIQAModel.from_clip(clip, tokenizer)"
            )
        self.text_context = TextContext(
            config.n_ctx, config.clip_config.text_config.hidden_size, config.class_token_position
        )
        self.visual_prompts = build_visual_prompts(config)
        self.post_init()
        self.freeze_backbone()

    @classmethod
    def tokenize_prompts(cls, config: GRMPIQAConfig, tokenizer) -> None:
        ids, lengths, n_ctx = build_prompt_token_ids(
            tokenizer, config.quality_classes, config.n_ctx, config.ctx_init, config.prompt_suffix
        )
        config.prompt_input_ids, config.prompt_class_lengths, config.n_ctx = ids, lengths, n_ctx

    def prompt_banks(self) -> dict[str, PromptBank]:
        return {"quality": PromptBank(self.text_context, self.config.prompt_input_ids, self.config.prompt_class_lengths)}

    def get_image_features(self, pixel_values: torch.Tensor, dropout_generators=None) -> torch.Tensor:
        """Projected, unnormalised image features through the prompted vision tower."""
        hidden = self.vision_hidden_states(pixel_values, 0, dropout_generators)
        return self.image_features_from_hidden(hidden, 0, dropout_generators)

    def get_text_features(self) -> torch.Tensor:
        """Projected, unnormalised features of the quality prompts (cached at inference)."""
        return self.text_features("quality")

    def _logits_and_embeds(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_embeds = F.normalize(image_features, dim=-1)
        text_embeds = F.normalize(self.get_text_features(), dim=-1)
        logits = self.clip.logit_scale.exp() * image_embeds @ text_embeds.t().to(image_embeds.dtype)
        return logits, image_embeds, text_embeds

    def quality_logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """`exp(logit_scale) * cos(image, text_k)` (batch, num_classes) from projected image features, e.g.
        `image_features_from_hidden(...)` (training starts from cached hidden states)."""
        return self._logits_and_embeds(image_features)[0]

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None,
                dropout_generators: list[torch.Generator] | None = None) -> GRMPIQAOutput:
        """Score a batch. `labels` (quality in [0, 1]) adds the loss; `dropout_generators` (train mode) gives
        each image its own visual-prompt dropout stream, so its masks do not depend on the batch it is in."""
        logits, image_embeds, text_embeds = self._logits_and_embeds(
            self.get_image_features(pixel_values, dropout_generators)
        )
        loss = quality_loss(logits, labels) if labels is not None else None
        return GRMPIQAOutput(
            loss=loss,
            scores=logits.softmax(dim=-1)[:, 0],
            logits=logits,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
        )


GRMPIQAConfig.register_for_auto_class()
GRMPIQAModel.register_for_auto_class("AutoModel")

__all__ = ["GRMPIQAModel", "GRMPIQAOutput", "quality_loss"]
