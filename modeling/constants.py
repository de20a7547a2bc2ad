"""Facts shared by the models, the data layer, training and conversion: each is defined here and only here.

Shipped as Hub remote code (the configurations and models import it), so it imports nothing.
"""

from __future__ import annotations

#: LIQE's 9 scene classes (multi-label: an image has 1-3 of them); MP-IQE's scene bank and QGR's semantic signal.
SCENE_CLASSES: tuple[str, ...] = (
    "animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others",
)
#: LIQE's 11 distortion classes (single-label), in LIQE's label order (index = class id).
DISTORTION_CLASSES: tuple[str, ...] = (
    "jpeg2000 compression", "jpeg compression", "noise", "blur", "color", "contrast", "overexposure",
    "underexposure", "spatial", "quantization", "other",
)
#: Distortion label of an image without one (PyTorch's `cross_entropy` convention; skipped by the loss).
IGNORE_INDEX = -100

#: The quality prompts of the released GRMP-IQA code (`finetune.py` line 769, `classnames[2]`: the only prompts its
#: forward scores with), also our default. The score is the softmax probability of the first.
QUALITY_CLASSES: tuple[str, ...] = ("high quality", "low quality")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: `image_normalization` names -> (mean, std).
NORMALIZATIONS = {"clip": (CLIP_MEAN, CLIP_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}

#: "square": both sides to `resize_size` (the released code); "shorter_side": aspect-preserving (CLIP).
RESIZE_MODES = ("square", "shorter_side")
# The released GRMP-IQA code resizes to 244x244 before cropping 224: keep that ratio for any size.
RESIZE_RATIO = 244 / 224


def resize_size_for(crop_size: int) -> int:
    """The default resize before a centre crop of `crop_size` (244 for 224)."""
    return round(crop_size * RESIZE_RATIO)


def released_preprocessing(crop_size: int) -> dict:
    """The released GRMP-IQA code's preprocessing as config fields: ImageNet mean/std, a square resize to
    244/224 of the crop with `cv2.resize(INTER_CUBIC)` (bicubic without antialiasing), then the centre crop."""
    return {
        "image_normalization": "imagenet", "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD),
        "resize_mode": "square", "resize_size": resize_size_for(crop_size), "resample": "bicubic_no_antialias",
    }


__all__ = [
    "CLIP_MEAN", "CLIP_STD", "DISTORTION_CLASSES", "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "NORMALIZATIONS",
    "QUALITY_CLASSES", "RESIZE_MODES", "RESIZE_RATIO", "SCENE_CLASSES", "released_preprocessing", "resize_size_for",
]
