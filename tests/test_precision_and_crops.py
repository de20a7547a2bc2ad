"""`predict(..., dtype=)` (reduced precision) and `predict(..., crops=N)` (test-time multi-crop)."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from grmp_iqa_hf.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return build_model("tiny-random", seed=0, num_visual_prompts=4)


def photos(count=6):
    return [np.random.default_rng(i).integers(0, 256, (90 + 7 * i, 120 - 3 * i, 3), dtype=np.uint8)
            for i in range(count)]


def crop_scores(model, image, positions):
    """The model's score of each crop at `positions` of the resized image, one forward per crop."""
    processor = model.image_processor
    resized = processor.resize(Image.fromarray(image))
    pixels = np.asarray(resized).transpose(2, 0, 1)
    with torch.no_grad():
        return [model(pixel_values=torch.from_numpy(processor.crop_and_normalize(pixels, top, left))[None]).scores.item()
                for top, left in positions]


def test_crop_positions_are_the_corners_and_centre_for_five():
    from grmp_iqa_hf import IQAImageProcessor

    processor = IQAImageProcessor(crop_size=64, resize_size=70)
    assert processor.crop_positions(70, 70, 1) == [(3, 3)]  # the centre crop (torchvision's rounding)
    assert processor.crop_positions(70, 70, 5) == [(0, 0), (0, 6), (3, 3), (6, 0), (6, 6)]
    assert len(set(processor.crop_positions(70, 70, 9))) == 9
    wide = processor.crop_positions(200, 80, 15)
    assert len(wide) == 15 and all(0 <= t <= 16 and 0 <= l <= 136 for t, l in wide)
    with pytest.raises(ValueError, match="crops must be a positive integer"):
        processor.crop_positions(70, 70, 0)
    with pytest.raises(ValueError, match="cannot be combined"):
        processor(photos(1), crops=5, crop="random")


def test_five_crops_are_deterministic_and_the_mean_of_the_single_crop_scores(model):
    images = photos()
    five = model.predict(images, crops=5)
    np.testing.assert_array_equal(five, model.predict(images, crops=5, batch_size=7))  # any batching
    processor = model.image_processor
    for image, score in zip(images, five):
        resized = processor.resize(Image.fromarray(image))
        positions = processor.crop_positions(resized.width, resized.height, 5)
        assert len(set(positions)) == 5
        assert abs(score - np.mean(crop_scores(model, image, positions))) < 1e-6
    single = model.predict(images)
    np.testing.assert_array_equal(single, model.predict(images, crops=1))
    assert np.abs(five - single).max() > 1e-4  # the crops do see different pixels


def test_reduced_precision_under_autocast_leaves_the_model_alone(model):
    images = photos()
    fp32 = model.predict(images)
    for dtype in ("bfloat16", torch.float16):
        reduced = model.predict(images, dtype=dtype)
        assert np.abs(reduced - fp32).max() < 0.05 and np.abs(reduced - fp32).max() > 0  # it did run reduced
    assert next(model.parameters()).dtype == torch.float32
    np.testing.assert_array_equal(model.predict(images), fp32)  # the fp32 text features were not replaced
    with pytest.raises(ValueError, match="dtype must be one of"):
        model.predict(images, dtype="int8")


def test_a_model_loaded_in_bfloat16_scores_natively(model, tmp_path):
    from grmp_iqa_hf import GRMPIQAModel

    model.save_pretrained(tmp_path)
    bf16 = GRMPIQAModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert next(bf16.parameters()).dtype == torch.bfloat16
    images = photos()
    scores = bf16.predict(images)
    assert scores.dtype == np.float32 and np.abs(scores - model.predict(images)).max() < 0.05


def test_bfloat16_ranks_the_clive_photos_like_float32(model, clive_dir):
    """Acceptance: on all 627 photos, SRCC(bf16, fp32) > 0.99 (tiny model; the preprocessing is shared)."""
    files = sorted(str(p) for p in (clive_dir / "images").iterdir())
    processor = model.image_processor
    pixels = torch.cat([processor(files[i : i + 64], return_tensors="pt")["pixel_values"]
                        for i in range(0, len(files), 64)])
    with torch.no_grad():
        fp32 = torch.cat([model(pixel_values=chunk).scores for chunk in pixels.split(64)])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = torch.cat([model(pixel_values=chunk).scores for chunk in pixels.split(64)])
    assert len(files) == 627
    srcc = spearmanr(fp32.float().numpy(), bf16.float().numpy()).statistic
    assert srcc > 0.99, srcc


def test_the_command_line_scores_with_crops_dtype_and_decoding_workers(model, tmp_path):
    """`grmp-iqa score --crops 5` is `predict(crops=5)`; DataLoader workers (2) give what in-process decoding (0)
    gives; `--dtype bfloat16` loads the weights in bf16; a broken file still gets its own row."""
    import json

    from conftest import write_random_images
    from grmp_iqa_hf.cli import main

    model.save_pretrained(tmp_path / "model")
    (tmp_path / "images").mkdir()
    paths, _ = write_random_images(tmp_path / "images", 5, lambda i: 60 + 9 * i, 90, seed=2)
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")

    def scores(*flags):
        out = tmp_path / "scores.json"
        status = main(["score", str(tmp_path / "images"), "--model", str(tmp_path / "model"), "--output", str(out),
                       "--quiet", "--batch-size", "2", *flags])
        rows = json.loads(out.read_text())
        assert status == 1 and [r["path"].endswith("broken.png") for r in rows["predictions"]].count(True) == 1
        return rows

    five = scores("--crops", "5", "--num-workers", "0")
    good = [r for r in five["predictions"] if r["error"] == ""]
    expected = model.predict([r["path"] for r in good], crops=5)
    np.testing.assert_allclose([r["score"] for r in good], expected, rtol=0, atol=1e-6)
    assert scores("--crops", "5", "--num-workers", "2")["predictions"] == five["predictions"]
    bf16 = scores("--dtype", "bfloat16")
    assert bf16["provenance"]["dtype"] == "bfloat16"
    single = model.predict([r["path"] for r in good])
    bf16_scores = [r["score"] for r in bf16["predictions"] if r["error"] == ""]
    assert np.abs(np.array(bf16_scores) - single).max() < 0.05
