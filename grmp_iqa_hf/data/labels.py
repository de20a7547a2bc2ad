"""Scene and distortion-type labels for the auxiliary tasks of MP-IQE (LIQE's label spaces).

LIQE (Zhang et al., CVPR 2023, "Blind Image Quality Assessment via Vision-Language Correspondence: A
Multitask Learning Perspective") published per-image scene and distortion labels for LIVE, CSIQ, BID,
LIVEC, KonIQ-10k and KADID-10k, and a table that folds its 33 raw distortion names into 11 classes.
This module holds those label spaces and maps what our loaders emit onto them:

- `distortion_class(name)` / `distortion_labels(names)`: raw distortion name -> one of the 11
  `DISTORTION_CLASSES` (an index). Covered: LIQE's 33 raw names (including LIVEC's "realistic blur",
  "realistic noise", "realistic contrast change", "overexposure", "underexposure", "other realistic"),
  the type names our loaders emit for KADID-10k (`registry.KADID10K_DISTORTIONS`), TID2013
  (`registry.TID2013_DISTORTIONS`), CSIQ (any spelling in `registry.CSIQ_TYPE_ALIASES`) and LIVE (the
  folder names of `registry.LIVE_DISTORTION_FOLDERS`), the synthetic engine's names
  (`distortions.DISTORTIONS`), and the 11 class names themselves.
- `scene_labels(values)`: a `scenes` column (";"-joined, e.g. `"human;night"`) -> multi-hot over the 9
  `SCENE_CLASSES`.

Names are matched after lower-casing and dropping everything but letters and digits, so
"JPEG2000 compression", "jpeg2000_compression" and "jpeg 2000 compression" are one name.

Policies (documented choices):

- **Missing labels** (`None`, `""`, NaN): no label for that image. `distortion_labels` writes
  `IGNORE_INDEX` (-100, PyTorch's `cross_entropy` convention); `scene_labels` writes a row of NaN. The
  MP-IQE loss skips such images for that auxiliary term (they still train the quality score).
- **Images without a distortion** (`"reference"`, `"pristine"`: the synthetic engine's undistorted rows):
  no distortion label (LIQE has no "none" class).
- **Unknown names**: `unknown="error"` (default) raises `UnknownLabelError` naming every unknown
  value and listing the known ones; `"ignore"` gives the image no label; `"other"` (distortions only)
  assigns class "other".
- **Provenance**: `DISTORTION_NAME_SOURCES` says, for each raw name, whether its class is LIQE's own
  assignment (`"liqe"`: LIQE's table, or a dataset's spelling of a type LIQE names) or ours (`"ours"`:
  types LIQE never labelled, i.e. all of TID2013 except the types shared with KADID-10k / LIVE, and the
  synthetic engine's saturation split). Read that before trusting TID2013 results.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

import numpy as np

# The label spaces and the no-label value are the model's (its class prompts and loss use them).
from ..modeling.constants import DISTORTION_CLASSES, IGNORE_INDEX, SCENE_CLASSES

__all__ = [
    "SCENE_CLASSES",
    "DISTORTION_CLASSES",
    "IGNORE_INDEX",
    "LIQE_RAW_DISTORTIONS",
    "DISTORTION_NAME_TO_CLASS",
    "DISTORTION_NAME_SOURCES",
    "UnknownLabelError",
    "normalize_label_name",
    "distortion_class",
    "distortion_labels",
    "parse_scenes",
    "scene_labels",
    "dataset_auxiliary_labels",
]

# LIQE's 33 raw distortion names -> their class (LIQE's own table).
LIQE_RAW_DISTORTIONS: dict[str, str] = {
    "jpeg2000 compression": "jpeg2000 compression",
    "jpeg compression": "jpeg compression",
    "white noise": "noise",
    "gaussian blur": "blur",
    "fastfading": "jpeg2000 compression",
    "fnoise": "noise",
    "contrast": "contrast",
    "lens": "blur",
    "motion": "blur",
    "diffusion": "color",
    "shifting": "blur",
    "color quantization": "quantization",
    "oversaturation": "color",
    "desaturation": "color",
    "white with color": "noise",
    "impulse": "noise",
    "multiplicative": "noise",
    "white noise with denoise": "noise",
    "brighten": "overexposure",
    "darken": "underexposure",
    "shifting the mean": "other",
    "jitter": "spatial",
    "noneccentricity patch": "spatial",
    "pixelate": "spatial",
    "quantization": "quantization",
    "color blocking": "spatial",
    "sharpness": "contrast",
    "realistic blur": "blur",
    "realistic noise": "noise",
    "underexposure": "underexposure",
    "overexposure": "overexposure",
    "realistic contrast change": "contrast",
    "other realistic": "other",
}

# Our loaders' spellings of types LIQE labels (so the class is LIQE's): (raw name, LIQE raw name).
_SAME_TYPE_AS_LIQE: tuple[tuple[str, str], ...] = (
    # KADID-10k (registry.KADID10K_DISTORTIONS)
    ("gaussian blur", "gaussian blur"),
    ("lens blur", "lens"),
    ("motion blur", "motion"),
    ("color diffusion", "diffusion"),
    ("color shift", "shifting"),
    ("color quantization", "color quantization"),
    ("color saturation 1", "desaturation"),
    ("color saturation 2", "oversaturation"),
    ("jpeg2000", "jpeg2000 compression"),
    ("jpeg", "jpeg compression"),
    ("white noise", "white noise"),
    ("white noise in color component", "white with color"),
    ("impulse noise", "impulse"),
    ("multiplicative noise", "multiplicative"),
    ("denoise", "white noise with denoise"),
    ("brighten", "brighten"),
    ("darken", "darken"),
    ("mean shift", "shifting the mean"),
    ("jitter", "jitter"),
    ("non-eccentricity patch", "noneccentricity patch"),
    ("pixelate", "pixelate"),
    ("quantization", "quantization"),
    ("color block", "color blocking"),
    ("high sharpen", "sharpness"),
    ("contrast change", "contrast"),
    # the synthetic engine (data.distortions.DISTORTIONS), KADID-10k's types in snake case
    ("gaussian_blur", "gaussian blur"),
    ("lens_blur", "lens"),
    ("motion_blur", "motion"),
    ("color_diffusion", "diffusion"),
    ("color_shift", "shifting"),
    ("color_quantization", "color quantization"),
    ("white_noise", "white noise"),
    ("white_noise_color_component", "white with color"),
    ("impulse_noise", "impulse"),
    ("multiplicative_noise", "multiplicative"),
    ("mean_shift", "shifting the mean"),
    ("non_eccentricity_patch", "noneccentricity patch"),
    ("color_block", "color blocking"),
    ("high_sharpen", "sharpness"),
    ("contrast_change", "contrast"),
    # LIVE (registry.LIVE_DISTORTION_FOLDERS): folder names
    ("jp2k", "jpeg2000 compression"),
    ("wn", "white noise"),
    ("gblur", "gaussian blur"),
    # CSIQ (registry.CSIQ_TYPE_ALIASES canonical names; other spellings are folded below)
    ("noise", "white noise"),
    ("jpeg 2000", "jpeg2000 compression"),
    ("blur", "gaussian blur"),
    # TID2013 types that are KADID-10k / LIVE types under another name
    ("Additive Gaussian noise", "white noise"),
    ("Additive noise in color components is more intensive than additive noise in the luminance component",
     "white with color"),
    ("Impulse noise", "impulse"),
    ("Gaussian blur", "gaussian blur"),
    ("Image denoising", "white noise with denoise"),
    ("JPEG compression", "jpeg compression"),
    ("JPEG2000 compression", "jpeg2000 compression"),
    ("Non eccentricity pattern noise", "noneccentricity patch"),
    ("Mean shift (intensity shift)", "shifting the mean"),
    ("Contrast change", "contrast"),
    ("Multiplicative Gaussian noise", "multiplicative"),
    ("Image color quantization with dither", "color quantization"),
)

# Types LIQE never labelled: our assignment, with the reason.
_OUR_ASSIGNMENTS: tuple[tuple[str, str, str], ...] = (
    ("color_saturation_decrease", "color", "LIQE: desaturation -> color"),
    ("color_saturation_increase", "color", "LIQE: oversaturation -> color"),
    ("Spatially correlated noise", "noise", "additive noise"),
    ("Masked noise", "noise", "additive noise"),
    ("High frequency noise", "noise", "additive noise"),
    ("Quantization noise", "quantization", "intensity quantization, like KADID-10k's quantization"),
    ("JPEG transmission errors", "jpeg compression",
     "like LIVE's fastfading (JPEG2000 transmission errors), which LIQE puts under its codec"),
    ("JPEG2000 transmission errors", "jpeg2000 compression", "LIQE: fastfading -> jpeg2000 compression"),
    ("Local block-wise distortions of different intensity", "spatial", "LIQE: color blocking -> spatial"),
    ("Change of color saturation", "color", "LIQE: (de/over)saturation -> color"),
    ("Comfort noise", "noise", "noise substituted by a codec: the visible artefact is noise"),
    ("Lossy compression of noisy images", "jpeg compression", "DCT-based coding of noisy images"),
    ("Chromatic aberrations", "blur", "channel misalignment, like KADID-10k's color shift (LIQE: blur)"),
    ("Sparse sampling and reconstruction", "other", "reconstruction artefacts fit no single class"),
)

#: Raw names with no distortion (reference / pristine rows): no distortion label.
NO_DISTORTION_NAMES: tuple[str, ...] = ("reference", "pristine", "original")


def normalize_label_name(name) -> str:
    """The matching key of a label name: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _build_tables() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    to_class: dict[str, str] = {}
    sources: dict[str, str] = {}
    display: dict[str, str] = {}

    def add(raw: str, cls: str, source: str):
        key = normalize_label_name(raw)
        if key in to_class and to_class[key] != cls:
            raise AssertionError(f"label table conflict for {raw!r}: {to_class[key]!r} vs {cls!r}")
        if key not in to_class:
            to_class[key], sources[key], display[key] = cls, source, raw

    for cls in DISTORTION_CLASSES:
        add(cls, cls, "liqe")
    for raw, cls in LIQE_RAW_DISTORTIONS.items():
        add(raw, cls, "liqe")
    for raw, liqe_name in _SAME_TYPE_AS_LIQE:
        add(raw, LIQE_RAW_DISTORTIONS[liqe_name], "liqe")
    for raw, cls, _ in _OUR_ASSIGNMENTS:
        add(raw, cls, "ours")
    return to_class, sources, display


_TO_CLASS, _SOURCES, _DISPLAY = _build_tables()


def _csiq_aliases() -> dict[str, str]:
    # every CSIQ spelling the loaders accept folds into its canonical name, which is in the table above
    from .registry import CSIQ_TYPE_ALIASES

    return {alias: _TO_CLASS[normalize_label_name(canonical)] for alias, canonical in CSIQ_TYPE_ALIASES.items()}


for _alias, _cls in _csiq_aliases().items():
    if _alias not in _TO_CLASS:
        _TO_CLASS[_alias], _SOURCES[_alias], _DISPLAY[_alias] = _cls, "liqe", _alias

#: normalized raw name -> distortion class name (see `normalize_label_name`).
DISTORTION_NAME_TO_CLASS: dict[str, str] = dict(_TO_CLASS)
#: normalized raw name -> "liqe" (LIQE's assignment) or "ours" (types LIQE never labelled).
DISTORTION_NAME_SOURCES: dict[str, str] = dict(_SOURCES)
#: notes for our own assignments: raw name -> (class, reason)
OUR_DISTORTION_ASSIGNMENTS: dict[str, tuple[str, str]] = {raw: (cls, why) for raw, cls, why in _OUR_ASSIGNMENTS}

_NO_DISTORTION = {normalize_label_name(n) for n in NO_DISTORTION_NAMES}
_SCENE_INDEX = {normalize_label_name(s): i for i, s in enumerate(SCENE_CLASSES)}
_SCENE_INDEX[normalize_label_name("other")] = SCENE_CLASSES.index("others")
_UNKNOWN_POLICIES = ("error", "ignore", "other")


class UnknownLabelError(ValueError):
    """A label value that is not in the table; the message lists every unknown value and the known ones."""


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "n/a", "na")


def _check_policy(unknown: str, allowed=_UNKNOWN_POLICIES):
    if unknown not in allowed:
        raise ValueError(f"unknown must be one of {allowed}, got {unknown!r}")


def _unknown_error(kind: str, unknown_values: Iterable[str], known: Iterable[str]) -> UnknownLabelError:
    values = sorted(set(map(str, unknown_values)))
    shown = ", ".join(repr(v) for v in values[:20]) + (f" (and {len(values) - 20} more)" if len(values) > 20 else "")
    return UnknownLabelError(
        f"{len(values)} unknown {kind} name(s): {shown}. Known names (case, spaces and punctuation are "
        f"ignored): {', '.join(sorted(set(known)))}. Pass unknown='ignore' to train these images on quality "
        + ("alone, or unknown='other' to label them 'other'." if kind == "distortion" else "alone.")
    )


def distortion_class(name, unknown: str = "error") -> int | None:
    """Class index (into `DISTORTION_CLASSES`) of one raw distortion name; None for no label.

    `unknown`: `"error"` (raise `UnknownLabelError`), `"ignore"` (None) or `"other"` (class "other").
    """
    _check_policy(unknown)
    if _is_missing(name):
        return None
    key = normalize_label_name(name)
    if key in _NO_DISTORTION:
        return None
    cls = _TO_CLASS.get(key)
    if cls is None:
        if unknown == "error":
            raise _unknown_error("distortion", [name], _DISPLAY.values())
        if unknown == "ignore":
            return None
        cls = "other"
    return DISTORTION_CLASSES.index(cls)


def distortion_labels(names: Sequence, unknown: str = "error") -> np.ndarray:
    """Class indices (int64, shape (N,)) of raw distortion names; `IGNORE_INDEX` where there is no label.

    With `unknown="error"`, every unknown name is collected and reported in one `UnknownLabelError`.
    """
    _check_policy(unknown)
    names = list(names)
    if unknown == "error":
        bad = [n for n in names if not _is_missing(n) and normalize_label_name(n) not in _TO_CLASS
               and normalize_label_name(n) not in _NO_DISTORTION]
        if bad:
            raise _unknown_error("distortion", bad, _DISPLAY.values())
    out = np.full(len(names), IGNORE_INDEX, dtype=np.int64)
    for i, name in enumerate(names):
        cls = distortion_class(name, unknown)
        if cls is not None:
            out[i] = cls
    return out


def parse_scenes(value, unknown: str = "error", separator: str = ";") -> list[int] | None:
    """Scene indices of one `scenes` cell (e.g. `"human;night"`, or a list of names); None when empty.

    Names are matched like distortion names (`"still life"` = `"still_life"`); `"other"` means `"others"`.
    """
    _check_policy(unknown, ("error", "ignore"))
    if _is_missing(value):
        return None
    parts = value if isinstance(value, (list, tuple)) else str(value).split(separator)
    parts = [p for p in parts if not _is_missing(p)]
    if not parts:
        return None
    indices, bad = [], []
    for part in parts:
        index = _SCENE_INDEX.get(normalize_label_name(part))
        if index is None:
            bad.append(part)
        elif index not in indices:
            indices.append(index)
    if bad:
        if unknown == "error":
            raise _unknown_error("scene", bad, SCENE_CLASSES)
        if not indices:
            return None  # "ignore": an image whose only scenes are unknown gets no scene label
    return sorted(indices)


def scene_labels(values: Sequence, unknown: str = "error", separator: str = ";") -> np.ndarray:
    """Multi-hot scene labels (float32, shape (N, 9)); a row of NaN where an image has no scene label."""
    _check_policy(unknown, ("error", "ignore"))
    values = list(values)
    if unknown == "error":
        bad = []
        for value in values:
            try:
                parse_scenes(value, "error", separator)
            except UnknownLabelError:
                parts = value if isinstance(value, (list, tuple)) else str(value).split(separator)
                bad += [p for p in parts if not _is_missing(p) and normalize_label_name(p) not in _SCENE_INDEX]
        if bad:
            raise _unknown_error("scene", bad, SCENE_CLASSES)
    out = np.full((len(values), len(SCENE_CLASSES)), np.nan, dtype=np.float32)
    for i, value in enumerate(values):
        indices = parse_scenes(value, unknown, separator)
        if indices is not None:
            out[i] = 0.0
            out[i, indices] = 1.0
    return out


def dataset_auxiliary_labels(dataset, unknown_distortion: str = "error", unknown_scene: str = "error"):
    """`(scene_labels, distortion_labels)` of a `datasets.Dataset` (or a dict of columns), from its
    `scenes` and `distortion` columns. Each is None when the column is absent or holds no label at all:
    such datasets train on quality alone."""
    columns = getattr(dataset, "column_names", None) or list(dataset.keys())
    scenes = distortions = None
    if "scenes" in columns:
        scenes = scene_labels(list(dataset["scenes"]), unknown=unknown_scene)
        if np.isnan(scenes).all():
            scenes = None
    if "distortion" in columns:
        distortions = distortion_labels(list(dataset["distortion"]), unknown=unknown_distortion)
        if (distortions == IGNORE_INDEX).all():
            distortions = None
    return scenes, distortions
