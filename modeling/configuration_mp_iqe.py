"""Configuration of MP-IQE (our reconstruction): CLIP with VPT-deep visual prompts, dual CoOp text prompts
(scene / distortion) and a multimodal encoder in which the prompt embeddings attend to the image.

Pan et al., "Multi-Modal Prompt Learning on Blind Image Quality Assessment", arXiv 2404.14949. No code
of the method exists and the paper's body was not available, so every architectural detail below the
abstract's level is a reconstruction choice. Each one is a config field, and `RECONSTRUCTION_NOTES`
lists them (with the reason) for the model card: `MPIQEConfig.reconstruction_notes()` gives the list
with this config's values, `render_reconstruction_notes(config)` a Markdown table.

Shipped as Hub remote code next to the weights: imports only transformers and relative modules.
"""

from __future__ import annotations

from .configuration_prompted_clip import PromptedCLIPConfig
from .constants import DISTORTION_CLASSES as MPIQE_DISTORTION_CLASSES
from .constants import SCENE_CLASSES as MPIQE_SCENE_CLASSES

FUSION_IMAGE_TOKENS = ("patches", "patches_and_cls", "all")
FUSION_IMAGE_PROJECTIONS = ("clip", "none")
POOLING_MODES = ("mean", "attention", "flatten")
QUALITY_LOSSES = ("bce", "mse", "l1")
AUXILIARY_LOGITS = ("similarity", "fusion")

#: Every reconstruction choice of MP-IQE: the config field(s) that hold it, our default, the alternatives
#: the config offers, and why. `MPIQEConfig.reconstruction_notes()` adds the values of a given config.
RECONSTRUCTION_NOTES: tuple[dict, ...] = (
    {
        "topic": "What trains",
        "fields": [],
        "choice": "CLIP (both towers, logit scale) frozen; visual prompts, text contexts, multimodal encoder "
                  "and quality head trainable",
        "why": "prompt learning keeps the backbone; the abstract names prompts and a multimodal encoder as the "
               "learned parts",
    },
    {
        "topic": "Visual prompts",
        "fields": ["num_visual_prompts", "visual_prompt_depth", "visual_prompt_dropout",
                   "visual_prompt_projection", "visual_prompt_norm", "visual_prompt_position",
                   "visual_prompt_norm_eps", "visual_prompt_dropout_per_image"],
        "choice": "VPT-deep, the same implementation as GRMP-IQA's released code: 100 tokens after CLS, inserted "
                  "after CLIP's pre-LayerNorm and replaced before every block, one shared Linear + dropout 0.1 "
                  "(a mask per image) on all prompt tokens, an extra LayerNorm (eps 1e-6) after the last block",
        "why": "the abstract says multi-layer prompts in the image encoder; the token count is not given",
    },
    {
        "topic": "Text prompts",
        "fields": ["scene_n_ctx", "distortion_n_ctx", "n_ctx", "ctx_init", "class_specific_context",
                   "class_token_position", "prompt_suffix"],
        "choice": "two CoOp banks, one prompt per class (`[V1..V4] {class}.`): 4 context vectors shared by the "
                  "classes of a bank, N(0, 0.02) init",
        "why": "the abstract names a dual prompt scheme for scene and distortion; CoOp's defaults",
    },
    {
        "topic": "Class sets",
        "fields": ["scene_classes", "distortion_classes"],
        "choice": "LIQE's 9 scene classes and 11 distortion classes (their names are the class tokens)",
        "why": "the only published per-image scene/distortion labels for these datasets are LIQE's",
    },
    {
        "topic": "Queries of the multimodal encoder",
        "fields": ["fusion_normalize_inputs", "fusion_query_type_embeddings"],
        "choice": "the 20 projected text features (L2-normalised) + a learned scene/distortion group embedding, "
                  "mapped to the encoder width by a Linear",
        "why": "the abstract: the text features attend to the image features",
    },
    {
        "topic": "What the queries attend to",
        "fields": ["fusion_image_tokens", "fusion_image_projection", "fusion_normalize_inputs"],
        "choice": "the last layer's patch tokens (not CLS, not the visual prompts), through CLIP's frozen "
                  "post_layernorm and visual_projection into the joint space, L2-normalised, then a Linear",
        "why": "patch tokens carry the local evidence of distortions; the joint space is where the text "
               "features live",
    },
    {
        "topic": "Multimodal encoder layer",
        "fields": ["fusion_num_layers", "fusion_hidden_size", "fusion_num_attention_heads",
                   "fusion_intermediate_size", "fusion_hidden_act", "fusion_dropout", "fusion_attention_dropout",
                   "fusion_layer_norm_eps"],
        "choice": "pre-norm layer: self-attention among the queries, cross-attention to the image tokens, GELU "
                  "FFN, each with a residual; final LayerNorm. 2 layers, width = CLIP's projection dim (512 for "
                  "ViT-B/16), 8 heads, FFN 4x width, no dropout",
        "why": "a small transformer decoder, as the abstract describes; no dropout keeps training results "
               "independent of the process count",
    },
    {
        "topic": "Pooling and head",
        "fields": ["pooling", "head_hidden_sizes", "head_hidden_act", "head_dropout"],
        "choice": "mean over the 20 query outputs -> MLP (one hidden layer of the encoder width, GELU) -> one "
                  "logit; score = sigmoid(logit) in [0, 1], higher = better",
        "why": "the abstract: pooled output -> quality score",
    },
    {
        "topic": "Quality loss",
        "fields": ["quality_loss"],
        "choice": "binary cross-entropy between the score and the label in [0, 1] (computed from the logit)",
        "why": "the same objective as GRMP-IQA in this package; MSE and L1 are options",
    },
    {
        "topic": "Scene / distortion logits",
        "fields": ["auxiliary_logits"],
        "choice": "CLIP similarity: exp(logit_scale) * cos(prompted image embedding (CLS), text feature of each "
                  "class prompt), frozen CLIP logit scale",
        "why": "design: classification from the same text/image similarities; option: a Linear on each "
               "query's encoder output",
    },
    {
        "topic": "Auxiliary losses",
        "fields": ["scene_loss_weight", "distortion_loss_weight"],
        "choice": "loss = quality + 1.0 * scene BCE (multi-hot, mean over the 9 classes) + 1.0 * distortion "
                  "cross-entropy; each term is a mean over the batch in which images without that label count "
                  "zero",
        "why": "the weights are not published; per-image terms keep the loss exactly decomposable across "
               "processes",
    },
    {
        "topic": "Initialisation",
        "fields": ["initializer_range"],
        "choice": "encoder/head Linear weights N(0, 0.02), zero biases, LayerNorm 1/0, group embeddings N(0, 0.02)",
        "why": "transformers' defaults",
    },
    {
        "topic": "Preprocessing",
        "fields": ["image_normalization", "resize_size", "resize_mode"],
        "choice": "CLIP mean/std, resize to 244x244 (for 224 crops), centre crop; training: random crop + flip",
        "why": "the package's shared preprocessing",
    },
)


class MPIQEConfig(PromptedCLIPConfig):
    r"""
    Configuration of [`MPIQEModel`], our reconstruction of MP-IQE (Pan et al., "Multi-Modal Prompt Learning
    on Blind Image Quality Assessment", arXiv 2404.14949). Every field below the backbone is a
    reconstruction choice: see `RECONSTRUCTION_NOTES` / `reconstruction_notes()`.

    Args:
        clip_config (`CLIPConfig` or `dict`): the backbone CLIP configuration.
        n_ctx, ctx_init, ctx_init_std, class_token_position, prompt_suffix: as in [`GRMPIQAConfig`]; `n_ctx`
            is the default context length of both banks, `ctx_init` (when given) initialises both.
        scene_classes (`list[str]`, defaults to LIQE's 9): class names of the scene bank.
        distortion_classes (`list[str]`, defaults to LIQE's 11): class names of the distortion bank.
        scene_n_ctx, distortion_n_ctx (`int`, *optional*): context length of each bank (default `n_ctx`;
            ignored with `ctx_init`, whose token count is used).
        class_specific_context (`bool`, defaults to `False`): one context per class (CoOp's CSC) instead of
            one per bank.
        num_visual_prompts, visual_prompt_depth, visual_prompt_dropout, visual_prompt_projection,
            visual_prompt_norm, visual_prompt_position, visual_prompt_norm_eps, visual_prompt_dropout_per_image:
            VPT-deep visual prompts, the same as [`GRMPIQAConfig`].
        fusion_hidden_size (`int`, *optional*): width of the multimodal encoder (default: CLIP's
            `projection_dim`).
        fusion_num_layers (`int`, defaults to 2): number of encoder layers.
        fusion_num_attention_heads (`int`, defaults to 8): attention heads (must divide the width).
        fusion_intermediate_size (`int`, *optional*): FFN width (default 4x the encoder width).
        fusion_hidden_act (`str`, defaults to `"gelu"`): FFN activation (any `transformers` ACT2FN name).
        fusion_dropout, fusion_attention_dropout (`float`, defaults to 0.0): dropout on residual branches /
            attention weights.
        fusion_layer_norm_eps (`float`, defaults to 1e-5).
        fusion_image_tokens (`str`, defaults to `"patches"`): the image tokens the queries attend to:
            `"patches"`, `"patches_and_cls"` or `"all"` (CLS, visual prompts and patches).
        fusion_image_projection (`str`, defaults to `"clip"`): `"clip"` maps the tokens through CLIP's frozen
            `post_layernorm` and `visual_projection` (joint space); `"none"` uses the last layer's hidden
            states (after the visual-prompt norm).
        fusion_normalize_inputs (`bool`, defaults to `True`): L2-normalise the text features and image tokens
            before the encoder's input projections.
        fusion_query_type_embeddings (`bool`, defaults to `True`): add a learned embedding per bank to its
            queries.
        pooling (`str`, defaults to `"mean"`): `"mean"` or `"attention"` (learned weights) over the queries,
            or `"flatten"` (concatenate them).
        head_hidden_sizes (`list[int]`, *optional*): hidden widths of the quality MLP (default: one layer of
            the encoder width; `[]` = a single Linear).
        head_hidden_act (`str`, defaults to `"gelu"`), head_dropout (`float`, defaults to 0.0).
        quality_loss (`str`, defaults to `"bce"`): `"bce"`, `"mse"` or `"l1"` between the score and the label.
        scene_loss_weight (`float`, defaults to 1.0): weight of the multi-label scene BCE.
        distortion_loss_weight (`float`, defaults to 1.0): weight of the distortion cross-entropy.
        auxiliary_logits (`str`, defaults to `"similarity"`): scene/distortion logits from the CLIP
            similarity of image and prompts (`"similarity"`) or a Linear on each query output (`"fusion"`).
        initializer_range (`float`, defaults to 0.02): std of the encoder/head weight initialisation.
        scene_prompt_input_ids, distortion_prompt_input_ids (`list[list[int]]`), scene_prompt_class_lengths,
            distortion_prompt_class_lengths (`list[int]`): tokenized prompts, written by
            `MPIQEModel.from_clip`, so a saved model needs no tokenizer.
        image_normalization, image_mean, image_std, resize_size, resize_mode, resample: preprocessing, as in
            [`GRMPIQAConfig`].
        base_model_name_or_path, base_model_revision, training_info: provenance.
    """

    model_type = "mp_iqe"

    # dual text prompts
    scene_classes: list[str] | tuple[str, ...] = MPIQE_SCENE_CLASSES
    distortion_classes: list[str] | tuple[str, ...] = MPIQE_DISTORTION_CLASSES
    scene_n_ctx: int | None = None
    distortion_n_ctx: int | None = None
    class_specific_context: bool = False
    # multimodal encoder
    fusion_hidden_size: int | None = None
    fusion_num_layers: int = 2
    fusion_num_attention_heads: int = 8
    fusion_intermediate_size: int | None = None
    fusion_hidden_act: str = "gelu"
    fusion_dropout: float = 0.0
    fusion_attention_dropout: float = 0.0
    fusion_layer_norm_eps: float = 1e-5
    fusion_image_tokens: str = "patches"
    fusion_image_projection: str = "clip"
    fusion_normalize_inputs: bool = True
    fusion_query_type_embeddings: bool = True
    # quality head
    pooling: str = "mean"
    head_hidden_sizes: list[int] | tuple[int, ...] | None = None
    head_hidden_act: str = "gelu"
    head_dropout: float = 0.0
    # losses
    quality_loss: str = "bce"
    scene_loss_weight: float = 1.0
    distortion_loss_weight: float = 1.0
    auxiliary_logits: str = "similarity"
    initializer_range: float = 0.02
    # tokenized prompts (written by MPIQEModel.from_clip)
    scene_prompt_input_ids: list[list[int]] | None = None
    scene_prompt_class_lengths: list[int] | None = None
    distortion_prompt_input_ids: list[list[int]] | None = None
    distortion_prompt_class_lengths: list[int] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.scene_classes = [str(c) for c in self.scene_classes]
        self.distortion_classes = [str(c) for c in self.distortion_classes]
        for name in ("scene_classes", "distortion_classes"):
            classes = getattr(self, name)
            if not classes:
                raise ValueError(f"{name} needs at least one class name")
            if len(set(classes)) != len(classes):
                raise ValueError(f"{name} has duplicate class names: {classes!r}")
        if self.scene_n_ctx is None:
            self.scene_n_ctx = self.n_ctx
        if self.distortion_n_ctx is None:
            self.distortion_n_ctx = self.n_ctx
        for name in ("scene_n_ctx", "distortion_n_ctx", "fusion_num_layers", "fusion_num_attention_heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.fusion_hidden_size is None:
            self.fusion_hidden_size = self.clip_config.projection_dim
        if self.fusion_hidden_size % self.fusion_num_attention_heads:
            raise ValueError(
                f"fusion_hidden_size ({self.fusion_hidden_size}) must be divisible by fusion_num_attention_heads "
                f"({self.fusion_num_attention_heads})"
            )
        if self.fusion_intermediate_size is None:
            self.fusion_intermediate_size = 4 * self.fusion_hidden_size
        if self.head_hidden_sizes is None:
            self.head_hidden_sizes = [self.fusion_hidden_size]
        self.head_hidden_sizes = [int(h) for h in self.head_hidden_sizes]
        if any(h < 1 for h in self.head_hidden_sizes):
            raise ValueError(f"head_hidden_sizes must be positive, got {self.head_hidden_sizes}")
        for name in ("fusion_dropout", "fusion_attention_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name, allowed in (
            ("fusion_image_tokens", FUSION_IMAGE_TOKENS),
            ("fusion_image_projection", FUSION_IMAGE_PROJECTIONS),
            ("pooling", POOLING_MODES),
            ("quality_loss", QUALITY_LOSSES),
            ("auxiliary_logits", AUXILIARY_LOGITS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("scene_loss_weight", "distortion_loss_weight"):
            if not getattr(self, name) >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def num_queries(self) -> int:
        """Number of prompt embeddings that query the image (9 + 11 by default)."""
        return len(self.scene_classes) + len(self.distortion_classes)

    def reconstruction_notes(self) -> list[dict]:
        """`RECONSTRUCTION_NOTES`, each with `values`: this config's value of every field it names."""
        return [dict(note, values={f: getattr(self, f, None) for f in note["fields"]}) for note in RECONSTRUCTION_NOTES]


def render_reconstruction_notes(config: MPIQEConfig | None = None) -> str:
    """A Markdown table of the reconstruction choices (with `config`'s values when given), for model cards."""
    notes = config.reconstruction_notes() if config is not None else [dict(n, values={}) for n in RECONSTRUCTION_NOTES]
    rows = ["| Topic | Our choice | Config fields | Why |", "|---|---|---|---|"]
    for note in notes:
        if note["values"]:
            fields = ", ".join(f"`{k}={v!r}`" for k, v in note["values"].items())
        else:
            fields = ", ".join(f"`{f}`" for f in note["fields"]) or "(structural)"
        cells = [note["topic"], note["choice"], fields, note["why"]]
        rows.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


__all__ = ["MPIQEConfig", "RECONSTRUCTION_NOTES", "render_reconstruction_notes"]
