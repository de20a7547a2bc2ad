"""`grmp_iqa_hf.metrics`: `QualityScore` (a torchmetrics metric) agrees with `model.predict`, syncs across 2
processes, and `quality_loss_fn` is a differentiable score; `modeling.tensor_preprocessing` checks its inputs."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT

needs_torchmetrics = pytest.mark.skipif(importlib.util.find_spec("torchmetrics") is None,
                                        reason='torchmetrics not installed (pip install "grmp-iqa-hf[metrics]")')


def eight_bit_images(count: int, side: int, seed: int = 0) -> torch.Tensor:
    """Random images with values k/255, so that `predict`'s 8-bit decoding loses nothing."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, side, side), generator=generator).float() / 255


@pytest.fixture(scope="module")
def tiny_model():
    """The default tiny model: resize to 70 x 70 (bilinear), centre crop 64."""
    from grmp_iqa_hf.models import build_model

    return build_model("tiny-random").eval()


@pytest.fixture(scope="module")
def exact_dir(tmp_path_factory):
    """A saved tiny model whose preprocessing leaves 64 x 64 images unresampled (resize size == crop size)."""
    from grmp_iqa_hf.models import build_model

    path = tmp_path_factory.mktemp("exact") / "model"
    build_model("tiny-random", resize_size=64).save_pretrained(path)
    return path


@needs_torchmetrics
def test_without_resampling_the_scores_are_predicts(exact_dir, one_thread):
    from grmp_iqa_hf.metrics import QualityScore
    from grmp_iqa_hf.models import load_model

    model = load_model(str(exact_dir))
    assert model.image_processor.resized_size(64, 64) == (64, 64)
    images = eight_bit_images(5, 64)
    expected = model.predict(list(images))
    for preprocessing in ("predict", "tensor"):  # without resampling, the float path is predict's too
        mean = QualityScore(str(exact_dir), preprocessing=preprocessing)  # loaded by path
        mean.update(images)
        assert abs(mean.compute().item() - expected.mean()) < 1e-6
        every = QualityScore(model, reduction="none", batch_size=2, preprocessing=preprocessing)
        every.update(images[:2])
        every.update(images[2:])
        assert np.abs(every.compute().numpy() - expected).max() < 1e-6


@needs_torchmetrics
def test_resampled_scores_equal_predict_and_the_float_path_differs_by_8_bit_rounding_only(tiny_model, one_thread):
    """224 x 224 images resized to 70 x 70. The metric (default preprocessing="predict") gives predict's scores
    (acceptance: < 1e-5). The float path (preprocessing="tensor", quality_loss_fn) resamples in float: measured
    7.4e-5 from predict on this tiny random model, because Pillow rounds to 8 bits after each of its two passes,
    which moves nearly every pixel by up to 1/255. Emulating that rounding brings 99% of the pixels to Pillow's
    exact values and the scores within 2e-5 (the rest: Pillow's fixed-point weights), so rounding is the whole
    story."""
    from PIL import Image

    from grmp_iqa_hf.metrics import QualityScore
    from grmp_iqa_hf.modeling.tensor_preprocessing import preprocess_tensor

    images = eight_bit_images(6, 224)
    expected = tiny_model.predict(list(images))
    metric = QualityScore(tiny_model, reduction="none")
    metric.update(images)
    assert np.abs(metric.compute().numpy() - expected).max() < 1e-6
    metric = QualityScore(tiny_model, reduction="none", preprocessing="tensor")
    metric.update(images)
    difference = np.abs(metric.compute().numpy() - expected).max()
    assert 1e-6 < difference < 2e-4, difference

    processor = tiny_model.image_processor
    assert processor.resample == "bilinear" and processor.resized_size(224, 224) == (70, 70)
    pillow = torch.tensor(np.stack([np.asarray(_pil(image).resize((70, 70), Image.Resampling.BILINEAR))
                                    for image in images]))
    pillow = pillow.permute(0, 3, 1, 2).float() / 255

    def rounded(x):
        return (x * 255).round() / 255

    def resize(x, size):
        return torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)

    two_pass = rounded(resize(rounded(resize(images, (224, 70))), (70, 70)))  # Pillow: horizontal pass first
    assert ((two_pass - pillow).abs() < 1e-4).float().mean() > 0.99
    assert ((resize(images, (70, 70)) - pillow).abs() <= 1 / 255 + 1e-6).all()
    with torch.no_grad():
        emulated = tiny_model(pixel_values=preprocess_tensor(processor, two_pass)).scores.numpy()
    assert np.abs(emulated - expected).max() < 2e-5


def _pil(image: torch.Tensor):
    from PIL import Image

    return Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy())


@needs_torchmetrics
def test_clive_photos(tiny_model, clive_dir, one_thread):
    """8 real photos resized to 224 x 224 (8-bit) and scored as tensors: predict's scores (< 1e-5); the float path
    within the bound above (measured 4.8e-5)."""
    from PIL import Image

    from grmp_iqa_hf.metrics import QualityScore

    paths = sorted((clive_dir / "images").iterdir())[:8]
    photos = [Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR) for path in paths]
    images = torch.stack([torch.from_numpy(np.array(photo)).permute(2, 0, 1) for photo in photos]).float() / 255
    expected = tiny_model.predict(photos)
    metric = QualityScore(tiny_model, reduction="none")
    metric.update(images)
    assert np.abs(metric.compute().numpy() - expected).max() < 1e-5
    metric = QualityScore(tiny_model, reduction="none", preprocessing="tensor")
    metric.update(images)
    assert np.abs(metric.compute().numpy() - expected).max() < 2e-4


@needs_torchmetrics
def test_chunks_reductions_and_attributes(tiny_model, one_thread):
    from grmp_iqa_hf.metrics import QualityScore

    images = eight_bit_images(5, 80, seed=1)
    whole, parts = QualityScore(tiny_model), QualityScore(tiny_model, batch_size=2)
    whole.update(images)
    parts.update(images[:3])
    parts.update(images[3:])
    every = QualityScore(tiny_model, reduction="none")
    every.update(images[:1])
    every.update(images[1:])
    assert abs(whole.compute().item() - parts.compute().item()) < 1e-6
    assert abs(every.compute().mean().item() - whole.compute().item()) < 1e-6 and every.compute().shape == (5,)

    assert QualityScore.lower_better is False and QualityScore.score_range == (0, 1)
    assert QualityScore.higher_is_better and not QualityScore.is_differentiable and not QualityScore.full_state_update
    assert whole.model is tiny_model and any(m is tiny_model for m in whole.children())  # moved by .to(device)
    whole.train()
    assert whole.training and not tiny_model.training
    assert not any(p.requires_grad for p in tiny_model.parameters())
    with pytest.raises(ValueError, match="reduction"):
        QualityScore(tiny_model, reduction="sum")
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        QualityScore(tiny_model, preprocessing="pil")
    with pytest.raises(ValueError, match=r"float tensor \(N, 3, H, W\)"):
        QualityScore(tiny_model).update((images * 255).byte())
    with pytest.raises(TypeError, match="quality model"):
        QualityScore(torch.nn.Linear(2, 2))


def test_the_score_is_a_loss(one_thread):
    """Gradients reach the images, not the model; 20 ascent steps raise the score."""
    from grmp_iqa_hf.metrics import quality_loss_fn
    from grmp_iqa_hf.models import build_model

    model = build_model("tiny-random")
    quality = quality_loss_fn(model)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    images = eight_bit_images(2, 80, seed=2).requires_grad_(True)
    quality(images).backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().max() > 0
    assert all(p.grad is None for p in model.parameters())

    model.train()  # a caller's train() must not turn prompt dropout on
    assert quality_loss_fn(model, reduction="none")(images).shape == (2,) and not model.training
    with torch.no_grad():
        before = quality(images).item()
    optimizer = torch.optim.Adam([images], lr=0.01)
    for _ in range(20):
        optimizer.zero_grad()
        (1 - quality(images)).backward()
        optimizer.step()
        with torch.no_grad():
            images.clamp_(0, 1)
    after = model.predict(list(images.detach()))  # scored independently, through 8-bit images and Pillow
    assert after.mean() > before + 1e-3, (before, after)


def test_preprocess_tensor_checks_its_input(tiny_model):
    from grmp_iqa_hf.modeling.image_processing_iqa import IQAImageProcessor
    from grmp_iqa_hf.modeling.tensor_preprocessing import preprocess_tensor

    processor = tiny_model.image_processor
    images = eight_bit_images(2, 72)
    for bad, message in [(images * 255, "divide by 255"), (images - 0.5, "normalised"), (images[0], r"\(N, 3, H, W\)"),
                         (images[:, :1], r"\(N, 3, H, W\)"), ((images * 255).byte(), "float"),
                         (images.clone().fill_(float("nan")), "NaN")]:
        with pytest.raises(ValueError, match=message):
            preprocess_tensor(processor, bad)
    with pytest.raises(ValueError, match="Lanczos"):
        preprocess_tensor(IQAImageProcessor(resample="lanczos"), images)
    # small excursions (an unclamped optimisation step) are clamped like predict clips
    assert torch.equal(preprocess_tensor(processor, images * 1.05), preprocess_tensor(processor, (images * 1.05).clamp(0, 1)))
    assert preprocess_tensor(processor, images.double()).dtype == torch.float64
    # nearest: exactly Pillow's pixels; bicubic without antialiasing: the processor's torch resize before rounding
    for resample, bound in [("nearest", 1e-6), ("bicubic_no_antialias", 0.5 / 255 + 1e-6)]:
        other = IQAImageProcessor(resample=resample, do_normalize=False)
        expected = other(list(eight_bit_images(2, 150)), return_tensors="pt")["pixel_values"]
        assert (preprocess_tensor(other, eight_bit_images(2, 150)) - expected).abs().max() <= bound, resample


def test_quality_score_needs_torchmetrics_but_the_loss_does_not(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics", None)  # `import torchmetrics` now raises ImportError
    spec = importlib.util.spec_from_file_location("grmp_iqa_hf._metrics_without_torchmetrics",
                                                  REPO_ROOT / "grmp_iqa_hf" / "metrics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.quality_loss_fn)
    with pytest.raises(ImportError, match=r'pip install "grmp-iqa-hf\[metrics\]"'):
        module.QualityScore


TWO_PROCESS_SCRIPT = """
import json, sys
import torch
from accelerate import Accelerator
from grmp_iqa_hf.metrics import QualityScore
from grmp_iqa_hf.models import load_model

accelerator = Accelerator(cpu=True)  # joins the 2 processes over gloo
rank = accelerator.process_index
assert accelerator.num_processes == 2
generator = torch.Generator().manual_seed(0)
images = torch.randint(0, 256, (7, 3, 80, 80), generator=generator).float() / 255
mine = [images[:2], images[2:5]] if rank == 0 else [images[5:]]  # uneven halves, rank 0 first
model = load_model(sys.argv[1])
values = {}
for reduction in ("mean", "none"):
    metric = QualityScore(model, reduction=reduction)
    for part in mine:
        metric.update(part)
    values[reduction] = metric.compute().tolist()
with open(f"{sys.argv[2]}/rank{rank}.json", "w") as f:
    json.dump(values, f)
"""


@pytest.mark.slow
@needs_torchmetrics
def test_two_processes_agree_with_one(exact_dir, tmp_path, one_thread):
    """`accelerate launch`, 2 CPU processes over gloo (the repository's 2-process config; see its comment)."""
    from grmp_iqa_hf.metrics import QualityScore
    from grmp_iqa_hf.models import load_model

    script = tmp_path / "two.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                             str(REPO_ROOT / "examples" / "accelerate" / "multi_cpu_2proc.yaml"), str(script),
                             str(exact_dir), str(tmp_path)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    images, model = eight_bit_images(7, 80), load_model(str(exact_dir))
    for reduction in ("mean", "none"):
        one = QualityScore(model, reduction=reduction)
        one.update(images)
        expected = np.atleast_1d(one.compute().numpy())
        for rank in (0, 1):
            got = np.atleast_1d(json.loads((tmp_path / f"rank{rank}.json").read_text())[reduction])
            assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-6, (reduction, rank, got)
