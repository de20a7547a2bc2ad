"""Quality-aware gradient regularization: the projection against its formula, and one QGR step against an
independent reference (two separate forward/backward passes through transformers' own CLIP code)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from grmp_iqa_hf.models import build_model
from grmp_iqa_hf.testing import tiny_clip
from grmp_iqa_hf.training.finetune import FewShotTrainer
from grmp_iqa_hf.training.gradreg import (
    SCENE_CLASSES, project_gradients, projection_coefficients, qgr_direction, scene_prompts, two_vjps,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def formula(g_d: np.ndarray, g_g: np.ndarray, lam: float, prograd: bool = False) -> np.ndarray:
    """The rule written out in float64 numpy."""
    dot, norm2 = float(np.sum(g_d * g_g)), float(np.sum(g_g * g_g))
    applies = dot < 0 if prograd else dot > 0
    if not applies or norm2 == 0:
        return g_d
    return g_d - lam * dot / norm2 * g_g


def random_case(seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (7,), (2, 3, 4), (6,), (4, 4)]
    g_d = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    g_g = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    g_g[3] = torch.zeros(6, dtype=torch.float64)  # zero G_g
    g_g[0] = g_d[0] * 0.5 + 0.1 * g_g[0]  # strongly aligned: positive dot
    g_g[4] = -g_d[4] + 0.1 * g_g[4]  # opposed: negative dot
    return g_d, g_g


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("lam", [5.0, 1.0])
def test_project_gradients_matches_formula(seed, lam):
    g_d, g_g = random_case(seed)
    out = project_gradients(g_d, g_g, lam)
    dots = [float((a * b).sum()) for a, b in zip(g_d, g_g)]
    assert dots[0] > 0 and dots[4] < 0 and dots[3] == 0  # the case mix is what it claims to be
    for a, b, o in zip(g_d, g_g, out):
        expected = formula(a.numpy(), b.numpy(), lam)
        np.testing.assert_allclose(o.numpy(), expected, rtol=1e-12, atol=1e-12)
    # zero G_g and negative dot leave G_d untouched; the aligned one changes
    assert torch.equal(out[3], g_d[3]) and torch.equal(out[4], g_d[4])
    assert not torch.allclose(out[0], g_d[0])


def test_projection_removes_the_semantic_component():
    g_d, g_g = random_case(3)
    out = project_gradients(g_d, g_g, lam=1.0)
    # lambda = 1: the projected gradient is orthogonal to G_g
    assert abs(float((out[0] * g_g[0]).sum())) < 1e-10
    # lambda = 0: nothing changes
    assert all(torch.equal(o, d) for o, d in zip(project_gradients(g_d, g_g, 0.0), g_d))


@pytest.mark.parametrize("seed", [0, 1])
def test_prograd_option_matches_its_rule(seed):
    g_d, g_g = random_case(seed)
    out = project_gradients(g_d, g_g, 1.0, mode="prograd")
    for a, b, o in zip(g_d, g_g, out):
        np.testing.assert_allclose(o.numpy(), formula(a.numpy(), b.numpy(), 1.0, prograd=True), rtol=1e-12, atol=1e-12)
    assert torch.equal(out[0], g_d[0])  # aligned: ProGrad keeps it
    assert not torch.allclose(out[4], g_d[4])  # conflicting: ProGrad projects it
    assert abs(float((out[4] * g_g[4]).sum())) < 1e-10


def test_projection_errors_are_clear():
    with pytest.raises(ValueError, match="mode"):
        project_gradients([torch.ones(2)], [torch.ones(2)], mode="nope")
    with pytest.raises(ValueError, match="shapes differ"):
        project_gradients([torch.ones(2)], [torch.ones(3)])
    with pytest.raises(ValueError, match="1 quality gradients but 2"):
        projection_coefficients([torch.ones(2)], [torch.ones(2), torch.ones(2)])


def test_qgr_direction_averages_before_projecting():
    g_d, g_g = random_case(4)
    grads, stats = qgr_direction([g * 8 for g in g_d], [g * 8 for g in g_g], (4.0, 2.0, 8.0), lam=5.0)
    for a, b, o in zip(g_d, g_g, grads):
        np.testing.assert_allclose(o.numpy(), formula(a.numpy(), b.numpy(), 5.0), rtol=1e-10, atol=1e-12)
    assert stats["loss"] == 0.5 and stats["loss_semantic"] == 0.25 and stats["count"] == 8
    assert stats["projected"] == pytest.approx(sum(c != 0 for c in projection_coefficients(g_d, g_g)) / 5)


def test_scene_prompts():
    assert len(SCENE_CLASSES) == 9
    assert scene_prompts()[0] == "a photo of a animal" and scene_prompts()[7] == "a photo of a still life"


def test_batched_vjps_equal_two_backward_passes():
    x = torch.randn(4, 3, dtype=torch.float64)
    w = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, dtype=torch.float64, requires_grad=True)
    h = torch.tanh(x @ w) @ v
    seq = two_vjps([w, v], h.square().sum(), h.sum())
    h = torch.tanh(x @ w) @ v
    bat = two_vjps([w, v], h.square().sum(), h.sum(), batched=True)
    for a, b in zip(seq[0] + seq[1], bat[0] + bat[1]):
        torch.testing.assert_close(a, b)


def _images(n, seed=0, size=(80, 90)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)) for _ in range(n)], rng.random(n)


def grouped_formula(names, g_d, g_g, lam, prograd, fused):
    """The rule per unit: with `fused`, each layer's q/k/v weights (and biases) are one unit, as OpenAI CLIP's
    fused `in_proj` tensors: the rule is applied to their concatenation and the result split back."""
    units = {}
    for i, name in enumerate(names):
        key = name.replace("q_proj", "in_proj").replace("k_proj", "in_proj").replace("v_proj", "in_proj") if fused else name
        units.setdefault(key, []).append(i)
    out = [None] * len(names)
    for members in units.values():
        d = np.concatenate([g_d[i].double().numpy().ravel() for i in members])
        g = np.concatenate([g_g[i].double().numpy().ravel() for i in members])
        projected, offset = formula(d, g, lam, prograd), 0
        for i in members:
            n = g_d[i].numel()
            out[i] = torch.from_numpy(projected[offset : offset + n].reshape(g_d[i].shape))
            offset += n
    return out


@pytest.mark.parametrize("mode,grouping", [("qgr", "fused_qkv"), ("qgr", "per_tensor"), ("prograd", "fused_qkv")])
def test_qgr_step_matches_independent_reference(mode, grouping):
    """One step of the trainer (SGD, no decay: the update is lr x the direction) against G_d from the model's
    own forward/loss and G_g from transformers' CLIP text tower + a separate teacher CLIPModel, with the rule
    applied per OpenAI-CLIP tensor (q/k/v fused) or per transformers tensor."""
    lam, seed = 5.0, 0
    lr = 1e3  # a large step, so that the rounding of parameter + update is far below the update
    images, labels = _images(6)
    model = build_model("tiny-random", seed=seed).double()  # float64 end to end: tight tolerances
    trainer = FewShotTrainer(model, images, labels, qgr_lambda=lam, projection=mode, top_k=2, augment=False,
                             learning_rate=lr, weight_decay=0.0, progress=False, grouping=grouping,
                             prompt_dropout=False)
    names, params = trainer.names, trainer.params
    before = [p.detach().clone() for p in params]
    pixels = trainer.images.batch(range(6)).double()

    # G_d: the model's own forward and loss (mean over the batch)
    model.zero_grad(set_to_none=True)
    target = torch.tensor(labels, dtype=torch.float64)
    model(pixel_values=pixels, labels=target).loss.backward()
    g_d = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    # G_g: student scene distribution through transformers' CLIPModel text tower; teacher = a separate copy
    # of the original backbone through CLIPModel.forward
    _, tokenizer = tiny_clip(seed=seed)
    enc = tokenizer(scene_prompts(), padding=True, return_tensors="pt")
    teacher = tiny_clip(seed=seed)[0].double()
    with torch.no_grad():
        p_teacher = teacher(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                            pixel_values=pixels).logits_per_image.softmax(-1)
    model.zero_grad(set_to_none=True)
    image = F.normalize(model.get_image_features(pixels), dim=-1)
    text = F.normalize(model.clip.get_text_features(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
                       .pooler_output, dim=-1)
    logits = model.clip.logit_scale.exp() * image @ text.t()
    loss_s = -(p_teacher * logits.log_softmax(-1)).sum(-1).mean()
    loss_s.backward()
    g_g = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    model.zero_grad(set_to_none=True)

    expected = grouped_formula(names, g_d, g_g, lam, mode == "prograd", grouping == "fused_qkv")
    if grouping == "fused_qkv":  # the two rules differ on this step (else the test could not tell them apart)
        per_tensor = grouped_formula(names, g_d, g_g, lam, mode == "prograd", False)
        assert max(float((a - b).abs().max()) for a, b in zip(expected, per_tensor)) > 1e-3 * max(
            float(e.abs().max()) for e in expected)
    stats = trainer.train_step(list(range(6)), epoch=0)
    update = [(b - p.detach()).double() / lr for b, p in zip(before, params)]
    # A key-projection bias has a true gradient of 0 (softmax ignores it): there both sides project rounding
    # noise, so the absolute floor is set at float64 noise of the whole gradient. A wrong rule moves entries
    # by the order of the gradient itself.
    scale = max(float(e.abs().max()) for e in expected)
    for name, u, e in zip(names, update, expected):
        torch.testing.assert_close(u, e, rtol=1e-7, atol=1e-10 * scale, msg=lambda m: f"{name}: {m}")
    # the reference is not trivially the plain gradient: some tensors were projected, the context was not
    assert 0 < stats["projected"] < 1
    changed = [n for n, u, d in zip(names, update, g_d) if not torch.allclose(u, d.double(), atol=1e-9)]
    assert changed and "text_context.ctx" not in changed
    assert float(g_g[names.index("text_context.ctx")].abs().max()) == 0.0


def test_qgr_step_losses_are_the_model_losses():
    images, labels = _images(5, seed=1)
    model = build_model("tiny-random", seed=1)
    trainer = FewShotTrainer(model, images, labels, top_k=1, augment=False, progress=False, prompt_dropout=False)
    pixels = trainer.images.batch(range(5))
    with torch.no_grad():
        expected = float(model(pixel_values=pixels, labels=torch.tensor(labels, dtype=torch.float32)).loss)
    stats = trainer.train_step(list(range(5)), epoch=0)
    assert stats["loss"] == pytest.approx(expected, rel=1e-5)
    assert stats["loss_semantic"] > 0 and stats["count"] == 5
