"""Tests for the synthetic distortion engine and the synthetic IQA dataset builder."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from grmp_iqa_hf.data.distortions import (
    DISTORTION_GROUPS,
    DISTORTION_PARAMS,
    DISTORTIONS,
    NUM_LEVELS,
    distort,
)
from grmp_iqa_hf.data.synthetic import (
    REFERENCE_NAME,
    build_synthetic_dataset,
    iter_distortion_tasks,
    level_to_mos,
    load_pristine_images,
)

LEVELS = tuple(range(1, NUM_LEVELS + 1))


def _psnr(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def pristine_small():
    # two natural photos shipped with scikit-image, downsized for speed
    return load_pristine_images(size=128)[:3:2]  # astronaut (square), coffee (landscape)


@pytest.fixture(scope="module")
def pristine_tiny(pristine_small):
    return [(name, img.resize((40, 32), Image.Resampling.BILINEAR)) for name, img in pristine_small]


# ---------------------------------------------------------------------------
# distortions
# ---------------------------------------------------------------------------
def test_distortion_registry():
    assert len(DISTORTIONS) >= 20
    assert len(set(DISTORTIONS)) == len(DISTORTIONS)
    for name in (
        "gaussian_blur", "lens_blur", "motion_blur", "color_diffusion", "color_shift",
        "color_quantization", "color_saturation_decrease", "color_saturation_increase",
        "jpeg2000", "jpeg", "white_noise", "white_noise_color_component", "impulse_noise",
        "multiplicative_noise", "denoise", "brighten", "darken", "mean_shift", "jitter",
        "non_eccentricity_patch", "pixelate", "quantization", "color_block", "high_sharpen",
        "contrast_change",
    ):
        assert name in DISTORTIONS
    assert set(DISTORTION_GROUPS) == set(DISTORTIONS)
    assert set(DISTORTION_GROUPS.values()) == {
        "blur", "color", "compression", "noise", "brightness", "spatial", "sharpness_contrast",
    }
    assert all(len(DISTORTION_PARAMS[d]) == NUM_LEVELS for d in DISTORTIONS)


def test_all_types_all_levels(pristine_small):
    steps = falling = 0
    non_monotone = []
    for ref_name, ref in pristine_small:
        for name in DISTORTIONS:
            psnrs = []
            for level in LEVELS:
                out = distort(ref, name, level, seed=7)
                assert isinstance(out, Image.Image)
                assert out.mode == "RGB" and out.size == ref.size, (name, level)
                again = distort(ref, name, level, seed=7)
                assert out.tobytes() == again.tobytes(), f"{name} level {level} not deterministic"
                psnrs.append(_psnr(ref, out))
            assert np.isfinite(psnrs[-1]), f"{name} level 5 leaves {ref_name} unchanged"
            for a, b in zip(psnrs, psnrs[1:]):
                steps += 1
                if b < a:
                    falling += 1
                else:
                    non_monotone.append((ref_name, name, round(a, 2), round(b, 2)))
    ratio = falling / steps
    print(f"PSNR falls with the level in {falling}/{steps} level steps ({ratio:.1%}); exceptions: {non_monotone}")
    assert steps == len(pristine_small) * len(DISTORTIONS) * (NUM_LEVELS - 1)
    assert ratio >= 0.9


def test_array_input_and_seed_effect(pristine_small):
    ref = pristine_small[0][1]
    arr = np.asarray(ref)
    from_pil = distort(ref, "white_noise", 3, seed=1)
    from_arr = distort(arr, "white_noise", 3, seed=1)
    assert from_pil.tobytes() == from_arr.tobytes()
    other = distort(arr, "white_noise", 3, seed=2)
    assert other.tobytes() != from_pil.tobytes()
    # the input array is not modified and the global RNG is not used
    before = arr.copy()
    state = np.random.get_state()[1].copy()
    distort(arr, "impulse_noise", 5, seed=0)
    assert np.array_equal(arr, before)
    assert np.array_equal(np.random.get_state()[1], state)
    # non-RGB PIL input is converted
    assert distort(ref.convert("L"), "jpeg", 2).mode == "RGB"


def test_invalid_name_and_level(pristine_small):
    ref = pristine_small[0][1]
    with pytest.raises(ValueError, match="gaussian_blur"):
        distort(ref, "no_such_distortion", 1)
    for bad in (0, 6, 2.5, "3", True):
        with pytest.raises(ValueError, match=r"\[1, 2, 3, 4, 5\]"):
            distort(ref, "jpeg", bad)


# ---------------------------------------------------------------------------
# pristine images
# ---------------------------------------------------------------------------
def test_load_pristine_images_offline():
    images = load_pristine_images(size=64)
    assert len(images) >= 6
    names = [n for n, _ in images]
    assert len(set(names)) == len(names)
    assert "astronaut" in names and "coffee" in names
    for _, img in images:
        assert isinstance(img, Image.Image) and img.mode == "RGB"
        assert min(img.size) == 64


def test_load_pristine_images_from_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "b.PNG")
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(tmp_path / "sub" / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(tmp_path / "a.JPEG")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_pristine_images(tmp_path)
    assert [n for n, _ in images] == ["a.JPEG", "b.PNG", "sub/a.jpg"]
    assert all(img.mode == "RGB" for _, img in images)
    resized = load_pristine_images(tmp_path, size=10)
    assert [img.size for _, img in resized] == [(10, 15), (15, 10), (15, 10)]


# ---------------------------------------------------------------------------
# synthetic dataset builder
# ---------------------------------------------------------------------------
THREE = ("gaussian_blur", "jpeg", "white_noise")


def test_build_synthetic_dataset(pristine_tiny):
    import datasets

    ds = build_synthetic_dataset(pristine_tiny, distortions=THREE, seed=3)
    assert isinstance(ds, datasets.Dataset)
    assert len(ds) == 2 * 3 * 5 == 30
    assert set(ds.column_names) == {"image", "mos", "ref", "distortion", "level"}
    assert isinstance(ds.features["image"], datasets.Image)
    row = ds[0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (40, 32)
    assert isinstance(row["mos"], float) and isinstance(row["level"], int)
    assert isinstance(row["ref"], str) and isinstance(row["distortion"], str)
    mos = np.asarray(ds["mos"])
    assert np.all((mos >= 0) & (mos <= 1))
    assert sorted(set(ds["ref"])) == sorted(n for n, _ in pristine_tiny)
    assert set(ds["distortion"]) == set(THREE)
    # higher level -> strictly lower mos, identical across types and references
    levels = np.asarray(ds["level"])
    for lv in range(1, 5):
        assert mos[levels == lv].min() > mos[levels == lv + 1].max()
    assert np.allclose([level_to_mos(lv) for lv in levels], mos)

    tasks = iter_distortion_tasks(ds)
    assert list(tasks) == list(THREE)
    assert sorted(i for rows in tasks.values() for i in rows) == list(range(30))
    for name, rows in tasks.items():
        assert len(rows) == 10 and all(ds["distortion"][i] == name for i in rows)


def test_build_synthetic_dataset_determinism_and_independence(pristine_tiny):
    a = build_synthetic_dataset(pristine_tiny, distortions=THREE, seed=5)
    b = build_synthetic_dataset(pristine_tiny, distortions=THREE, seed=5)
    assert a["mos"] == b["mos"]
    imgs_a = [r["image"].tobytes() for r in a]
    assert imgs_a == [r["image"].tobytes() for r in b]
    # a row does not depend on which other rows are built
    sub = build_synthetic_dataset(pristine_tiny, distortions=["white_noise"], levels=(4,), seed=5)
    for row in sub:
        idx = next(
            i for i, r in enumerate(a)
            if r["ref"] == row["ref"] and r["distortion"] == "white_noise" and r["level"] == 4
        )
        assert row["image"].tobytes() == imgs_a[idx]
    c = build_synthetic_dataset(pristine_tiny, distortions=["white_noise"], levels=(4,), seed=6)
    assert c[0]["image"].tobytes() != sub[0]["image"].tobytes()


@pytest.mark.parametrize("label", ["psnr", "ssim"])
def test_full_reference_labels(pristine_tiny, label):
    ds = build_synthetic_dataset(
        pristine_tiny, distortions=["white_noise", "gaussian_blur"], label=label, include_reference=True
    )
    assert len(ds) == 2 * (1 + 2 * 5)
    mos = np.asarray(ds["mos"])
    assert np.all((mos >= 0) & (mos <= 1))
    dist = np.asarray(ds["distortion"])
    levels = np.asarray(ds["level"])
    assert np.all(mos[dist == REFERENCE_NAME] == 1.0) and np.all(levels[dist == REFERENCE_NAME] == 0)
    assert mos[dist != REFERENCE_NAME].max() < 1.0
    # mean quality falls with the level
    means = [mos[levels == lv].mean() for lv in range(1, 6)]
    assert all(x > y for x, y in zip(means, means[1:]))
    tasks = iter_distortion_tasks(ds)
    assert set(tasks) == {"white_noise", "gaussian_blur"}
    with_ref = iter_distortion_tasks(ds, include_reference=True)
    assert all(len(with_ref[k]) == len(tasks[k]) + 2 for k in tasks)


def test_build_synthetic_dataset_output_dir(pristine_tiny, tmp_path):
    import datasets

    out = tmp_path / "synthetic"
    ds = build_synthetic_dataset(pristine_tiny, distortions=THREE, seed=1, output_dir=out, include_reference=True)
    assert len(ds) == 32
    with open(out / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["file_name", "mos", "ref", "distortion", "level"]
    assert len(rows) == 32 and all((out / r["file_name"]).is_file() for r in rows)
    mos_by_file = {r["file_name"]: float(r["mos"]) for r in rows}
    # in-memory and on-disk builds agree
    mem = build_synthetic_dataset(pristine_tiny, distortions=THREE, seed=1, include_reference=True)
    assert mem["mos"] == ds["mos"]
    assert [r["image"].tobytes() for r in mem] == [r["image"].tobytes() for r in ds]

    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == 32
    assert {"image", "mos", "ref", "distortion", "level"} <= set(loaded.column_names)
    paths = loaded.cast_column("image", datasets.Image(decode=False))["image"]
    for p, m in zip(paths, loaded["mos"]):
        assert m == mos_by_file[os.path.basename(p["path"])]
    assert sorted(loaded["mos"]) == sorted(ds["mos"])


def test_build_synthetic_dataset_validation(pristine_tiny):
    imgs = [img for _, img in pristine_tiny]
    ds = build_synthetic_dataset(imgs, distortions=["jpeg"], levels=(1,))
    assert ds["ref"] == ["image_0000", "image_0001"]
    with pytest.raises(ValueError, match="gaussian_blur"):
        build_synthetic_dataset(imgs, distortions=["nope"])
    with pytest.raises(ValueError):
        build_synthetic_dataset(imgs, distortions=["jpeg"], levels=(0,))
    with pytest.raises(ValueError):
        build_synthetic_dataset(imgs, distortions=["jpeg"], label="mos")
    with pytest.raises(ValueError):
        build_synthetic_dataset([("x", imgs[0]), ("x", imgs[1])], distortions=["jpeg"])
