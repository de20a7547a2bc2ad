"""Settings shared by every prompt-learned CLIP quality model (GRMP-IQA, MP-IQE).

One dataclass config holds the backbone and the prompt/visual-prompt/preprocessing settings; each
method's config subclasses it and adds its own fields. Shipped as Hub remote code: imports only
transformers and the standard library.
"""

from __future__ import annotations

import sys

from transformers import CLIPConfig, PreTrainedConfig

from .constants import NORMALIZATIONS, RESIZE_MODES, resize_size_for

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
#: Where the first layer's visual prompts join the sequence: after CLIP's `pre_layrnorm` (the released GRMP-IQA
#: `VPTVisionTransformer`), or before it (this package until the fidelity change: the prompts got normalised).
VISUAL_PROMPT_POSITIONS = ("after_pre_layrnorm", "before_pre_layrnorm")
#: The values a config saved before the fidelity change had implicitly. Such a config lacks these fields, and
#: `from_dict` fills them in, so every existing checkpoint scores exactly as before.
PRE_FIDELITY_DEFAULTS = {
    "visual_prompt_position": "before_pre_layrnorm",
    "visual_prompt_norm_eps": None,
    "visual_prompt_dropout_per_image": False,
}


class PromptedCLIPConfig(PreTrainedConfig):
    """Backbone + prompt settings common to the models of this package (see `GRMPIQAConfig`)."""

    sub_configs_defaults = {"clip_config": CLIPConfig}

    clip_config: dict | CLIPConfig | None = None
    # CoOp text context
    n_ctx: int = 4
    ctx_init: str | None = None
    ctx_init_std: float = 0.02
    class_token_position: str = "end"
    prompt_suffix: str = "."
    # VPT-deep visual prompts
    num_visual_prompts: int = 100
    visual_prompt_depth: int | None = None
    visual_prompt_dropout: float = 0.1
    visual_prompt_projection: bool = True
    visual_prompt_norm: bool = True
    # the released architecture (see VISUAL_PROMPT_POSITIONS and PRE_FIDELITY_DEFAULTS)
    visual_prompt_position: str = "after_pre_layrnorm"
    visual_prompt_norm_eps: float | None = 1e-6  # None: the vision tower's layer_norm_eps
    visual_prompt_dropout_per_image: bool = True  # False: one dropout mask shared by the whole batch
    # image preprocessing (the image processor is built from these: one source of truth)
    image_normalization: str = "clip"
    image_mean: list[float] | tuple[float, ...] | None = None
    image_std: list[float] | tuple[float, ...] | None = None
    resize_size: int | None = None
    resize_mode: str = "square"
    resample: str = "bilinear"
    # provenance
    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    # True in the config of a prompts-only checkpoint (`adapter_model.safetensors` + the base CLIP above)
    adapter_only: bool = False
    training_info: dict | None = None

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        # A saved config that predates the released-architecture fields keeps its old behaviour.
        if config_dict.get("model_type") and not any(key in config_dict for key in PRE_FIDELITY_DEFAULTS):
            config_dict = {**PRE_FIDELITY_DEFAULTS, **config_dict}
        config_dict = without_locally_registered_pipelines(config_dict)
        return super().from_dict(config_dict, **kwargs)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1, got {self.n_ctx}")
        if self.class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(
                f"class_token_position must be one of {CLASS_TOKEN_POSITIONS}, got {self.class_token_position!r}"
            )
        num_layers = self.clip_config.vision_config.num_hidden_layers
        if self.num_visual_prompts < 0:
            raise ValueError(f"num_visual_prompts must be >= 0, got {self.num_visual_prompts}")
        if self.visual_prompt_depth is not None and not 1 <= self.visual_prompt_depth <= num_layers:
            raise ValueError(
                f"visual_prompt_depth must be in [1, {num_layers}] (the vision tower's layers) or None, "
                f"got {self.visual_prompt_depth}"
            )
        if self.visual_prompt_position not in VISUAL_PROMPT_POSITIONS:
            raise ValueError(
                f"visual_prompt_position must be one of {VISUAL_PROMPT_POSITIONS}, got {self.visual_prompt_position!r}"
            )
        if self.visual_prompt_norm_eps is not None and not self.visual_prompt_norm_eps > 0:
            raise ValueError(f"visual_prompt_norm_eps must be > 0 or None, got {self.visual_prompt_norm_eps}")
        if not 0.0 <= self.visual_prompt_dropout < 1.0:
            raise ValueError(f"visual_prompt_dropout must be in [0, 1), got {self.visual_prompt_dropout}")
        if self.image_mean is None or self.image_std is None:
            if self.image_normalization not in NORMALIZATIONS:
                raise ValueError(
                    f"image_normalization must be one of {sorted(NORMALIZATIONS)} (or pass image_mean and "
                    f"image_std), got {self.image_normalization!r}"
                )
            mean, std = NORMALIZATIONS[self.image_normalization]
            self.image_mean = list(mean) if self.image_mean is None else self.image_mean
            self.image_std = list(std) if self.image_std is None else self.image_std
        self.image_mean, self.image_std = [float(v) for v in self.image_mean], [float(v) for v in self.image_std]
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.resize_size is None:
            self.resize_size = resize_size_for(self.image_size)
        if self.resize_size < self.image_size:
            raise ValueError(f"resize_size ({self.resize_size}) must be >= the crop size ({self.image_size})")

    @property
    def image_size(self) -> int:
        """The backbone's input size (the crop size)."""
        return self.clip_config.vision_config.image_size

    @property
    def num_prompted_layers(self) -> int:
        """How many vision layers have their own prompt tokens (0 without visual prompts)."""
        if self.num_visual_prompts == 0:
            return 0
        return self.visual_prompt_depth or self.clip_config.vision_config.num_hidden_layers

    def preprocessing_changes(self, processor) -> dict:
        """The preprocessing fields of this config that the `IQAImageProcessor` `processor` sets otherwise, as
        `{field: processor's value}` (empty when they agree). A processor without normalisation is mean 0, std 1."""
        mean, std = (processor.image_mean, processor.image_std) if processor.do_normalize else ([0.0] * 3, [1.0] * 3)
        wanted = {"resize_size": processor.resize_size, "resize_mode": processor.resize_mode,
                  "resample": processor.resample, "image_mean": [float(v) for v in mean],
                  "image_std": [float(v) for v in std]}
        changes = {k: v for k, v in wanted.items() if getattr(self, k) != v}
        if "image_mean" in changes or "image_std" in changes:  # the name follows the statistics
            named = [name for name, (m, s) in NORMALIZATIONS.items()
                     if list(m) == wanted["image_mean"] and list(s) == wanted["image_std"]]
            changes["image_normalization"] = named[0] if named else "custom"
        return changes

    def image_processor_kwargs(self) -> dict:
        """Arguments of `IQAImageProcessor` for this model."""
        return {
            "crop_size": self.image_size,
            "resize_size": self.resize_size,
            "resize_mode": self.resize_mode,
            "resample": self.resample,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }


def without_locally_registered_pipelines(config_dict: dict) -> dict:
    """`config_dict` without the `custom_pipelines` entries whose task is registered locally with the same class.

    `transformers.pipeline(task, model=...)` insists on `trust_remote_code=True` for any task the config lists
    in `custom_pipelines`, even one registered locally. Where the installed package has registered its pipeline
    (`grmp_iqa_hf`), that entry is dropped, so the local class serves the task without remote code; elsewhere
    the entry stays and the copy next to the weights is used. Imports nothing: an unimported
    `transformers.pipelines` has nothing registered."""
    custom = config_dict.get("custom_pipelines")
    registry = getattr(sys.modules.get("transformers.pipelines"), "PIPELINE_REGISTRY", None)
    if not isinstance(custom, dict) or not custom or registry is None:
        return config_dict

    def registered_here(task, entry) -> bool:
        impl = registry.supported_tasks.get(task, {}).get("impl")
        return isinstance(impl, type) and isinstance(entry, dict) and entry.get("impl") == (
            f"{impl.__module__.rpartition('.')[2]}.{impl.__name__}")  # the "module.Class" of save_pretrained

    kept = {task: entry for task, entry in custom.items() if not registered_here(task, entry)}
    return config_dict if len(kept) == len(custom) else {**config_dict, "custom_pipelines": kept}


__all__ = ["PRE_FIDELITY_DEFAULTS", "PromptedCLIPConfig", "VISUAL_PROMPT_POSITIONS"]
