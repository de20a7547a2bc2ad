"""Synthetic IQA data built from pristine photos with :mod:`.distortions`.

Typical use (fully offline)::

    from grmp_iqa_hf.data.synthetic import (
        load_pristine_images, build_synthetic_dataset, iter_distortion_tasks)

    pristine = load_pristine_images(size=256)        # photos shipped with scikit-image
    ds = build_synthetic_dataset(pristine, label="level", seed=0)
    tasks = iter_distortion_tasks(ds)                 # {"gaussian_blur": [0, 1, ...], ...}

Quality labels (column ``mos``, float in ``[0, 1]``, HIGHER = better):

* ``label="level"``: ``mos = 1 - level / (NUM_LEVELS + 1)`` with ``NUM_LEVELS = 5``,
  i.e. levels 1..5 -> 0.833, 0.667, 0.5, 0.333, 0.167; reference rows -> 1.0.  The
  scale does not depend on which ``levels`` are requested.
* ``label="psnr"``: full-reference PSNR (``skimage.metrics.peak_signal_noise_ratio``,
  8-bit RGB, ``data_range=255``) mapped linearly from ``[PSNR_RANGE[0], PSNR_RANGE[1]]
  = [10, 50]`` dB to ``[0, 1]`` and clipped; identical images (PSNR = inf) -> 1.0.
* ``label="ssim"``: full-reference SSIM (``skimage.metrics.structural_similarity``
  over the RGB channels, ``data_range=255``, 7x7 window or smaller for tiny
  images) clipped to ``[0, 1]``; identical images -> 1.0.

Reference rows (``include_reference=True``) have ``distortion="reference"`` and
``level=0``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .distortions import DISTORTIONS, NUM_LEVELS, distort

__all__ = [
    "SKIMAGE_PRISTINE",
    "IMAGE_EXTENSIONS",
    "PSNR_RANGE",
    "REFERENCE_NAME",
    "load_pristine_images",
    "build_synthetic_dataset",
    "iter_distortion_tasks",
    "level_to_mos",
    "psnr_to_mos",
    "ssim_to_mos",
]

#: name -> file inside scikit-image's bundled data directory.  These files ship
#: with the scikit-image wheel, so loading them never touches the network (the
#: files are read directly; no ``skimage.data`` fetcher / pooch is involved).
SKIMAGE_PRISTINE: Dict[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "retina": "retina.jpg",
}

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm", ".jp2", ".j2k"}
)

PSNR_RANGE: Tuple[float, float] = (10.0, 50.0)
REFERENCE_NAME = "reference"
_PNG_COMPRESS_LEVEL = 3
_AUTO_PROGRESS_MIN_ROWS = 100

Pristine = Union[
    Sequence[Tuple[str, Any]],
    Sequence[Any],
    Mapping[str, Any],
]


# ---------------------------------------------------------------------------
# pristine images
# ---------------------------------------------------------------------------
def _resize_shorter(img: Image.Image, size: Optional[int]) -> Image.Image:
    if size is None:
        return img
    w, h = img.size
    short = min(w, h)
    if short == size:
        return img
    scale = size / float(short)
    new = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    new = (size, new[1]) if w <= h else (new[0], size)
    return img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _open_rgb(path: Union[str, Path]) -> Image.Image:
    with Image.open(path) as im:
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGB", im.size, (255, 255, 255))
            background.paste(im, mask=im.getchannel("A"))
            return background
        return im.convert("RGB")


def _skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).resolve().parent


def load_pristine_images(
    source: Union[None, str, os.PathLike] = None, size: Optional[int] = None
) -> List[Tuple[str, Image.Image]]:
    """Load pristine (reference) RGB images as ``[(name, PIL.Image), ...]``.

    Args:
        source: ``None`` (or ``"skimage"``) -> the natural colour photos bundled
            with scikit-image (:data:`SKIMAGE_PRISTINE`, read from the installed
            package; never downloads).  A folder -> every image file under it
            (recursive, case-insensitive :data:`IMAGE_EXTENSIONS`), sorted by
            relative POSIX path, which is also the name.  A single image file is
            accepted too (name = file name).
        size: if given, resize every image so that its SHORTER side is ``size``
            pixels (aspect ratio kept, Lanczos).

    Returns:
        List of ``(name, image)`` with RGB images; names are stable identifiers
        (the ``skimage.data`` function name, or the relative path).
    """
    if size is not None and (isinstance(size, bool) or int(size) != size or size < 1):
        raise ValueError(f"size must be a positive integer or None, got {size!r}")
    size = None if size is None else int(size)
    out: List[Tuple[str, Image.Image]] = []
    if source is None or (isinstance(source, str) and source == "skimage"):
        data_dir = _skimage_data_dir()
        for name, filename in SKIMAGE_PRISTINE.items():
            path = data_dir / filename
            if not path.is_file():
                warnings.warn(f"scikit-image sample {filename!r} not found in {data_dir}; skipping {name!r}")
                continue
            out.append((name, _resize_shorter(_open_rgb(path), size)))
        if not out:
            raise FileNotFoundError(f"no scikit-image sample photos found in {data_dir}")
        return out

    root = Path(source)
    if root.is_file():
        return [(root.name, _resize_shorter(_open_rgb(root), size))]
    if not root.is_dir():
        raise FileNotFoundError(f"pristine image source {str(root)!r} is neither a folder nor a file")
    files = sorted(
        (p.relative_to(root).as_posix(), p)
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    for rel, path in files:
        try:
            img = _open_rgb(path)
        except (OSError, ValueError) as exc:  # unreadable / not really an image
            warnings.warn(f"skipping unreadable image {rel!r}: {exc}")
            continue
        out.append((rel, _resize_shorter(img, size)))
    if not out:
        raise ValueError(f"no readable images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {str(root)!r}")
    return out


def _normalize_pristine(pristine: Pristine) -> List[Tuple[str, Image.Image]]:
    if isinstance(pristine, Mapping):
        items = list(pristine.items())
    else:
        items = []
        for i, item in enumerate(pristine):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                items.append(item)
            else:
                items.append((f"image_{i:04d}", item))
    out = []
    for name, img in items:
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        if not isinstance(img, Image.Image):
            raise TypeError(f"pristine image {name!r} must be a PIL image or a numpy array, got {type(img).__name__}")
        out.append((str(name), img.convert("RGB")))
    if not out:
        raise ValueError("no pristine images given")
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"pristine image names must be unique; duplicated: {dupes}")
    return out


# ---------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------
def level_to_mos(level: int) -> float:
    """``1 - level / (NUM_LEVELS + 1)``; level 0 (the reference) -> 1.0."""
    return 1.0 - float(level) / (NUM_LEVELS + 1)


def psnr_to_mos(psnr: float) -> float:
    """Linear map of PSNR (dB) from :data:`PSNR_RANGE` onto ``[0, 1]``, clipped."""
    lo, hi = PSNR_RANGE
    if np.isnan(psnr):
        raise ValueError("PSNR is NaN")
    return float(np.clip((psnr - lo) / (hi - lo), 0.0, 1.0))


def ssim_to_mos(ssim: float) -> float:
    """SSIM clipped to ``[0, 1]``."""
    return float(np.clip(ssim, 0.0, 1.0))


def _full_reference_mos(ref: np.ndarray, dist: np.ndarray, label: str) -> float:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if np.array_equal(ref, dist):
        return 1.0
    if label == "psnr":
        return psnr_to_mos(float(peak_signal_noise_ratio(ref, dist, data_range=255)))
    min_side = min(ref.shape[:2])
    win = min(7, min_side if min_side % 2 == 1 else min_side - 1)
    if win < 3:
        raise ValueError(f"label='ssim' needs images of at least 3x3 pixels, got {ref.shape[:2]}")
    return ssim_to_mos(float(structural_similarity(ref, dist, win_size=win, channel_axis=-1, data_range=255)))


# ---------------------------------------------------------------------------
# dataset builder
# ---------------------------------------------------------------------------
def _row_seed(seed: int, ref_index: int, distortion: str, level: int) -> int:
    """Seed of one row, a pure function of (seed, ref index, distortion name, level)."""
    key = zlib.crc32(distortion.encode("utf-8"))
    ss = np.random.SeedSequence([int(seed), int(ref_index), key, int(level)])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def _safe_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return safe[:80] or "image"


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def build_synthetic_dataset(
    pristine: Pristine,
    distortions: Optional[Iterable[str]] = None,
    levels: Iterable[int] = (1, 2, 3, 4, 5),
    label: str = "level",
    seed: int = 0,
    include_reference: bool = False,
    output_dir: Union[None, str, os.PathLike] = None,
    progress: Optional[bool] = None,
):
    """Build a synthetic IQA :class:`datasets.Dataset` from pristine images.

    One row per (reference, distortion, level), ordered by reference, then
    distortion (in the given order), then level; with ``include_reference`` a
    row for the undistorted reference (``distortion="reference"``, ``level=0``,
    ``mos=1.0``) precedes each reference's distorted rows.

    Columns: ``image`` (:class:`datasets.Image`), ``mos`` (float64 in ``[0, 1]``,
    higher = better, see the module docstring for the ``label`` mappings),
    ``ref`` (reference name), ``distortion`` (str) and ``level`` (int32).

    Args:
        pristine: output of :func:`load_pristine_images` (``[(name, image)]``), a
            list of PIL images / uint8 arrays (named ``image_0000``, ...), or a
            ``{name: image}`` mapping.
        distortions: names from :data:`~.distortions.DISTORTIONS` (default: all).
        levels: levels in ``1..5``.
        label: ``"level"``, ``"psnr"`` or ``"ssim"``.
        seed: non-negative int.  Each row uses the seed
            ``SeedSequence([seed, ref_index, crc32(distortion), level])``, so a
            row's pixels do not depend on which other rows are built.
        include_reference: also add one row per undistorted reference.
        output_dir: if given, write every image as PNG to this folder plus a
            ``metadata.csv`` (``file_name,mos,ref,distortion,level``), i.e. an
            ``imagefolder`` readable by ``datasets.load_dataset("imagefolder",
            data_dir=output_dir)``; the returned dataset then references those
            files (absolute paths) instead of holding PNG bytes in memory.
        progress: show a tqdm bar; ``None`` -> only for >= 100 rows.

    Returns:
        ``datasets.Dataset``.
    """
    import datasets

    refs = _normalize_pristine(pristine)
    if isinstance(distortions, str):
        distortions = [distortions]
    dist_names = list(DISTORTIONS if distortions is None else distortions)
    unknown = [d for d in dist_names if d not in DISTORTIONS]
    if unknown:
        raise ValueError(f"unknown distortion(s) {unknown}; valid distortions: {', '.join(DISTORTIONS)}")
    if len(set(dist_names)) != len(dist_names):
        raise ValueError(f"duplicated distortion names in {dist_names}")
    levels = list(levels)
    valid_levels = list(range(1, NUM_LEVELS + 1))
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, (int, np.integer)) or int(lv) not in valid_levels:
            raise ValueError(f"invalid level {lv!r}; valid levels: {valid_levels}")
    levels = [int(lv) for lv in levels]
    if len(set(levels)) != len(levels):
        raise ValueError(f"duplicated levels in {levels}")
    if label not in ("level", "psnr", "ssim"):
        raise ValueError(f"unknown label {label!r}; valid labels: 'level', 'psnr', 'ssim'")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not dist_names and not include_reference:
        raise ValueError("nothing to build: no distortions and include_reference=False")

    out_root: Optional[Path] = None
    if output_dir is not None:
        out_root = Path(output_dir).resolve()
        out_root.mkdir(parents=True, exist_ok=True)

    jobs: List[Tuple[int, str, int]] = []
    for ri in range(len(refs)):
        if include_reference:
            jobs.append((ri, REFERENCE_NAME, 0))
        for d in dist_names:
            for lv in levels:
                jobs.append((ri, d, lv))

    show = (len(jobs) >= _AUTO_PROGRESS_MIN_ROWS) if progress is None else bool(progress)
    from tqdm.auto import tqdm

    columns: Dict[str, list] = {"image": [], "mos": [], "ref": [], "distortion": [], "level": []}
    file_names: List[str] = []
    ref_arrays: Dict[int, np.ndarray] = {}
    for ri, d, lv in tqdm(jobs, desc="synthetic IQA", unit="img", disable=not show):
        ref_name, ref_img = refs[ri]
        if d == REFERENCE_NAME:
            img = ref_img
            mos = 1.0
        else:
            img = distort(ref_img, d, lv, seed=_row_seed(seed, ri, d, lv))
            if label == "level":
                mos = level_to_mos(lv)
            else:
                if ri not in ref_arrays:
                    ref_arrays = {ri: np.asarray(ref_img)}  # keep only the current reference
                mos = _full_reference_mos(ref_arrays[ri], np.asarray(img), label)
        file_name = f"{ri:04d}_{_safe_name(ref_name)}__{d}" + (f"_{lv}" if d != REFERENCE_NAME else "") + ".png"
        if out_root is not None:
            path = out_root / file_name
            img.save(path, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
            columns["image"].append(str(path))
        else:
            columns["image"].append({"bytes": _png_bytes(img), "path": file_name})
        file_names.append(file_name)
        columns["mos"].append(float(mos))
        columns["ref"].append(ref_name)
        columns["distortion"].append(d)
        columns["level"].append(int(lv))

    if out_root is not None:
        with open(out_root / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file_name", "mos", "ref", "distortion", "level"])
            for i, fn in enumerate(file_names):
                writer.writerow(
                    [fn, repr(columns["mos"][i]), columns["ref"][i], columns["distortion"][i], columns["level"][i]]
                )

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "mos": datasets.Value("float64"),
            "ref": datasets.Value("string"),
            "distortion": datasets.Value("string"),
            "level": datasets.Value("int32"),
        }
    )
    return datasets.Dataset.from_dict(columns, features=features)


def iter_distortion_tasks(dataset: Any, include_reference: bool = False) -> Dict[str, List[int]]:
    """Group row indices by the ``distortion`` column: ``{distortion: [row, ...]}``.

    Keys follow the order of first appearance.  Reference rows
    (``distortion == "reference"``) are left out by default; with
    ``include_reference=True`` they are appended to every distortion's list
    (the same reference rows shared by all tasks, useful as quality anchors).
    Works with a :class:`datasets.Dataset` or anything indexable by
    ``"distortion"`` (a dict of columns, a pandas DataFrame).
    """
    column = list(dataset["distortion"])
    tasks: Dict[str, List[int]] = {}
    references: List[int] = []
    for i, d in enumerate(column):
        if d == REFERENCE_NAME:
            references.append(i)
        else:
            tasks.setdefault(d, []).append(i)
    if include_reference and references:
        for rows in tasks.values():
            rows.extend(references)
    return tasks
