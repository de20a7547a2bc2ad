"""Quality-aware gradient regularization (QGR), the fine-tuning stage of GRMP-IQA.

During fine-tuning two gradients are taken from ONE forward pass of the student:

- `G_d = grad L_q`: the quality loss (binary cross-entropy of the score against the MOS);
- `G_g = grad L_s`: the semantic loss, the cross-entropy of the student's distribution over the nine
  scene prompts ("a photo of a {scene}") against that of a frozen zero-shot teacher.

For each parameter unit separately, when `<G_d, G_g> > 0` the update is
`G_d - lam * <G_d, G_g> / ||G_g||^2 * G_g`, else `G_d` (`project_gradients`): the part of the quality
update that merely follows image semantics is removed. `L_s` is never added to the loss. ProGrad's rule
(Zhu et al., "Prompt-aligned Gradient for Prompt Tuning") projects in the opposite case (`<G_d, G_g> < 0`)
and is available as `mode="prograd"` for comparison.

The unit is a parameter tensor of OpenAI's CLIP, as in the released code. There each attention layer has
ONE fused `in_proj_weight` (and one `in_proj_bias`) for q, k and v, while transformers keeps three tensors:
`fused_qkv_groups` puts each layer's q/k/v weights into one unit and its q/k/v biases into another, so the
dot product, the norm and the coefficient are taken over their concatenation, exactly as the released rule
sees the fused tensor (`grouping="fused_qkv"`, the default). `grouping="per_tensor"` treats every
transformers tensor on its own (this package before the fidelity change).

Where the features come from:

- Student, image side: the prompted vision tower being fine-tuned (the same image features that give the
  quality score; one forward pass serves both losses).
- Student, text side: the student's own CLIP text tower (whose top blocks and final norm are being
  fine-tuned) run on the plain tokenized scene prompts, without the learned quality context (the context
  belongs to the quality prompts, so its `G_g` is zero and its update is `G_d`).
- Teacher: the backbone CLIP before fine-tuning, without any prompt, on the same crop, with the frozen
  CLIP logit scale. Its targets do not change during training, so they are computed once without
  gradients and cached per image and crop (`SceneTeacher`).

Under multi-process training `G_d` and `G_g` are summed over processes (explicitly: gradients from
`torch.autograd.grad` never pass through DDP's hooks) BEFORE the projection (`qgr_direction`), so every
process applies the same update and 1 and 2 processes train the same model.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..modeling.constants import SCENE_CLASSES  # the semantic signal's classes: LIQE's scene categories
from ..modeling.prompt_learning import encode_prompted_image, encode_text_embeddings
from .common import reduce_sum
from .trainer import GradientRule

SCENE_TEMPLATE = "a photo of a {}"
#: "qgr": remove the semantic component when it AGREES with the quality gradient (GRMP-IQA);
#: "prograd": remove it when it CONFLICTS (ProGrad's original rule).
PROJECTION_MODES = ("qgr", "prograd")
#: The units the rule works on: OpenAI CLIP's tensors (q/k/v fused, as released) or transformers' tensors.
GROUPINGS = ("fused_qkv", "per_tensor")
_QKV = ("q_proj", "k_proj", "v_proj")


# ----------------------------------------------------------------------------------------------
# The projection
# ----------------------------------------------------------------------------------------------


def fused_qkv_groups(names) -> list[list[int]]:
    """The rule's units over parameters `names` (transformers names, in order): each attention layer's
    `q_proj`/`k_proj`/`v_proj` weights form one unit and their biases another (OpenAI CLIP's fused
    `in_proj_weight` / `in_proj_bias`); every other tensor is a unit of its own. Units are lists of
    positions in `names`, in order of their first member."""
    groups: dict[str, list[int]] = {}
    for position, name in enumerate(names):
        parts = name.split(".")
        key = name
        if len(parts) >= 2 and parts[-2] in _QKV:  # "...self_attn.q_proj.weight" -> "...self_attn.in_proj.weight"
            key = ".".join(parts[:-2] + ["in_proj", parts[-1]])
        groups.setdefault(key, []).append(position)
    return list(groups.values())


def parameter_groups(names, grouping: str = "fused_qkv") -> list[list[int]] | None:
    """The units of `grouping` for parameters `names` (None: one unit per tensor)."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    return fused_qkv_groups(list(names)) if grouping == "fused_qkv" else None


def projection_coefficients(g_quality, g_semantic, lam: float = 5.0, mode: str = "qgr", groups=None) -> list[float]:
    """Per tensor, the multiple `c` of `G_g` removed from `G_d` (`G = G_d - c * G_g`); 0 = unchanged.

    `c = lam * <G_d, G_g> / ||G_g||^2` when the rule applies (`<G_d, G_g> > 0` for "qgr", `< 0` for
    "prograd"), else 0; a zero (or missing: None) `G_g` gives 0. `groups` (lists of tensor positions, e.g.
    `fused_qkv_groups`) makes the dot product and the norm sums over each unit's tensors, and gives every
    member the unit's coefficient; None = one unit per tensor. Dot products are taken in float64.
    """
    if mode not in PROJECTION_MODES:
        raise ValueError(f"mode must be one of {PROJECTION_MODES}, got {mode!r}")
    g_quality, g_semantic = list(g_quality), list(g_semantic)
    if len(g_quality) != len(g_semantic):
        raise ValueError(f"{len(g_quality)} quality gradients but {len(g_semantic)} semantic gradients")
    dots, norms = [], []
    for index, (g_d, g_g) in enumerate(zip(g_quality, g_semantic)):
        if g_g is None:
            dots.append(0.0)
            norms.append(0.0)
            continue
        if g_d.shape != g_g.shape:
            raise ValueError(f"gradient {index}: shapes differ ({tuple(g_d.shape)} vs {tuple(g_g.shape)})")
        d, g = g_d.detach().reshape(-1), g_g.detach().reshape(-1)
        dots.append(float((d * g).sum(dtype=torch.float64)))
        norms.append(float((g * g).sum(dtype=torch.float64)))
    if groups is None:
        groups = [[i] for i in range(len(g_quality))]
    covered = sorted(i for group in groups for i in group)
    if covered != list(range(len(g_quality))):
        raise ValueError(f"groups must cover each of the {len(g_quality)} gradients exactly once")
    coefficients = [0.0] * len(g_quality)
    for group in groups:
        dot, norm2 = sum(dots[i] for i in group), sum(norms[i] for i in group)
        applies = dot > 0 if mode == "qgr" else dot < 0
        for i in group:
            coefficients[i] = lam * dot / norm2 if applies and norm2 > 0 else 0.0
    return coefficients


def project_gradients(g_quality, g_semantic, lam: float = 5.0, mode: str = "qgr", groups=None) -> list[torch.Tensor]:
    """Quality-aware gradient regularization, for each unit (a tensor, or a group of `groups`) separately:
    `G = G_d - lam * <G_d, G_g> / ||G_g||^2 * G_g` if `<G_d, G_g> > 0`, else `G = G_d`.

    Args:
        g_quality: the quality-loss gradients `G_d`, one tensor per parameter.
        g_semantic: the semantic-loss gradients `G_g`, same shapes (a zero or None entry leaves `G_d`).
        lam: the strength (5 in GRMP-IQA); 0 returns `G_d`.
        mode: "qgr" (above) or "prograd" (ProGrad's rule: project when `<G_d, G_g> < 0`).
        groups: units of several tensors (`fused_qkv_groups(names)` reproduces the released rule on
            transformers' separate q/k/v tensors); None = every tensor on its own.

    Returns new tensors where a projection happened, the `G_d` tensors themselves elsewhere.
    """
    g_quality = list(g_quality)
    coefficients = projection_coefficients(g_quality, g_semantic, lam, mode, groups)
    return [g_d if c == 0.0 else g_d - c * g_g for g_d, g_g, c in zip(g_quality, g_semantic, coefficients)]


# ----------------------------------------------------------------------------------------------
# The semantic signal
# ----------------------------------------------------------------------------------------------


def scene_prompts(scenes=SCENE_CLASSES, template: str = SCENE_TEMPLATE, literal: bool = False) -> list[str]:
    """`"a photo of a {scene}"` for each scene. Underscores become spaces ("still life") unless `literal`:
    the released code tokenizes the class names as written ("a photo of a still_life")."""
    return [template.format(str(scene) if literal else str(scene).replace("_", " ")) for scene in scenes]


def scene_prompt_ids(tokenizer, scenes=SCENE_CLASSES, template: str = SCENE_TEMPLATE, literal: bool = False) -> torch.Tensor:
    """Token ids (n_scenes, L) of the scene prompts, padded to the longest (CLIP pools at the first EOS)."""
    ids = tokenizer(scene_prompts(scenes, template, literal), padding=True)["input_ids"]
    return torch.tensor([list(map(int, row)) for row in ids], dtype=torch.long)


def scene_text_features(clip, input_ids: torch.Tensor) -> torch.Tensor:
    """Projected (unnormalised) features of plain prompts through `clip`'s text tower (differentiable
    with respect to whatever text parameters require grad)."""
    token_embedding = clip.text_model.embeddings.token_embedding
    input_ids = input_ids.to(token_embedding.weight.device)
    return encode_text_embeddings(clip, token_embedding(input_ids), input_ids)


def scene_logits(clip, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """`exp(logit_scale) * cos(image, scene_k)` with CLIP's frozen logit scale: (batch, n_scenes)."""
    image = F.normalize(image_features, dim=-1)
    text = F.normalize(text_features, dim=-1).to(image.dtype)
    return clip.logit_scale.exp() * image @ text.t()


def scene_loss_sum(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """`L_s` summed over the batch: cross-entropy of the student's scene distribution against the
    teacher's, `-sum_k p_teacher,k * log p_student,k` per sample. (Sum, not mean, so that processes can
    add their shares and divide by the global count.)"""
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teacher {tuple(teacher_probs.shape)}")
    return -(teacher_probs.to(student_logits.dtype) * student_logits.log_softmax(dim=-1)).sum()


class SceneTeacher:
    """The frozen zero-shot teacher: CLIP without prompts scoring the scene prompts.

    `copy_weights=False` scores with `clip` itself: only valid while `clip` is still the backbone before
    fine-tuning (the fine-tuning loop computes every target it will need before its first update and
    caches them). `copy_weights=True` keeps a frozen private copy, for targets computed during training.
    The scene text features are computed once, here.
    """

    def __init__(self, clip, input_ids: torch.Tensor, copy_weights: bool = False):
        if copy_weights:
            clip = copy.deepcopy(clip)
            clip.requires_grad_(False)
        self.clip = clip
        self.copy_weights = copy_weights
        self.input_ids = input_ids
        with torch.no_grad():
            self.text_features = F.normalize(scene_text_features(clip, input_ids), dim=-1)

    @property
    def num_classes(self) -> int:
        return self.text_features.shape[0]

    @torch.no_grad()
    def probs(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Teacher scene distribution (batch, n_scenes) of normalised crops."""
        image = encode_prompted_image(self.clip, None, pixel_values.to(self.text_features.device))
        return scene_logits(self.clip, image, self.text_features).softmax(dim=-1)

    def state_tensors(self, prefix: str = "teacher.") -> dict:
        """The weights of a private copy (for checkpoints); empty when the teacher shares `clip`."""
        if not self.copy_weights:
            return {}
        return {prefix + name: p for name, p in self.clip.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------------------


def two_vjps(params, loss_quality: torch.Tensor, loss_semantic: torch.Tensor, batched: bool = False):
    """`(G_d, G_g)`: the gradients of both losses of one forward pass (two vector-Jacobian products
    through the same graph). `batched=True` does both in one call with
    `torch.autograd.grad(..., is_grads_batched=True)` (vmap over the backward; slower on CPU here).
    Parameters a loss does not reach get zeros."""
    params = list(params)
    if batched:
        stacked = torch.stack([loss_quality, loss_semantic])
        grads = torch.autograd.grad(
            stacked, params, grad_outputs=torch.eye(2, dtype=stacked.dtype, device=stacked.device),
            is_grads_batched=True, allow_unused=True, materialize_grads=True,
        )
        return [g[0] for g in grads], [g[1] for g in grads]
    g_d = torch.autograd.grad(loss_quality, params, retain_graph=True, allow_unused=True, materialize_grads=True)
    g_g = torch.autograd.grad(loss_semantic, params, allow_unused=True, materialize_grads=True)
    return list(g_d), list(g_g)


def qgr_direction(
    g_quality_sum,
    g_semantic_sum,
    loss_sums: tuple[float, float, float],
    lam: float = 5.0,
    mode: str = "qgr",
    accelerator=None,
    groups=None,
) -> tuple[list[torch.Tensor], dict]:
    """Reduce, average and project: the update direction of one QGR step, identical on every process.

    Args:
        g_quality_sum: this process's `G_d`, the gradient of its quality loss SUMMED over its samples.
        g_semantic_sum: the same for the semantic loss (`G_g`); ignored (may be empty) when `lam == 0`.
        loss_sums: this process's `(quality loss sum, semantic loss sum, sample count)`.
        lam, mode, groups: see `project_gradients`.
        accelerator: for the cross-process sums (None: one process).

    Both gradients (and the loss sums) are summed over processes in ONE collective, divided by the
    global sample count (the full-batch mean) and only then projected per unit. Returns
    `(grads, stats)`; `stats` holds the global mean losses (`loss`, `loss_semantic`), `count` and
    `projected` (the fraction of tensors whose gradient was projected).
    """
    g_d = list(g_quality_sum)
    use_semantic = lam != 0
    g_g = list(g_semantic_sum) if use_semantic else []
    if use_semantic and len(g_g) != len(g_d):
        raise ValueError(f"{len(g_d)} quality gradients but {len(g_g)} semantic gradients")
    # the scalars travel in float64 so that the sums are exact for logging and counting
    scalars = torch.tensor([float(v) for v in loss_sums], dtype=torch.float64, device=g_d[0].device)
    reduced = reduce_sum(accelerator, [*g_d, *g_g])
    totals = reduce_sum(accelerator, [scalars])[0]
    total = float(totals[2])
    if total <= 0:
        raise ValueError("no training sample in this step on any process")
    n = len(g_d)
    g_d, g_g = reduced[:n], reduced[n:]
    stats = {"loss": float(totals[0]) / total, "count": int(round(total))}
    if not use_semantic:
        return [g / total for g in g_d], {**stats, "loss_semantic": None, "projected": 0.0}
    # the coefficient lam * <G_d, G_g> / ||G_g||^2 does not change when both are scaled by 1 / total, so it is
    # taken on the global sums, and the mean is formed once, in the combination
    coefficients = projection_coefficients(g_d, g_g, lam, mode, groups)
    grads = [g / total if c == 0.0 else torch.add(g, s, alpha=-c).div_(total) for g, s, c in zip(g_d, g_g, coefficients)]
    stats.update(loss_semantic=float(totals[1]) / total,
                 projected=sum(c != 0.0 for c in coefficients) / max(len(coefficients), 1))
    return grads, stats


class QGRGradient(GradientRule):
    """QGR as the training loop's gradient rule (`trainer.Trainer`); `lam == 0` is plain fine-tuning.

    `losses(batch)` yields, per micro-batch of this process's samples of the step, `(quality loss sum, semantic
    loss sum or None, count)` from one forward pass; the two VJPs of each are summed (`local`), the loop sums
    them over processes, and `combine` averages and projects them (`qgr_direction`). Under fp16 the losses are
    scaled before the VJPs: the projection is scale-invariant and the loop unscales the direction."""

    checks = {"loss": "the fine-tuning (quality) loss", "loss_semantic": "the semantic (scene) loss"}

    def __init__(self, params, losses, lam: float = 5.0, mode: str = "qgr", groups=None, batched_vjp: bool = False):
        self.params, self.losses, self.lam, self.mode = list(params), losses, float(lam), mode
        self.groups, self.batched_vjp = groups, batched_vjp

    def local(self, trainer, batch):
        g_d = g_g = None
        sums = [0.0, 0.0, 0.0]
        for loss_quality, loss_semantic, count in self.losses(batch):
            if self.lam != 0:
                d, g = two_vjps(self.params, trainer.scale(loss_quality), trainer.scale(loss_semantic),
                                batched=self.batched_vjp)
            else:
                d = list(torch.autograd.grad(trainer.scale(loss_quality), self.params, allow_unused=True,
                                             materialize_grads=True))
                g = []
            if g_d is None:
                g_d, g_g = d, g
            else:  # micro-batches: sum the gradient sums
                torch._foreach_add_(g_d, d)
                if g:
                    torch._foreach_add_(g_g, g)
            sums[0] += float(loss_quality.detach())
            sums[1] += float(loss_semantic.detach()) if loss_semantic is not None else 0.0
            sums[2] += count
        if g_d is None:  # no sample of this step here: take part in the reduction with zeros
            g_d = [torch.zeros_like(p) for p in self.params]
            g_g = [torch.zeros_like(p) for p in self.params] if self.lam != 0 else []
        # the sums travel in float64 so that they are exact for logging and counting
        return [*g_d, *g_g], torch.tensor(sums, dtype=torch.float64, device=self.params[0].device)

    def combine(self, trainer, batch, grads, sums):
        n = len(self.params)
        return qgr_direction(grads[:n], grads[n:], tuple(sums.tolist()), self.lam, self.mode, None, self.groups)


__all__ = [
    "GROUPINGS", "PROJECTION_MODES", "QGRGradient", "SCENE_CLASSES", "SCENE_TEMPLATE", "SceneTeacher",
    "fused_qkv_groups", "parameter_groups", "project_gradients", "projection_coefficients", "qgr_direction",
    "scene_logits", "scene_loss_sum", "scene_prompt_ids", "scene_prompts", "scene_text_features", "two_vjps",
]
