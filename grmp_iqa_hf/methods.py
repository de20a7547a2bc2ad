"""The methods of the package, each registered once: its model class and the text of its model card.

Everything that depends on the method reads this registry: `models.build_model` / `MODEL_CLASSES`, the
Auto-class registration (`grmp_iqa_hf.register_auto_classes`) and the Hub model card (`hub.cards`). A new
method adds its model (a `PromptedCLIPPreTrainedModel` subclass with an `IQAPredictionMixin`, in `modeling/`)
and one `register_method(MethodSpec(...))` call, here or in its own module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from .modeling import GRMPIQAModel, IQAImageProcessor, MPIQEModel
from .modeling.configuration_mp_iqe import render_reconstruction_notes
from .modeling.pipeline_iqa import register_pipeline


@dataclass(frozen=True)
class MethodSpec:
    """One method: its model class (whose `config_class.model_type` is the method's key) and its card text.

    `card_details(config)` gives the card's method-specific lines: `text_prompts` (the "Text prompts" row)
    and, optionally, `reconstruction_notes` (Markdown after the method description)."""

    model_class: type
    name: str  # as written in the card, e.g. "GRMP-IQA"
    tag: str  # the Hub tag
    paper: str
    one_line: str
    description: str
    bibtex: str
    card_details: Callable[[object], dict]
    image_processor_class: type = IQAImageProcessor

    @property
    def config_class(self) -> type:
        return self.model_class.config_class

    @property
    def model_type(self) -> str:
        return self.config_class.model_type


#: `{model_type: MethodSpec}`, in registration order.
METHODS: dict[str, MethodSpec] = {}
_auto_registered = False


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method to the registry (and to transformers' Auto classes, when those are registered already)."""
    METHODS[spec.model_type] = spec
    if _auto_registered:
        _register_auto(spec)
    return spec


def register_all_with_auto() -> None:
    """Register every method with `AutoConfig` / `AutoModel` / `AutoImageProcessor` (idempotent; methods
    registered later are added as they come) and the "image-quality-assessment" pipeline (`pipeline(task,
    model=...)` then needs no remote code)."""
    global _auto_registered
    for spec in METHODS.values():
        _register_auto(spec)
    if not _auto_registered:
        # Importing `transformers.pipelines` here costs milliseconds: the models above have already imported
        # what it needs (measured: ~7 ms after them, against ~5 s on its own).
        register_pipeline()
    _auto_registered = True


def _register_auto(spec: MethodSpec) -> None:
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    AutoConfig.register(spec.model_type, spec.config_class, exist_ok=True)
    AutoModel.register(spec.config_class, spec.model_class, exist_ok=True)
    AutoImageProcessor.register(spec.config_class, slow_image_processor_class=spec.image_processor_class, exist_ok=True)


class _ModelClasses(Mapping):
    """`{model_type: model class}`, a live view of `METHODS`."""

    def __getitem__(self, model_type: str) -> type:
        return METHODS[model_type].model_class

    def __iter__(self) -> Iterator[str]:
        return iter(METHODS)

    def __len__(self) -> int:
        return len(METHODS)

    def __repr__(self) -> str:
        return repr(dict(self))


MODEL_CLASSES: Mapping[str, type] = _ModelClasses()


# ---------------------------------------------------------------------------- GRMP-IQA


def _grmp_iqa_card_details(config) -> dict:
    return {"text_prompts": f"{config.n_ctx} learned context tokens + the classes "
                            + ", ".join(f'"{c}"' for c in config.quality_classes)}


register_method(MethodSpec(
    model_class=GRMPIQAModel,
    name="GRMP-IQA",
    tag="grmp-iqa",
    paper="Li et al., ICCV 2025, arXiv:2409.05381",
    one_line="CLIP with learned text context (CoOp) and deep visual prompts (VPT-deep), scoring an image "
             "as the softmax probability of the first quality prompt.",
    description=(
        "Learnable context tokens are prepended to the quality prompts (\"high quality\" / \"low "
        "quality\") and learnable prompt tokens are inserted into every layer of the frozen CLIP vision "
        "tower. The prompts are first meta-pre-trained over synthetic distortion tasks (MAML-style: adapt "
        "on a support set, update on a query set), then fine-tuned on a few labelled images with "
        "quality-aware gradient regularization (QGR): the gradient of the quality loss is projected away "
        "from directions that conflict with CLIP's own zero-shot semantics, and only the prompts and the "
        "top blocks are trained."
    ),
    bibtex=(
        "@inproceedings{li2025grmpiqa,\n"
        "  title     = {Few-Shot Image Quality Assessment via Adaptation of Vision-Language Models},\n"
        "  author    = {Li, Xudong and others},\n"
        "  booktitle = {ICCV},\n"
        "  year      = {2025},\n"
        "  note      = {arXiv:2409.05381}\n"
        "}"
    ),
    card_details=_grmp_iqa_card_details,
))


# ---------------------------------------------------------------------------- MP-IQE


def _mp_iqe_card_details(config) -> dict:
    return {
        "text_prompts": (f"two banks: {len(config.scene_classes)} scene classes and {len(config.distortion_classes)} "
                         f"distortion classes, {config.n_ctx} learned context tokens each"),
        "reconstruction_notes": render_reconstruction_notes(config),
    }


register_method(MethodSpec(
    model_class=MPIQEModel,
    name="MP-IQE",
    tag="mp-iqe",
    paper="Pan et al., arXiv:2404.14949 (our reconstruction)",
    one_line="CLIP with deep visual prompts and two banks of learned text prompts (scene category, "
             "distortion type) fused with the image by a small multimodal encoder into a quality score.",
    description=(
        "The vision tower carries deep visual prompts; two text prompt banks describe the scene category "
        "and the distortion type. A multimodal encoder lets the text features attend to the image's patch "
        "tokens and maps the pooled result to a quality score; scene and distortion classification are "
        "auxiliary tasks during training. The paper leaves several details open: the choices we made are "
        "listed below (they are also fields of the config)."
    ),
    bibtex=(
        "@article{pan2024mpiqe,\n"
        "  title   = {Multi-Modal Prompt Learning on Blind Image Quality Assessment},\n"
        "  author  = {Pan, Wensheng and others},\n"
        "  journal = {arXiv:2404.14949},\n"
        "  year    = {2024}\n"
        "}"
    ),
    card_details=_mp_iqe_card_details,
))


__all__ = ["METHODS", "MODEL_CLASSES", "MethodSpec", "register_all_with_auto", "register_method"]
