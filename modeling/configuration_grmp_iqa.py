"""Configuration of GRMP-IQA: CLIP with CoOp text context and VPT-deep visual prompts.

Shipped as Hub remote code next to the weights: imports only transformers and relative modules.
"""

from __future__ import annotations

from .configuration_prompted_clip import PromptedCLIPConfig
from .constants import QUALITY_CLASSES


class GRMPIQAConfig(PromptedCLIPConfig):
    r"""
    Configuration of [`GRMPIQAModel`] (Li et al., ICCV 2025, "Few-Shot Image Quality Assessment via
    Adaptation of Vision-Language Models", arXiv 2409.05381).

    Args:
        clip_config (`CLIPConfig` or `dict`): the backbone CLIP configuration.
        n_ctx (`int`, defaults to 4): number of learnable CoOp context vectors shared by all classes.
        ctx_init (`str`, *optional*): a phrase such as `"a photo of a"` whose token embeddings initialise
            the context; `n_ctx` then becomes its token count. `None` draws N(0, `ctx_init_std`).
        ctx_init_std (`float`, defaults to 0.02): std of the random context initialisation.
        quality_classes (`list[str]`, defaults to `("high quality", "low quality")`): the class names.
            The score is the softmax probability of the FIRST class, so list the "good" class first.
        class_token_position (`str`, defaults to `"end"`): `"end"` (`[ctx] class.`), `"middle"` or
            `"front"` (CoOp's three layouts).
        prompt_suffix (`str`, defaults to `"."`): text appended after the class name.
        num_visual_prompts (`int`, defaults to 100): learnable tokens inserted after CLS; 0 disables
            visual prompts and makes the image path exactly CLIP's.
        visual_prompt_depth (`int`, *optional*): number of layers with their own prompt tokens
            (1 = shallow VPT); `None` = every layer of the vision tower (VPT-deep).
        visual_prompt_dropout (`float`, defaults to 0.1): dropout on the prompt tokens.
        visual_prompt_projection (`bool`, defaults to `True`): one shared Linear(width, width) that all
            prompt tokens pass through.
        visual_prompt_norm (`bool`, defaults to `True`): an extra LayerNorm over all tokens after the
            last block, before CLIP's `post_layernorm`.
        visual_prompt_position (`str`, defaults to `"after_pre_layrnorm"`): where the first layer's prompts
            join the sequence. The released code inserts them after CLIP's `pre_layrnorm` (`ln_pre`);
            `"before_pre_layrnorm"` normalises them with the patches (this package before the fidelity change).
        visual_prompt_norm_eps (`float`, defaults to 1e-6): eps of the extra LayerNorm (the released value);
            `None` takes the vision tower's `layer_norm_eps` (1e-5; before the fidelity change).
        visual_prompt_dropout_per_image (`bool`, defaults to `True`): an independent dropout mask per image,
            as the released code (dropout after the batch expansion); `False` shares one mask per batch.
            A config saved before these three fields existed loads with the old values
            (`PRE_FIDELITY_DEFAULTS`), so old checkpoints score exactly as before.
        image_normalization (`str`, defaults to `"clip"`): `"clip"` or `"imagenet"` mean/std (the released
            GRMP-IQA code uses ImageNet statistics; CLIP's own are the correct default).
        image_mean, image_std (`list[float]`, *optional*): explicit statistics; override the name above.
        resize_size (`int`, *optional*): images are resized to this before the centre crop of the
            backbone's `image_size`. Defaults to `round(image_size * 244 / 224)` (244 for 224 px).
        resize_mode (`str`, defaults to `"square"`): `"square"` (both sides to `resize_size`, as the
            released code) or `"shorter_side"` (aspect-preserving, as CLIP).
        resample (`str`, defaults to `"bilinear"`): `"nearest"`, `"bilinear"`, `"bicubic"`, `"lanczos"`
            (Pillow, antialiased) or `"bicubic_no_antialias"` (the released code's `cv2.resize(INTER_CUBIC)`).
        prompt_input_ids (`list[list[int]]`): tokenized prompts with placeholder context tokens,
            written by `GRMPIQAModel.from_clip`, so a saved model needs no tokenizer to score.
        prompt_class_lengths (`list[int]`): number of tokens of each class name.
        base_model_name_or_path (`str`, *optional*): the CLIP checkpoint the model was built from.
        training_info (`dict`, *optional*): free-form record of how the prompts were trained.
    """

    model_type = "grmp_iqa"

    quality_classes: list[str] | tuple[str, ...] = QUALITY_CLASSES
    prompt_input_ids: list[list[int]] | None = None
    prompt_class_lengths: list[int] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.quality_classes = list(self.quality_classes)
        if len(self.quality_classes) < 2:
            raise ValueError(f"quality_classes needs at least two class names, got {self.quality_classes!r}")


__all__ = ["GRMPIQAConfig"]
